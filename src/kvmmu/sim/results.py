"""Plain result values of a timed run: what ``kvmmu.report`` renders and tests assert on.

Design. Results are frozen, slotted dataclasses of numbers, strings and tuples, with no reference
to the engine, the VM or the scenario objects, so that the report layer depends on this module only
(and a result can be pickled across processes for sweeps). Aggregates that every consumer needs
(mean, p99) are computed once, here. Prior art: SimPy leaves monitoring to the user; this follows
the "collect raw, summarise once" shape of pytest-benchmark's stats objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kvmmu.mmu.invalidation import resolve_strategy
from kvmmu.stats import lock_work, shadow_pages_walked

#: Column names of the comparison table and of ``summary.csv``, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "mmu",
    "updates",
    "update_latency_mean_ns",
    "update_latency_p99_ns",
    "update_latency_max_ns",
    "mmu_lock_hold_ns",
    "mmu_lock_read_hold_ns",
    "mmu_lock_wait_ns",
    "srcu_wait_ns",
    "vcpu_stall_ns",
    "accesses",
    "faults",
    "refaults",
    "refaults_ram",
    "refaults_mmio",
    "fast_path_hits",
    "cache_hits",
    "mmio_exits",
    "mmio_sptes_created",
    "mmio_sptes_zapped",
    "shadow_pages_zapped",
    "shadow_pages_walked",
    "sptes_walked",
    "lock_work",
    "generation_wraps",
    "oracle_violations",
    "status",
    "vmm_errors",
    "sim_time_ns",
    "wall_s",
)


def _status(name: str) -> str:
    """The strategy's status (``Strategy.status``), or ``unknown`` for a name no table has."""
    try:
        return resolve_strategy(name).status
    except ValueError:
        return "unknown"


def percentile(values: Sequence[int], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation, as numpy's default; 0 if empty."""
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of one thread's timeline (a fault, a lock wait, a memslot update...)."""

    tid: int
    name: str
    cat: str
    start_ns: int
    dur_ns: int


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """One ``KVM_SET_USER_MEMORY_REGION`` the VMM issued."""

    time_ns: int
    op: str
    slot: int
    change: str  # the model's Change, or "error"
    latency_ns: int
    error: str = ""
    #: Index of the VMM action it belongs to (a remap is a delete and a create).
    action: int = 0


@dataclass(frozen=True, slots=True)
class ThreadResult:
    """One simulated thread's time accounting."""

    tid: int
    name: str
    kind: str  # "vcpu" or "vmm"
    accesses: int
    trapped: int
    stall_ns: int
    lock_wait_ns: int
    lock_hold_ns: int
    srcu_wait_ns: int
    #: Time holding ``mmu_lock`` for read (TDP MMU faults, the 5.13+ root teardown): shared, so it
    #: blocks only writers; ``lock_hold_ns`` is the exclusive (write) hold alone.
    lock_read_hold_ns: int = 0


@dataclass(frozen=True, slots=True)
class Series:
    """Per-bin counts over simulated time (``bin_ns`` wide bins from 0)."""

    bin_ns: int
    lock_hold_ns: tuple[int, ...]
    faults: tuple[int, ...]
    refaults: tuple[int, ...]
    updates: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """Everything one strategy's run measured."""

    strategy: str
    sim_time_ns: int
    wall_s: float
    steps: int
    events: int
    updates: tuple[UpdateRecord, ...]
    threads: tuple[ThreadResult, ...]
    stall_samples: tuple[int, ...]  # per trapped access, ns (capped, see stall_samples_dropped)
    stall_samples_dropped: int
    series: Series
    spans: tuple[Span, ...]
    spans_dropped: int
    refaults_ram: int
    refaults_mmio: int
    vmm_errors: int
    #: The VM's own counters at the end (``VM.stats``), named like KVM's.
    stats: Mapping[str, int] = field(default_factory=dict)
    #: The oracle's first violations, as it describes them.
    violations: tuple[str, ...] = ()
    #: Which MMU ran: ``shadow`` (mmu_lock for write everywhere) or ``tdp`` (the TDP MMU).
    mmu: str = "shadow"

    @property
    def latencies(self) -> list[int]:
        """Latency of every update that changed something (ns)."""
        return [u.latency_ns for u in self.updates if u.change not in ("error", "none")]

    def action_latencies(self, op: str | None = None) -> list[int]:
        """Latency of every VMM action (a remap's delete and create together), optionally one op."""
        total: dict[int, int] = {}
        for u in self.updates:
            if op is None or u.op == op:
                total[u.action] = total.get(u.action, 0) + u.latency_ns
        return list(total.values())

    def summary(self) -> dict[str, int | float | str]:
        """One row of the comparison table (keys: :data:`SUMMARY_COLUMNS`)."""
        lat = self.latencies
        st = self.stats
        vcpus = [t for t in self.threads if t.kind == "vcpu"]
        row: dict[str, int | float | str] = {
            "strategy": self.strategy,
            "mmu": self.mmu,
            "updates": len(lat),
            "update_latency_mean_ns": (sum(lat) / len(lat)) if lat else 0.0,
            "update_latency_p99_ns": percentile(lat, 99),
            "update_latency_max_ns": max(lat) if lat else 0,
            "mmu_lock_hold_ns": sum(t.lock_hold_ns for t in self.threads),
            "mmu_lock_read_hold_ns": sum(t.lock_read_hold_ns for t in self.threads),
            "mmu_lock_wait_ns": sum(t.lock_wait_ns for t in self.threads),
            "srcu_wait_ns": sum(t.srcu_wait_ns for t in self.threads),
            "vcpu_stall_ns": sum(t.stall_ns for t in vcpus),
            "accesses": sum(t.accesses for t in vcpus),
            "faults": st.get("pf_taken", 0),
            "refaults": st.get("refaults", 0),
            "refaults_ram": self.refaults_ram,
            "refaults_mmio": self.refaults_mmio,
            "fast_path_hits": st.get("mmio_fast_path", 0),
            "cache_hits": st.get("mmio_cache_hits", 0),
            "mmio_exits": st.get("mmio_exits", 0),
            "mmio_sptes_created": st.get("pf_mmio_spte_created", 0),
            "mmio_sptes_zapped": st.get("mmio_sptes_zapped", 0),
            "shadow_pages_zapped": st.get("mmu_shadow_zapped", 0),
            "shadow_pages_walked": shadow_pages_walked(st),
            "sptes_walked": st.get("invalidation_sptes_walked", 0),
            "lock_work": lock_work(st),
            "generation_wraps": st.get("generation_wraps", 0),
            "oracle_violations": st.get("oracle_violations", 0),
            # Whether violations are expected: a historically buggy kernel or a broken variant.
            "status": _status(self.strategy),
            "vmm_errors": self.vmm_errors,
            "sim_time_ns": self.sim_time_ns,
            "wall_s": round(self.wall_s, 3),
        }
        return row


@dataclass(frozen=True, slots=True)
class RunResult:
    """A scenario run under one or more strategies."""

    scenario: str
    description: str
    seed: int
    costs_path: str
    costs: Mapping[str, int]
    params: Mapping[str, int | str]
    strategies: tuple[StrategyResult, ...]

    def by_strategy(self, name: str) -> StrategyResult:
        for r in self.strategies:
            if r.strategy == name:
                return r
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One strategy's summary at one value of a swept parameter."""

    x: int
    strategy: str
    row: Mapping[str, int | float | str]


@dataclass(frozen=True, slots=True)
class Sweep:
    """A parameter sweep: the same measurement at several values of ``x`` for each strategy."""

    name: str
    x_label: str
    points: tuple[SweepPoint, ...]

    def series(self, strategy: str, key: str) -> tuple[list[int], list[float]]:
        """``(xs, ys)`` of ``key`` for ``strategy``, in increasing x."""
        pts = sorted((p.x, float(p.row[key])) for p in self.points if p.strategy == strategy)
        return [x for x, _ in pts], [y for _, y in pts]

    @property
    def strategies(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.points:
            seen.setdefault(p.strategy, None)
        return list(seen)
