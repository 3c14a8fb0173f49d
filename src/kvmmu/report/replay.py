"""Which strategy makes a recorded VMM's memslot churn cheapest, and why, from a replay's results.

Design. A replay (``kvmmu replay``) runs the same recorded requests and accesses under every
strategy, so the differences between strategies are the differences the churn makes.  The churn
costs twice: the VMM waits in its ioctls (update latency, including the ``mmu_lock`` work a change
does: walks, zaps) and the vCPUs pay afterwards (stall: refaults of what a change zapped, MMIO
SPTEs rebuilt, spins on ``mmu_lock``).  :func:`verdict` ranks the strategies by the sum of the two,
names the cheapest and explains each other strategy's extra cost by the work counters that differ
(shadow pages walked and zapped, MMIO SPTEs zapped, ``kvm_mmu_zap_all_fast``, refaults), with the
strategy's own one-line description of what it does on a change.

Prior art: the "explain the winner" summaries of benchmark harnesses (hyperfine's "X ran N times
faster than Y"), here with the counters that account for the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmmu.mmu.invalidation import resolve_strategy
from kvmmu.sim.results import RunResult, StrategyResult


@dataclass(frozen=True, slots=True)
class Cost:
    """What the churn cost under one strategy (ns) and the work that explains it."""

    strategy: str
    update_ns: int
    stall_ns: int
    updates: int
    work: dict[str, int]
    #: Oracle violations in this run, or the strategy is a kernel with known bugs, a broken
    #: variant or hypothetical: it may be cheap by skipping what correctness needs.
    suspect: str = ""

    @property
    def total_ns(self) -> int:
        return self.update_ns + self.stall_ns


#: Work counters that differ between strategies, with how a sentence names them.
WORK: tuple[tuple[str, str], ...] = (
    ("zap_all_fast", "kvm_mmu_zap_all_fast"),
    ("shadow_pages_walked", "shadow pages walked"),
    ("shadow_pages_zapped", "shadow pages zapped"),
    ("mmio_sptes_zapped", "MMIO SPTEs zapped"),
    ("mmio_sptes_created", "MMIO SPTEs built"),
    ("refaults", "refaults"),
    ("mmio_fast_invalid", "stale MMIO SPTEs refused"),
)


def cost_of(r: StrategyResult) -> Cost:
    row = r.summary()
    work = {
        "zap_all_fast": int(r.stats.get("zap_all_fast", 0)),
        "shadow_pages_walked": int(row.get("shadow_pages_walked", 0)),
        "shadow_pages_zapped": int(row.get("shadow_pages_zapped", 0)),
        "mmio_sptes_zapped": int(row.get("mmio_sptes_zapped", 0)),
        "mmio_sptes_created": int(row.get("mmio_sptes_created", 0)),
        "refaults": int(row.get("refaults", 0)),
        "mmio_fast_invalid": int(r.stats.get("mmio_fast_invalid", 0)),
    }
    vcpu_stall = sum(t.stall_ns for t in r.threads if t.kind == "vcpu")
    suspect = ""
    if r.violations:
        suspect = f"{len(r.violations)} oracle violations in this run"
    else:
        try:
            st = resolve_strategy(r.strategy)
        except (KeyError, ValueError):
            st = None
        if st is not None and st.known_bugs:
            suspect = "historically buggy: " + st.known_bugs[0]
        elif st is not None and st.broken:
            suspect = "a deliberately broken variant"
    return Cost(r.strategy, sum(r.latencies), vcpu_stall, len(r.latencies), work, suspect)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The ranking and the sentences that explain it."""

    ranking: tuple[Cost, ...]
    lines: tuple[str, ...]
    #: The cheapest strategy that is correct (see :func:`verdict`).
    cheapest: str


def _us(ns: float) -> str:
    return f"{ns / 1000:,.1f} µs"


def verdict(run: RunResult) -> Verdict:
    """Rank ``run``'s strategies by what the churn cost (ioctls + vCPU stall) and explain.

    Strategies that are correct (no oracle violation, no known bug) rank first: a kernel that is
    cheaper because it skips a check is named as such, not as the answer.
    """
    costs = sorted((cost_of(r) for r in run.strategies), key=lambda c: (c.total_ns, c.update_ns, c.strategy))
    best = next((c for c in costs if not c.suspect), costs[0])
    # A tie: the same work, and a total within 0.1 % (the step costs of the protocols differ).
    tied = [
        c
        for c in costs
        if c is not best and c.work == best.work and abs(c.total_ns - best.total_ns) <= best.total_ns // 1000
    ]
    tie = (
        f"; tied with {', '.join(c.strategy + (' (buggy)' if c.suspect else '') for c in tied)} "
        f"(the same work, within {_us(max(abs(c.total_ns - best.total_ns) for c in tied))})"
        if tied
        else ""
    )
    lines = [
        f"cheapest: {best.strategy} ({_summary(best.strategy)}): {_us(best.update_ns)} in {best.updates} "
        f"memslot ioctls + {_us(best.stall_ns)} of vCPU stall{tie}",
    ]
    for c in costs:
        if c.suspect and c.total_ns < best.total_ns and c not in tied:
            lines.append(
                f"cheaper but not correct: {c.strategy}, {_us(best.total_ns - c.total_ns)} less ({c.suspect})"
            )
    if run.params.get("slot_zap") == "all" and run.strategies:
        ops = [u.op for u in run.strategies[0].updates if u.change != "error"]
        deletes = sum(1 for op in ops if op == "delete")
        lines.append(
            f"with the zap-all quirk each of the {deletes} deletes zaps every shadow page under every "
            f"strategy; the strategies differ on the other {len(ops) - deletes} changes and in what "
            "the vCPUs pay afterwards"
        )
    # Work every strategy did alike is not why one is cheaper: say so once.
    common = [
        f"{best.work[key]:,} {label}"
        for key, label in WORK
        if best.work[key] and all(c.work[key] == best.work[key] for c in costs)
    ]
    if common and len(costs) > 1:
        lines.append(f"alike in every strategy: {', '.join(common)}")
    for c in costs:
        if c is best:
            continue
        diffs = [
            f"{c.work[key]:,} {label} vs {best.work[key]:,}"
            for key, label in WORK
            if c.work[key] != best.work[key]
        ]
        what = _summary(c.strategy)
        because = f"; {', '.join(diffs)}" if diffs else "; the same work, other step costs"
        split = f"ioctls {_signed(c.update_ns - best.update_ns)}, vCPUs {_signed(c.stall_ns - best.stall_ns)}"
        sign = "+" if c.total_ns >= best.total_ns else "-"
        extra = _us(abs(c.total_ns - best.total_ns))
        lines.append(f"{c.strategy}: {sign}{extra} ({split}){because}" + (f" [{what}]" if what else ""))
    return Verdict(tuple(costs), tuple(lines), best.strategy)


def _summary(name: str) -> str:
    """The strategy's own one-line description (names and aliases alike)."""
    try:
        return resolve_strategy(name).summary
    except (KeyError, ValueError):
        return ""


def _signed(ns: int) -> str:
    return ("+" if ns >= 0 else "-") + _us(abs(ns))
