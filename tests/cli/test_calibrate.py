"""kvmmu.cli.calibrate: the destination is checked before minutes of measuring (no /dev/kvm needed)."""

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


def test_an_unusable_destination_is_refused_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused even where /dev/kvm works: the check comes first, so no measurement ran.
    _one_line(capsys, ["calibrate", "--out", "/proc/x"], "--out /proc/x", "cannot write")
    _one_line(capsys, ["calibrate", "--out", ""], "empty path")
    _one_line(capsys, ["calibrate", "--out", str(tmp_path)], "is a folder")
    _one_line(capsys, ["calibrate", "--out", str(tmp_path / "no" / "p.toml")], "does not exist")


def test_a_file_kvmmu_did_not_write_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "costs.toml"
    mine.write_text("[costs]\nvmexit_ns = 1\n")
    _one_line(capsys, ["calibrate", "--out", str(mine)], "did not write")
    assert mine.read_text() == "[costs]\nvmexit_ns = 1\n"
