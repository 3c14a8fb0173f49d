"""Tests of kvmmu.cli.run: the timed ``kvmmu run`` command, its outputs and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmmu.cli import cli, main
from kvmmu.mmu.invalidation import STRATEGIES

TINY = """
name = "tiny"
description = "a tiny guest"
duration = "300us"
[guest]
vcpus = 2
memory = "16MiB"
[vcpu]
think = "2us"
working_set = "1MiB"
mmio_fraction = 0.2
[[devices]]
name = "dev"
gpa = 0xfe000000
size = "4KiB"
[[vmm]]
op = "create"
slot = 5
gpa = "1TiB"
size = "2MiB"
at = "50us"
"""


def test_default_run_is_boot_under_every_strategy(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    for name in STRATEGIES:
        assert name in result.output
    assert "kvmmu run: boot" in result.output and "oracle violations" in result.output
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"report.json", "summary.csv", "trace.json", "index.html", "stall_cdf.png"} <= names
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert all(s["summary"]["oracle_violations"] == 0 for s in data["strategies"]
               if not STRATEGIES[s["summary"]["strategy"]].expected_violations)
    assert "seed_argument.png" in names  # the seed mail's figure, in the main job


def test_scenario_file_strategy_json_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    args = [
        "run",
        str(f),
        "-s",
        "generation",
        "-s",
        "zap-all-3.9",
        "--json",
        "--no-plots",
        "--vcpus",
        "3",
        "--memory",
        "32MiB",
        "--seed",
        "7",
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [s["summary"]["strategy"] for s in data["strategies"]] == ["generation", "zap-all-3.9"]
    assert data["params"]["vcpus"] == 3 and data["params"]["memory"] == 32 << 20
    assert data["seed"] == 7
    assert not (tmp_path / "o" / "stall_cdf.png").exists()


def test_default_out_dir_is_named_after_the_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(f), "-s", "generation", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kvmmu-out" / "tiny" / "report.json").exists()


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert all(n in err[0] for n in needles), err


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["run", "-s", "generashun"], "generashun", "zap-all-3.9", "generation")
    _one_line_error(capsys, ["run", "no-such-scenario"], "no-such-scenario", "boot")
    bad = tmp_path / "bad.toml"
    bad.write_text("[costs]\nfoo_ns = 1\n")
    _one_line_error(capsys, ["run", "--costs", str(bad)], str(bad), "costs.foo_ns", "allowed")
    scen = tmp_path / "s.toml"
    scen.write_text(TINY.replace("vcpus = 2", "vcpus = 2000"))
    _one_line_error(capsys, ["run", str(scen)], str(scen), "guest.vcpus")
    _one_line_error(capsys, ["run", "--memory", "lots"], "--memory")
    _one_line_error(capsys, ["run", "--vcpus", "9999"], "--vcpus")
    _one_line_error(capsys, ["run", "--bogus"], "--bogus")
    _one_line_error(capsys, ["run", "--slot-zap", "some"], "--slot-zap", "slot", "all")


def test_help_explains_every_option() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    for opt in (
        "--strategy",
        "--costs",
        "--seed",
        "--out",
        "--json",
        "--vcpus",
        "--memory",
        "--slot-zap",
        "--no-oracle",
        "--no-plots",
        "SCENARIO",
    ):
        assert opt in result.output


def test_out_refuses_a_folder_holding_other_files_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "results"
    home.mkdir(mode=0o755)
    (home / "thesis.tex").write_text("years of work")
    mode = home.stat().st_mode
    _one_line_error(capsys, ["run", "-s", "generation", "--no-plots", "--out", str(home)], "thesis.tex")
    assert [p.name for p in home.iterdir()] == ["thesis.tex"]
    assert home.stat().st_mode == mode and (home / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_out_replaces_its_own_previous_report(tmp_path: Path) -> None:
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    out = tmp_path / "o"
    for _ in range(2):
        result = CliRunner().invoke(cli, ["run", str(f), "-s", "generation", "--no-plots", "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert (out / "report.json").exists() and (out / ".kvmmu-output").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "tiny.toml"]


def test_unusable_out_is_one_line_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    for out in ("", ".", "..", "/proc/x", "keep.txt", "keep.txt/sub", str(tmp_path)):
        _one_line_error(capsys, ["run", "--out", out], "--out")
    (tmp_path / "kvmmu-out").write_text("a file")
    _one_line_error(capsys, ["run"], "kvmmu-out", "not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "kvmmu-out"]


def test_expected_violations_exit_0_and_unexpected_ones_are_named(tmp_path: Path) -> None:
    # 3.11's generation scheme has a known bug (the stale per-vCPU cache) that rom-loop shows.
    # The race is narrow: a seed whose ROM remap meets a vCPU's cached MMIO access (timing-
    # dependent; seed 0 stopped showing it when 3.11's per-update memslot copy was charged).
    args = ["run", "rom-loop", "-s", "generation-3.11", "--no-plots", "--json", "--seed", "1"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output  # known bugs: violations are expected
    data = json.loads(result.output)
    broken = data["strategies"][0]["summary"]
    assert broken["oracle_violations"] > 0
    # The same violations under a name that should be correct make the run fail (exit 1).
    from dataclasses import replace

    from kvmmu.cli.run import unexpected_violations
    from kvmmu.sim.costs import default_costs
    from kvmmu.sim.run import SimOptions, simulate_all
    from kvmmu.sim.workloads.schema import load_scenario

    opts = SimOptions(seed=1, vm_options={"slot_zap": "slot", "start_near_wrap": True})  # as run
    sc = load_scenario("rom-loop")
    run = simulate_all(sc, ["generation-3.11"], default_costs(), opts)
    assert unexpected_violations(run) == []
    renamed = replace(run, strategies=tuple(replace(r, strategy="generation") for r in run.strategies))
    assert unexpected_violations(renamed) == ["generation"]


def test_a_run_that_cannot_fit_in_memory_is_refused_with_an_option_that_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 1 TiB of RAM swept by 512 vCPUs for 5 s of guest time: every page touched.
    scen_text = TINY.replace('duration = "300us"', 'duration = "5s"').replace(
        'working_set = "1MiB"', 'working_set = "2GiB"'
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "big.toml"
        f.write_text(scen_text)
        _one_line_error(
            capsys,
            ["run", str(f), "--vcpus", "512", "--memory", "1TiB", "--no-plots"],
            "would need about",
            "GiB of memory",
            "try --vcpus",
        )
        assert sorted(p.name for p in Path(d).iterdir()) == ["big.toml"]


def test_time_limit_stops_cleanly_with_status_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # boot takes seconds per strategy: a tenth of a second cannot cover them all.
    with pytest.raises(SystemExit) as exc:
        main(["run", "--time-limit", "0.1", "--no-plots", "--out", str(tmp_path / "o")])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "--time-limit 0.1 s reached" in err and "Traceback" not in err
