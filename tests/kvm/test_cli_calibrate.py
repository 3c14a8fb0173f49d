"""kvmmu.cli.calibrate: a quick run writes a profile the simulation loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmmu.cli.calibrate import command
from kvmmu.sim.costs import load_costs

pytestmark = pytest.mark.kvm


def test_quick_run_writes_a_loadable_profile(tmp_path: Path) -> None:
    out = tmp_path / "profile.toml"
    res = CliRunner().invoke(
        command, ["--quick", "--runs", "1", "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "first-touch fault" in res.stdout and "model, zap-all on" in res.stdout
    profile = load_costs(out)
    assert profile["exit_to_userspace_ns"] > 0
    assert "kernel" in profile.source


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(command, ["--quick", "--out", str(tmp_path / "no" / "p.toml")])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "does not exist" in res.stderr
