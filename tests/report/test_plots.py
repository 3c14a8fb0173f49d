"""Tests of kvmmu.report.plots: every plot renders a PNG."""

from __future__ import annotations

from pathlib import Path

from kvmmu.report.plots import colour, plot_grouped_bars, plot_run, plot_sweep
from kvmmu.sim.results import RunResult, Sweep, SweepPoint

PNG = b"\x89PNG\r\n\x1a\n"


def test_run_plots_are_pngs(small_run: RunResult, tmp_path: Path) -> None:
    paths = plot_run(small_run, tmp_path)
    assert [p.name for p in paths] == ["update_latency.png", "lock_and_faults.png", "stall_cdf.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)


def test_sweep_and_bars_are_pngs(tmp_path: Path) -> None:
    sweep = Sweep(
        "s",
        "vCPUs",
        tuple(SweepPoint(x, n, {"k": x * 2.0}) for x in (1, 2, 4) for n in ("zap-walk", "generation")),
    )
    p = plot_sweep(sweep, "k", tmp_path / "s.png", ylabel="k", logx=True, published=[("paper", 3.0)])
    q = plot_grouped_bars(
        {"generation": {"a": 1.0, "b": 2.0}},
        [("a", "A"), ("b", "B")],
        tmp_path / "b.png",
        title="t",
        ylabel="y",
    )
    assert p.read_bytes()[:8] == PNG and q.read_bytes()[:8] == PNG


def test_colours_are_stable_and_distinct() -> None:
    names = [
        "zap-walk",
        "zap-mmio-cached",
        "generation-2013",
        "generation-2014",
        "generation",
        "zap-all-fast",
    ]
    assert len({colour(n) for n in names}) == len(names)
    assert colour("generation+no-wrap-zap") == colour("generation")
