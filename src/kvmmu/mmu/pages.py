"""Shadow pages: the 4-level direct map, the active list, roots and the zap primitives.

Design. A direct (TDP-style) MMU maps guest-physical frames through four levels of 512-entry
tables.  Each table is a :class:`ShadowPage` (``struct kvm_mmu_page``) holding its 512 SPTE words;
a non-leaf SPTE carries the child's (model) host-physical address as the hardware would, and a
parallel ``children`` list lets the walk follow it without a lookup.  Pages live on an active list
(``kvm->arch.active_mmu_pages``; a dict in creation order, oldest first, as
``kvm_zap_obsolete_pages()`` walks it) and carry the ``mmu_valid_gen`` they were created in, so that
``kvm_mmu_zap_all_fast()`` can make every page obsolete with one increment and free them lazily.

Zapping is written in the steppable protocol: every SPTE cleared, page visited or page freed yields
a step, because the MMIO fast path reads SPTEs without ``mmu_lock`` and may run in between.

Simplifications, said once: zapping a page zaps its children too (the kernel leaves parentless
children on the active list for reuse through the page hash; on a direct map they are never reached
again before their own zap); roots are shared by all vCPUs of an address space, as direct roots with
equal roles are in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from kvmmu.memslots import Memslot
from kvmmu.mmu.steps import (
    BUMP_MMU_VALID_GEN,
    FREE_SHADOW_PAGE,
    VISIT_SHADOW_PAGE,
    WRITE_PROTECT,
    ZAP_SPTE,
    Steps,
)
from kvmmu.spte import (
    SPTE_LARGE,
    SPTE_PRESENT,
    SPTE_WRITABLE,
    SPTES_PER_PAGE,
    GenerationLayout,
    MmioSpteCodec,
    make_nonleaf_spte,
    make_ram_spte,
)
from kvmmu.sync import MmuLock
from kvmmu.trace import Tracer

ROOT_LEVEL: Final = 4
# Built at import from lists: mypyc would fold a literal product into 512-entry C tuples.
_EMPTY_TABLE: Final = tuple([0] * SPTES_PER_PAGE)
_NO_CHILDREN: Final = tuple([None] * SPTES_PER_PAGE)
#: ``BATCH_ZAP_PAGES``: obsolete pages freed between two breaks of ``mmu_lock``.
BATCH_ZAP_PAGES: Final = 10


class ShadowPage:
    """``struct kvm_mmu_page`` of a direct map: one 512-entry table at ``level`` covering ``gfn``."""

    __slots__ = ("as_id", "children", "gfn", "hpa", "invalid", "level", "mmio_cached",
                 "mmu_valid_gen", "nr_mmio", "parent", "parent_index", "spt")

    def __init__(self, hpa: int, gfn: int, level: int, as_id: int, mmu_valid_gen: int,
                 parent: ShadowPage | None, parent_index: int) -> None:
        self.hpa = hpa
        self.gfn = gfn  # first gfn this table translates (role.direct: sp->gfn)
        self.level = level
        self.as_id = as_id
        self.mmu_valid_gen = mmu_valid_gen
        self.spt: list[int] = [0] * SPTES_PER_PAGE
        self.children: list[ShadowPage | None] = [None] * SPTES_PER_PAGE
        self.parent = parent
        self.parent_index = parent_index
        self.mmio_cached = False  # sticky, as sp->mmio_cached: set when an MMIO SPTE is installed
        self.nr_mmio = 0  # MMIO SPTEs currently in spt (for statistics)
        #: ``sp->role.invalid``: zapped.  With a one-bit ``mmu_valid_gen`` (5.4+) a page two zaps
        #: old has the current generation again, so obsolescence must test this too
        #: (``is_obsolete_sp()``: ``sp->role.invalid || sp->mmu_valid_gen != ...``).
        self.invalid = False

    def gfn_of(self, index: int) -> int:
        """First gfn translated by entry ``index``."""
        return self.gfn + (index << (9 * (self.level - 1)))

    def __repr__(self) -> str:
        return f"ShadowPage(l{self.level} gfn {self.gfn:#x} gen {self.mmu_valid_gen})"


@dataclass(slots=True)
class MmuStats:
    """VM-wide MMU counters, named like KVM's where KVM has one (``struct kvm_vm_stat``)."""

    mmu_cache_miss: int = 0  # shadow pages allocated
    mmu_shadow_zapped: int = 0  # shadow pages zapped
    mmio_sptes_zapped: int = 0
    sptes_zapped: int = 0
    invalidation_pages_walked: int = 0
    invalidation_sptes_walked: int = 0
    zap_all_fast: int = 0
    generation_wraps: int = 0
    sptes_write_protected: int = 0
    #: Live entries dropped with the pages that held them (``mmu_page_zap_pte()`` per entry of a
    #: zapped page): what makes freeing a full page cost more than an empty one.
    sptes_dropped: int = 0
    root_allocations: int = 0
    memslot_updates: int = 0


@dataclass(slots=True)
class Mmu:
    """``kvm->arch``'s MMU part: the active list, ``mmu_valid_gen``, roots and ``mmu_lock``."""

    layout: GenerationLayout
    codec: MmioSpteCodec
    lock: MmuLock = field(default_factory=MmuLock)
    mmu_valid_gen: int = 0
    active: dict[int, ShadowPage] = field(default_factory=dict)
    roots: dict[int, ShadowPage] = field(default_factory=dict)
    stats: MmuStats = field(default_factory=MmuStats)
    next_hpa: int = 0x1000
    #: (as_id << 52 | gfn) of every gfn that ever had a leaf SPTE, to count refaults.
    ever_mapped: set[int] = field(default_factory=set)
    #: What the hardware walk tests: ``spte & mask == value`` traps as MMIO. With caching off
    #: nothing can match (mask 0, value 1), so the walk needs no separate test.
    hw_mmio_mask: int = 0
    hw_mmio_value: int = 1
    trace: Tracer | None = None
    #: Bits every RAM leaf carries (``make_ram_spte(0, False, False, layout)``).
    ram_spte_bits: int = 0
    #: Bits every link to a child table carries (``make_nonleaf_spte(0, layout)``), so that a
    #: link is one ``|`` with the child's address.
    nonleaf_spte_bits: int = 0
    #: ``mmu_valid_gen`` toggles between 0 and 1 (5.4+, ca333add6933) instead of counting.
    valid_gen_toggles: bool = False
    #: Pages zapped before ``kvm_zap_obsolete_pages()`` considers a lock break (the strategy's
    #: ``Strategy.zap_break_batch``).
    zap_break_batch: int = BATCH_ZAP_PAGES
    #: The TDP MMU (``kvm.tdp_mmu``, ``Strategy.tdp_mmu``): faults hold ``mmu_lock`` for read.
    tdp_mmu: bool = False
    #: 5.13+ TDP MMU: ``kvm_mmu_zap_all_fast()`` only marks the roots invalid under the write lock
    #: and tears them down after dropping it, under the read lock.
    tdp_teardown_unlocked: bool = False
    #: 5.13+ TDP MMU: dirty-logging write protection and the collapsible-SPTE zap take the read
    #: lock (the slot zap and KVM_GET_DIRTY_LOG's re-protection keep the write lock).
    tdp_read_slot_ops: bool = False

    def __post_init__(self) -> None:
        self.ram_spte_bits = make_ram_spte(0, False, False, self.layout)
        self.nonleaf_spte_bits = make_nonleaf_spte(0, self.layout)
        if self.codec.marker.caching:
            self.hw_mmio_mask, self.hw_mmio_value = self.codec.marker.mask, self.codec.marker.value

    def alloc_page(self, gfn: int, level: int, as_id: int, parent: ShadowPage | None,
                   index: int) -> ShadowPage:
        """``kvm_mmu_alloc_shadow_page()``: a new page on the active list (a cache miss)."""
        sp = ShadowPage(self.next_hpa, gfn, level, as_id, self.mmu_valid_gen, parent, index)
        self.next_hpa += 0x1000
        self.active[sp.hpa] = sp
        self.stats.mmu_cache_miss += 1
        if parent is not None:
            parent.spt[index] = self.nonleaf_spte_bits | sp.hpa  # make_nonleaf_spte()
            parent.children[index] = sp
        return sp

    def is_obsolete(self, sp: ShadowPage) -> bool:
        """``is_obsolete_sp()``: zapped, or created before the last ``kvm_mmu_zap_all_fast()``."""
        return sp.invalid or sp.mmu_valid_gen != self.mmu_valid_gen

    def root_for(self, as_id: int) -> tuple[ShadowPage, bool]:
        """``mmu_alloc_root()`` under ``mmu_lock``: the shared root of ``as_id`` and whether new."""
        root = self.roots.get(as_id)
        if root is not None and not self.is_obsolete(root) and root.hpa in self.active:
            return root, False
        root = self.alloc_page(0, ROOT_LEVEL, as_id, None, 0)
        self.roots[as_id] = root
        self.stats.root_allocations += 1
        return root, True

    def clear_spte(self, sp: ShadowPage, index: int) -> None:
        """``mmu_spte_clear_track_bits()`` / ``drop_spte()``: one leaf or link SPTE to zero."""
        old = sp.spt[index]
        if not old:
            return
        if self.codec.is_mmio(old):
            sp.nr_mmio -= 1
            self.stats.mmio_sptes_zapped += 1
        sp.spt[index] = 0
        self.stats.sptes_zapped += 1

    def unlink(self, sp: ShadowPage) -> list[tuple[ShadowPage, int]]:
        """``kvm_mmu_prepare_zap_page()``: detach ``sp`` and its subtree and drop their entries.

        Returns each freed page with the number of live entries it held.  The entries are cleared
        at once (``kvm_mmu_page_unlink_children()``): a vCPU that still holds an obsolete root
        then faults and retries instead of walking a freed tree.  The caller yields one
        :attr:`Step.FREE_SHADOW_PAGE` per page and then calls :meth:`drop_entries`.
        """
        parent = sp.parent
        if parent is not None and parent.children[sp.parent_index] is sp:
            parent.spt[sp.parent_index] = 0
            parent.children[sp.parent_index] = None
        freed: list[tuple[ShadowPage, int]] = []
        stack = [sp]
        trace = self.trace
        while stack:
            page = stack.pop()
            if self.active.pop(page.hpa, None) is None:
                continue
            if trace is not None:  # fired before role.invalid is set, as in the kernel
                trace.kvm_mmu_prepare_zap_page(0, trace.sp_text(
                    page.mmu_valid_gen, page.gfn, page.level, 0))
            freed.append((page, SPTES_PER_PAGE - page.spt.count(0)))
            self.stats.mmu_shadow_zapped += 1
            self.stats.mmio_sptes_zapped += page.nr_mmio
            page.nr_mmio = 0
            page.invalid = True
            if page.level > 1:  # a level-1 table holds leaves only: no child to scan for
                stack.extend(filter(None, page.children))  # the linked ones (a page is truthy)
                page.children[:] = _NO_CHILDREN
            page.spt[:] = _EMPTY_TABLE
        for root_as, root in list(self.roots.items()):
            if root.hpa not in self.active:
                del self.roots[root_as]
        return freed

    def drop_entries(self, live: int) -> None:
        """Account the live entries of a freed page (``mmu_page_zap_pte()`` for each)."""
        self.stats.sptes_dropped += live

    def zap_all_fast(self, who: object) -> Steps[int]:
        """``kvm_mmu_zap_all_fast()``: obsolete every page with one increment, free them lazily.

        Returns the number of pages freed.  vCPUs reload their roots before their next guest
        entry (``KVM_REQ_MMU_FREE_OBSOLETE_ROOTS``); the walk from the oldest page may drop the
        lock once ``zap_break_batch`` pages were zapped since the last break, and does so only if
        ``cond_resched_rwlock_write()`` says so (:meth:`MmuLock.needbreak`: a waiter spins);
        until a break the batch is not reset, so every later page tests again (v3.11 and v6.8
        ``kvm_zap_obsolete_pages()``: ``if (batch >= BATCH_ZAP_PAGES &&
        cond_resched_rwlock_write(&kvm->mmu_lock)) { batch = 0; goto restart; }``).  The tracepoint fires
        before the toggle, so it prints the generation being retired (``trace_kvm_mmu_zap_all_fast
        (kvm)`` then ``kvm->arch.mmu_valid_gen = kvm->arch.mmu_valid_gen ? 0 : 1``, current
        ``arch/x86/kvm/mmu/mmu.c``); before 5.4 the generation was a counter (``++``).
        """
        yield from self.lock.acquire(who)
        yield BUMP_MMU_VALID_GEN
        if self.trace is not None:
            self.trace.kvm_mmu_zap_all_fast(0, self.mmu_valid_gen, len(self.active))
        self.mmu_valid_gen = (self.mmu_valid_gen ^ 1) if self.valid_gen_toggles \
            else self.mmu_valid_gen + 1
        self.stats.zap_all_fast += 1
        self.roots.clear()
        if self.tdp_teardown_unlocked:
            return (yield from self._zap_invalidated_roots(who))
        freed_total = 0
        batch = 0
        for sp in list(self.active.values()):
            if not self.is_obsolete(sp) or sp.hpa not in self.active:
                continue
            if sp.parent is not None and sp.parent.hpa in self.active:
                continue  # freed with its obsolete parent
            for _page, live in self.unlink(sp):
                yield FREE_SHADOW_PAGE
                self.drop_entries(live)
                freed_total += 1
                batch += 1
                if batch >= self.zap_break_batch and self.lock.needbreak():
                    batch = 0
                    yield from self.lock.lock_break(who)
        yield from self.lock.release(who)
        return freed_total

    def _zap_invalidated_roots(self, who: object) -> Steps[int]:
        """The 5.13+ TDP MMU half of ``kvm_mmu_zap_all_fast()``, entered with the write lock held.

        ``kvm_tdp_mmu_invalidate_all_roots()`` marks every root invalid (``role.invalid``) in the
        same write-locked section that bumps ``mmu_valid_gen`` and requests the reload; then
        ``write_unlock()``, and ``kvm_tdp_mmu_zap_invalidated_roots()`` tears the old trees down
        under ``read_lock()`` -- so vCPUs fault on their new roots meanwhile (b7cccd397f31, 5.13;
        v6.1.20 runs the teardown on a workqueue and the ioctl waits in ``flush_workqueue()``, v6.8
        runs it in the ioctl's thread again: the same waits, modelled as the latter).  The
        teardown yields the lock at any SPTE when a *writer* waits (``tdp_mmu_zap_root(kvm, root,
        shared=true)`` -> ``tdp_mmu_iter_cond_resched()`` -> ``cond_resched_rwlock_read()``), e.g.
        a vCPU reloading its root (``mmu_alloc_direct_roots()`` takes the write lock up to 6.9);
        the model tests at every page freed.
        """
        tops = []
        for sp in self.active.values():
            if sp.parent is None or sp.parent.hpa not in self.active:
                if sp.level == ROOT_LEVEL:
                    sp.invalid = True  # role.invalid on the roots
                tops.append(sp)
        lock = self.lock
        yield from lock.release(who)
        yield from lock.acquire_read(who)
        freed_total = 0
        for top in tops:
            if top.hpa not in self.active:
                continue
            for _page, live in self.unlink(top):
                yield FREE_SHADOW_PAGE
                self.drop_entries(live)
                freed_total += 1
                if lock.read_needbreak():
                    yield from lock.read_lock_break(who)
        yield from lock.release_read(who)
        return freed_total

    def zap_all_slow(self, who: object) -> Steps[int]:
        """``kvm_mmu_zap_all()`` (before 3.11): zap every page in place under one ``mmu_lock`` hold.

        No generation and no lock break: the walk frees the active list from the head while every
        faulting vCPU waits, then all vCPUs reload their roots (``kvm_reload_remote_mmus``).
        """
        yield from self.lock.acquire(who)
        freed_total = 0
        for sp in list(self.active.values()):
            if sp.hpa not in self.active or (sp.parent is not None
                                             and sp.parent.hpa in self.active):
                continue  # already freed, or freed with its parent
            yield VISIT_SHADOW_PAGE
            self.stats.invalidation_pages_walked += 1
            for _page, live in self.unlink(sp):
                yield FREE_SHADOW_PAGE
                self.drop_entries(live)
                freed_total += 1
        self.roots.clear()  # kvm_reload_remote_mmus(): every vCPU loads a new root
        yield from self.lock.release(who)
        return freed_total

    def pages_in_gfn_range(self, start: int, end: int, max_level: int) -> list[ShadowPage]:
        """Pages at ``level <= max_level`` whose coverage meets ``[start, end)`` (an rmap stand-in)."""
        out = []
        for sp in self.active.values():
            if sp.level <= max_level:
                span = 1 << (9 * sp.level)
                if sp.gfn < end and start < sp.gfn + span and not self.is_obsolete(sp):
                    out.append(sp)
        return out

    def zap_gfn_range(self, who: object, start: int, end: int, as_id: int) -> Steps[int]:
        """``kvm_mmu_zap_memslot_leafs()``: zap the RAM leaves mapping gfns in ``[start, end)``."""
        yield from self.lock.acquire(who)
        zapped = 0
        codec = self.codec
        for sp in self.pages_in_gfn_range(start, end, 2):
            if sp.as_id != as_id:
                continue
            for i, spte in enumerate(sp.spt):
                if not spte or codec.is_mmio(spte):
                    continue
                is_leaf = sp.level == 1 or bool(spte & SPTE_LARGE)
                g = sp.gfn_of(i)
                span = 1 << (9 * (sp.level - 1))
                if is_leaf and g < end and start < g + span:
                    yield ZAP_SPTE
                    self.clear_spte(sp, i)
                    zapped += 1
        yield from self.lock.release(who)
        return zapped

    def zap_collapsible(self, who: object, slot: Memslot, shared: bool = False) -> Steps[int]:
        """``kvm_mmu_zap_collapsible_sptes()`` (4.1+, 3ea3b7fa9af0): after dirty logging is turned
        off, drop the 4 KiB tables of the slot where a 2 MiB leaf may go, so the next fault maps
        the huge page again.  Returns the number of tables zapped.  ``shared``: the 5.13+ TDP MMU
        does it under the read lock (v6.1.20 ``kvm_mmu_zap_collapsible_sptes()``:
        ``read_lock(); kvm_tdp_mmu_zap_collapsible_sptes(); read_unlock()``; v5.12.9 took the
        write lock); a fault that walked into a table zapped meanwhile loses its cmpxchg."""
        yield from self.lock.take(who, shared)
        zapped = 0
        for sp in self.pages_in_gfn_range(slot.base_gfn, slot.end_gfn, 1):
            if sp.as_id != slot.as_id or sp.hpa not in self.active or not slot.huge_page_ok(sp.gfn):
                continue
            for _page, live in self.unlink(sp):
                yield FREE_SHADOW_PAGE
                self.drop_entries(live)
                zapped += 1
        yield from self.lock.drop(who, shared)
        return zapped

    def _writable_leaf(self, sp: ShadowPage, i: int, spte: int, start: int, end: int) -> bool:
        return bool(spte & SPTE_PRESENT and spte & SPTE_WRITABLE and not self.codec.is_mmio(spte)
                    and (sp.level == 1 or spte & SPTE_LARGE) and start <= sp.gfn_of(i) < end)

    def write_protect_range(self, who: object, start: int, end: int, as_id: int,
                            shared: bool = False) -> Steps[int]:
        """``kvm_mmu_slot_remove_write_access()``: make the RAM leaves in the range read-only.

        ``shared``: the 5.13+ TDP MMU write-protects under the read lock (v6.1.20:
        ``read_lock(); kvm_tdp_mmu_wrprot_slot(); read_unlock()``), each SPTE with cmpxchg, so an
        entry a concurrent fault changed since it was read is read again (``tdp_mmu_set_spte_atomic``
        failing makes the iterator retry it)."""
        yield from self.lock.take(who, shared)
        n = 0
        for sp in self.pages_in_gfn_range(start, end, 2):
            if sp.as_id != as_id:
                continue
            for i, spte in enumerate(sp.spt):
                if self._writable_leaf(sp, i, spte, start, end):
                    yield WRITE_PROTECT
                    if shared:
                        spte = sp.spt[i]
                        if not self._writable_leaf(sp, i, spte, start, end):
                            continue
                    sp.spt[i] = spte & ~SPTE_WRITABLE
                    n += 1
        self.stats.sptes_write_protected += n
        yield from self.lock.drop(who, shared)
        return n
