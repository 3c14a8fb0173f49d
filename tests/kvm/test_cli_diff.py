"""kvmmu.cli.diff: exit statuses and one-line errors (click's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmmu.cli.diff import command

pytestmark = pytest.mark.kvm


def _run(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(command, args)
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[scenario\nname=", "not valid TOML"),
        ("[scenario]\nvcpus = 3\n", "scenario.vcpus: 3 vCPUs, but this host allows 2"),
        (
            '[[step]]\nop = "read"\ngpa = 0x10000000000000\n',
            "step[0].gpa: 0x10000000000000 is outside",
        ),
        (
            '[[step]]\nop = "read"\ngpa = 0x20000000000000000\n',
            "step[0].gpa: Input should be less than or equal",
        ),
    ],
)
def test_bad_scenarios_give_one_line_and_status_2(
    tmp_path: Path, content: str, message: str
) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(content)
    code, _out, err = _run([str(p)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(p) in lines[0]


def test_usage_errors(tmp_path: Path) -> None:
    code, _, err = _run([])
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = _run(["--random", "1", "--strategy", "nope"])
    assert code == 2 and "unknown strategy 'nope'" in err
    code, _, err = _run([str(tmp_path / "missing.toml")])
    assert code == 2 and "cannot read scenario" in err


def test_scenario_random_and_errno_modes(tmp_path: Path) -> None:
    p = tmp_path / "ok.toml"
    p.write_text(
        '[[memory]]\nname = "a"\npages = 1\n'
        '[[step]]\nop = "set"\nslot = 0\ngpa = 0x10000\nsize = 0x1000\nmemory = "a"\n'
        '[[step]]\nop = "read"\ngpa = 0x10008\nsize = 8\n'
    )
    code, out, _ = _run([str(p)])
    assert code == 0 and "agree on all 3 observations" in out
    code, out, _ = _run(["--random", "5", "--seed", "3"])
    assert code == 0 and "5/5 random scenarios agree (seeds 3..7" in out
    code, out, _ = _run(["--errno", "300", "--seed", "4"])
    assert code == 0 and "300/300 requests gave the same result" in out


def test_divergence_exits_1_and_saves_the_scenario(tmp_path: Path) -> None:
    code, out, _ = _run(
        [
            "--random",
            "12",
            "--strategy",
            "generation+cache-without-gen",
            "--save-failing",
            str(tmp_path),
        ]
    )
    assert code == 1 and "first divergence" in out
    saved = sorted(tmp_path.glob("random-*.toml"))
    assert saved
    # The saved file replays the divergence, and agrees under the correct strategy.
    assert _run([str(saved[0]), "--strategy", "generation+cache-without-gen"])[0] == 1
    assert _run([str(saved[0])])[0] == 0


def test_json_in_every_mode(tmp_path: Path) -> None:
    p = tmp_path / "ok.toml"
    p.write_text(
        '[[memory]]\nname = "a"\npages = 1\n'
        '[[step]]\nop = "set"\nslot = 0\ngpa = 0x10000\nsize = 0x1000\nmemory = "a"\n'
        '[[step]]\nop = "read"\ngpa = 0x10008\nsize = 8\n'
    )
    code, out, _ = _run([str(p), "--json"])
    data = json.loads(out)
    assert code == 0 and data["agree"] and len(data["real"]) == len(data["model"]) == 3
    code, out, _ = _run(["--random", "3", "--seed", "3", "--json"])
    data = json.loads(out)
    assert code == 0 and data["scenarios"] == data["agree"] == 3 and data["failures"] == []
    code, out, _ = _run(["--errno", "50", "--json"])
    data = json.loads(out)
    assert code == 0 and data["requests"] == 50 and sum(data["by_result"].values()) == 50
    code, out, _ = _run(
        ["--random", "12", "--strategy", "generation+cache-without-gen", "--json",
         "--save-failing", str(tmp_path / "f")]
    )
    data = json.loads(out)
    assert code == 1 and data["failing_seeds"]
    assert data["failures"][0]["divergence"] is not None
    assert sorted(int(f.stem.split("-")[1]) for f in (tmp_path / "f").iterdir()) == data["failing_seeds"]
    # A second run may replace what the first saved (kvmmu's own files), never anything else.
    assert _run(["--random", "12", "--strategy", "generation+cache-without-gen",
                 "--save-failing", str(tmp_path / "f")])[0] == 1
