"""The comparison table: one column per strategy, one row per measure, rendered with rich.

Design. Rows are the questions users ask, grouped: what memslot updates cost (latency, ``mmu_lock``
hold and spin, vCPU stall: simulated time), then the work each scheme did (faults, refaults, fast
path, walks, zaps, wraps: the work measures of :mod:`kvmmu.stats`) and whether the oracle saw anything
wrong. Strategies are columns so the table stays readable with six or more of them and many rows;
units are chosen per row (µs for latencies, ms for totals) so it reads without a calculator, while
``summary.csv`` and ``report.json`` keep raw ns. Prior art: ``hyperfine``'s comparison output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rich.table import Table

from kvmmu.mmu.invalidation import resolve_strategy
from kvmmu.sim.results import RunResult

Row = Mapping[str, int | float | str]
Formatter = Callable[[int | float | str], str]


def _us(v: int | float | str) -> str:
    return f"{float(v) / 1e3:,.1f}"


def _ms(v: int | float | str) -> str:
    return f"{float(v) / 1e6:,.3f}"


def _n(v: int | float | str) -> str:
    return f"{int(v):,}"


#: (heading, summary key, formatter), in display order; a ``None`` key starts a section.
ROWS: Sequence[tuple[str, str | None, Formatter | None]] = (
    ("time (simulated)", None, None),
    ("MMU (mmu_lock taken by faults)", "mmu", None),
    ("memslot updates", "updates", _n),
    ("update latency mean (µs)", "update_latency_mean_ns", _us),
    ("update latency p99 (µs)", "update_latency_p99_ns", _us),
    ("update latency max (µs)", "update_latency_max_ns", _us),
    ("mmu_lock held for write (ms)", "mmu_lock_hold_ns", _ms),
    ("mmu_lock held for read (ms)", "mmu_lock_read_hold_ns", _ms),
    ("mmu_lock spin (ms)", "mmu_lock_wait_ns", _ms),
    ("VMM wait for SRCU readers (ms)", "srcu_wait_ns", _ms),
    ("vCPU stall (ms)", "vcpu_stall_ns", _ms),
    ("work (counted)", None, None),
    ("guest accesses", "accesses", _n),
    ("faults", "faults", _n),
    ("refaults", "refaults", _n),
    ("  of RAM / of MMIO", "refaults_split", None),
    ("fast-path hits", "fast_path_hits", _n),
    ("per-vCPU cache hits", "cache_hits", _n),
    ("MMIO exits", "mmio_exits", _n),
    ("shadow pages walked", "shadow_pages_walked", _n),
    ("SPTEs walked", "sptes_walked", _n),
    ("work under mmu_lock", "lock_work", _n),
    ("MMIO SPTEs zapped", "mmio_sptes_zapped", _n),
    ("generation wraps", "generation_wraps", _n),
    ("VMM requests refused", "vmm_errors", _n),
    ("oracle violations", "oracle_violations", _n),
    ("status", "status", None),
)

#: What every measure means, for the report's glossary and anyone reading ``summary.csv``: one
#: entry per summary column (``strategy`` aside). Times are simulated, integer nanoseconds in the
#: data files; counters are KVM's own where KVM has one (named in brackets).
GLOSSARY: Mapping[str, tuple[str, str]] = {
    "updates": ("memslot updates", "KVM_SET_USER_MEMORY_REGION calls that changed the memslots "
                "(refused or no-op requests are not counted here)."),
    "update_latency_mean_ns": ("update latency", "Time from the VMM's KVM_SET_USER_MEMORY_REGION "
                               "to its return, including waits for mmu_lock and for SRCU readers; "
                               "mean, 99th percentile and maximum over the run's updates."),
    "update_latency_p99_ns": ("update latency p99", "The latency 99 % of updates stay under."),
    "update_latency_max_ns": ("update latency max", "The slowest single update."),
    "mmu": ("MMU", "Which MMU ran: shadow (every fault and zap holds mmu_lock for write; the only "
            "MMU before 5.10, and the one this project's host runs) or tdp (the TDP MMU, default on "
            "EPT/NPT hosts from 5.15: faults hold mmu_lock for read and install SPTEs with "
            "cmpxchg; from 5.13 the zapped roots are torn down under the read lock)."),
    "mmu_lock_hold_ns": ("mmu_lock held for write", "Time mmu_lock was held exclusively (for "
                         "write, or the spinlock before 5.12), summed over all threads (vCPUs "
                         "faulting, the VMM invalidating)."),
    "mmu_lock_read_hold_ns": ("mmu_lock held for read", "Time mmu_lock was held for read, summed "
                              "over all threads (TDP MMU faults, the 5.13+ teardown of zapped "
                              "roots): shared, so it blocks only writers. 0 under the shadow MMU."),
    "mmu_lock_wait_ns": ("mmu_lock spin", "Time threads spun waiting for mmu_lock, summed over all "
                         "threads: the contention an invalidation causes."),
    "srcu_wait_ns": ("VMM wait for SRCU readers", "Time the VMM spent in synchronize_srcu waiting for "
                     "vCPUs still using the old memslots."),
    "vcpu_stall_ns": ("vCPU stall", "Time vCPUs spent out of the guest handling their accesses "
                      "(faults, MMIO exits, lock spin included), summed over vCPUs."),
    "accesses": ("guest accesses", "Guest memory accesses the vCPUs issued. The workload is "
                 "sampled: only accesses that can matter to the MMU are simulated."),
    "faults": ("faults", "Page faults that took KVM's slow path (pf_taken): the SPTE was missing "
               "or stale."),
    "refaults": ("refaults", "Slow-path faults on a gfn that had been mapped before: work redone "
                 "because an invalidation threw the SPTE away."),
    "refaults_ram": ("refaults of RAM", "Refaults on RAM gfns (the SPTE pointed to memory)."),
    "refaults_mmio": ("refaults of MMIO", "Refaults on MMIO gfns (an MMIO SPTE was zapped or its "
                      "generation went stale)."),
    "fast_path_hits": ("fast-path hits", "MMIO accesses served by a valid MMIO SPTE without the "
                       "slow path (handle_mmio_page_fault, mmio_fast_path)."),
    "cache_hits": ("per-vCPU cache hits", "MMIO accesses recognised from the per-vCPU MMIO cache "
                   "(vcpu->arch.mmio_gfn / mmio_gen)."),
    "mmio_exits": ("MMIO exits", "Exits to the VMM to emulate an MMIO access (KVM_EXIT_MMIO)."),
    "mmio_sptes_created": ("MMIO SPTEs created", "MMIO SPTEs installed by the slow path "
                           "(pf_mmio_spte_created)."),
    "mmio_sptes_zapped": ("MMIO SPTEs zapped", "MMIO SPTEs removed by an invalidation."),
    "shadow_pages_zapped": ("shadow pages zapped", "Shadow pages freed (mmu_shadow_zapped)."),
    "shadow_pages_walked": ("shadow pages walked", "Shadow pages an invalidation visited: walked "
                            "looking for MMIO SPTEs, or zapped."),
    "sptes_walked": ("SPTEs walked", "SPTEs an invalidation walk examined one by one."),
    "lock_work": ("work under mmu_lock", "Units of work done holding mmu_lock: acquisitions (for "
                  "write or read), plus pages and SPTEs zapped, walked or write-protected."),
    "generation_wraps": ("generation wraps", "Times the MMIO generation wrapped around; each wrap "
                         "zaps every MMIO SPTE so that an old generation cannot match again."),
    "vmm_errors": ("VMM requests refused", "Memslot requests the model refused with an errno "
                   "(EINVAL, EEXIST...); a realistic scenario has none."),
    "oracle_violations": ("oracle violations", "Accesses whose outcome differs from what the "
                          "memslots say (a stale MMIO SPTE used, RAM treated as MMIO...). A correct "
                          "strategy has none."),
    "sim_time_ns": ("simulated time", "The run's length in simulated time."),
    "status": ("status", "correct; historically buggy (the kernel had the bugs `kvmmu strategies` "
               "lists, so oracle violations are expected and marked, not a failed run); "
               "hypothetical (never merged); broken variant (a safeguard removed on purpose)."),
    "wall_s": ("wall time", "Seconds the host took to simulate the run (not a property of KVM)."),
}

#: The flat columns of the HTML table (heading, key, formatter): the rows above that have a key.
COLUMNS: Sequence[tuple[str, str, Formatter]] = tuple(
    (h, k, f) for h, k, f in ROWS if k is not None and f is not None
)


def _cell(row: Row, key: str, fmt: Formatter | None) -> str:
    if key == "refaults_split":
        return f"{int(row['refaults_ram']):,} / {int(row['refaults_mmio']):,}"
    if key in ("status", "mmu"):
        expected = row[key] in ("historically buggy", "broken variant")
        return f"[yellow]{row[key]}[/yellow]" if expected else str(row[key])
    assert fmt is not None
    text = fmt(row[key])
    if key == "oracle_violations" and int(row[key]):
        # A kernel that had these bugs is expected to show them: marked, not alarming.
        expected = row.get("status") in ("historically buggy", "broken variant")
        return f"[yellow]{text} (expected)[/yellow]" if expected else f"[bold red]{text}[/bold red]"
    return text


def count(n: int, noun: str) -> str:
    """``1 vCPU``, ``2 vCPUs``: a number with its noun, in the right number."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def title(run: RunResult) -> str:
    """The one-line description of a run, above its table."""
    p = run.params
    active = p.get("active_vcpus", p.get("vcpus"))
    return (
        f"kvmmu run: {run.scenario}, {count(int(p.get('vcpus', 0)), 'vCPU')} ({active} active), "
        f"{int(p.get('memory', 0)) >> 20:,} MiB RAM, {int(p.get('duration_ns', 0)) / 1e6:g} ms "
        f"simulated, DELETE/MOVE zap: {p.get('slot_zap', 'all')}, seed {run.seed}"
    )


def comparison_table(run: RunResult) -> Table:
    """The rich table comparing the strategies of ``run``."""
    table = Table(title=title(run), title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    rows = [r.summary() for r in run.strategies]
    for r in run.strategies:
        table.add_column(r.strategy.replace("+", "\n+"), justify="right", no_wrap=True)
    for heading, key, fmt in ROWS:
        if key is None:
            table.add_row(f"[dim italic]{heading}[/dim italic]", *["" for _ in rows])
            continue
        table.add_row(heading, *[_cell(row, key, fmt) for row in rows])
    # Which kernel each column is, and whether its violations are expected (a historically buggy
    # kernel or a broken variant) or a failure of the model.
    table.add_row("kernels", *[resolve_strategy(r.strategy).kernels.split(" (")[0]
                               for r in run.strategies])
    return table
