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
    assert "model calibrated: not available" in result.output
    assert "zap-mmio-3.10" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--row", "nope"], ["--costs", "/nonexistent.toml"]])
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
