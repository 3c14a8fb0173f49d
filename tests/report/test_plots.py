"""Tests of kvmmu.report.plots: what a reader sees, checked on the figure objects (not pixels).

Each test builds a figure from data whose shape is known (values spanning decades, curves that
coincide, bars of 0, 2 and 512) and asserts the reading aids the issue asked for: units on the
axes, log scales where the data spans decades, distinct markers and line styles, a note where
curves coincide, legends outside the plotting area, values on bars, a caption with numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kvmmu.mmu.invalidation import STRATEGIES
from kvmmu.report.plots import (
    Plot,
    bars_figure,
    coincident_groups,
    colour,
    lock_and_faults_figure,
    plot_run,
    stall_figure,
    style,
    sweep_figure,
    update_latency_figure,
    value_scale,
)
from kvmmu.sim.results import RunResult, Sweep, SweepPoint

PNG = b"\x89PNG\r\n\x1a\n"
GENERATIONS = ("generation-2013", "generation-2014", "generation")


def _sweep() -> Sweep:
    """zap-walk grows 1000x over the sweep; the three generation strategies are the same flat line."""
    points = []
    for x in (1, 4, 16, 64, 256, 1024):
        points.append(SweepPoint(x, "zap-walk", {"lat": 1000.0 * x}))
        points.append(SweepPoint(x, "zap-mmio-cached", {"lat": 70_000.0}))
        points.extend(SweepPoint(x, g, {"lat": 14_000.0}) for g in GENERATIONS)
    return Sweep("memslot CREATE vs live shadow pages", "leaf shadow pages mapped", tuple(points))


def _legend_overlaps_axes(fig: Figure) -> bool:
    """Whether any legend's box intersects any axes' plotting area, once drawn."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends, "the figure has no legend"
    return any(
        leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        for leg in legends
        for ax in fig.axes
    )


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_run_figures_save_as_pngs_with_captions(small_run: RunResult, tmp_path: Path) -> None:
    plots = plot_run(small_run, tmp_path)
    assert [p.name for p in plots] == ["update_latency.png", "lock_and_faults.png", "stall_cdf.png"]
    for p in plots:
        assert (tmp_path / p.name).read_bytes()[:8] == PNG
        assert any(r.strategy in p.caption for r in small_run.strategies), p.caption
        assert any(ch.isdigit() for ch in p.caption), "a caption concludes with numbers"
        assert p.caption.replace("\n", " ")[:40] in " ".join(
            t.get_text().replace("\n", " ") for t in p.figure.texts
        ), "the caption is printed under the figure too"


def test_every_run_figure_keeps_its_legend_off_the_data(small_run: RunResult) -> None:
    for make in (update_latency_figure, lock_and_faults_figure, stall_figure):
        assert not _legend_overlaps_axes(make(small_run).figure), make.__name__


def test_value_scale_goes_logarithmic_only_across_a_decade() -> None:
    assert value_scale([1.0, 2.0, 9.0]) == "linear"
    assert value_scale([1.0, 10.0]) == "log"
    assert value_scale([14.0, 320.0, 5000.0]) == "log"
    assert value_scale([0.0, 2.0, 512.0]) == "symlog"  # zeros stay drawn
    assert value_scale([0.0, 0.0]) == "linear"
    assert value_scale([0.0, 56.0, 60.0]) == "linear"


def test_box_plot_explains_every_marker_and_names_its_unit(small_run: RunResult) -> None:
    plot = update_latency_figure(small_run)
    ax = plot.figure.axes[0]
    assert "(µs)" in ax.get_ylabel()
    legend = " ".join(_legend_texts(plot.figure))
    for marker in ("median", "mean", "outliers", "whiskers", "box"):
        assert marker in legend
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ticks) == len(small_run.strategies)
    assert all("n=" in t for t in ticks) or "n = " in ax.get_xlabel()  # how many updates per box
    assert "median" in plot.caption


def test_sweep_over_decades_is_log_log_with_distinct_styles() -> None:
    plot = sweep_figure(_sweep(), "lat", "s.png", ylabel="latency (µs)", scale=1e3)
    ax = plot.figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert len({ln.get_marker() for ln in lines}) == len(lines)
    assert len({ln.get_linestyle() for ln in lines}) >= 3
    assert not _legend_overlaps_axes(plot.figure)
    assert "zap-walk grows 1,024×" in plot.caption


def test_coinciding_strategies_are_staggered_and_named() -> None:
    plot = sweep_figure(_sweep(), "lat", "s.png", ylabel="latency (µs)", scale=1e3)
    lines = {ln.get_label(): ln for ln in plot.figure.axes[0].get_lines()}
    starts = {lines[g].get_markevery()[0] for g in GENERATIONS}  # type: ignore[index]
    assert len(starts) == len(GENERATIONS), "each coinciding curve marks different points"
    assert "generation-2013, generation-2014 and generation coincide" in plot.caption
    assert any(t.startswith("coincide:") for t in _legend_texts(plot.figure))
    assert "flat at 14" in plot.caption and "zap-mmio-cached stays flat at 70" in plot.caption


def test_sweep_with_small_range_keeps_linear_axes() -> None:
    sweep = Sweep("s", "vCPUs", tuple(SweepPoint(x, "generation", {"k": 5.0 + x}) for x in (1, 2, 3)))
    ax = sweep_figure(sweep, "k", "s.png", ylabel="k (ms)").figure.axes[0]
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"


def test_refault_bars_show_small_bars_and_legend_colours_match() -> None:
    data = {name: {"ram": 0.0, "mmio": 2.0} for name in STRATEGIES}
    data["zap-all-fast"]["ram"] = 512.0
    plot = bars_figure(data, [("ram", "RAM refaults"), ("mmio", "MMIO refaults")], "b.png",
                       title="t", ylabel="refaults (count)", published=[("working set", 512.0)])
    ax = plot.figure.axes[0]
    assert ax.get_yscale() == "symlog"
    containers = ax.containers
    legend = plot.figure.legends[0]
    for container, handle in zip(containers, legend.legend_handles, strict=True):
        assert all(bar.get_facecolor() == handle.get_facecolor() for bar in container)
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("2") == len(data) and labels.count("0") == len(data) - 1 and "512" in labels
    assert "512 for zap-all-fast" in plot.caption
    assert not _legend_overlaps_axes(plot.figure)


def test_single_series_bars_take_strategy_colours_and_need_no_legend() -> None:
    data = {"zap-walk": {"ms": 40.0}, "generation": {"ms": 20.0}}
    plot = bars_figure(data, [("ms", "latency")], "b.png", title="t", ylabel="latency (ms)", unit=" ms")
    bars = plot.figure.axes[0].containers[0]
    assert [b.get_facecolor() for b in bars] != [bars[0].get_facecolor()] * 2
    assert not plot.figure.legends and plot.figure.axes[0].get_yscale() == "linear"


def test_stall_figure_is_a_log_log_tail_distribution(small_run: RunResult) -> None:
    plot = stall_figure(small_run)
    ax = plot.figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "(µs)" in ax.get_xlabel()
    for line in ax.get_lines():
        ys = list(line.get_ydata())
        assert ys[0] == 1.0 and ys == sorted(ys, reverse=True)
    assert "99.9th percentile" in plot.caption


def test_lock_and_fault_curves_are_running_totals(small_run: RunResult) -> None:
    plot = lock_and_faults_figure(small_run)
    top, bottom = plot.figure.axes
    assert "(ms)" in top.get_ylabel() and "(ms)" in bottom.get_xlabel()
    curves = [ln for ln in bottom.get_lines() if ln.get_label() != "memslot updates (ticks)"]
    for line, r in zip(curves, small_run.strategies, strict=True):
        ys = list(line.get_ydata())
        assert ys == sorted(ys) and ys[-1] == sum(r.series.refaults)
    rug = [ln for ln in top.get_lines() if ln.get_label() == "memslot updates (ticks)"]
    held = [ln for ln in top.get_lines() if ln not in rug]
    for line, r in zip(held, small_run.strategies, strict=True):
        assert line.get_ydata()[-1] == pytest.approx(sum(r.series.lock_hold_ns) / 1e6)
    bins_with_updates = sum(1 for n in small_run.strategies[0].series.updates if n)
    assert len(rug) == 1 and len(rug[0].get_xdata()) == bins_with_updates > 0
    assert "memslot updates (ticks)" in _legend_texts(plot.figure)


def test_every_strategy_has_its_own_colour_marker_and_line_style() -> None:
    styles = [style(n) for n in STRATEGIES]
    assert len({s.color for s in styles}) == len(styles)
    assert len({s.marker for s in styles}) == len(styles)
    assert len({str(s.linestyle) for s in styles}) == len(styles)
    assert style("generation+no-wrap-zap") == style("generation")
    assert colour("some-label") not in {s.color for s in styles}


@given(st.lists(st.floats(min_value=0.5, max_value=1e6), min_size=1, max_size=8),
       st.floats(min_value=1.05, max_value=10.0))
def test_curves_coincide_exactly_when_close_at_every_point(ys: list[float], factor: float) -> None:
    same = [y * 1.001 for y in ys]
    apart = [*ys[:-1], ys[-1] * factor]
    groups = coincident_groups({"a": ys, "b": same, "c": apart})
    assert groups == [["a", "b"]]


def test_plot_is_a_value_with_a_name_title_and_caption(tmp_path: Path) -> None:
    plot = sweep_figure(_sweep(), "lat", "x.png", ylabel="µs", title="T")
    assert isinstance(plot, Plot) and plot.title == "T" and plot.save(tmp_path).name == "x.png"


def test_bars_that_read_the_same_are_said_once() -> None:
    data = {"zap-walk": {"ms": 25.21}, "generation": {"ms": 25.19}, "zap-all-fast": {"ms": 25.2}}
    plot = bars_figure(data, [("ms", "delete+add latency")], "b.png", title="t", ylabel="latency (ms)",
                       unit=" ms")
    assert "delete+add latency: 25.2 ms for every one of them." in plot.caption


def test_a_symmetric_log_axis_of_non_negative_data_starts_at_zero() -> None:
    points = [SweepPoint(x, "zap-walk", {"k": 40.0 * x}) for x in (1, 16, 256)]
    points += [SweepPoint(x, "generation", {"k": 0.0}) for x in (1, 16, 256)]
    ax = sweep_figure(Sweep("s", "pages", tuple(points)), "k", "s.png", ylabel="k (µs)").figure.axes[0]
    assert ax.get_yscale() == "symlog"
    low, high = ax.get_ylim()
    assert low == 0 and high > 40.0 * 256


def test_log_axes_label_plain_numbers_and_leave_room_above_the_data() -> None:
    plot = sweep_figure(_sweep(), "lat", "s.png", ylabel="latency (µs)", scale=1e3)
    ax = plot.figure.axes[0]
    FigureCanvasAgg(plot.figure).draw()
    labels = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
    assert labels and not any("$" in t or "^" in t for t in labels)
    assert "1,000" in labels
    assert ax.get_ylim()[1] > 1024.0  # the highest marker is not cut by the frame


def test_a_run_without_memslot_updates_still_draws_and_says_so(tmp_path: Path) -> None:
    from kvmmu.sim.costs import default_costs
    from kvmmu.sim.run import SimOptions, simulate_all
    from kvmmu.sim.workloads.schema import scenario_from_dict

    sc = scenario_from_dict(
        {"name": "idle", "description": "no VMM", "duration": "100us",
         "guest": {"vcpus": 1, "memory": "8MiB"}, "vcpu": {"working_set": "1MiB"}}
    )
    run = simulate_all(sc, ["generation"], default_costs(), SimOptions(seed=1))
    plots = plot_run(run, tmp_path)
    assert "No memslot update" in plots[0].caption
    assert all((tmp_path / p.name).read_bytes()[:8] == PNG for p in plots)


def test_an_old_strategy_name_draws_like_its_new_one_silently(capsys: pytest.CaptureFixture[str]) -> None:
    from kvmmu.mmu.invalidation import ALIASES

    for old, new in ALIASES.items():
        assert style(old) == style(new) and style(old + "+no-wrap-zap") == style(new)
    assert capsys.readouterr().err == ""


def test_boxes_of_the_same_distribution_are_named_as_such(small_run: RunResult) -> None:
    import dataclasses

    first = small_run.strategies[0]
    twin = dataclasses.replace(first, strategy="generation-4.2")
    run = dataclasses.replace(small_run, strategies=(first, twin))
    caption = update_latency_figure(run).caption
    assert f"{first.strategy} and generation-4.2 have the same distribution" in caption
