"""Invalidation strategies behind one interface: how stale MMIO SPTEs are kept from matching.

Design. A strategy is a frozen value (:class:`Strategy`) whose fields say which mechanism runs;
:class:`X86Arch` implements the memslot update's architecture hooks (``kvm_arch_*``) by reading
those fields.  A broken variant is the same value with one field turned off, so the explorer and
the oracle test the very code the correct strategies run.

The strategies (design note sections 1-4):

``zap-walk``
    Before 2013: MMIO SPTEs carry no generation; every memslot change takes ``mmu_lock`` and walks
    every shadow page, zapping MMIO SPTEs (``kvm_mmu_zap_mmio_sptes``).  The issue and design note
    say "every memslot change"; 3.10 called it for CREATE and MOVE only, which are the only changes
    that can make an MMIO SPTE wrong, so walking on all changes costs more and is never less safe.
``zap-mmio-cached``
    The same walk over only the pages flagged ``mmio_cached``; as in 3.10, such a page is zapped
    whole, RAM SPTEs included (one page holds both, the point of Xiao's reply to Marcelo).
``generation-2013``
    The seed series (3.11): the SPTE stores the memslot generation, one bump per publish, no
    update-in-progress state; at the wrap (``gen >= MMIO_MAX_GEN - 1``) zap everything fast.
``generation-2014``
    The 2014 fix: the published generation is odd while an update is in progress and the SPTE
    does not store bit 0, so nothing created in that window can ever match; wrap at ``gen == 0``.
``generation``
    Modern: ``KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS`` (bit 63), generations step by the number of
    address spaces, wrap test ``(gen & ~(nr_as - 1)) == 0``.
``zap-all-fast``
    Bump ``mmu_valid_gen`` on every change: all vCPUs refault everything.

All strategies keep the per-vCPU MMIO cache tagged with the memslot generation (the 2014 cache fix),
so that each differs from the others only in how MMIO SPTEs are invalidated; the ``zap-*``
strategies use the modern memslot generation for that tag.  Variants (``NAME+no-wrap-zap``,
``NAME+cache-without-gen``) remove one safeguard to show that the checks catch it.

Independently, DELETE and MOVE zap the slot's RAM SPTEs: everything through ``zap_all_fast``
(``KVM_X86_QUIRK_SLOT_ZAP_ALL``, the default), only the slot's own (``slot_zap="slot"``), or
everything the way kernels before 3.11 did, with ``kvm_mmu_zap_all()`` (``slot_zap="all-slow"``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from kvmmu.memslots import KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS, Change, Memslot, MemslotPlan
from kvmmu.mmu.steps import Step, Steps
from kvmmu.spte import SPTES_PER_PAGE

if TYPE_CHECKING:
    from kvmmu.mmu.context import Kvm

UPDATE_ZAPS: Final = (None, "walk", "walk-mmio-cached", "all-fast")
SLOT_ZAPS: Final = ("all", "slot", "all-slow")


@dataclass(frozen=True, slots=True)
class Strategy:
    """How MMIO SPTEs are invalidated when memslots change."""

    name: str
    summary: str
    era: str  # how the memslot generation steps: "2013", "2014", "modern"
    layout: str  # default SPTE layout
    mmio_generation: bool  # MMIO SPTEs carry and check the generation
    update_zap: str | None  # zap work on every memslot change: None, walk, walk-mmio-cached, all-fast
    wrap_zap: bool = True  # zap everything when the MMIO generation wraps
    cache_generation: bool = True  # the per-vCPU MMIO cache checks its generation
    broken: bool = False  # a deliberately broken variant (NAME+VARIANT): no kernel ran it
    #: Bugs the modelled kernel really had (one line each, with the fixing commit); non-empty marks
    #: a historically buggy strategy whose oracle violations are expected, not a failed run.
    known_bugs: tuple[str, ...] = ()

    @property
    def expected_violations(self) -> bool:
        """Whether the oracle may catch this strategy: a broken variant or a buggy kernel."""
        return self.broken or bool(self.known_bugs)

    def __post_init__(self) -> None:
        if self.update_zap not in UPDATE_ZAPS:
            raise ValueError(f"update_zap must be one of {UPDATE_ZAPS}")


STRATEGIES: Final[dict[str, Strategy]] = {s.name: s for s in (
    Strategy("zap-walk", "walk every shadow page under mmu_lock on each change (before 2013)",
             era="modern", layout="2013", mmio_generation=False, update_zap="walk"),
    Strategy("zap-mmio-cached", "walk only pages flagged mmio_cached, zapping them whole (3.10)",
             era="modern", layout="2013", mmio_generation=False, update_zap="walk-mmio-cached"),
    Strategy("generation-2013", "generation in the SPTE, one bump per publish (3.11 seed series)",
             era="2013", layout="2013", mmio_generation=True, update_zap=None),
    Strategy("generation-2014", "odd generation while an update is in progress (2014 fix)",
             era="2014", layout="2014", mmio_generation=True, update_zap=None),
    Strategy("generation", "update-in-progress flag, address-space step (modern kernels)",
             era="modern", layout="modern", mmio_generation=True, update_zap=None),
    Strategy("zap-all-fast", "bump the shadow-page generation on every change: all refault",
             era="modern", layout="modern", mmio_generation=False, update_zap="all-fast"),
)}

#: Broken variants: ``NAME+VARIANT`` turns one safeguard (a boolean field of Strategy) off.
VARIANTS: Final[dict[str, str]] = {
    "no-wrap-zap": "wrap_zap",
    "cache-without-gen": "cache_generation",
}


def resolve_strategy(spec: str | Strategy) -> Strategy:
    """``"generation"`` or ``"generation-2013+no-wrap-zap"`` -> a :class:`Strategy`."""
    if isinstance(spec, Strategy):
        return spec
    base, *variants = spec.split("+")
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {base!r}; choose from {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[base]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        if VARIANTS[v] == "wrap_zap":
            strategy = replace(strategy, wrap_zap=False)
        else:
            strategy = replace(strategy, cache_generation=False)
        strategy = replace(strategy, name=f"{strategy.name}+{v}", broken=True)
    return strategy


def strategy_choices() -> list[str]:
    """Every accepted name: the strategies, then each strategy with each variant."""
    return [*STRATEGIES, *(f"{s}+{v}" for s in STRATEGIES for v in VARIANTS)]


def mmio_generation_valid(kvm: Kvm, current: int, spte_gen: int) -> bool:
    """``check_mmio_spte()``: does an SPTE tagged ``spte_gen`` match the current generation?"""
    if not kvm.strategy.mmio_generation:
        return True
    if current & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        return False
    return (current & kvm.gen_mask) == (spte_gen & kvm.gen_mask)


def generation_wrapped(kvm: Kvm, gen: int) -> bool:
    """The wrap test of ``kvm_mmu_invalidate_mmio_sptes()`` in the strategy's era."""
    mask = kvm.gen_mask
    era = kvm.strategy.era
    if era == "2013":
        return (gen & mask) >= mask  # 3.11: kvm_current_mmio_generation() >= MMIO_MAX_GEN - 1
    if era == "2014":
        return (gen & mask) == 0
    return (gen & mask & ~(kvm.memslots.nr_as - 1)) == 0


class X86Arch:
    """The ``kvm_arch_*`` memslot hooks of ``arch/x86/kvm/x86.c`` for one VM and strategy."""

    def __init__(self, kvm: Kvm, slot_zap: str, who: object) -> None:
        if slot_zap not in SLOT_ZAPS:
            raise ValueError(f"slot_zap must be one of {', '.join(SLOT_ZAPS)}, not {slot_zap!r}")
        self.kvm = kvm
        self.slot_zap = slot_zap
        self.who = who  # the lock owner: the VMM thread

    def flush_shadow_memslot(self, old: Memslot) -> Steps[None]:
        kvm = self.kvm
        if self.slot_zap == "all":
            yield from self.zap_all_fast()
        elif self.slot_zap == "all-slow":
            yield from kvm.mmu.zap_all_slow(self.who)
        else:
            yield from kvm.mmu.zap_gfn_range(self.who, old.base_gfn, old.end_gfn, old.as_id)

    def memslots_updated(self, as_id: int, gen: int) -> Steps[None]:
        """Runs after the grace period and, in the modern era, before the final generation.

        The ``zap-*`` strategies zap here, not at commit: their per-vCPU MMIO cache is tagged
        with the memslot generation, so a vCPU that read a not-yet-zapped MMIO SPTE after the
        generation became final would cache it under that final generation (found by
        ``kvmmu check``).  While the generation still says "update in progress" such a fill is
        refused, as for the wrap zap since "KVM: Call kvm_arch_memslots_updated() before updating
        memslots" (2019).  The invalid copy a DELETE or MOVE publishes first backs nothing new, so
        only the publish that can add backing zaps.
        """
        kvm = self.kvm
        strategy = kvm.strategy
        if strategy.mmio_generation and generation_wrapped(kvm, gen):
            kvm.mmu.stats.generation_wraps += 1
            if strategy.wrap_zap:
                yield from self.zap_all_fast()
        zap = strategy.update_zap
        if zap is not None and not any(s.invalid for s in kvm.memslots.active[as_id]):
            if zap == "all-fast":
                yield from self.zap_all_fast()
            else:
                yield from self.zap_mmio_sptes(only_cached=zap == "walk-mmio-cached")

    def commit_memory_region(self, plan: MemslotPlan) -> Steps[None]:
        kvm = self.kvm
        new, old = plan.new, plan.old
        if (new is not None and new.dirty_logging and plan.change is not Change.DELETE
                and not (old is not None and old.dirty_logging and plan.change is Change.FLAGS_ONLY)):
            # kvm_mmu_slot_apply_flags(): logging just enabled (or a new/moved logged slot).
            yield from kvm.mmu.write_protect_range(self.who, new.base_gfn, new.end_gfn, new.as_id)

    def zap_all_fast(self) -> Steps[None]:
        yield from self.kvm.mmu.zap_all_fast(self.who)

    def zap_mmio_sptes(self, *, only_cached: bool) -> Steps[None]:
        """``kvm_mmu_zap_mmio_sptes()``: walk the active list under ``mmu_lock``."""
        mmu = self.kvm.mmu
        codec = mmu.codec
        yield from mmu.lock.acquire(self.who)
        for sp in list(mmu.active.values()):
            if sp.hpa not in mmu.active:
                continue
            if only_cached:
                if not sp.mmio_cached:
                    continue
                yield Step.WALK_SHADOW_PAGE
                mmu.stats.invalidation_pages_walked += 1
                for _page, live in mmu.unlink(sp):
                    yield Step.FREE_SHADOW_PAGE
                    mmu.drop_entries(live)
                continue
            yield Step.WALK_SHADOW_PAGE
            mmu.stats.invalidation_pages_walked += 1
            mmu.stats.invalidation_sptes_walked += SPTES_PER_PAGE
            if not sp.nr_mmio:
                continue  # the scan of 512 words found nothing; counted above as walked
            for i, spte in enumerate(sp.spt):
                if spte and codec.is_mmio(spte):
                    yield Step.ZAP_SPTE
                    mmu.clear_spte(sp, i)
        yield from mmu.lock.release(self.who)
