"""Tests of kvmmu.cli.plot: figures are simulated, printed, drawn and saved."""

from __future__ import annotations

import io
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
        "zap-all-3.9",
        "-s",
        "zap-mmio-3.10",
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
    assert data["shadow-pages"]["crossover_zap_all_3_9_over_generation"] is not None
    assert "zap-all-3.9's CREATE costs more than the generation's from" in result.output


def test_the_seed_figure_shows_walks_growing_generation_flat_and_refaults(tmp_path: Path) -> None:
    """Issue 9: the whole of the seed mail in one picture (quick range here: 10^2..10^4)."""
    out = tmp_path / "seed"
    result = CliRunner().invoke(cli, ["plot", "seed", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "seed_argument.png").stat().st_size > 10_000
    seed = json.loads((out / "figures.json").read_text())["seed"]
    lat: dict[str, dict[int, float]] = {}
    for p in seed["create_latency_ns"]:
        lat.setdefault(p["strategy"], {})[p["leaf_pages"]] = p["update_latency_mean_ns"]
    for walk in ("zap-all-3.9", "zap-mmio-3.10"):
        assert lat[walk][10_000] > 3 * lat[walk][100]  # grows with the shadow pages
    for gen in ("generation-3.11", "generation"):
        assert lat[gen][10_000] == lat[gen][100]  # flat
    fast = seed["refaults"]["zap-all-fast"]
    assert [p["refaults_ram"] for p in fast] == [2 * p["warm_pages"] for p in fast]  # 2 vCPUs
    assert all(p["refaults_ram"] == 0 for p in seed["refaults"]["generation"])


def test_unknown_figure_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["plot", "pie-chart"])
    assert result.exit_code == 2 and "pie-chart" in result.output


def test_time_limit_writes_what_was_drawn_and_exits_3(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    args = ["plot", "shadow-pages", "refaults", "--quick", "-s", "generation", "--time-limit", "0.1",
            "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    data = json.loads((out / "figures.json").read_text())
    assert data["not_drawn_time_limit"] and data["not_drawn_time_limit"][-1] == "refaults"
    assert "--time-limit 0.1 s reached" in result.stderr


def test_the_progress_total_counts_every_simulation_a_figure_announces(tmp_path: Path) -> None:
    from rich.console import Console

    from kvmmu.cli.plot import _FIGURE, _simulations
    from kvmmu.sim.costs import default_costs

    for fig in ("shadow-pages", "refaults", "mmu"):
        notes: list[str] = []
        _FIGURE[fig](["generation"], default_costs(), tmp_path, Console(file=io.StringIO()), 1, True,
                     notes.append, {})
        assert len(notes) == _simulations(fig, 1, True), (fig, notes)


def test_the_mmu_figure_shows_who_waits_for_a_delete_under_each_mmu(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    result = CliRunner().invoke(cli, ["plot", "mmu", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {"mmu_lock_wait_vs_vcpus.png", "delete_latency_vs_vcpus.png"} <= {
        p.name for p in out.iterdir()}
    points = json.loads((out / "figures.json").read_text())["mmu"]["points"]
    assert {p["strategy"] for p in points} == {"generation (shadow MMU)", "generation (TDP MMU)"}
