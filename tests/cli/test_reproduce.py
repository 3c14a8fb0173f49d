"""Tests of kvmmu.cli.reproduce: table, JSON, figure, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmmu.cli import cli, main


def test_json_rows_with_published_model_and_ratios() -> None:
    result = CliRunner().invoke(cli, ["reproduce", "--row", "zap-mmio-3.10", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["rows"]
    (value,) = row["values"]
    assert row["key"] == "zap-mmio-3.10" and value["published_s"] == 50e-6
    assert value["untuned_ratio"] == pytest.approx(value["untuned_s"] / 50e-6)
    assert value["calibrated_s"] is None
    assert row["notes"][0].startswith("fitted: shadow_page_visited_ns")


def test_table_says_calibrated_is_not_available_and_draws_the_figure(tmp_path: Path) -> None:
    png = tmp_path / "published.png"
    result = CliRunner().invoke(cli, ["reproduce", "--row", "zap-mmio-3.10", "--figure", str(png)])
    assert result.exit_code == 0, result.output
    assert "calibrated: not available" in result.output and "this machine: " in result.output
    assert "zap-mmio-3.10" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--row", "nope"], ["--costs", "/nonexistent.toml"],
                                  ["--costs", "/nonexistent.toml", "--calibrate"]])
def test_bad_input_is_one_line_and_status_2(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kvmmu: error: ") and len(err.strip().splitlines()) == 1


def test_a_file_kvmmu_did_not_write_is_never_overwritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"not kvmmu's")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--row", "zap-mmio-3.10", "--figure", str(mine)])
    assert exc.value.code == 2
    assert mine.read_bytes() == b"not kvmmu's"


def test_a_calibrated_profile_fills_the_columns_and_says_where_it_was_measured(
        tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('# Written by `kvmmu calibrate`\n[costs]\nshadow_page_visited_ns = 50\n'
                       '[source]\ncpu = "Test CPU, 2 CPUs"\nkernel = "9.9"\n'
                       'rounds = "3, fitted from round 2"\n')
    result = CliRunner().invoke(cli, ["reproduce", "--row", "zap-mmio-3.10", "--json",
                                      "--costs", str(profile)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (row,) = data["rows"]
    (value,) = row["values"]
    assert data["calibrated_costs"] == str(profile)
    assert data["calibrated_profile"]["source"]["cpu"] == "Test CPU, 2 CPUs"
    assert row["calibrated_changed"] == ["shadow_page_visited_ns"]
    # Twice the per-page visit: the walk's share doubles, so the value leaves +-25 %.
    assert value["calibrated_ratio"] > value["untuned_ratio"] * 1.25
    assert value["calibrated_ok"] is False
    note = next(n for n in row["notes"] if n.startswith("calibrated off by more than 25 %"))
    assert "calibrated: Test CPU, 2 CPUs, kernel 9.9" in note
    assert "the calibration changed shadow_page_visited_ns 25 -> 50 ns" in note


@pytest.mark.kvm
def test_calibrate_measures_a_profile_now_and_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmmu.cli import reproduce as rp

    # One quick round keeps the test short; the command's default is 3 full rounds.
    monkeypatch.setattr(rp, "CALIBRATE_ROUNDS", 1)
    monkeypatch.setattr(rp, "CALIBRATE_QUICK", True)
    result = CliRunner().invoke(cli, ["reproduce", "--row", "zap-mmio-3.10", "--calibrate",
                                      "--json"])
    if result.exit_code == rp.EXIT_IMPLAUSIBLE:  # a loaded host: refused, and said why
        assert "implausible" in result.stderr
        return
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["calibrated_costs"] == "measured now (--calibrate)"
    assert data["calibrated_profile"]["source"]["rounds"].startswith("1, fitted from round 1")
    (value,) = data["rows"][0]["values"]
    assert value["calibrated_s"] is not None and value["calibrated_s"] > 0
