"""The comparison table: one row per strategy, human units, rendered with rich.

Design. The columns are the questions users ask (update latency, lock hold, stalls, refaults, what
the fast path saved, correctness); units are chosen per column (µs for latencies, ms for totals)
so the table reads without a calculator. ``summary.csv`` and ``report.json`` keep raw ns. Prior
art: ``hyperfine``'s result table, rich's ``Table``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rich.table import Table

from kvmmu.sim.results import RunResult

Row = Mapping[str, int | float | str]


def _us(v: int | float | str) -> str:
    return f"{float(v) / 1e3:,.1f}"


def _ms(v: int | float | str) -> str:
    return f"{float(v) / 1e6:,.3f}"


def _n(v: int | float | str) -> str:
    return f"{int(v):,}"


#: (header, summary key, formatter, justify)
COLUMNS: Sequence[tuple[str, str, Callable[[int | float | str], str]]] = (
    ("updates", "updates", _n),
    ("update mean µs", "update_latency_mean_ns", _us),
    ("update p99 µs", "update_latency_p99_ns", _us),
    ("mmu_lock held ms", "mmu_lock_hold_ns", _ms),
    ("lock spin ms", "mmu_lock_wait_ns", _ms),
    ("vCPU stall ms", "vcpu_stall_ns", _ms),
    ("faults", "faults", _n),
    ("refaults", "refaults", _n),
    ("fast-path hits", "fast_path_hits", _n),
    ("cache hits", "cache_hits", _n),
    ("MMIO SPTEs zapped", "mmio_sptes_zapped", _n),
    ("wraps", "generation_wraps", _n),
    ("oracle violations", "oracle_violations", _n),
)


def comparison_table(run: RunResult, title: str | None = None) -> Table:
    """The rich table comparing the strategies of ``run``."""
    params = run.params
    table = Table(
        title=title
        or (
            f"{run.scenario}: {params.get('vcpus')} vCPUs, "
            f"{int(params.get('memory', 0)) >> 20} MiB, "
            f"{int(params.get('duration_ns', 0)) / 1e6:g} ms simulated, seed {run.seed}"
        ),
        title_justify="left",
    )
    table.add_column("strategy", style="bold")
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right")
    for r in run.strategies:
        row = r.summary()
        cells = [fmt(row[key]) for _, key, fmt in COLUMNS]
        style = "red" if int(row["oracle_violations"]) else None
        table.add_row(str(row["strategy"]), *cells, style=style)
    return table
