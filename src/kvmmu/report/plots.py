"""PNG plots of timed runs and sweeps, drawn with matplotlib's object API on the Agg canvas.

Design. Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global figure registry, no backend selection at import time, safe in worker
processes and tests (matplotlib's "embedding without pyplot" recipe renders with Agg when saving
to PNG). Each strategy keeps one colour across every plot. The plots answer the issue's questions:
how long memslot updates take (:func:`plot_update_latency`), how ``mmu_lock`` hold time and faults
evolve over a run (:func:`plot_lock_and_faults`), how long vCPUs stall per trapped access
(:func:`plot_stall_cdf`), and how a measure scales with a swept parameter (:func:`plot_sweep`:
stall time vs vCPU count, update latency vs shadow pages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kvmmu.sim.results import RunResult, Sweep

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Stable colours per strategy name (tab10 order); unknown names get the remaining colours.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_ORDER = ("zap-walk", "zap-mmio-cached", "generation-2013", "generation-2014", "generation", "zap-all-fast")


def colour(strategy: str) -> str:
    """The colour of ``strategy`` in every plot."""
    base = strategy.split("+")[0]
    if base in _ORDER:
        return _PALETTE[_ORDER.index(base)]
    return _PALETTE[6 + sum(map(ord, base)) % 4]


def _figure(width: float, height: float) -> Figure:
    """A new figure; matplotlib is imported here, on first use (0.4 s that `--help` must not pay)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, format="png")
    return path


def plot_update_latency(run: RunResult, path: Path) -> Path:
    """Memslot update latency per strategy: one box per strategy, means marked (µs)."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    names = [r.strategy for r in run.strategies]
    data = [[v / 1e3 for v in r.latencies] or [0.0] for r in run.strategies]
    box = ax.boxplot(data, showmeans=True, patch_artist=True, widths=0.6)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    for patch, name in zip(box["boxes"], names, strict=True):
        patch.set_facecolor(colour(name))
        patch.set_alpha(0.5)
    ax.set_ylabel("memslot update latency (µs)")
    ax.set_title(f"{run.scenario}: KVM_SET_USER_MEMORY_REGION latency per strategy")
    if any(max(d) > 50 * max(min(d), 1e-9) for d in data if d):
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_lock_and_faults(run: RunResult, path: Path) -> Path:
    """``mmu_lock`` hold (share of each time bin) and slow-path faults per bin, over time."""
    fig = _figure(9, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for r in run.strategies:
        s = r.series
        xs = [(i + 0.5) * s.bin_ns / 1e6 for i in range(len(s.faults))]
        top.plot(
            xs,
            [100.0 * h / s.bin_ns for h in s.lock_hold_ns],
            label=r.strategy,
            color=colour(r.strategy),
            lw=1.2,
        )
        bottom.plot(xs, list(s.faults), label=r.strategy, color=colour(r.strategy), lw=1.2)
        bottom.plot(xs, list(s.refaults), color=colour(r.strategy), lw=0.8, ls="--")
    top.set_ylabel("mmu_lock held (% of time)")
    top.set_title(f"{run.scenario}: mmu_lock hold and faults over time")
    bottom.set_ylabel("slow-path faults per bin\n(dashed: refaults)")
    bottom.set_xlabel("simulated time (ms)")
    top.legend(fontsize=8, ncols=2)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_stall_cdf(run: RunResult, path: Path) -> Path:
    """Cumulative distribution of per-access vCPU stall (trapped accesses only), log x."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    for r in run.strategies:
        samples = sorted(r.stall_samples)
        if not samples:
            continue
        n = len(samples)
        ax.step(
            [s / 1e3 for s in samples],
            [(i + 1) / n for i in range(n)],
            where="post",
            label=f"{r.strategy} (n={n:,})",
            color=colour(r.strategy),
        )
    ax.set_xscale("log")
    ax.set_xlabel("vCPU stall per trapped access (µs)")
    ax.set_ylabel("fraction of trapped accesses")
    ax.set_title(f"{run.scenario}: stall CDF")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sweep(
    sweep: Sweep,
    key: str,
    path: Path,
    *,
    ylabel: str,
    scale: float = 1.0,
    logx: bool = False,
    logy: bool = False,
    published: Sequence[tuple[str, float]] = (),
) -> Path:
    """``key`` (divided by ``scale``) against the swept parameter, one line per strategy.

    ``published`` draws horizontal reference lines, labelled (e.g. a figure from a paper).
    """
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    for name in sweep.strategies:
        xs, ys = sweep.series(name, key)
        ax.plot(xs, [y / scale for y in ys], marker="o", ms=3, label=name, color=colour(name))
    for label, value in published:
        ax.axhline(value, ls=":", color="black", lw=1)
        ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(sweep.x_label)
    ax.set_ylabel(ylabel)
    ax.set_title(sweep.name)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_run(run: RunResult, out: Path) -> list[Path]:
    """Every per-run plot into directory ``out``."""
    return [
        plot_update_latency(run, out / "update_latency.png"),
        plot_lock_and_faults(run, out / "lock_and_faults.png"),
        plot_stall_cdf(run, out / "stall_cdf.png"),
    ]


def plot_grouped_bars(
    data: Mapping[str, Mapping[str, float]],
    keys: Sequence[tuple[str, str]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    published: Sequence[tuple[str, float]] = (),
) -> Path:
    """One group of bars per strategy (``data[strategy][key]``), one bar per ``(key, label)``."""
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    names = list(data)
    width = 0.8 / max(1, len(keys))
    hatches = ("", "//", "..", "xx")
    for k, (key, label) in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(names))]
        ax.bar(
            xs,
            [float(data[n][key]) for n in names],
            width,
            label=label,
            color=[colour(n) for n in names],
            hatch=hatches[k % len(hatches)],
            edgecolor="black",
            linewidth=0.5,
        )
    for label, value in published:
        ax.axhline(value, ls=":", color="black", lw=1)
        ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(keys) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)
