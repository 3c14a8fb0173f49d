"""kvmmu.cli.calibrate: a quick run writes a profile the simulation loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmmu.cli.calibrate import command
from kvmmu.sim.costs import load_costs

pytestmark = pytest.mark.kvm


def test_quick_run_writes_a_loadable_profile_with_force(tmp_path: Path) -> None:
    # --force: on a loaded host the fit may be refused (tested without timing in test_calibrate).
    out = tmp_path / "profile.toml"
    res = CliRunner().invoke(
        command,
        ["--quick", "--runs", "2", "--rounds", "2", "--force", "--out", str(out)],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "first-touch fault" in res.stdout and "model, zap-all on" in res.stdout
    assert " ± " in res.stdout and "ns per live PTE" in res.stdout
    assert "of 2 (the quietest)" in res.stdout and "round scores" in res.stdout
    profile = load_costs(out)
    assert profile["exit_to_userspace_ns"] > 0
    assert "kernel" in profile.source and profile.source["rounds"].startswith("2, fitted")
    assert ("implausible" in res.stdout) == ("forced" in profile.source)


def test_json_has_every_figure_with_its_spread_and_the_verdict(tmp_path: Path) -> None:
    out = tmp_path / "profile.toml"
    res = CliRunner().invoke(
        command, ["--quick", "--runs", "2", "--rounds", "2", "--json", "--out", str(out)]
    )
    data = json.loads(res.stdout)
    assert res.exit_code == (1 if data["fit"]["problems"] else 0), res.output
    assert out.exists() == (not data["fit"]["problems"])
    assert data["profile_written"] == (str(out) if out.exists() else None)
    for key in ("first_touch_fault", "mmio_exit_round_trip", "exit_to_userspace"):
        assert len(data[key]["samples_ns"]) == 2 and data[key]["mad_ns"] >= 0
    assert all("mad_ns" in p and "model_ns" in p for p in data["memslot"])
    assert set(data["fit"]["raw_ns"]) == set(data["fit"]["mad_ns"])
    assert len(data["rounds"]) == 2 and data["chosen_round"] in (0, 1)
    chosen = data["rounds"][data["chosen_round"]]
    assert chosen["raw_ns"] == data["fit"]["raw_ns"] and chosen["score"] == min(
        r["score"] for r in data["rounds"]
    )
    for name, (lo, hi) in data["between_rounds_ns"].items():
        assert lo <= data["fit"]["raw_ns"][name] <= hi


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(command, ["--quick", "--out", str(tmp_path / "no" / "p.toml")])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "does not exist" in res.stderr
