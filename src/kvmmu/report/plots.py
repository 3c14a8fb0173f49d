"""PNG figures of timed runs and sweeps, each with a caption that says what to conclude.

Design. Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global figure registry, no backend selection at import time, safe in worker
processes and tests (matplotlib's "embedding without pyplot" recipe). A figure is built into a
:class:`Plot` value (the figure, its file name, title and caption) before it is saved, so the tests
inspect what a reader sees (axis labels and scales, legend entries, markers, the caption) on the
objects instead of on pixels.

The rules every figure follows, because people look rather than read (issue 11):

* each strategy keeps one colour, one marker and one line style in every figure
  (:func:`style`), so curves stay distinguishable in grey-scale print and where they cross;
* strategies whose curves coincide are found from the data (:func:`coincident_groups`), drawn with
  their markers staggered so that every one stays visible, labelled on the plot and named in the
  caption: "these coincide" is a finding, not a drawing accident;
* an axis whose data spans a decade or more is logarithmic (:func:`value_scale`; symmetric-log
  with a linear stretch around zero when zeros are part of the data, so a zero bar or curve stays
  on the plot);
* legends sit outside the axes (``loc="outside right upper"``), never over data;
* every axis names its unit, every bar carries its value, and the caption printed under the
  figure (and in ``index.html``) states the conclusion in numbers taken from the data.

Prior art: Tufte's direct labelling and the matplotlib gallery's "outside" legends; the
complementary CDF on log-log axes for latency tails as in HdrHistogram's percentile plots.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvmmu.mmu.invalidation import ALIASES, STRATEGIES
from kvmmu.report.tables import count
from kvmmu.sim.results import RunResult, Sweep, percentile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Stable colours per strategy (tab10 order); unknown names get the remaining colours.
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
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<")
_LINESTYLES: tuple[Any, ...] = (
    "-",
    "--",
    "-.",
    ":",
    (0, (5, 1)),
    (0, (3, 1, 1, 1, 1, 1)),
    (0, (1, 1)),
    (0, (5, 5)),
    (0, (3, 5, 1, 5)),
    (0, (7, 2, 2, 2)),
)
#: A decade: data whose largest value is at least this many times its smallest goes on log axes.
DECADE = 10.0
#: Relative tolerance under which two curves are "the same curve" for a reader.
COINCIDE_RTOL = 0.02
_DPI = 110
_CAPTION_FONT = 8.5


@dataclass(frozen=True, slots=True)
class Style:
    """How one strategy is drawn: colour, marker and line style, the same in every figure."""

    color: str
    marker: str
    linestyle: Any

    def line(self) -> dict[str, Any]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def _figure(width: float, height: float) -> Figure:
    """A new figure; matplotlib is imported here, on first use (0.4 s that `--help` must not pay)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _index(strategy: str) -> int:
    """The strategy's place in :data:`STRATEGIES` (aliases and variants resolved), or beyond it."""
    base = strategy.split("+")[0]
    canonical = ALIASES.get(base, base)  # an old name draws like its new one, silently
    if canonical not in STRATEGIES:
        return len(STRATEGIES) + sum(map(ord, base)) % max(1, len(_PALETTE) - len(STRATEGIES))
    return list(STRATEGIES).index(canonical)


def style(strategy: str) -> Style:
    """The colour, marker and line style of ``strategy`` in every figure.

    ``NAME (TDP MMU)`` and ``NAME (shadow MMU)`` (``kvmmu plot mmu``) draw as NAME, the TDP one
    shifted to another colour, marker and line so the two never look alike."""
    shift = 0
    if strategy.endswith(" MMU)") and " (" in strategy:
        strategy, kind = strategy.rsplit(" (", 1)
        shift = 3 if kind.startswith("TDP") else 0
    i = _index(strategy)
    return Style(_PALETTE[(i + shift) % len(_PALETTE)], _MARKERS[(i + shift) % len(_MARKERS)],
                 _LINESTYLES[(i + shift) % len(_LINESTYLES)])


def colour(strategy: str) -> str:
    """The colour of ``strategy`` in every figure."""
    return style(strategy).color


@dataclass(frozen=True, slots=True)
class Plot:
    """A drawn figure, the file it is saved as, and the caption that says what to conclude."""

    name: str
    title: str
    caption: str
    figure: Figure

    def save(self, directory: Path) -> Path:
        """Write the PNG into ``directory``; return its path."""
        path = Path(directory) / self.name
        self.figure.savefig(path, dpi=_DPI, format="png")
        return path


# --- shared rules ---------------------------------------------------------------------------


def value_scale(values: Sequence[float]) -> str:
    """``"log"`` if the positive values span a decade or more (``"symlog"`` if zeros are among
    them, so that zero stays drawn), else ``"linear"``."""
    positive = [v for v in values if v > 0]
    if len(positive) < 2 or max(positive) < DECADE * min(positive):
        if positive and any(v == 0 for v in values) and max(positive) >= DECADE * min(positive):
            return "symlog"
        return "linear"
    return "symlog" if any(v <= 0 for v in values) else "log"


def _minor_labeller(mantissas: tuple[float, ...]) -> Any:
    """A tick formatter that labels minor ticks whose leading digit is in ``mantissas``."""

    def label(v: float, _pos: object = None) -> str:
        if v <= 0:
            return ""
        mantissa = round(v / 10 ** math.floor(math.log10(v)), 6)
        return f"{v:,.6g}" if mantissa in mantissas else ""

    return label


def _plain_ticks(ax: Axes, axis: str, values: Sequence[float]) -> None:
    """Tick labels as plain numbers (20, 300, 4,000) instead of 2×10^1, read without arithmetic;
    between decades the 2s and 5s are labelled, and the 3s too when the data spans two decades
    or less (there are few major ticks then); on an x axis, minor labels only within one decade."""
    from matplotlib.ticker import FuncFormatter

    positive = [v for v in values if v > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
    minor: tuple[float, ...] = (2.0, 3.0, 5.0) if decades <= 2 else (2.0, 5.0)
    if axis == "x":  # wide labels side by side: the minor ones only within a single decade
        minor = (2.0, 5.0) if decades <= 1 else ()
    target.set_minor_formatter(FuncFormatter(_minor_labeller(minor)))


def _apply_scale(ax: Axes, axis: str, values: Sequence[float]) -> str:
    scale = value_scale(values)
    setter = ax.set_yscale if axis == "y" else ax.set_xscale
    if scale == "symlog":
        smallest = min(v for v in values if v > 0)
        setter("symlog", linthresh=10 ** math.floor(math.log10(smallest)), linscale=0.5)
        if min(values) >= 0 and axis == "y":  # no negative decades below a zero bar or curve
            ax.set_ylim(0, max(values) * 2)
    elif scale == "log":
        setter("log")
        if axis == "y":  # room above the highest marker (an outlier circle, a bar label)
            ax.set_ylim(min(v for v in values if v > 0) / 1.5, max(values) * 1.5)
    if scale != "linear":
        _plain_ticks(ax, axis, values)
    return scale


def coincident_groups(
    curves: Mapping[str, Sequence[float]], rtol: float = COINCIDE_RTOL, *, per_point: bool = True
) -> list[list[str]]:
    """Groups (two or more, in the given order) of curves equal within ``rtol`` at every point.

    ``per_point``: closeness is relative to the larger magnitude of the two points (right for
    log axes, where a small value is as visible as a large one; a curve of zeros then coincides
    only with zeros). Otherwise it is relative to the larger curve's largest value (right for
    running totals on a linear axis, whose early points are small and equally invisible).
    Curves of different lengths never coincide.
    """

    def close(a: Sequence[float], b: Sequence[float]) -> bool:
        if len(a) != len(b):
            return False
        if per_point:
            return all(abs(x - y) <= rtol * max(abs(x), abs(y)) for x, y in zip(a, b, strict=True))
        span = max([abs(v) for v in (*a, *b)], default=0.0)
        return all(abs(x - y) <= rtol * span for x, y in zip(a, b, strict=True))

    groups: list[list[str]] = []
    for name, ys in curves.items():
        for g in groups:
            if close(curves[g[0]], ys):
                g.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1]


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def coincide_note(groups: Sequence[Sequence[str]]) -> str:
    """One sentence per group of coinciding curves ("" if none)."""
    return " ".join(
        f"{_names(list(g))} coincide (drawn with staggered markers)." for g in groups
    )


def _fmt(v: float) -> str:
    """A value for a caption: three significant figures, thousands separated."""
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _range_by(values: Mapping[str, float], unit: str = " µs") -> str:
    """``"0.78 µs for every strategy"`` or ``"0.81 µs (generation) to 37.5 µs (zap-all-fast)"``."""
    lo = min(values, key=lambda n: values[n])
    hi = max(values, key=lambda n: values[n])
    if _fmt(values[lo]) == _fmt(values[hi]):
        return f"{_fmt(values[lo])}{unit} for every strategy"
    return f"{_fmt(values[lo])}{unit} ({lo}) to {_fmt(values[hi])}{unit} ({hi})"


def _finish(fig: Figure, name: str, title: str, caption: str, *, width_in: float) -> Plot:
    """Put the caption under the plot (space reserved by the layout) and wrap it up."""
    chars = max(40, int(width_in * 72 / (_CAPTION_FONT * 0.6)))
    text = textwrap.fill(caption, chars)
    lines = text.count("\n") + 1
    height_in = fig.get_figheight()
    extra = (lines * _CAPTION_FONT * 1.35 + 10) / 72
    fig.set_figheight(height_in + extra)
    frac = extra / (height_in + extra)
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, frac, 1, 1 - frac))
    fig.text(0.01, 0.5 * 10 / 72 / (height_in + extra), text, fontsize=_CAPTION_FONT, va="bottom", ha="left",
             color="#333")
    return Plot(name, title, caption, fig)


def _legend(
    fig: Figure,
    handles: Sequence[Any],
    labels: Sequence[str],
    title: str | None = None,
    groups: Sequence[Sequence[str]] = (),
) -> None:
    """A legend outside the axes, right of them, so it never covers data; each group of
    coinciding curves gets one more entry showing the group's markers side by side."""
    from matplotlib.legend_handler import HandlerTuple

    handles, labels = list(handles), list(labels)
    by_label = dict(zip(labels, handles, strict=True))
    for g in groups:
        members = [by_label[n] for n in g if n in by_label]
        if len(members) > 1:
            handles.append(tuple(members))
            labels.append("coincide:\n" + " =\n".join(n.split(" (n=")[0] for n in g))
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, title=title, title_fontsize=8,
               frameon=False, handler_map={tuple: HandlerTuple(ndivide=None)})


def _reference_label(ax: Axes, label: str, value: float) -> None:
    """Name a horizontal reference line in the right margin, outside the data."""
    ax.annotate(label.replace(": ", ":\n", 1), (1.0, value), xycoords=("axes fraction", "data"),
                xytext=(4, 0), textcoords="offset points", fontsize=7.5, va="center", ha="left",
                annotation_clip=False)


def _stagger(name: str, groups: Sequence[Sequence[str]], points: int) -> dict[str, Any]:
    """Marker placement: every curve marks about eight points, each curve starting at its own
    offset, so that the markers of coinciding curves alternate instead of hiding each other."""
    for g in groups:
        if name in g and points >= len(g):
            k = len(g)
            every = max(k, (points // 8) // k * k)
            return {"markevery": (g.index(name) * (every // k), every)}
    every = max(1, points // 8)
    return {"markevery": ((_index(name) * every // 7) % every, every)}


# --- per-run figures ------------------------------------------------------------------------


def update_latency_figure(run: RunResult) -> Plot:
    """Memslot update latency per strategy: one box per strategy, every marker explained."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    names = [r.strategy for r in run.strategies]
    data = [[v / 1e3 for v in r.latencies] for r in run.strategies]
    drawn = [d or [0.0] for d in data]
    box = ax.boxplot(drawn, showmeans=True, patch_artist=True, widths=0.6,
                     meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black"},
                     medianprops={"color": "black", "linewidth": 1.5},
                     flierprops={"marker": "o", "markersize": 4, "markerfacecolor": "none"})
    sizes = {len(d) for d in data}
    if len(sizes) == 1:  # the same count under every box: said once, the ticks stay short
        labels = names
        ax.set_xlabel(f"strategy (n = {count(sizes.pop(), 'update')} each)", fontsize=9)
    else:
        labels = [f"{n}\n(n={len(d)})" for n, d in zip(names, data, strict=True)]
    ax.set_xticks(range(1, len(names) + 1), labels, rotation=30, ha="right", rotation_mode="anchor",
                  fontsize=8)
    for patch, name in zip(box["boxes"], names, strict=True):
        patch.set_facecolor(colour(name))
        patch.set_alpha(0.55)
    ax.set_ylabel("memslot update latency (µs)")
    title = f"{run.scenario}: KVM_SET_USER_MEMORY_REGION latency per strategy"
    ax.set_title(title, fontsize=10)
    scale = _apply_scale(ax, "y", [v for d in drawn for v in d])
    ax.grid(axis="y", alpha=0.3, which="both")
    key = [
        Patch(facecolor="#cccccc", edgecolor="black", label="box: middle 50 % of updates"),
        Line2D([], [], color="black", lw=1.5, label="line: median"),
        Line2D([], [], ls="none", marker="^", mfc="white", mec="black", label="triangle: mean"),
        Line2D([], [], color="black", lw=1, label="whiskers: 1.5 × box height"),
        Line2D([], [], ls="none", marker="o", mfc="none", mec="black", ms=4, label="circles: outliers"),
    ]
    _legend(fig, key, [str(h.get_label()) for h in key], title="how to read a box")
    medians = {r.strategy: percentile(r.latencies, 50) / 1e3 for r in run.strategies if r.latencies}
    if medians:
        low = min(medians, key=lambda n: medians[n])
        high = max(medians, key=lambda n: medians[n])
        worst_name, worst = max(((n, max(d)) for n, d in zip(names, data, strict=True) if d),
                                key=lambda t: t[1])
        caption = (
            f"Each box is one strategy's {count(len(data[0]), 'memslot update')} (one ioctl each, "
            f"simulated). Lowest median: {low} ({_fmt(medians[low])} µs); highest median: {high} "
            f"({_fmt(medians[high])} µs), {_fmt(medians[high] / max(medians[low], 1e-9))}× the "
            f"lowest. Slowest single update: {worst_name}, {_fmt(worst)} µs "
            f"({_fmt(worst / max(medians[worst_name], 1e-9))}× its median). Outliers far above a "
            "box are rare updates that did much more work or waited long for mmu_lock"
            + (
                f"; {worst_name} crossed the generation wrap in this run, which zaps every MMIO SPTE."
                if int(run.by_strategy(worst_name).summary()["generation_wraps"])
                else "."
            )
        )
        same = coincident_groups(
            {r.strategy: [percentile(r.latencies, q) for q in (5, 25, 50, 75, 95, 100)]
             for r in run.strategies if r.latencies}
        )
        if same:
            caption += " " + " ".join(f"{_names(g)} have the same distribution (within 2 %)." for g in same)
    else:
        caption = "No memslot update changed anything in this run, so there is no latency to show."
    if scale != "linear":
        caption += " Logarithmic axis: the values span more than a decade."
    return _finish(fig, "update_latency.png", title, caption, width_in=9)


def _cumulative(values: Sequence[int]) -> list[float]:
    out: list[float] = []
    total = 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def lock_and_faults_figure(run: RunResult) -> Plot:
    """Cumulative ``mmu_lock`` hold and cumulative refaults over simulated time.

    Cumulative curves instead of per-bin rates: per-bin counts of a sampled workload are noise
    around the same mean for every strategy; running totals are smooth, diverge where the
    strategies differ, and a long hold shows as a step.
    """
    fig = _figure(9, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs: dict[str, list[float]] = {}
    hold: dict[str, list[float]] = {}
    refaults: dict[str, list[float]] = {}
    for r in run.strategies:
        s = r.series
        xs[r.strategy] = [(i + 1) * s.bin_ns / 1e6 for i in range(len(s.lock_hold_ns))]
        hold[r.strategy] = [v / 1e6 for v in _cumulative(s.lock_hold_ns)]
        refaults[r.strategy] = _cumulative(s.refaults)
    groups_hold = coincident_groups(hold, per_point=False)
    groups_ref = coincident_groups(refaults, per_point=False)
    handles = []
    for r in run.strategies:
        n = r.strategy
        st = style(n)
        (h,) = top.plot(xs[n], hold[n], label=n, lw=1.4, ms=5, **st.line(),
                        **_stagger(n, groups_hold, len(xs[n])))
        bottom.plot(xs[n], refaults[n], lw=1.4, ms=5, **st.line(), **_stagger(n, groups_ref, len(xs[n])))
        handles.append(h)
    if run.strategies:
        # When the VMM changed memslots (the same schedule for every strategy): a rug of ticks
        # along the bottom of each panel, so a step in a curve can be matched to its cause.
        s0 = run.strategies[0].series
        when = [(i + 0.5) * s0.bin_ns / 1e6 for i, n in enumerate(s0.updates) if n]
        for ax in (top, bottom):
            (rug,) = ax.plot(when, [0.03] * len(when), ls="none", marker="|", ms=9, color="#777",
                             transform=ax.get_xaxis_transform(), label="memslot updates (ticks)")
        if when:
            handles.append(rug)
    top.set_ylabel("mmu_lock held for write\nso far (ms)")
    title = f"{run.scenario}: mmu_lock hold and refaults over time (running totals)"
    top.set_title(title, fontsize=10)
    bottom.set_ylabel("refaults so far\n(slow-path faults on gfns mapped before)")
    bottom.set_xlabel("simulated time (ms)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    _legend(fig, handles, [str(h.get_label()) for h in handles], title="strategy",
            groups=groups_hold if groups_hold == groups_ref else ())
    final_hold = {n: v[-1] if v else 0.0 for n, v in hold.items()}
    final_ref = {n: v[-1] if v else 0.0 for n, v in refaults.items()}
    caption = ("Steeper is worse: the slope is the share of time mmu_lock is held exclusively (for "
               "write), or the refault rate.")
    tdp = sorted(r.strategy for r in run.strategies if r.mmu == "tdp")
    if tdp:
        caption += (f" {', '.join(tdp)} ran the TDP MMU, whose faults hold the lock for read (the "
                    "table's 'held for read' row), so only its root reloads and zaps count here.")
    if final_hold:
        lo = min(final_hold, key=lambda n: final_hold[n])
        hi = max(final_hold, key=lambda n: final_hold[n])
        by = f"by {hi}" + (f" and {_fmt(final_hold[lo])} ms by {lo}" if lo != hi else "")
        caption += (
            f" By the end of the simulated duration mmu_lock had been held for write "
            f"{_fmt(final_hold[hi])} ms {by} (the table's totals also count the "
            "work that drains after it); a vertical step is one long hold (a zap)."
        )
        rlo = min(final_ref, key=lambda n: final_ref[n])
        rhi = max(final_ref, key=lambda n: final_ref[n])
        caption += f" Refaults: {_fmt(final_ref[rhi])} for {rhi}" + (
            f", {_fmt(final_ref[rlo])} for {rlo}." if rlo != rhi else ".")
    notes = coincide_note(groups_hold)
    if notes:
        caption += " Lock hold: " + notes
    notes = coincide_note(groups_ref)
    if notes:
        caption += " Refaults: " + notes
    return _finish(fig, "lock_and_faults.png", title, caption, width_in=9)


def _ccdf(samples: Sequence[int]) -> tuple[list[float], list[float]]:
    """Distinct stall values (µs) and the fraction of samples at or above each."""
    ordered = sorted(samples)
    n = len(ordered)
    xs: list[float] = []
    ys: list[float] = []
    for i, v in enumerate(ordered):
        if i == 0 or v != ordered[i - 1]:
            xs.append(v / 1e3)
            ys.append((n - i) / n)
    return xs, ys


#: Percentiles compared to decide whether two stall distributions coincide.
_STALL_QUANTILES = (50.0, 90.0, 99.0, 99.9, 100.0)


def stall_figure(run: RunResult) -> Plot:
    """Complementary CDF of the per-access vCPU stall (trapped accesses), log-log.

    Most trapped accesses of every strategy stall for the same first-touch fault, so a plain CDF
    is one vertical line; the strategies differ in the tail, which the complementary CDF on log
    axes spreads out (one decade of the y axis per "nine" of the percentile).
    """
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    xs: dict[str, list[float]] = {}
    ys: dict[str, list[float]] = {}
    quant: dict[str, list[float]] = {}
    for r in run.strategies:
        if r.stall_samples:
            xs[r.strategy], ys[r.strategy] = _ccdf(r.stall_samples)
            quant[r.strategy] = [percentile(list(r.stall_samples), q) for q in _STALL_QUANTILES]
    groups = coincident_groups(quant, rtol=0.05)
    handles = []
    labels = []
    for r in run.strategies:
        n = r.strategy
        if n not in xs:
            continue
        (h,) = ax.plot(xs[n], ys[n], drawstyle="steps-post", lw=1.4, ms=5, **style(n).line(),
                       **_stagger(n, groups, len(xs[n])))
        handles.append(h)
        labels.append(f"{n} (n={len(r.stall_samples):,})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vCPU stall per trapped access (µs)")
    ax.set_ylabel("fraction of trapped accesses\nstalled at least this long")
    title = f"{run.scenario}: vCPU stall per trapped access (tail distribution)"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if handles:
        full = {lab.split(" (n=")[0]: lab for lab in labels}
        _legend(fig, handles, labels, title="strategy (n = trapped accesses)",
                groups=[[full[n] for n in g] for g in groups])
    caption = (
        "Read across at 0.01 for the 99th percentile and at 0.001 for the 99.9th: a curve further "
        "right (or higher) stalls longer there."
    )
    if quant:
        median = {n: q[0] / 1e3 for n, q in quant.items()}
        p999 = {n: q[3] / 1e3 for n, q in quant.items()}
        lo = min(p999, key=lambda n: p999[n])
        hi = max(p999, key=lambda n: p999[n])
        worst = {n: q[-1] / 1e3 for n, q in quant.items()}
        w = max(worst, key=lambda n: worst[n])
        caption += (
            f" Median stall: {_range_by(median)}; 99.9th "
            f"percentile: {_fmt(p999[lo])} µs for {lo}, {_fmt(p999[hi])} µs for {hi}; longest "
            f"single stall {_fmt(worst[w])} µs ({w})."
        )
    notes = coincide_note(groups)
    if notes:
        caption += " " + notes.replace("coincide", "have the same distribution (within 5 %)")
    return _finish(fig, "stall_cdf.png", title, caption, width_in=9)


def run_figures(run: RunResult) -> list[Plot]:
    """Every per-run figure."""
    return [update_latency_figure(run), lock_and_faults_figure(run), stall_figure(run)]


def plot_run(run: RunResult, out: Path) -> list[Plot]:
    """Every per-run figure saved into directory ``out``."""
    plots = run_figures(run)
    for p in plots:
        p.save(out)
    return plots


# --- sweeps and bars ------------------------------------------------------------------------


def sweep_figure(
    sweep: Sweep,
    key: str,
    name: str,
    *,
    ylabel: str,
    scale: float = 1.0,
    title: str | None = None,
    conclusion: str = "",
    published: Sequence[tuple[str, float]] = (),
) -> Plot:
    """``key`` (divided by ``scale``) against the swept parameter, one line per strategy.

    The axes go logarithmic where the data spans a decade (x is base 2: sweeps double).
    ``published`` draws labelled horizontal reference lines (e.g. a figure from a paper).
    ``conclusion`` opens the caption; the growth of each curve over the sweep follows it.
    """
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    xs: dict[str, list[float]] = {}
    ys: dict[str, list[float]] = {}
    for s in sweep.strategies:
        x, y = sweep.series(s, key)
        xs[s], ys[s] = [float(v) for v in x], [v / scale for v in y]
    groups = coincident_groups(ys)
    handles = []
    for s in sweep.strategies:
        (h,) = ax.plot(xs[s], ys[s], lw=1.5, ms=6, label=s, **style(s).line(),
                       **_stagger(s, groups, len(xs[s])))
        handles.append(h)
    for label, value in published:
        ax.axhline(value, ls=":", color="black", lw=1)
        _reference_label(ax, label, value)
    all_x = sorted({v for x in xs.values() for v in x})
    if value_scale(all_x) != "linear":
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_x, [f"{v:,.0f}" for v in all_x])
    all_y = [v for y in ys.values() for v in y] + [v for _, v in published]
    yscale = _apply_scale(ax, "y", all_y)
    ax.set_xlabel(sweep.x_label)
    ax.set_ylabel(ylabel)
    title = title or sweep.name
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _legend(fig, handles, [str(h.get_label()) for h in handles], title="strategy", groups=groups)
    parts = [conclusion] if conclusion else []
    if all_x:
        lo_x, hi_x = all_x[0], all_x[-1]
        growth = []
        said: set[str] = set()
        for s in sweep.strategies:
            if not ys[s] or s in said:
                continue
            same = next((g for g in groups if s in g), [s])
            said.update(same)
            who = _names(same)
            a, b = ys[s][0], ys[s][-1]
            if a > 0 and b >= DECADE / 5 * a:
                growth.append(f"{who} grow{'s' if len(same) == 1 else ''} {_fmt(b / a)}× "
                              f"({_fmt(a)} to {_fmt(b)})")
            elif max(ys[s]) <= 1.1 * min(ys[s]):
                growth.append(f"{who} stay{'s' if len(same) == 1 else ''} flat at {_fmt(a)}")
        if growth:
            parts.append(f"From {_fmt(lo_x)} to {_fmt(hi_x)} {sweep.x_label}: " + "; ".join(growth) + ".")
    notes = coincide_note(groups)
    if notes:
        parts.append(notes)
    if yscale != "linear":
        parts.append("Logarithmic value axis: the values span more than a decade"
                     + (" (linear near zero, so zeros stay drawn)." if yscale == "symlog" else "."))
    return _finish(fig, name, title, " ".join(parts), width_in=9)


def bars_figure(
    data: Mapping[str, Mapping[str, float]],
    keys: Sequence[tuple[str, str]],
    name: str,
    *,
    title: str,
    ylabel: str,
    unit: str = "",
    conclusion: str = "",
    published: Sequence[tuple[str, float]] = (),
) -> Plot:
    """One group of bars per strategy (``data[strategy][key]``), one bar per ``(key, label)``.

    With several keys each key has its own colour and hatch (the legend shows exactly those);
    with one key each bar takes its strategy's colour. Every bar is annotated with its value,
    and the value axis is logarithmic (symmetric-log with zeros) when the values span a decade,
    so a bar of 2 next to one of 512 stays visible.
    """
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    names = list(data)
    width = 0.8 / max(1, len(keys))
    hatches = ("", "//", "..", "xx")
    key_colours = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    values = [float(data[n][k]) for n in names for k, _ in keys] + [v for _, v in published]
    yscale = _apply_scale(ax, "y", values)
    handles = []
    for k, (key, label) in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(names))]
        ys = [float(data[n][key]) for n in names]
        colours = [key_colours[k % len(key_colours)]] * len(names) if len(keys) > 1 else [
            colour(n.split(" ")[-1].strip("()")) if "(" in n else colour(n) for n in names
        ]
        bars = ax.bar(xs, ys, width, label=label, color=colours, hatch=hatches[k % len(hatches)],
                      edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, labels=[_fmt(v) for v in ys], fontsize=7.5, padding=2)
        handles.append(bars)
    for label, value in published:
        ax.axhline(value, ls=":", color="black", lw=1)
        _reference_label(ax, label, value)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.margins(y=0.15)
    if len(keys) > 1:
        _legend(fig, handles, [lab for _, lab in keys])
    parts = [conclusion] if conclusion else []
    for key, label in keys:
        # Grouped as printed: bars that read the same are said once.
        by_value: dict[str, tuple[float, list[str]]] = {}
        for n in names:
            v = float(data[n][key])
            by_value.setdefault(_fmt(v), (v, []))[1].append(n)
        if len(by_value) == 1 and len(names) > 1:
            parts.append(f"{label}: {next(iter(by_value))}{unit} for every one of them.")
        elif len(keys) > 1 or len(by_value) < len(names):
            ordered = sorted(by_value.items(), key=lambda item: item[1][0])
            said = "; ".join(f"{text}{unit} for {_names(ns)}" for text, (_, ns) in ordered)
            parts.append(f"{label}: {said}.")
    if yscale != "linear":
        parts.append("Logarithmic value axis: the values span more than a decade"
                     + (" (linear near zero, so zero bars sit on the axis)." if yscale == "symlog" else "."))
    return _finish(fig, name, title, " ".join(parts), width_in=9)
