"""``kvmmu plot``: the issue's figures, simulated, printed and drawn.

Parsing and formatting only: the experiments are :mod:`kvmmu.sim.experiments`, the drawing is
:mod:`kvmmu.report.plots`. Each figure prints its numbers (never tuned to a published figure; the
published ones are shown beside the model's) and writes a PNG; all numbers also go to
``figures.json``. The output directory is replaced atomically.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kvmmu.cli.progress import progress_bar
from kvmmu.cli.strategies import StrategyParam
from kvmmu.mmu.invalidation import STRATEGIES
from kvmmu.report.atomic import OutputError, atomic_directory, check_output_dir
from kvmmu.report.html import figures_html
from kvmmu.report.plots import Plot, bars_figure, sweep_figure
from kvmmu.report.seed import seed_figure, seed_numbers
from kvmmu.sim import experiments as ex
from kvmmu.sim.costs import CostError, CostModel, load_costs
from kvmmu.sim.results import Sweep

FIGURES = ("seed", "shadow-pages", "refaults", "fast-zap", "vcpus", "mmu")
VCPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
QUICK_VCPU_COUNTS = (1, 4, 16, 64)
MMU_VCPU_COUNTS = (1, 2, 4, 8, 16, 32)
QUICK_MMU_VCPU_COUNTS = (1, 4, 16)
LEAF_PAGES = (1, 4, 16, 64, 256, 1024, 4096)
QUICK_LEAF_PAGES = (1, 16, 256)
#: The seed figure: 10^2 to 10^5 shadow pages (issue 9), 10^2 to 10^4 warm pages per vCPU.
SEED_PAGES = (100, 1_000, 10_000, 100_000)
QUICK_SEED_PAGES = (100, 1_000, 10_000)
SEED_WARM = (100, 1_000, 10_000)
QUICK_SEED_WARM = (100, 1_000)


class InputError(click.ClickException):
    """Bad input: one line (``Error: ...``) on stderr and exit status 2."""

    exit_code = 2


def _sweep_table(sweep: Sweep, key: str, unit: str, scale: float) -> Table:
    table = Table(title=f"{sweep.name}: {key} ({unit})", title_justify="left")
    table.add_column(sweep.x_label, justify="right")
    for s in sweep.strategies:
        table.add_column(s, justify="right")
    xs = sorted({p.x for p in sweep.points})
    for x in xs:
        cells = []
        for s in sweep.strategies:
            v = next((float(p.row[key]) for p in sweep.points if p.x == x and p.strategy == s), 0)
            cells.append(f"{v / scale:,.1f}")
        table.add_row(f"{x:,}", *cells)
    return table


def _sweep_json(sweep: Sweep, keys: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": sweep.name,
        "x_label": sweep.x_label,
        "points": [{"x": p.x, "strategy": p.strategy, **{k: p.row[k] for k in keys}} for p in sweep.points],
    }


def _crossover(sweep: Sweep, a: str, b: str, key: str) -> int | None:
    """The smallest x from which ``a``'s ``key`` stays above ``b``'s (None: never)."""
    xa, ya = sweep.series(a, key)
    xb, yb = sweep.series(b, key)
    above = dict(zip(xa, ya, strict=True))
    other = dict(zip(xb, yb, strict=True))
    xs = sorted(set(above) & set(other))
    for i, x in enumerate(xs):
        if all(above[y] > other[y] for y in xs[i:]):
            return x
    return None


@click.command("plot")
@click.argument("figures", nargs=-1, type=click.Choice([*FIGURES, "all"]), metavar="[FIGURE]...")
@click.option(
    "-s",
    "--strategy",
    "strategies",
    multiple=True,
    type=StrategyParam(),
    metavar="NAME",
    help=f"Strategy to include (repeatable). Default: all of {', '.join(STRATEGIES)}.",
)
@click.option(
    "--costs",
    "costs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cost profile (TOML). Default: the packaged profile.",
)
@click.option(
    "--out",
    "out_dir",
    default="kvmmu-out/figures",
    show_default=True,
    help="Folder for the PNGs and figures.json: new, empty, or written by kvmmu before "
    "(replaced atomically; a folder holding other files is refused, never emptied).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes for the sweeps (a dask LocalCluster when > 1).",
)
@click.option("--quick", is_flag=True, help="Fewer sweep points (seconds instead of minutes).")
@click.option(
    "--time-limit",
    type=click.FloatRange(0.1, 7 * 24 * 3600),
    metavar="SECONDS",
    help="Stop after this many seconds: the figures finished by then are written, the rest "
    "listed as not drawn (exit status 3).",
)
def command(
    figures: tuple[str, ...],
    strategies: tuple[str, ...],
    costs_path: Path | None,
    out_dir: str,
    workers: int,
    quick: bool,
    time_limit: float | None,
) -> None:
    """Simulate and draw the figures: FIGURE is one or more of seed, shadow-pages, refaults,
    fast-zap, vcpus, or all (the default).

    \b
    seed          the 2013 seed mail in one picture: CREATE latency of the walks
                  (zap-all-3.9, zap-mmio-3.10) vs the generation, 10^2..10^5
                  shadow pages, beside zap-all-fast's refault cost
    shadow-pages  memslot CREATE latency and mmu_lock hold vs live shadow pages
    refaults      RAM and MMIO refaults after one memslot CREATE, per strategy
    fast-zap      delete+add on a 6-vCPU 2 GiB idle guest, next to the published
                  46.1 ms (before fast zap) and 21.6 ms (after)
    vcpus         vCPU stall time vs vCPU count, 1..512
    mmu           who waits for a memslot delete with every vCPU running: the
                  shadow MMU (faults and the zap take mmu_lock for write) vs the
                  TDP MMU (both for read, 5.13+), 1..32 vCPUs, under generation
    """
    if time_limit is not None and not math.isfinite(time_limit):  # click lets nan through
        raise InputError(f"--time-limit: must be a number of seconds (got {time_limit})")
    chosen = list(FIGURES) if not figures or "all" in figures else list(dict.fromkeys(figures))
    names = list(strategies) or list(STRATEGIES)
    try:
        costs = load_costs(costs_path)
        out = check_output_dir(out_dir)
    except (CostError, OutputError) as exc:
        raise InputError(str(exc)) from None
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    err = Console(stderr=True)
    numbers: dict[str, Any] = {"costs": costs.path, "strategies": names}
    captions: dict[str, str] = {}
    t0 = time.perf_counter()

    deadline = t0 + time_limit if time_limit is not None else None

    bar = progress_bar(err)
    # One unit per simulation the figures announce (ETA from the pace so far: points differ in
    # cost, so it is a guide, not a promise).
    task = bar.add_task("simulating", total=sum(_simulations(f, len(names), quick) for f in chosen))

    def note(what: str) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            raise _TimeUp  # between two simulations: the figure in progress is dropped
        bar.update(task, advance=1, description=what)

    drawn: list[str] = []
    with bar, atomic_directory(out) as tmp:
        for fig in chosen:
            try:
                numbers[fig] = _FIGURE[fig](names, costs, tmp, console, workers, quick, note, captions)
            except _TimeUp:
                break
            drawn.append(fig)
        numbers["not_drawn_time_limit"] = chosen[len(drawn):]
        numbers["captions"] = captions
        (tmp / "figures.json").write_text(json.dumps(numbers, indent=1) + "\n", "utf-8")
        (tmp / "index.html").write_text(figures_html(captions), "utf-8")
    console.print(f"figures in {out}/ ({time.perf_counter() - t0:.1f} s)")
    if len(drawn) < len(chosen):
        click.echo(
            f"kvmmu: --time-limit {time_limit:g} s reached: {len(drawn)} of {len(chosen)} figures "
            f"drawn; not drawn: {', '.join(chosen[len(drawn):])}",
            err=True,
        )
        raise SystemExit(3)


def _simulations(figure: str, strategies: int, quick: bool) -> int:
    """How many progress notes ``figure`` makes (one per simulation it announces)."""
    if figure == "seed":
        seed = QUICK_SEED_PAGES if quick else SEED_PAGES
        warm = QUICK_SEED_WARM if quick else SEED_WARM
        return len(seed) * len(ex.SEED_WALKS) + len(warm) * len(ex.SEED_REFAULTS)
    if figure == "shadow-pages":
        return len(QUICK_LEAF_PAGES if quick else LEAF_PAGES) * strategies
    if figure == "fast-zap":
        return strategies + len(ex.FAST_ZAP_ERAS)
    if figure == "vcpus":
        return len(QUICK_VCPU_COUNTS if quick else VCPU_COUNTS) * strategies
    if figure == "mmu":
        return 2 * len(QUICK_MMU_VCPU_COUNTS if quick else MMU_VCPU_COUNTS)
    return 1  # refaults: one note for the whole figure


class _TimeUp(Exception):
    """--time-limit reached: unwinds the figure in progress from its progress callback."""


Note = Any


def _save(plot: Plot, out: Path, captions: dict[str, str]) -> None:
    """Write ``plot``'s PNG into ``out`` and remember its caption for figures.json/index.html."""
    plot.save(out)
    captions[plot.name] = plot.caption


def _seed(
    names: list[str],
    costs: CostModel,
    out: Path,
    console: Console,
    workers: int,
    quick: bool,
    note: Note,
    captions: dict[str, str],
) -> dict[str, Any]:
    data = ex.seed_argument(costs, QUICK_SEED_PAGES if quick else SEED_PAGES,
                            QUICK_SEED_WARM if quick else SEED_WARM, progress=note)
    console.print(_sweep_table(data["sweep"], "update_latency_mean_ns", "µs", 1e3))
    table = Table(title=f"one CREATE: vCPU time lost refaulting ({data['vcpus']} vCPUs)",
                  title_justify="left")
    for col in ("warm pages per vCPU", "zap-all-fast refaults", "extra vCPU time (ms)",
                "generation refaults"):
        table.add_column(col, justify="right")
    for fast, gen in zip(data["refaults"]["zap-all-fast"], data["refaults"]["generation"],
                         strict=True):
        table.add_row(f"{int(fast['warm_pages']):,}", f"{int(fast['refaults_ram']):,}",
                      f"{fast['extra_stall_ns'] / 1e6:.3f}", f"{int(gen['refaults_ram']):,}")
    console.print(table)
    _save(seed_figure(data), out, captions)
    return seed_numbers(data)


def _shadow_pages(
    names: list[str],
    costs: CostModel,
    out: Path,
    console: Console,
    workers: int,
    quick: bool,
    note: Note,
    captions: dict[str, str],
) -> dict[str, Any]:
    pages = QUICK_LEAF_PAGES if quick else LEAF_PAGES
    sweep = ex.shadow_page_sweep(pages, names, costs, workers=workers, progress=note)
    console.print(_sweep_table(sweep, "update_latency_mean_ns", "µs", 1e3))
    console.print(_sweep_table(sweep, "vmm_lock_hold_per_update_ns", "µs", 1e3))
    cross = None
    if {"zap-all-3.9", "generation"} <= set(names):
        cross = _crossover(sweep, "zap-all-3.9", "generation", "update_latency_mean_ns")
        console.print(
            f"zap-all-3.9's CREATE costs more than the generation's from {cross} leaf pages on"
            if cross is not None
            else "zap-all-3.9 never costs more than the generation in this range"
        )
    lead = (
        "Walking strategies (zap-all-3.9 frees every page, zap-mmio-3.10 visits every page) pay "
        "per shadow page on every CREATE; generation bumps pay nothing per page, so their "
        "latency stays flat."
    )
    _save(
        sweep_figure(
            sweep,
            "update_latency_mean_ns",
            "update_latency_vs_shadow_pages.png",
            ylabel="memslot CREATE latency (µs)",
            scale=1e3,
            title="memslot CREATE latency vs live shadow pages",
            conclusion=lead,
        ),
        out,
        captions,
    )
    _save(
        sweep_figure(
            sweep,
            "vmm_lock_hold_per_update_ns",
            "lock_hold_vs_shadow_pages.png",
            ylabel="mmu_lock held per update (µs)",
            scale=1e3,
            title="mmu_lock held per memslot CREATE vs live shadow pages",
            conclusion="The time vCPUs cannot fault while the VMM updates memslots: zero for the "
            "generation strategies, which never take mmu_lock on a CREATE.",
        ),
        out,
        captions,
    )
    keys = ("shadow_pages", "update_latency_mean_ns", "vmm_lock_hold_per_update_ns")
    return {**_sweep_json(sweep, keys), "crossover_zap_all_3_9_over_generation": cross}


def _refaults(
    names: list[str],
    costs: CostModel,
    out: Path,
    console: Console,
    workers: int,
    quick: bool,
    note: Note,
    captions: dict[str, str],
) -> dict[str, Any]:
    vcpus, pages = (2, 256) if quick else (4, 1024)
    note("refaults after a CREATE")
    data = ex.refault_after_create(names, costs, vcpus=vcpus, pages=pages)
    table = Table(
        title=f"refaults after one memslot CREATE ({vcpus} vCPUs x {pages} warm pages)", title_justify="left"
    )
    for col in ("strategy", "RAM refaults", "MMIO refaults", "working set pages"):
        table.add_column(col, justify="right")
    for s, d in data.items():
        table.add_row(s, f"{d['refaults_ram']:,}", f"{d['refaults_mmio']:,}", f"{d['working_set_pages']:,}")
    console.print(table)
    _save(
        bars_figure(
            {s: {k: float(v) for k, v in d.items()} for s, d in data.items()},
            [("refaults_ram", "RAM refaults"), ("refaults_mmio", "MMIO refaults")],
            "refaults_after_create.png",
            title=f"Refaults after one memslot CREATE ({vcpus} vCPUs, {pages} warm pages each)",
            ylabel="slow-path refaults (count)",
            conclusion="A CREATE can only make MMIO SPTEs wrong, so the ideal is to refault the "
            "MMIO pages alone; a strategy that refaults RAM pages throws away good SPTEs "
            f"(the dotted line is the whole working set, {vcpus * pages:,} pages).",
            published=[("whole working set", float(vcpus * pages))],
        ),
        out,
        captions,
    )
    return {"vcpus": vcpus, "pages_per_vcpu": pages, "by_strategy": data}


def _fast_zap(
    names: list[str],
    costs: CostModel,
    out: Path,
    console: Console,
    workers: int,
    quick: bool,
    note: Note,
    captions: dict[str, str],
) -> dict[str, Any]:
    data = ex.fast_zap_2013(names, costs, progress=lambda s: note(f"fast-zap-2013 {s}"))
    eras = ex.fast_zap_eras(costs, progress=lambda s: note(f"fast-zap-2013 {s}"))
    pub = ex.PUBLISHED_FAST_ZAP_MS
    table = Table(
        title="delete+add of a memslot, 6 vCPUs, 2 GiB mapped, idle vCPUs (default profile)",
        title_justify="left",
    )
    for col in ("configuration", "model (ms)", "published (ms)", "mmu_lock held (ms)", "pages zapped"):
        table.add_column(col, justify="right")
    for era, (strategy, slot_zap) in ex.FAST_ZAP_ERAS.items():
        d = eras[era]
        table.add_row(
            f"{era} fast zap: {strategy}, slot_zap={slot_zap}",
            f"{d['delete_add_mean_ms']:.2f}",
            f"{pub[era]:.1f}",
            f"{d['lock_hold_per_op_ms']:.2f}",
            f"{int(d['shadow_pages_zapped']):,}",
        )
    for s, d in data.items():
        table.add_row(
            f"{s}, slot_zap=all",
            f"{d['delete_add_mean_ms']:.2f}",
            "",
            f"{d['lock_hold_per_op_ms']:.2f}",
            f"{int(d['shadow_pages_zapped']):,}",
        )
    console.print(table)
    console.print(
        "[dim]before: 3.10's kvm_mmu_zap_all on DELETE (one mmu_lock hold) and the mmio_cached walk "
        "on the add; after: 3.11's kvm_mmu_zap_all_fast and a generation bump. The model charges "
        "the same per page and per live entry in both; the series credits its gain to work the "
        "model does not have (rmap and parent-list teardown, TLB flushes collapsed: commits "
        "5304b8d37c2a and f34d251d66ba), so with idle vCPUs the model shows no gap.[/dim]"
    )
    bars = {f"{era} ({ex.FAST_ZAP_ERAS[era][0]})": d for era, d in eras.items()} | data
    _save(
        bars_figure(
            bars,
            [("delete_add_mean_ms", "delete+add latency")],
            "fast_zap_2013.png",
            title="delete+add of a memslot: model vs published (6 vCPUs, 2 GiB, idle)",
            ylabel="delete+add latency (ms)",
            unit=" ms",
            conclusion="The published 2013 series measured 46.1 ms before fast zap and 21.6 ms "
            "after (dotted lines). The model charges both zap paths the same work per page, so "
            "it shows no such gap: the series credits its gain to work the model does not "
            "have (rmap and parent-list teardown, TLB flushes).",
            published=[
                (f"published before: {pub['before']} ms", pub["before"]),
                (f"published after: {pub['after']} ms", pub["after"]),
            ],
        ),
        out,
        captions,
    )
    return {"published_ms": pub, "model_eras": eras, "model": data}


def _vcpus(
    names: list[str],
    costs: CostModel,
    out: Path,
    console: Console,
    workers: int,
    quick: bool,
    note: Note,
    captions: dict[str, str],
) -> dict[str, Any]:
    counts = QUICK_VCPU_COUNTS if quick else VCPU_COUNTS
    sweep = ex.vcpu_sweep(counts, names, costs, workers=workers, progress=note)
    console.print(_sweep_table(sweep, "stall_per_vcpu_ns", "µs per vCPU", 1e3))
    _save(
        sweep_figure(
            sweep,
            "stall_per_vcpu_ns",
            "stall_vs_vcpus.png",
            ylabel="vCPU stall per vCPU (µs)",
            scale=1e3,
            title=f"vCPU stall per vCPU vs vCPU count ({sweep.name.split(':')[0]})",
            conclusion="A flat line scales: each vCPU stalls as long with many siblings as alone. "
            "A rising line means vCPUs wait for each other (mmu_lock spin, or refaulting what an "
            "invalidation threw away).",
        ),
        out,
        captions,
    )
    _save(
        sweep_figure(
            sweep,
            "vcpu_stall_ns",
            "total_stall_vs_vcpus.png",
            ylabel="total vCPU stall, all vCPUs (ms)",
            scale=1e6,
            title=f"total vCPU stall vs vCPU count ({sweep.name.split(':')[0]})",
            conclusion="The whole guest's lost time: it grows with the vCPU count even when each "
            "vCPU's stall stays flat.",
        ),
        out,
        captions,
    )
    keys = ("stall_per_vcpu_ns", "lock_wait_per_vcpu_ns", "vcpu_stall_ns", "mmu_lock_hold_ns")
    return _sweep_json(sweep, keys)


def _mmu(
    names: list[str],
    costs: CostModel,
    out: Path,
    console: Console,
    workers: int,
    quick: bool,
    note: Note,
    captions: dict[str, str],
) -> dict[str, Any]:
    # The MMU is what varies: one strategy, the modern kernel's (the only one with a TDP MMU that
    # tears roots down under the read lock); -s does not apply.
    counts = QUICK_MMU_VCPU_COUNTS if quick else MMU_VCPU_COUNTS
    sweep = ex.mmu_sweep(counts, costs, progress=note)
    console.print(_sweep_table(sweep, "stall_per_vcpu_ns", "µs per vCPU", 1e3))
    _save(
        sweep_figure(
            sweep,
            "vcpu_lock_wait_ns",
            "mmu_lock_wait_vs_vcpus.png",
            ylabel="vCPUs' mmu_lock spin, all vCPUs (ms)",
            scale=1e6,
            title="who waits for a memslot delete: vCPU spin on mmu_lock, shadow vs TDP MMU",
            conclusion="Under the shadow MMU every faulting vCPU spins while the zap holds "
            "mmu_lock for write, and for each other's refaults after it; the TDP MMU's faults and "
            "its teardown of the zapped roots share the lock for read, so vCPUs spin only around "
            "the short write-locked steps (the generation bump, their root reloads).",
        ),
        out,
        captions,
    )
    _save(
        sweep_figure(
            sweep,
            "delete_latency_ns",
            "delete_latency_vs_vcpus.png",
            ylabel="KVM_SET_USER_MEMORY_REGION (delete) latency (ms)",
            scale=1e6,
            title="memslot delete latency vs vCPU count, shadow vs TDP MMU",
            conclusion="The ioctl waits for the whole zap either way (5.13+ tears the roots down "
            "before returning, v6.8 kvm_tdp_mmu_zap_invalidated_roots()), and the zap grows with "
            "the memory mapped (32 MiB more per vCPU here); the MMU changes who else waits, not "
            "how long the VMM does.",
        ),
        out,
        captions,
    )
    keys = ("delete_latency_ns", "vcpu_lock_wait_ns", "stall_per_vcpu_ns", "mmu_lock_hold_ns",
            "mmu_lock_read_hold_ns")
    return _sweep_json(sweep, keys)


_FIGURE = {
    "seed": _seed,
    "shadow-pages": _shadow_pages,
    "refaults": _refaults,
    "fast-zap": _fast_zap,
    "vcpus": _vcpus,
    "mmu": _mmu,
}
