"""The vCPU side: hardware walk, MMIO fast path, page-fault slow path, emulator, per-vCPU cache.

Design. One generator, :func:`access`, follows a guest access from guest entry to its answer, the
way ``vcpu_enter_guest()`` and the exit handlers do:

1. *Guest entry*: reload an obsolete root (``kvm_mmu_reload``), then the hardware walks the SPTEs
   (:attr:`Step.GUEST_ACCESS`).  A present leaf with the needed permission answers without a trap.
2. *Reserved-bit fault* on an MMIO SPTE (EPT misconfig / #PF with RSVD):
   ``handle_mmio_page_fault()`` first asks the per-vCPU cache (``mmio_info_in_cache``), then reads
   the SPTE locklessly and checks its generation: EMULATE, INVALID (go slow) or RETRY.
3. *Slow path* (``kvm_mmu_do_page_fault`` -> ``direct_page_fault``): look the gfn up in the memslots,
   fill the per-vCPU cache for a gfn without a slot, take ``mmu_lock``, give up if the root became
   obsolete (``is_page_fault_stale``), walk creating shadow pages, and write a RAM SPTE or an MMIO
   SPTE tagged with the generation read *now* (``mark_mmio_spte``: the second read whose window the
   2014 race lives in).
4. *Emulation* (``x86_emulate_instruction`` -> ``emulator_read_write_onepage``): the per-vCPU cache
   answers "MMIO" first; otherwise the memslots are read again (``kvm_vcpu_read_guest``) and the
   access goes to RAM, or to the MMIO bus and, unclaimed, to userspace as ``KVM_EXIT_MMIO``.

``emulated=True`` models an instruction that KVM emulates anyway (every instruction of a real-mode
or CPL0 guest on this project's machines): it skips steps 1-3.

Every read or write of shared state is preceded by a yielded :class:`Step`; everything between two
yields is atomic.  The vCPU holds SRCU from the trap to the end of its handling, as
``kvm_vcpu_srcu_read_lock()`` spans an exit.  This is the only implementation of the protocol:
the plain run, the timed simulation and the explorer all drive it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from kvmmu.memslots import KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
from kvmmu.mmu.invalidation import mmio_generation_valid
from kvmmu.mmu.pages import ShadowPage
from kvmmu.mmu.steps import Step, Steps
from kvmmu.spte import (
    ACC_ALL,
    PAGE_SHIFT,
    SPTE_LARGE,
    SPTE_PRESENT,
    SPTE_WRITABLE,
    make_ram_spte,
    spte_pfn,
)

if TYPE_CHECKING:
    from kvmmu.mmu.context import Kvm

PAGE_OFFSET_MASK: Final = (1 << PAGE_SHIFT) - 1


class AccessKind(StrEnum):
    """What the guest's access reached."""

    RAM = "ram"
    MMIO = "mmio"


class Path(StrEnum):
    """The last handler that ran before the answer (``hw``: no trap at all)."""

    HW = "hw"
    FAST = "fast"
    SLOW = "slow"
    CACHE = "cache"
    EMULATOR = "emulator"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The guest-visible result of one access, and how the model produced it.

    ``value`` is what a read returned (RAM, or an in-kernel device); ``None`` for writes and for
    reads that exit to userspace.  ``hva`` is the host address a RAM access touched.  ``spte`` is
    the leaf SPTE word that answered, when one did (for oracle reports).
    """

    gpa: int
    size: int
    write: bool
    kind: AccessKind
    path: Path
    value: int | None = None
    hva: int | None = None
    exit_to_userspace: bool = False
    traps: int = 0
    spte: int = 0


@dataclass(slots=True)
class VcpuStats:
    """Per-vCPU counters named like ``struct kvm_vcpu_stat`` where KVM has one."""

    exits: int = 0  # traps taken (page faults, misconfigs)
    mmio_exits: int = 0  # KVM_EXIT_MMIO to userspace
    pf_taken: int = 0  # slow-path page faults
    pf_fixed: int = 0
    pf_emulate: int = 0
    pf_spurious: int = 0  # RET_PF_RETRY
    pf_mmio_spte_created: int = 0
    insn_emulation: int = 0
    hw_hits: int = 0  # accesses answered by the hardware walk without a trap
    mmio_fast_path: int = 0  # handle_mmio_page_fault() -> EMULATE from the SPTE
    mmio_fast_invalid: int = 0  # ... -> INVALID (stale generation)
    mmio_cache_hits: int = 0  # per-vCPU cache answered
    refaults: int = 0  # slow-path faults on a gfn that had an SPTE before
    root_reloads: int = 0


@dataclass(slots=True, eq=False)
class VcpuArch:
    """``vcpu->arch``'s MMU part: the root, the per-vCPU MMIO cache, counters."""

    id: int
    as_id: int = 0
    root: ShadowPage | None = None
    mmio_gfn: int = 0  # vcpu->arch.mmio_gfn (0: nothing cached; gfn 0 is never cached)
    mmio_access: int = 0
    mmio_gen: int = 0
    stats: VcpuStats = field(default_factory=VcpuStats)


def cache_mmio_info(kvm: Kvm, vcpu: VcpuArch, gfn: int, access: int) -> None:
    """``vcpu_cache_mmio_info()``: remember the MMIO gfn with the generation it was seen in."""
    gen = kvm.memslots.active[vcpu.as_id].generation
    if kvm.strategy.era == "modern" and gen & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        return  # an update is in progress: caching now could outlive it
    vcpu.mmio_gfn = gfn
    vcpu.mmio_access = access
    vcpu.mmio_gen = gen


def match_mmio_gpa(kvm: Kvm, vcpu: VcpuArch, gfn: int) -> bool:
    """``vcpu_match_mmio_gpa()``: the cache names ``gfn`` and its generation is current."""
    if not vcpu.mmio_gfn or vcpu.mmio_gfn != gfn:
        return False
    if not kvm.strategy.cache_generation:
        return True  # the 3.11 cache: no generation at all
    return vcpu.mmio_gen == kvm.memslots.active[vcpu.as_id].generation


def load_root(kvm: Kvm, vcpu: VcpuArch) -> Steps[None]:
    """``kvm_mmu_reload()`` -> ``mmu_alloc_direct_roots()`` under ``mmu_lock``."""
    mmu = kvm.mmu
    yield from mmu.lock.acquire(vcpu)
    yield Step.ROOT_RELOAD
    root, created = mmu.root_for(vcpu.as_id)
    vcpu.root = root
    vcpu.stats.root_reloads += 1
    if kvm.trace is not None:
        kvm.trace.kvm_mmu_get_page(vcpu.id, kvm.trace.sp_text(root.mmu_valid_gen, root.gfn,
                                                               root.level, 1), created)
    yield from mmu.lock.release(vcpu)


# Results of the trap handlers (RET_PF_*).
_RETRY: Final = 0
_FIXED: Final = 1
_EMULATE: Final = 2
_INVALID: Final = 3
_EMULATE_CACHED: Final = 4  # EMULATE, answered by the per-vCPU cache


def access(kvm: Kvm, vcpu: VcpuArch, gpa: int, write: bool, size: int, value: int,
           emulated: bool) -> Steps[Outcome]:
    """One guest access from guest entry to its answer (see the module docstring)."""
    gfn = gpa >> PAGE_SHIFT
    mmu = kvm.mmu
    codec = mmu.codec
    marker = codec.marker
    mask, mvalue, caching = marker.mask, marker.value, marker.caching
    stats = vcpu.stats
    start_epoch = kvm.memslots.epoch
    srcu = kvm.srcu
    path = Path.EMULATOR
    traps = 0
    if not emulated:
        while True:
            root = vcpu.root
            if root is None or root.mmu_valid_gen != mmu.mmu_valid_gen:
                yield from load_root(kvm, vcpu)
                root = vcpu.root
                assert root is not None
            yield Step.GUEST_ACCESS
            # The hardware walk: four levels, no lock, no trap unless something is missing.
            sp = root
            level = 4
            while True:
                idx = (gfn >> (9 * (level - 1))) & 511
                spte = sp.spt[idx]
                if caching and (spte & mask) == mvalue:
                    fault = _INVALID  # reserved bits / EPT misconfig: the MMIO fast path
                    break
                if not spte & SPTE_PRESENT:
                    fault = _FIXED  # not present: the slow path
                    break
                if level == 1 or spte & SPTE_LARGE:
                    if write and not spte & SPTE_WRITABLE:
                        fault = _FIXED  # write to a read-only SPTE: the slow path
                        break
                    # A hit: the access goes to host memory at the SPTE's frame.
                    if level == 1:
                        hva = (spte_pfn(spte) << PAGE_SHIFT) | (gpa & PAGE_OFFSET_MASK)
                    else:
                        hva = (spte_pfn(spte) << PAGE_SHIFT) + (gpa & ((1 << 21) - 1))
                    if traps == 0:
                        stats.hw_hits += 1
                        path = Path.HW
                    out = _ram_access(kvm, gpa, size, write, value, hva, path, traps, spte)
                    if kvm.on_access is not None:
                        kvm.on_access(vcpu, out, start_epoch)
                    return out
                child = sp.children[idx]
                assert child is not None
                sp = child
                level -= 1
            traps += 1
            stats.exits += 1
            srcu.read_lock(vcpu)
            if fault == _INVALID:
                r = yield from _handle_mmio_page_fault(kvm, vcpu, gfn)
                path = Path.FAST
                if r == _EMULATE_CACHED:
                    path, r = Path.CACHE, _EMULATE
                elif r == _INVALID:
                    path = Path.SLOW
                    r = yield from _page_fault(kvm, vcpu, gpa, gfn, write)
            else:
                path = Path.SLOW
                r = yield from _page_fault(kvm, vcpu, gpa, gfn, write)
            if r == _EMULATE:
                break  # emulate with SRCU still held
            srcu.read_unlock(vcpu)
            if r == _RETRY:
                stats.pf_spurious += 1
                yield Step.RETRY
            # _FIXED and _RETRY both re-enter the guest, which re-executes the access.
    else:
        srcu.read_lock(vcpu)
    out = yield from _emulate(kvm, vcpu, gpa, gfn, write, size, value, path, traps)
    srcu.read_unlock(vcpu)
    if kvm.on_access is not None:
        kvm.on_access(vcpu, out, start_epoch)
    return out


def _ram_access(kvm: Kvm, gpa: int, size: int, write: bool, value: int, hva: int, path: Path,
                traps: int, spte: int) -> Outcome:
    if write:
        kvm.host_memory.write_int(hva, size, value)
        return Outcome(gpa, size, True, AccessKind.RAM, path, None, hva, False, traps, spte)
    return Outcome(gpa, size, False, AccessKind.RAM, path, kvm.host_memory.read_int(hva, size),
                   hva, False, traps, spte)


def _handle_mmio_page_fault(kvm: Kvm, vcpu: VcpuArch, gfn: int) -> Steps[int]:
    """``handle_mmio_page_fault()``: the lockless fast path. EMULATE, INVALID or RETRY."""
    stats = vcpu.stats
    yield Step.VCPU_CACHE
    if match_mmio_gpa(kvm, vcpu, gfn):  # mmio_info_in_cache()
        stats.mmio_cache_hits += 1
        return _EMULATE_CACHED
    yield Step.READ_SPTE_LOCKLESS
    spte = _leaf_spte(vcpu.root, gfn)  # walk_shadow_page_lockless_begin() .. end()
    codec = kvm.mmu.codec
    if not codec.is_mmio(spte):
        return _RETRY  # zapped or replaced by another CPU: let the guest fault again
    yield Step.READ_GENERATION
    current = kvm.memslots.active[vcpu.as_id].generation
    spte_gen = codec.generation(spte)
    valid = mmio_generation_valid(kvm, current, spte_gen)
    trace = kvm.trace
    if trace is not None:
        trace.check_mmio_spte(vcpu.id, spte, current & kvm.gen_mask, spte_gen, valid)
    if not valid:
        stats.mmio_fast_invalid += 1
        return _INVALID
    access_bits = codec.access(spte)
    if trace is not None:
        trace.handle_mmio_page_fault(vcpu.id, 0, codec.gfn(spte), access_bits)
    yield Step.VCPU_CACHE
    cache_mmio_info(kvm, vcpu, gfn, access_bits)
    stats.mmio_fast_path += 1
    return _EMULATE


def _leaf_spte(root: ShadowPage | None, gfn: int) -> int:
    """The SPTE a lockless walk from ``root`` ends at for ``gfn`` (0 if the walk stops early)."""
    sp = root
    level = 4
    while sp is not None:
        idx = (gfn >> (9 * (level - 1))) & 511
        spte = sp.spt[idx]
        child = sp.children[idx]
        if child is None or level == 1:
            return spte
        sp = child
        level -= 1
    return 0


def _page_fault(kvm: Kvm, vcpu: VcpuArch, gpa: int, gfn: int, write: bool) -> Steps[int]:
    """``kvm_mmu_do_page_fault()`` -> ``direct_page_fault()``: FIXED, EMULATE or RETRY."""
    stats = vcpu.stats
    stats.pf_taken += 1
    mmu = kvm.mmu
    codec = mmu.codec
    key = (vcpu.as_id << 52) | gfn
    if key in mmu.ever_mapped:
        stats.refaults += 1
    yield Step.READ_MEMSLOTS
    slot = kvm.memslots.active[vcpu.as_id].lookup(gfn)  # kvm_vcpu_gfn_to_memslot()
    target_level = 1
    writable = False
    if slot is not None and slot.invalid:
        return _RETRY  # being deleted or moved: its SPTEs must be zapped before new ones appear
    if slot is None:
        if gfn > (1 << (kvm.phys_bits - PAGE_SHIFT)) - 1:
            stats.pf_emulate += 1
            return _EMULATE  # beyond kvm_mmu_max_gfn(): never cached
        yield Step.VCPU_CACHE
        cache_mmio_info(kvm, vcpu, gfn, ACC_ALL & codec.marker.access_mask)
        if not codec.marker.caching:
            stats.pf_emulate += 1
            return _EMULATE  # kvm.mmio_caching off: every MMIO access takes this path
    elif write and slot.readonly:
        stats.pf_emulate += 1
        return _EMULATE  # KVM_PFN_ERR_RO_FAULT: the emulator turns the write into MMIO
    else:
        writable = not slot.readonly and (write or not slot.dirty_logging)
        if kvm.large_pages and slot.huge_page_ok(gfn):
            target_level = 2
    yield from mmu.lock.acquire(vcpu)
    root = vcpu.root
    if root is None or mmu.is_obsolete(root) or root.hpa not in mmu.active:
        yield from mmu.lock.release(vcpu)
        return _RETRY  # is_page_fault_stale(): zap_all_fast ran since guest entry
    # direct_map(): walk down, linking new shadow pages where tables are missing.
    sp = root
    level = 4
    trace = kvm.trace
    while True:
        idx = (gfn >> (9 * (level - 1))) & 511
        child = sp.children[idx]
        if level == target_level:
            if child is None:
                break
            target_level = 1  # a table exists below: map at 4 KiB (disallowed_hugepage_adjust)
        if level == 1:
            break
        if child is None:
            if sp.spt[idx]:
                yield Step.ZAP_SPTE
                mmu.clear_spte(sp, idx)  # drop_large_spte(): a 2 MiB leaf must become a table
            yield Step.WRITE_SPTE
            child = mmu.alloc_page(gfn & ~((1 << (9 * (level - 1))) - 1), level - 1,
                                   vcpu.as_id, sp, idx)
            if trace is not None:
                trace.kvm_mmu_get_page(vcpu.id, trace.sp_text(child.mmu_valid_gen, child.gfn,
                                                              child.level, 0), True)
        sp = child
        level -= 1
    old = sp.spt[idx]
    if slot is None:
        yield Step.READ_GENERATION
        gen = kvm.memslots.active[vcpu.as_id].generation  # make_mmio_spte(): the second read
        spte_gen = gen & kvm.gen_mask if kvm.strategy.mmio_generation else 0
        access_bits = ACC_ALL & codec.marker.stored_access_mask
        yield Step.WRITE_SPTE
        if not codec.is_mmio(old):
            sp.nr_mmio += 1
        sp.spt[idx] = codec.encode(gfn, access_bits, spte_gen)
        sp.mmio_cached = True
        stats.pf_mmio_spte_created += 1
        stats.pf_emulate += 1
        if trace is not None:
            trace.mark_mmio_spte(vcpu.id, sp.hpa + 8 * idx, gfn, access_bits, spte_gen)
        result = _EMULATE
    else:
        base = gfn if level == 1 else gfn & ~511
        yield Step.WRITE_SPTE
        if old and codec.is_mmio(old):
            sp.nr_mmio -= 1
        sp.spt[idx] = make_ram_spte(slot.hva(base) >> PAGE_SHIFT, writable, level == 2,
                                    mmu.layout)
        if writable and slot.dirty_logging:
            slot.mark_dirty(gfn)
        stats.pf_fixed += 1
        result = _FIXED
    mmu.ever_mapped.add(key)
    yield from mmu.lock.release(vcpu)
    return result


def _emulate(kvm: Kvm, vcpu: VcpuArch, gpa: int, gfn: int, write: bool, size: int, value: int,
             path: Path, traps: int) -> Steps[Outcome]:
    """``x86_emulate_instruction()`` -> ``emulator_read_write_onepage()`` for one access."""
    stats = vcpu.stats
    yield Step.EMULATE
    stats.insn_emulation += 1
    yield Step.VCPU_CACHE
    if match_mmio_gpa(kvm, vcpu, gfn):  # vcpu_mmio_gva_to_gpa(): the cache says MMIO
        if path is Path.EMULATOR:
            path = Path.CACHE
            stats.mmio_cache_hits += 1
    else:
        yield Step.READ_MEMSLOTS  # kvm_vcpu_read_guest() / kvm_vcpu_write_guest()
        slot = kvm.memslots.active[vcpu.as_id].lookup(gfn)
        if slot is not None and not slot.invalid and not (write and slot.readonly):
            if write:
                slot.mark_dirty(gfn)
            hva = slot.hva(gfn) | (gpa & PAGE_OFFSET_MASK)
            return _ram_access(kvm, gpa, size, write, value, hva, path, traps, 0)
    trace = kvm.trace
    dev_value = kvm.mmio_dispatch(gpa, size, write, value)
    if dev_value is not None:  # an in-kernel device on the MMIO bus claimed it
        if trace is not None:
            trace.kvm_mmio(vcpu.id, "write" if write else "read", size, gpa,
                           value if write else dev_value)
        return Outcome(gpa, size, write, AccessKind.MMIO, path, None if write else dev_value,
                       None, False, traps)
    stats.mmio_exits += 1
    if trace is not None:
        trace.kvm_mmio(vcpu.id, "write" if write else "unsatisfied-read", size, gpa,
                       value if write else 0)
    yield Step.EXIT_TO_USERSPACE
    return Outcome(gpa, size, write, AccessKind.MMIO, path, None, None, True, traps)
