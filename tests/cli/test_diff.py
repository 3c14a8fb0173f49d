"""kvmmu.cli.diff: argument checks that come before any guest runs (no /dev/kvm needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.cli import main


def _one_line(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert all(n in err[0] for n in needles), err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "1e9"])
def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_one_line(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    _one_line(capsys, ["diff", "--random", "1", "--timeout", value], "--timeout")


def test_save_failing_never_overwrites_a_file_kvmmu_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "random-3.toml").write_text("my own notes")
    _one_line(
        capsys,
        ["diff", "--random", "5", "--seed", "1", "--save-failing", str(tmp_path)],
        "random-3.toml",
        "did not write",
    )
    assert (tmp_path / "random-3.toml").read_text() == "my own notes"
    _one_line(capsys, ["diff", "--random", "1", "--save-failing", "/proc/x"], "cannot write")
    _one_line(capsys, ["diff", "--random", "1", "--save-failing", ""], "empty path")
    _one_line(capsys, ["diff", "--errno", "1", "--save-failing", str(tmp_path)], "--random")
