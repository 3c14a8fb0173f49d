"""The vCPU side: hardware walk, MMIO fast path, page-fault slow path, emulator, per-vCPU cache.

Design. One generator, :func:`access`, follows a guest access from guest entry to its answer, the
way ``vcpu_enter_guest()`` and the exit handlers do:

1. *Guest entry*: reload an obsolete root (``kvm_mmu_reload``), then the hardware walks the SPTEs
   (:attr:`GUEST_ACCESS`).  A present leaf with the needed permission answers without a trap.
2. *Reserved-bit fault* on an MMIO SPTE (EPT misconfig / #PF with RSVD):
   ``handle_mmio_page_fault()`` first asks the per-vCPU cache (``mmio_info_in_cache``), then reads
   the SPTE locklessly and checks its generation: EMULATE, INVALID (go slow) or RETRY.
3. *Slow path* (``kvm_mmu_do_page_fault`` -> ``direct_page_fault``): look the gfn up in the memslots,
   fill the per-vCPU cache for a gfn without a slot, take ``mmu_lock``, give up if the root became
   obsolete (``is_page_fault_stale``), walk creating shadow pages, and write a RAM SPTE or an MMIO
   SPTE tagged with the generation read *now* (``mark_mmio_spte``: the second read whose window the
   2014 race lives in).  The shadow MMU holds ``mmu_lock`` for write; the TDP MMU (``Mmu.tdp_mmu``)
   for read, so faults of several vCPUs run at once and each SPTE (a table link, a leaf, a 2 MiB leaf
   being split) is installed with cmpxchg: one that lost to another vCPU retries the access
   (v5.12.9 ``arch/x86/kvm/mmu/tdp_mmu.c`` ``kvm_tdp_mmu_map()`` and
   ``tdp_mmu_map_handle_target_level()``: ``if (!tdp_mmu_set_spte_atomic(...)) return
   RET_PF_RETRY``; the same in v6.8).
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
from typing import TYPE_CHECKING, Final, NamedTuple

from kvmmu.memslots import (
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS,
)
from kvmmu.mmu.invalidation import mmio_generation_valid
from kvmmu.mmu.pages import ShadowPage
from kvmmu.mmu.steps import (
    EMULATE,
    EXIT_TO_USERSPACE,
    GUEST_ACCESS,
    MMU_LOCK,
    MMU_UNLOCK,
    READ_GENERATION,
    READ_MEMSLOTS,
    READ_SPTE_LOCKLESS,
    RETRY,
    ROOT_RELOAD,
    VCPU_CACHE,
    WRITE_SPTE,
    ZAP_SPTE,
    Steps,
)
from kvmmu.spte import (
    ACC_ALL,
    PAGE_SHIFT,
    PFN_MASK,
    SPTE_LARGE,
    SPTE_PRESENT,
    SPTE_WRITABLE,
)

if TYPE_CHECKING:
    from kvmmu.mmu.context import Kvm

PAGE_OFFSET_MASK: Final = (1 << PAGE_SHIFT) - 1
ACC_WRITE_USER: Final = 0x6  # ACC_WRITE_MASK | ACC_USER_MASK
#: Shift of the gfn index at levels 4, 3, 2, 1 of the walk.
_LEVEL_SHIFTS: Final = (27, 18, 9, 0)
_LEAF_SHIFT: Final = (0,)


class AccessKind(StrEnum):
    """What the guest's access reached.

    ``UNKNOWN`` is ``KVM_EXIT_UNKNOWN``: the ``RET_MMIO_PF_BUG`` path of kernels up to 3.x
    ("EPT: Misconfiguration" dump, ``hardware_exit_reason = EXIT_REASON_EPT_MISCONFIG``); the VMM
    usually kills the guest.
    """

    RAM = "ram"
    MMIO = "mmio"
    UNKNOWN = "unknown"


class Path(StrEnum):
    """The last handler that ran before the answer (``hw``: no trap at all)."""

    HW = "hw"
    FAST = "fast"
    SLOW = "slow"
    CACHE = "cache"
    EMULATOR = "emulator"


# The members as module constants for the hot path (see the note in kvmmu.mmu.steps).
RAM: Final = AccessKind.RAM
MMIO: Final = AccessKind.MMIO
UNKNOWN: Final = AccessKind.UNKNOWN
HW: Final = Path.HW
FAST: Final = Path.FAST
SLOW: Final = Path.SLOW
CACHE: Final = Path.CACHE
EMULATOR: Final = Path.EMULATOR


class Outcome(NamedTuple):
    """The guest-visible result of one access, and how the model produced it.

    ``value`` is what a read returned (RAM, or an in-kernel device); ``None`` for writes and for
    reads that exit to userspace.  ``hva`` is the host address a RAM access touched.  ``spte`` is
    the leaf SPTE word that answered, when one did (for oracle reports).  A named tuple rather
    than a frozen dataclass: one is built per access, and building it must cost little.
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


#: ``Outcome`` without the generated ``__new__`` (a third of the cost; one is built per access).
_new_outcome = tuple.__new__


@dataclass(slots=True)
class VcpuStats:
    """Per-vCPU counters named like ``struct kvm_vcpu_stat`` where KVM has one."""

    exits: int = 0  # traps taken (page faults, misconfigs)
    mmio_exits: int = 0  # KVM_EXIT_MMIO to userspace
    pf_taken: int = 0  # slow-path page faults
    pf_fixed: int = 0
    pf_emulate: int = 0
    pf_spurious: int = 0  # RET_PF_SPURIOUS: the fault found the SPTE it would write already there
    pf_fast: int = 0  # fixed by fast_page_fault(), without mmu_lock (kvm_vcpu_stat.pf_fast)
    pf_retry: int = 0  # RET_PF_RETRY (model counter; KVM has none): the guest re-executes
    pf_mmio_spte_created: int = 0
    pf_mmio_bug: int = 0  # RET_MMIO_PF_BUG -> KVM_EXIT_UNKNOWN (kernels with mmio_pf_bug)
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
    #: The paging-structure cache: the last level-1 table walked to, for gfns ``psc_tag << 9 ..``.
    psc_page: ShadowPage | None = None
    psc_tag: int = -1
    #: What the last completed access returned, as ``kvm_run`` holds the last exit (the plain
    #: driver reads it instead of catching the generator's return value).
    last_outcome: Outcome | None = None


def cache_mmio_info(kvm: Kvm, vcpu: VcpuArch, gfn: int, access: int,
                    gen: int | None = None) -> None:
    """``vcpu_cache_mmio_info()``: remember the MMIO gfn with the generation it was seen in.

    The tag is address space 0's generation whatever the vCPU's address space: the kernel reads
    ``kvm_memslots(vcpu->kvm)->generation`` (``arch/x86/kvm/x86.h``, 4.2 to current), not
    ``kvm_vcpu_memslots(vcpu)``.  ``gen`` is a generation read earlier, to tag with instead of
    the current one (see :func:`_handle_mmio_page_fault`).
    """
    if gen is None:
        gen = kvm.memslots.active[0].generation
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
        return True  # up to 3.16: no generation at all (vcpu_match_mmio_gpa() before 56f17dd3fbc4)
    return vcpu.mmio_gen == kvm.memslots.active[0].generation  # vcpu_match_mmio_gen(): as 0


def load_root(kvm: Kvm, vcpu: VcpuArch) -> Steps[None]:
    """``kvm_mmu_reload()`` -> ``mmu_alloc_direct_roots()`` under ``mmu_lock``."""
    mmu = kvm.mmu
    yield from mmu.lock.acquire(vcpu)
    yield ROOT_RELOAD
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
_PF_BUG: Final = 5  # RET_MMIO_PF_BUG
_SPURIOUS: Final = 6  # RET_PF_SPURIOUS: re-enter, nothing written
_WRITE_PROTECTED: Final = 7  # the hardware walk's trap: a write to a read-only 4 KiB leaf


def access(kvm: Kvm, vcpu: VcpuArch, gpa: int, write: bool, size: int, value: int,
           emulated: bool) -> Steps[Outcome]:
    """One guest access from guest entry to its answer (see the module docstring)."""
    gfn = gpa >> PAGE_SHIFT
    mmu = kvm.mmu
    # An access that starts while a memslot update is in flight may still see the state that
    # update began from: KVM promises the new memslots only once the ioctl has returned.
    start_epoch = kvm.memslots.stable_epoch
    path = EMULATOR
    traps = 0
    if not emulated:
        hw_mask, hw_value = mmu.hw_mmio_mask, mmu.hw_mmio_value
        while True:
            root = vcpu.root
            if root is None or root.invalid or root.mmu_valid_gen != mmu.mmu_valid_gen:
                yield from load_root(kvm, vcpu)
                root = vcpu.root
                assert root is not None
            yield GUEST_ACCESS
            # The hardware walk: no lock, no trap unless something is missing or reserved.  Like a
            # CPU's paging-structure cache, the vCPU remembers the last level-1 table it walked
            # to; the table is still linked exactly while it is on the active list and not
            # obsolete (a zap unlinks a whole subtree), so then the walk may start there.
            psc = vcpu.psc_page
            sp: ShadowPage
            shifts: tuple[int, ...]
            if (psc is not None and vcpu.psc_tag == gfn >> 9
                    and psc.mmu_valid_gen == mmu.mmu_valid_gen and psc.hpa in mmu.active):
                sp, shifts = psc, _LEAF_SHIFT
            else:
                sp, shifts = root, _LEVEL_SHIFTS
            for shift in shifts:
                idx = (gfn >> shift) & 511
                spte = sp.spt[idx]
                if spte & hw_mask == hw_value:
                    fault = _INVALID  # reserved bits / EPT misconfig: the MMIO fast path
                    break
                if not spte & SPTE_PRESENT:
                    fault = _FIXED  # not present: the slow path
                    break
                if not shift or spte & SPTE_LARGE:
                    if write and not spte & SPTE_WRITABLE:
                        # A write to a read-only SPTE: fast_page_fault() first for a 4 KiB leaf.
                        fault = _WRITE_PROTECTED if not shift else _FIXED
                        break
                    # A hit: the access goes to host memory at the SPTE's frame.
                    hva = (spte & PFN_MASK) + (gpa & ((1 << (shift + PAGE_SHIFT)) - 1))
                    if not traps:
                        vcpu.stats.hw_hits += 1
                        path = HW
                    hostmem = kvm.host_memory
                    if write:
                        hostmem.write_int(hva, size, value)
                        out = _new_outcome(Outcome, (gpa, size, True, RAM, path, None,
                                                     hva, False, traps, spte))
                    else:
                        out = _new_outcome(Outcome, (gpa, size, False, RAM, path,
                                                     hostmem.read_int(hva, size), hva, False,
                                                     traps, spte))
                    vcpu.last_outcome = out
                    if kvm.on_access is not None:
                        kvm.on_access(vcpu, out, start_epoch)
                    return out
                sp = sp.children[idx]  # type: ignore[assignment]  # present non-leaf: a table
                if shift == 9:
                    vcpu.psc_page, vcpu.psc_tag = sp, gfn >> 9
            traps += 1
            vcpu.stats.exits += 1
            kvm.srcu.read_lock(vcpu)
            if fault == _INVALID:
                r = yield from _handle_mmio_page_fault(kvm, vcpu, gfn)
                path = FAST
                if r == _EMULATE_CACHED:
                    path, r = CACHE, _EMULATE
                elif r == _INVALID:
                    path = SLOW
                    r = yield from _page_fault(kvm, vcpu, gpa, gfn, write)
                elif r == _PF_BUG:
                    kvm.srcu.read_unlock(vcpu)
                    vcpu.stats.pf_mmio_bug += 1
                    yield EXIT_TO_USERSPACE
                    out = _new_outcome(Outcome, (gpa, size, write, UNKNOWN, FAST, None, None,
                                                 True, traps, 0))
                    vcpu.last_outcome = out
                    if kvm.on_access is not None:
                        kvm.on_access(vcpu, out, start_epoch)
                    return out
            else:
                r = _INVALID
                if fault == _WRITE_PROTECTED:
                    path = FAST
                    r = yield from _fast_page_fault(kvm, vcpu, gfn)
                if r == _INVALID:
                    path = SLOW
                    r = yield from _page_fault(kvm, vcpu, gpa, gfn, write)
            if r == _EMULATE:
                break  # emulate with SRCU still held
            kvm.srcu.read_unlock(vcpu)
            if r == _RETRY:
                vcpu.stats.pf_retry += 1
                yield RETRY
            # _FIXED, _SPURIOUS and _RETRY re-enter the guest, which re-executes the access.
    else:
        kvm.srcu.read_lock(vcpu)
    out = yield from _emulate(kvm, vcpu, gpa, gfn, write, size, value, path, traps)
    kvm.srcu.read_unlock(vcpu)
    vcpu.last_outcome = out
    if kvm.on_access is not None:
        kvm.on_access(vcpu, out, start_epoch)
    return out


def _ram_access(kvm: Kvm, gpa: int, size: int, write: bool, value: int, hva: int, path: Path,
                traps: int, spte: int) -> Outcome:
    if write:
        kvm.host_memory.write_int(hva, size, value)
        return _new_outcome(Outcome, (gpa, size, True, RAM, path, None, hva, False,
                                      traps, spte))
    return _new_outcome(Outcome, (gpa, size, False, RAM, path,
                                  kvm.host_memory.read_int(hva, size), hva, False, traps, spte))


def _handle_mmio_page_fault(kvm: Kvm, vcpu: VcpuArch, gfn: int) -> Steps[int]:
    """``handle_mmio_page_fault()``: the lockless fast path. EMULATE, INVALID or RETRY.

    An MMIO SPTE without a generation (the ``zap-*`` strategies) cannot say whether it is still
    current, so the cache entry it yields is tagged with the generation read *before* the SPTE
    (seqlock order): if a zap finishes and the update returns in between, that tag is already
    stale (or says "update in progress" and is refused).  Tagging with the generation at fill time
    would cache a zapped SPTE as current (found by ``kvmmu check``).  SPTEs with a generation are
    checked against one read after them, which covers the same window, as in the kernel.
    """
    stats = vcpu.stats
    yield VCPU_CACHE
    if match_mmio_gpa(kvm, vcpu, gfn):  # mmio_info_in_cache()
        stats.mmio_cache_hits += 1
        return _EMULATE_CACHED
    strategy = kvm.strategy
    gen_before: int | None = None
    if not strategy.mmio_generation and strategy.cache_generation:
        yield READ_GENERATION
        gen_before = kvm.memslots.active[0].generation
    yield READ_SPTE_LOCKLESS
    spte = _leaf_spte(kvm, vcpu, gfn)  # walk_shadow_page_lockless_begin() .. end()
    codec = kvm.mmu.codec
    if not codec.is_mmio(spte):
        if strategy.mmio_pf_bug and spte & SPTE_PRESENT:
            # 3.x on a direct MMU: "It's a BUG if the gfn is not a mmio page" -- but another
            # vCPU may have mapped RAM there since the misconfig (check_direct_spte_mmio_pf()).
            return _PF_BUG
        return _RETRY  # zapped or replaced by another CPU: let the guest fault again
    yield READ_GENERATION
    current = kvm.memslots.active[vcpu.as_id].generation
    spte_gen = codec.generation(spte)
    valid = mmio_generation_valid(kvm, current, spte_gen)
    trace = kvm.trace
    if trace is not None and not current & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        # check_mmio_spte() returns before its tracepoint while an update is in progress.
        trace.check_mmio_spte(vcpu.id, spte, current & kvm.gen_mask, spte_gen, valid)
    if not valid:
        stats.mmio_fast_invalid += 1
        return _INVALID
    access_bits = codec.access(spte)
    if trace is not None:
        trace.handle_mmio_page_fault(vcpu.id, 0, codec.gfn(spte), access_bits)
    yield VCPU_CACHE
    cache_mmio_info(kvm, vcpu, gfn, access_bits, gen_before)
    stats.mmio_fast_path += 1
    return _EMULATE


def _fast_page_fault(kvm: Kvm, vcpu: VcpuArch, gfn: int) -> Steps[int]:
    """``fast_page_fault()`` (3.6+, c7ba5b48cc8d): a write fault on a 4 KiB SPTE that dirty
    logging made read-only is fixed without ``mmu_lock``.  FIXED, SPURIOUS or INVALID (go slow).

    Under SRCU only: the slot is looked up, the leaf read by a lockless walk
    (``walk_shadow_page_lockless_begin()``), and if the slot is writable the SPTE is made writable
    with ``cmpxchg64(sptep, old, old | PT_WRITABLE_MASK)`` -- one step, which fails if anything
    changed the SPTE since the read (a zap, another fix) -- then the page is logged
    (``fast_pf_fix_direct_spte()`` -> ``mark_page_dirty_in_slot()``).  A leaf already writable was
    fixed by another vCPU (``RET_PF_SPURIOUS``).  v3.10 arch/x86/kvm/mmu.c ``fast_page_fault()``
    and ``page_fault_can_be_fast()``; v6.8 arch/x86/kvm/mmu/mmu.c ``fast_page_fault()``
    (``is_access_allowed()``, ``spte_can_locklessly_be_made_writable()`` / ``is_mmu_writable_spte()``).
    """
    yield READ_MEMSLOTS
    slot = kvm.memslots.active[vcpu.as_id].lookup(gfn)
    if slot is None or slot.invalid or slot.readonly or slot.dirty_bitmap is None:
        return _INVALID  # not write-protected for dirty logging: only the slow path knows
    yield READ_SPTE_LOCKLESS
    leaf = _leaf_table(kvm, vcpu, gfn)
    if leaf is None:
        return _INVALID
    idx = gfn & 511
    old = leaf.spt[idx]
    if not old & SPTE_PRESENT or kvm.mmu.codec.is_mmio(old):
        return _INVALID
    if old & SPTE_WRITABLE:
        vcpu.stats.pf_spurious += 1
        return _SPURIOUS
    yield WRITE_SPTE  # the cmpxchg
    if leaf.spt[idx] != old:
        return _INVALID
    leaf.spt[idx] = old | SPTE_WRITABLE
    slot.mark_dirty(gfn)
    vcpu.stats.pf_fast += 1
    return _FIXED


def _leaf_table(kvm: Kvm, vcpu: VcpuArch, gfn: int) -> ShadowPage | None:
    """The level-1 table a lockless walk from the vCPU's root reaches for ``gfn``, if any."""
    sp = vcpu.root
    for shift in _LEVEL_SHIFTS[:-1]:
        if sp is None:
            return None
        sp = sp.children[(gfn >> shift) & 511]
    return sp


def _leaf_spte(kvm: Kvm, vcpu: VcpuArch, gfn: int) -> int:
    """The SPTE a lockless walk from the vCPU's root ends at for ``gfn`` (0 if it stops early).

    A level-1 table that is still linked (active and not obsolete) holds exactly what the walk
    would reach, so the vCPU's paging-structure cache may stand in for the upper levels.
    """
    mmu = kvm.mmu
    sp = vcpu.psc_page
    if (sp is not None and vcpu.psc_tag == gfn >> 9 and sp.mmu_valid_gen == mmu.mmu_valid_gen
            and sp.hpa in mmu.active):
        return sp.spt[gfn & 511]
    sp = vcpu.root
    for shift in _LEVEL_SHIFTS:
        if sp is None:
            return 0
        idx = (gfn >> shift) & 511
        child = sp.children[idx]
        if child is None or not shift:
            return sp.spt[idx]
        sp = child
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
    yield READ_MEMSLOTS
    slot = kvm.memslots.active[vcpu.as_id].lookup(gfn)  # kvm_vcpu_gfn_to_memslot()
    target_level = 1
    writable = False
    if slot is not None and slot.invalid:
        if kvm.strategy.invalid_slot_fault == "retry":
            return _RETRY  # 5.13+ (e0c378684b65): wait until the slot is gone or moved
        slot = None  # before 5.13: KVM_PFN_NOSLOT, handled as MMIO (an MMIO SPTE is installed)
    if slot is None:
        # kvm_handle_noslot_fault(): cache first, then the caching and max-gfn tests.
        yield VCPU_CACHE
        cache_mmio_info(kvm, vcpu, gfn, ACC_ALL & codec.marker.access_mask)
        if not codec.marker.caching:
            stats.pf_emulate += 1
            return _EMULATE  # kvm.mmio_caching off: every MMIO access takes this path
        if gfn > (1 << (kvm.phys_bits - PAGE_SHIFT)) - 1:
            stats.pf_emulate += 1
            return _EMULATE  # beyond kvm_mmu_max_gfn(): no MMIO SPTE
    elif write and slot.flags & KVM_MEM_READONLY:
        stats.pf_emulate += 1
        return _EMULATE  # KVM_PFN_ERR_RO_FAULT: the emulator turns the write into MMIO
    else:
        # Writable unless READONLY; with dirty logging, only a write fault maps writable (so the
        # first write to each page is seen and logged).
        writable = not slot.flags & KVM_MEM_READONLY and (
            write or not slot.flags & KVM_MEM_LOG_DIRTY_PAGES)
        if kvm.large_pages and slot.huge_page_ok(gfn):
            target_level = 2
    lock = mmu.lock
    # The TDP MMU faults under mmu_lock held for read (5.12+), so two vCPUs' faults run at once
    # and every SPTE they install is a cmpxchg that may lose: see the ``shared`` tests below.
    shared = mmu.tdp_mmu
    if shared:
        yield from lock.take(vcpu, True)
    else:
        # MmuLock.acquire() inlined: this is the hottest path of a plain run.
        yield MMU_LOCK
        while lock.holder is not None or lock.readers:
            lock.contended += 1
            yield MMU_LOCK
        lock.holder = vcpu
        lock.acquisitions += 1
    root = vcpu.root
    if root is None or root.mmu_valid_gen != mmu.mmu_valid_gen or root.hpa not in mmu.active:
        yield from lock.drop(vcpu, shared)
        return _RETRY  # is_page_fault_stale(): zap_all_fast ran since guest entry
    # direct_map(): walk down, linking new shadow pages where tables are missing.  A linked
    # level-1 table for this gfn (the vCPU's paging-structure cache) is where the walk would end.
    trace = kvm.trace
    psc = vcpu.psc_page
    sp: ShadowPage
    if (target_level == 1 and psc is not None and vcpu.psc_tag == gfn >> 9
            and psc.mmu_valid_gen == mmu.mmu_valid_gen and psc.hpa in mmu.active):
        sp, level = psc, 1
    else:
        sp, level = root, 4
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
            large = sp.spt[idx]
            if large:
                yield ZAP_SPTE
                if shared and (sp.spt[idx] != large or sp.invalid):
                    yield from lock.drop(vcpu, shared)
                    return _RETRY  # tdp_mmu_zap_spte_atomic() lost its cmpxchg
                mmu.clear_spte(sp, idx)  # drop_large_spte(): a 2 MiB leaf must become a table
            yield WRITE_SPTE
            if shared and (sp.children[idx] is not None or sp.spt[idx] or sp.invalid):
                # tdp_mmu_link_sp() lost its cmpxchg to another vCPU's table: free ours, retry.
                yield from lock.drop(vcpu, shared)
                return _RETRY
            child = mmu.alloc_page(gfn & ~((1 << (9 * (level - 1))) - 1), level - 1,
                                   vcpu.as_id, sp, idx)
            if trace is not None:
                trace.kvm_mmu_get_page(vcpu.id, trace.sp_text(child.mmu_valid_gen, child.gfn,
                                                              child.level, 0), True)
        sp = child
        level -= 1
    old = sp.spt[idx]
    if slot is None:
        yield READ_GENERATION
        gen = kvm.memslots.active[vcpu.as_id].generation  # make_mmio_spte(): the second read
        spte_gen = gen & kvm.gen_mask if kvm.strategy.mmio_generation else 0
        access_bits = ACC_ALL & codec.marker.stored_access_mask
        yield WRITE_SPTE
        if shared and (sp.spt[idx] != old or sp.invalid):
            yield from lock.drop(vcpu, shared)
            return _RETRY  # tdp_mmu_set_spte_atomic() failed: RET_PF_RETRY
        if not codec.is_mmio(old):
            sp.nr_mmio += 1
        sp.spt[idx] = codec.encode(gfn, access_bits, spte_gen)
        sp.mmio_cached = True
        stats.pf_mmio_spte_created += 1
        stats.pf_emulate += 1
        if trace is not None:
            # The access field: ``access & (ACC_WRITE_MASK | ACC_USER_MASK)`` in 3.x-5.1,
            # ``access & shadow_mmio_access_mask`` later (0 on EPT), i.e. what the SPTE stores.
            shown = (ACC_ALL & ACC_WRITE_USER if kvm.strategy.trace_access_write_user
                     else access_bits)
            trace.mark_mmio_spte(vcpu.id, sp.hpa + 8 * idx, gfn, shown, spte_gen)
        result = _EMULATE
    else:
        base = gfn if level == 1 else gfn & ~511
        # make_spte(), i.e. spte.make_ram_spte() inlined: pfn | base bits | W | PS.
        new = ((slot.userspace_addr + ((base - slot.base_gfn) << PAGE_SHIFT))
               | mmu.ram_spte_bits | (SPTE_WRITABLE if writable else 0)
               | (SPTE_LARGE if level == 2 else 0))
        if new == old:
            # mmu_set_spte(): "if (*sptep == spte) ret = RET_PF_SPURIOUS" -- another vCPU fixed
            # it first; counted as pf_spurious by kvm_mmu_do_page_fault().
            stats.pf_spurious += 1
            result = _SPURIOUS
        else:
            yield WRITE_SPTE
            if shared and (sp.spt[idx] != old or sp.invalid):
                yield from lock.drop(vcpu, shared)
                return _RETRY  # tdp_mmu_set_spte_atomic() failed: RET_PF_RETRY
            if old and codec.is_mmio(old):
                sp.nr_mmio -= 1
            sp.spt[idx] = new
            if writable and slot.dirty_bitmap is not None:
                slot.mark_dirty(gfn)
            stats.pf_fixed += 1
            result = _FIXED
    mmu.ever_mapped.add(key)
    if shared:
        yield from lock.drop(vcpu, True)
    else:
        yield MMU_UNLOCK  # MmuLock.release() inlined, as the acquisition
        lock.holder = None
    return result


def _emulate(kvm: Kvm, vcpu: VcpuArch, gpa: int, gfn: int, write: bool, size: int, value: int,
             path: Path, traps: int) -> Steps[Outcome]:
    """``x86_emulate_instruction()`` -> ``emulator_read_write_onepage()`` for one access."""
    stats = vcpu.stats
    yield EMULATE
    stats.insn_emulation += 1
    yield VCPU_CACHE
    if match_mmio_gpa(kvm, vcpu, gfn):  # vcpu_mmio_gva_to_gpa(): the cache says MMIO
        if path is EMULATOR:
            path = CACHE
            stats.mmio_cache_hits += 1
    else:
        yield READ_MEMSLOTS  # kvm_vcpu_read_guest() / kvm_vcpu_write_guest()
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
        return _new_outcome(Outcome, (gpa, size, write, MMIO, path,
                                      None if write else dev_value, None, False, traps, 0))
    stats.mmio_exits += 1
    if trace is not None:
        trace.kvm_mmio(vcpu.id, "write" if write else "unsatisfied-read", size, gpa,
                       value if write else 0)
    yield EXIT_TO_USERSPACE
    return _new_outcome(Outcome, (gpa, size, write, MMIO, path, None, None, True,
                                  traps, 0))
