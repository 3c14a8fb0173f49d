"""Tests of kvmmu.cli.plot: figures are simulated, printed, drawn and saved."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from kvmmu.cli import cli


def test_quick_figures_write_pngs_and_numbers(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    args = [
        "plot",
        "shadow-pages",
        "refaults",
        "--quick",
        "-s",
        "zap-walk",
        "-s",
        "zap-mmio-cached",
        "-s",
        "generation",
        "-s",
        "zap-all-fast",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "update_latency_vs_shadow_pages.png",
        "lock_hold_vs_shadow_pages.png",
        "refaults_after_create.png",
        "figures.json",
        ".kvmmu-output",
        "index.html",
    }
    data = json.loads((out / "figures.json").read_text())
    pngs = {p.name for p in out.glob("*.png")}
    assert set(data["captions"]) == pngs and all(data["captions"].values())
    page = (out / "index.html").read_text()
    assert all(f'<img src="{name}"' in page for name in pngs)
    refaults = data["refaults"]["by_strategy"]
    assert refaults["zap-all-fast"]["refaults_ram"] == refaults["zap-all-fast"]["working_set_pages"]
    assert refaults["generation"]["refaults_ram"] == 0
    assert data["shadow-pages"]["crossover_zap_walk_over_zap_mmio_cached"] is not None
    assert "exceeds zap-mmio-cached's from" in result.output


def test_unknown_figure_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["plot", "pie-chart"])
    assert result.exit_code == 2 and "pie-chart" in result.output
