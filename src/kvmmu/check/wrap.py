"""Is each strategy correct across the generation wrap?  The explorer answers, strategy by strategy.

Design. A generation-tagged MMIO SPTE is only as good as the generation it carries: when the
counter wraps, an SPTE from a full lap ago matches again unless everything was zapped at the wrap
(the design note's section 3; the 2019 fix "KVM: Call kvm_arch_memslots_updated() before updating
memslots" closed a window of the 2014 scheme there).  TLA+ models of generation schemes commonly
exclude the wrap as "known to fail"; here the wrap is inside the search: ``mmio_gen_bits`` makes
the generation a few bits wide, so that the scenario's updates cross it, and the exhaustive
search interleaves the wrap zap with the vCPUs' faults like any other step.

For each strategy the report says whether any explored run crossed a wrap (strategies whose SPTEs
carry no generation never do: the wrap does not apply to them), and the verdict: correct across
the wrap within the bound, or the first violation, whether its run crossed a wrap, and whether the
strategy is expected to fail (a broken variant or a kernel with known bugs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from kvmmu.check.explore import Result, explore
from kvmmu.check.schedule import run_schedule
from kvmmu.check.world import CheckConfig
from kvmmu.mmu.invalidation import resolve_strategy

#: A generation this wide wraps within the default scenario's three updates.
WRAP_GEN_BITS: Final = 2


@dataclass(frozen=True, slots=True)
class WrapVerdict:
    """One strategy's answer."""

    strategy: str
    generation_in_sptes: bool
    wrap_runs: int  # explored runs in which the generation wrapped
    states: int
    violation: str | None  # the first finding's kind, or None
    violation_crosses_wrap: bool
    expected_violations: bool
    complete: bool

    @property
    def verdict(self) -> str:
        if self.violation is not None:
            where = ("across the wrap" if self.violation_crosses_wrap
                     else "before any wrap" if self.generation_in_sptes else "(no wrap to cross)")
            known = " (expected: broken variant or known kernel bug)" \
                if self.expected_violations else ""
            return f"VIOLATION {self.violation} {where}{known}"
        if not self.generation_in_sptes:
            return "no generation in MMIO SPTEs: the wrap does not apply"
        if not self.wrap_runs:
            return "no run crossed a wrap: give more updates or fewer --gen-bits"
        return ("correct across the wrap" if self.complete
                else "no violation across the wrap, but the search was not exhaustive")

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "generation_in_sptes": self.generation_in_sptes,
                "wrap_runs": self.wrap_runs, "states": self.states, "violation": self.violation,
                "violation_crosses_wrap": self.violation_crosses_wrap,
                "expected_violations": self.expected_violations, "complete": self.complete,
                "verdict": self.verdict}


def wrap_config(base: CheckConfig, strategy: str) -> CheckConfig:
    """``base`` for ``strategy``, with a narrow generation unless ``base`` names one; a TDP MMU
    asked for where the kernel had one (the others ran the shadow MMU)."""
    bits = base.mmio_gen_bits if base.mmio_gen_bits is not None else WRAP_GEN_BITS
    tdp = base.tdp_mmu and bool(resolve_strategy(strategy).tdp_mmu)
    return replace(base, strategy=strategy, mmio_gen_bits=bits, tdp_mmu=tdp)


def wrap_verdict(config: CheckConfig, preemptions: int | None, *,
                 time_limit: float | None = None) -> WrapVerdict:
    strategy = resolve_strategy(config.strategy)
    result: Result = explore(config, preemptions=preemptions, time_limit=time_limit)
    crosses = False
    if result.failure is not None:
        replayed = run_schedule(config, result.failure.schedule, complete=False)
        crosses = replayed.world.vm.kvm.mmu.stats.generation_wraps > 0
    return WrapVerdict(
        strategy=config.strategy,
        generation_in_sptes=strategy.mmio_generation,
        wrap_runs=result.stats.wrap_runs,
        states=result.stats.states,
        violation=result.failure.findings[0].kind if result.failure is not None else None,
        violation_crosses_wrap=crosses,
        expected_violations=strategy.expected_violations,
        complete=result.complete,
    )


def wrap_report(base: CheckConfig, strategies: Iterable[str], preemptions: int | None, *,
                time_limit: float | None = None) -> list[WrapVerdict]:
    """Each strategy's verdict across the wrap (``time_limit`` applies to each search)."""
    return [wrap_verdict(wrap_config(base, s), preemptions, time_limit=time_limit)
            for s in strategies]
