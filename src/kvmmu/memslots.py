"""Memslots: ``KVM_SET_USER_MEMORY_REGION`` with the kernel's semantics, snapshots and generations.

Design. The kernel (``virt/kvm/kvm_main.c``) keeps, per address space, a pointer to an immutable-ish
``struct kvm_memslots`` that readers dereference under SRCU; an update builds a new set, publishes it
with ``rcu_assign_pointer`` and waits for a grace period.  The model does the same: a
:class:`Memslots` snapshot is never mutated except for its ``generation`` field (which the kernel
also writes in place after the grace period), so a reader that took a snapshot keeps a consistent
view however long it runs.  Lookups search a tree by base gfn in O(log n), as since the 2021 switch
from the LRU array (the design note's "13,000 -> 2,000 cycles with 117 slots"); an update builds
the next snapshot in O(log n) by path copying (:class:`SlotSet`, :mod:`kvmmu.persistent`), so
filling all 32,764 slots is O(n log n) as in 5.17+ kernels, not O(n^2).

The update itself, :func:`set_memory_region`, is a generator in the steppable protocol
(``kvmmu.mmu.steps``) so that the interleaving explorer and the timed simulation can put a vCPU
between its publish, its grace period and its generation write.  Architecture-specific work (zaps,
write protection, the MMIO wrap check) is delegated to :class:`ArchHooks`, as the kernel delegates to
``kvm_arch_flush_shadow_memslot()``, ``kvm_arch_memslots_updated()`` and
``kvm_arch_commit_memory_region()``; this module never imports the MMU.

Generations step as the selected era did (design note sections 2 and 4):

* ``2013`` (up to 3.16, ``install_new_memslots()``): +1 per publish, the new value travels with the
  new snapshot.  The MMIO generation of 3.11 is ``(generation + MMIO_MAX_GEN - 150) &
  MMIO_GEN_MASK``; the model keeps that value itself in ``generation`` (0x7FF69 before any update).
* ``2014`` (3.17 - 4.1, ee3d1570b584): the published snapshot carries ``old + 1`` (odd: update in
  progress) and gets ``+1`` again after ``synchronize_srcu``; ``kvm_create_vm()`` starts it at -150.
* ``2015`` (4.2 - 5.0, f481b069e674): as 2014, but the second step is ``+= 2 * nr_as - 1`` and
  address space ``i`` starts at ``i * 2 - 150``, so the spaces never share a generation.
* ``modern`` (5.1+, 164bf7e56c5a): the published snapshot carries ``old |
  KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS`` (bit 63); after the grace period
  ``kvm_arch_memslots_updated(old + nr_as)`` runs, then the field is written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

from kvmmu.errors import KvmError
from kvmmu.mmu.steps import PUBLISH_MEMSLOTS, WRITE_GENERATION, Steps
from kvmmu.persistent import SortedMap
from kvmmu.spte import PAGE_SHIFT, PAGE_SIZE
from kvmmu.sync import Srcu

KVM_MEM_LOG_DIRTY_PAGES: Final = 1 << 0
KVM_MEM_READONLY: Final = 1 << 1
VALID_FLAGS: Final = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
#: ``KVM_USER_MEM_SLOTS`` on x86: the value of ``KVM_CAP_NR_MEMSLOTS`` on this project's machines.
KVM_USER_MEM_SLOTS: Final = 32764
#: ``KVM_MEM_MAX_NR_PAGES``: a slot has fewer than 2^31 pages.
KVM_MEM_MAX_NR_PAGES: Final = (1 << 31) - 1
#: ``TASK_SIZE_MAX`` with 4-level paging: ``access_ok()`` refuses user ranges beyond it.
TASK_SIZE_MAX: Final = (1 << 47) - PAGE_SIZE
KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS: Final = 1 << 63
U64_MASK: Final = (1 << 64) - 1
_U32_MAX: Final = (1 << 32) - 1
HPAGE_GFNS: Final = 512  # 2 MiB / 4 KiB
ERAS: Final = ("2013", "2014", "2015", "modern")
#: The APIC access page's private memslot (``APIC_ACCESS_PAGE_PRIVATE_MEMSLOT``) on VMX hosts with
#: an in-kernel LAPIC: one page at ``APIC_DEFAULT_PHYS_BASE`` in address space 0.
APIC_ACCESS_GFN: Final = 0xFEE00


class Change(Enum):
    """``enum kvm_mr_change``; NONE is the identical request that changes nothing."""

    CREATE = "create"
    DELETE = "delete"
    MOVE = "move"
    FLAGS_ONLY = "flags-only"
    NONE = "none"


# The members as module constants for the hot paths (as kvmmu.mmu.steps does for Step: on Python
# 3.11 ``Change.X`` goes through the enum metaclass and costs about 8x a module global).
CREATE: Final = Change.CREATE
DELETE: Final = Change.DELETE
MOVE: Final = Change.MOVE
FLAGS_ONLY: Final = Change.FLAGS_ONLY
NO_CHANGE: Final = Change.NONE
#: The changes that back new gfns (an MMIO SPTE there may now be wrong) and the changes that
#: publish the old slot invalid first.  Tuples: ``in`` tests identity first, and ``Enum.__hash__``
#: is a Python function, so a frozenset would be slower.
ADDS_BACKING: Final = (CREATE, MOVE)
INVALIDATES: Final = (DELETE, MOVE)


@dataclass(frozen=True, slots=True)
class Memslot:
    """``struct kvm_memory_slot``: gfns ``base_gfn .. base_gfn+npages`` backed by host memory.

    ``invalid`` is ``KVM_MEMSLOT_INVALID``: the copy published while a DELETE or MOVE is in
    progress.  The dirty bitmap is the one mutable part, as in the kernel; it is shared by the
    copies a FLAGS_ONLY or MOVE makes and is not part of the slot's value.
    """

    id: int
    as_id: int
    base_gfn: int
    npages: int
    flags: int
    userspace_addr: int
    invalid: bool = False
    dirty_bitmap: bytearray | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    @property
    def readonly(self) -> bool:
        return bool(self.flags & KVM_MEM_READONLY)

    @property
    def dirty_logging(self) -> bool:
        return bool(self.flags & KVM_MEM_LOG_DIRTY_PAGES)

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def hva(self, gfn: int) -> int:
        """``__gfn_to_hva_memslot()``: the host address backing ``gfn``."""
        return self.userspace_addr + ((gfn - self.base_gfn) << PAGE_SHIFT)

    def huge_page_ok(self, gfn: int) -> bool:
        """Whether the 2 MiB region around ``gfn`` may be one leaf (``lpage_info.disallow_lpage``).

        The region must lie inside the slot, host and guest addresses must agree modulo 2 MiB, and
        dirty logging must be off (``kvm_mmu_hugepage_adjust`` refuses large pages while logging).
        """
        start = gfn & ~(HPAGE_GFNS - 1)
        if start < self.base_gfn or start + HPAGE_GFNS > self.base_gfn + self.npages:
            return False
        if ((self.userspace_addr >> PAGE_SHIFT) - self.base_gfn) % HPAGE_GFNS:
            return False
        return not self.flags & KVM_MEM_LOG_DIRTY_PAGES

    def invalidated(self) -> Memslot:
        """This slot with ``KVM_MEMSLOT_INVALID`` set (the copy a DELETE or MOVE publishes first),
        sharing the dirty bitmap: ``dataclasses.replace`` spelt out, at a fifth of its cost."""
        return Memslot(self.id, self.as_id, self.base_gfn, self.npages, self.flags,
                       self.userspace_addr, True, self.dirty_bitmap)

    def mark_dirty(self, gfn: int) -> None:
        """``mark_page_dirty_in_slot()``."""
        if self.dirty_bitmap is not None:
            rel = gfn - self.base_gfn
            self.dirty_bitmap[rel >> 3] |= 1 << (rel & 7)


def new_dirty_bitmap(npages: int) -> bytearray:
    """A bitmap of ``npages`` bits rounded up to longs, as ``kvm_dirty_bitmap_bytes()``."""
    return bytearray(((npages + 63) // 64) * 8)


class SlotSet:
    """The slots of one address space, indexed by id and by base gfn: a persistent value.

    :meth:`with_slot` and :meth:`without_slot` return new sets in O(log n) that share all but a
    path of each index with this one (:class:`kvmmu.persistent.SortedMap`), so building the next
    snapshot leaves the published one intact for its SRCU readers, as the kernel's two alternating
    memslot sets do since 5.17 (commit a54d806688fe).
    """

    __slots__ = ("by_gfn", "by_id")

    def __init__(self, by_id: SortedMap[Memslot], by_gfn: SortedMap[Memslot]) -> None:
        self.by_id = by_id
        self.by_gfn = by_gfn

    @classmethod
    def of(cls, slots: Mapping[int, Memslot]) -> SlotSet:
        return cls(SortedMap(slots.items()),
                   SortedMap((s.base_gfn, s) for s in slots.values()))

    def with_slot(self, slot: Memslot) -> SlotSet:
        old = self.by_id.get(slot.id)
        by_gfn = self.by_gfn
        if old is not None and old.base_gfn != slot.base_gfn:
            by_gfn = by_gfn.delete(old.base_gfn)
        return SlotSet(self.by_id.set(slot.id, slot), by_gfn.set(slot.base_gfn, slot))

    def without_slot(self, slot_id: int) -> SlotSet:
        old = self.by_id.get(slot_id)
        if old is None:
            return self
        return SlotSet(self.by_id.delete(slot_id), self.by_gfn.delete(old.base_gfn))


#: The slots of an address space no slot was ever created in: one shared value (a set is never
#: changed in place), so that every new VM does not build its own empty indexes.
NO_SLOTS: Final = SlotSet(SortedMap(), SortedMap())


class Memslots:
    """``struct kvm_memslots`` of one address space: a published, read-only set of slots.

    ``generation`` is the only field written after publication (by the memslot update, after its
    grace period), exactly as the kernel writes ``slots->generation``.
    """

    __slots__ = ("as_id", "by_id", "generation", "last_used_slot", "slot_set")

    def __init__(self, as_id: int, slots: Mapping[int, Memslot] | SlotSet,
                 generation: int) -> None:
        self.as_id = as_id
        self.slot_set = slots if isinstance(slots, SlotSet) else SlotSet.of(slots)
        #: The slots by id (``id_hash`` in 5.17+ kernels), a read-only mapping.
        self.by_id: Mapping[int, Memslot] = self.slot_set.by_id
        self.generation = generation
        #: ``slots->last_used_slot``: tried before the tree search (a hint, never wrong).
        self.last_used_slot: Memslot | None = None

    def lookup(self, gfn: int) -> Memslot | None:
        """``search_memslots()``: the slot containing ``gfn``, in O(log n)."""
        last = self.last_used_slot
        if last is not None and last.base_gfn <= gfn < last.base_gfn + last.npages:
            return last
        hit = self.slot_set.by_gfn.floor(gfn)
        if hit is not None:
            slot = hit[1]
            if gfn < slot.base_gfn + slot.npages:
                self.last_used_slot = slot
                return slot
        return None

    def overlapping(self, base_gfn: int, end_gfn: int, except_id: int) -> Memslot | None:
        """``kvm_check_memslot_overlap()``: a slot other than ``except_id`` meeting the range."""
        by_gfn = self.slot_set.by_gfn
        key = end_gfn - 1
        while True:
            hit = by_gfn.floor(key)
            if hit is None:
                return None
            slot = hit[1]
            if slot.base_gfn + slot.npages <= base_gfn:
                # Slots do not overlap each other, so nothing further left can reach base_gfn.
                return None
            if slot.id != except_id:
                return slot
            key = slot.base_gfn - 1

    def with_slot(self, slot: Memslot) -> SlotSet:
        return self.slot_set.with_slot(slot)

    def without_slot(self, slot_id: int) -> SlotSet:
        return self.slot_set.without_slot(slot_id)

    def __iter__(self) -> Iterator[Memslot]:
        return self.slot_set.by_gfn.values_in_order()

    def __len__(self) -> int:
        return len(self.slot_set.by_id)

    def __repr__(self) -> str:
        return f"Memslots(as={self.as_id}, gen={self.generation:#x}, slots={len(self)})"


@dataclass(frozen=True, slots=True)
class MemoryRegionRequest:
    """``struct kvm_userspace_memory_region`` as the ioctl receives it (u32, u32, u64, u64, u64)."""

    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int = 0

    @property
    def as_id(self) -> int:
        return (self.slot >> 16) & 0xFFFF

    @property
    def slot_id(self) -> int:
        return self.slot & 0xFFFF


@dataclass(frozen=True, slots=True)
class MemslotPlan:
    """What an accepted request will do: the change and the slot before and after."""

    change: Change
    as_id: int
    old: Memslot | None
    new: Memslot | None
    #: A MOVE that ``kvm_arch_prepare_memory_region()`` refuses only after the slot was published
    #: invalid and flushed (6.x ``kvm_set_memslot()``): the error comes with those side effects.
    prepare_error: KvmError | None = None


def plan_memory_region(request: MemoryRegionRequest, state: MemslotState, *, phys_bits: int,
                       nr_memslots: int = KVM_USER_MEM_SLOTS, max_gfn_check: bool = True,
                       apic_access_page: bool = False) -> MemslotPlan:
    """Classify ``request`` or refuse it, in the order ``__kvm_set_memory_region()`` checks.

    Every refusal is EINVAL except an overlap (EEXIST), which the kernel tests after all the
    EINVAL checks but one: the x86 ``kvm_arch_prepare_memory_region()`` check that the slot ends
    below ``kvm_mmu_max_gfn()`` (the guest physical address width) comes after it.
    """
    r = request
    slot, flags, gpa, size, uaddr = (r.slot, r.flags, r.guest_phys_addr, r.memory_size,
                                     r.userspace_addr)
    if not (0 <= slot <= _U32_MAX and 0 <= flags <= _U32_MAX and 0 <= gpa <= U64_MASK
            and 0 <= size <= U64_MASK and 0 <= uaddr <= U64_MASK):
        for name, value, bits in (("slot", slot, 32), ("flags", flags, 32),
                                  ("guest_phys_addr", gpa, 64), ("memory_size", size, 64),
                                  ("userspace_addr", uaddr, 64)):
            if not 0 <= value < (1 << bits):
                raise KvmError("EINVAL", f"{name} {value:#x} does not fit in a u{bits}")
    as_id, slot_id = (slot >> 16) & 0xFFFF, slot & 0xFFFF  # r.as_id, r.slot_id
    if slot_id >= nr_memslots:
        raise KvmError("EINVAL", f"slot id {slot_id} >= KVM_CAP_NR_MEMSLOTS ({nr_memslots})")
    if flags & ~VALID_FLAGS:
        raise KvmError("EINVAL", f"unknown flags {flags & ~VALID_FLAGS:#x} "
                       f"(valid: LOG_DIRTY_PAGES=1, READONLY=2)")
    if size & (PAGE_SIZE - 1):
        raise KvmError("EINVAL", f"memory_size {size:#x} is not 4 KiB aligned")
    if gpa & (PAGE_SIZE - 1):
        raise KvmError("EINVAL", f"guest_phys_addr {gpa:#x} is not 4 KiB aligned")
    if uaddr & (PAGE_SIZE - 1):
        raise KvmError("EINVAL", f"userspace_addr {uaddr:#x} is not 4 KiB aligned")
    if uaddr + size > TASK_SIZE_MAX:
        raise KvmError("EINVAL", f"userspace range {uaddr:#x}+{size:#x} "
                       "is not user memory (access_ok)")
    if as_id >= state.nr_as:
        raise KvmError("EINVAL", f"address space {as_id} not supported ({state.nr_as} here)")
    if gpa + size > U64_MASK:
        raise KvmError("EINVAL", "guest_phys_addr + memory_size wraps past 2^64")
    if (size >> PAGE_SHIFT) > KVM_MEM_MAX_NR_PAGES:
        raise KvmError("EINVAL", f"memory_size {size:#x} exceeds KVM_MEM_MAX_NR_PAGES")
    slots = state.active[as_id]
    old = slots.by_id.get(slot_id)
    if size == 0:
        if old is None:
            raise KvmError("EINVAL", f"delete of slot {slot_id}, which does not exist")
        return MemslotPlan(DELETE, as_id, old, None)
    base_gfn = gpa >> PAGE_SHIFT
    npages = size >> PAGE_SHIFT
    if old is None:
        change = CREATE
    else:
        if uaddr != old.userspace_addr:
            raise KvmError("EINVAL", f"slot {slot_id}: userspace_addr cannot change "
                           f"({old.userspace_addr:#x} -> {uaddr:#x})")
        if npages != old.npages:
            raise KvmError("EINVAL", f"slot {slot_id}: size cannot change "
                           f"({old.npages << PAGE_SHIFT:#x} -> {size:#x})")
        if (flags ^ old.flags) & KVM_MEM_READONLY:
            raise KvmError("EINVAL", f"slot {slot_id}: KVM_MEM_READONLY cannot be toggled")
        if base_gfn != old.base_gfn:
            change = MOVE
        elif flags != old.flags:
            change = FLAGS_ONLY
        else:
            return MemslotPlan(NO_CHANGE, as_id, old, old)
    if change in ADDS_BACKING:
        other = slots.overlapping(base_gfn, base_gfn + npages, slot_id)
        if other is not None:
            raise KvmError("EEXIST", f"gpa {gpa:#x}+{size:#x} overlaps "
                           f"slot {other.id} at gpa {other.base_gfn << PAGE_SHIFT:#x}"
                           f"+{other.npages << PAGE_SHIFT:#x}")
        if (apic_access_page and as_id == 0
                and base_gfn <= APIC_ACCESS_GFN < base_gfn + npages):
            # The private slot is a memslot like the others: kvm_check_memslot_overlap() sees it.
            raise KvmError("EEXIST", f"gpa {gpa:#x}+{size:#x} overlaps "
                           "the APIC access page's private slot at gpa 0xfee00000")
        if max_gfn_check and (base_gfn + npages - 1) > (1 << (phys_bits - PAGE_SHIFT)) - 1:
            error = KvmError("EINVAL", f"gpa {gpa:#x}+{size:#x} is beyond "
                             f"the {phys_bits}-bit guest physical address width")
            if change is not MOVE:
                raise error
            # A MOVE is invalidated (published invalid, flushed) before arch prepare runs; the
            # failure then restores the old slot (v6.1 kvm_set_memslot(): kvm_invalidate_memslot,
            # kvm_prepare_memory_region fails, kvm_activate_memslot(kvm, invalid_slot, old)).
            return MemslotPlan(change, as_id, old, old, prepare_error=error)
    bitmap: bytearray | None = None
    if flags & KVM_MEM_LOG_DIRTY_PAGES:
        bitmap = old.dirty_bitmap if old is not None and old.dirty_bitmap is not None \
            else new_dirty_bitmap(npages)
    new = Memslot(slot_id, as_id, base_gfn, npages, flags, uaddr,
                  dirty_bitmap=bitmap)
    return MemslotPlan(change, as_id, old, new)


def initial_generation(era: str, as_id: int, *, gen_mask: int, start_below_wrap: int | None) -> int:
    """The generation a fresh VM's memslots start at, as ``kvm_create_vm()`` of the era set it.

    ``start_below_wrap`` is the era's "150 below the wrap" (None: start at the bottom):

    * 2013 (3.11): the MMIO generation is ``MMIO_MAX_GEN - 150 = 0x7FF69`` before any update
      (``kvm_current_mmio_generation()``), kept here directly;
    * 2014 (3.17+): ``slots->generation = -150`` (even);
    * 2015 (4.2+): ``slots->generation = i * 2 - 150`` for address space ``i``;
    * modern (5.1+): ``slots->generation = i``; "150 below" is the model's option, rounded so
      that the spaces keep their residues.
    """
    if start_below_wrap is None:
        return {"modern": as_id, "2015": 2 * as_id}.get(era, 0)
    if era == "2013":
        return (gen_mask - start_below_wrap) & gen_mask
    start = ((gen_mask + 1 - start_below_wrap) & gen_mask) & ~1
    if era == "2014":
        return start
    if era == "2015":
        return (start + 2 * as_id) & gen_mask
    return start + as_id


class ArchHooks(Protocol):
    """The architecture's part of a memslot update (``kvm_arch_*`` in ``arch/x86/kvm/x86.c``)."""

    def flush_shadow_memslot(self, old: Memslot) -> Steps[None]:
        """``kvm_arch_flush_shadow_memslot()``: the slot's SPTEs must go (DELETE, MOVE)."""
        ...

    def memslots_updated(self, as_id: int, gen: int, change: Change) -> Steps[None]:
        """``kvm_arch_memslots_updated()``: the MMIO generation may have wrapped.  ``change`` is
        the update's kind (the kernel's hook does not get it; the hypothetical zap-all-fast
        needs it), ``Change.NONE`` for a publish that restores the old slots."""
        ...

    def commit_memory_region(self, plan: MemslotPlan) -> Steps[None]:
        """``kvm_arch_commit_memory_region()``: dirty-log write protection, strategy zaps."""
        ...


@dataclass(slots=True)
class MemslotState:
    """All address spaces' memslots of one VM: the pointers vCPUs dereference, and their history.

    ``history`` keeps, per address space, the recent snapshots with the publish epoch they entered
    at, so that an oracle can tell which memslots were in force during an access that overlapped an
    update.  ``updating`` is true from the first publish of an update to its last hook;
    ``stable_epoch`` is the epoch of the last state no update is still working on.
    """

    era: str
    nr_as: int
    active: list[Memslots]
    epoch: int = 0
    updating: bool = False
    #: The epoch at which the update in progress began (its pre-state's), else the current one.
    stable_epoch: int = 0
    history: list[list[tuple[int, Memslots]]] = field(default_factory=list)
    history_len: int = 64

    @classmethod
    def create(cls, era: str, nr_as: int, *, gen_mask: int,
               start_below_wrap: int | None) -> MemslotState:
        if era not in ERAS:
            raise ValueError(f"era must be one of {', '.join(ERAS)}, not {era!r}")
        if nr_as not in (1, 2):
            raise ValueError(f"address_spaces must be 1 or 2, not {nr_as}")
        active = [Memslots(a, NO_SLOTS, initial_generation(era, a, gen_mask=gen_mask,
                                                           start_below_wrap=start_below_wrap))
                  for a in range(nr_as)]
        return cls(era, nr_as, active, history=[[(0, s)] for s in active])

    def publish(self, slots: Memslots) -> None:
        """``rcu_assign_pointer(kvm->memslots[as_id], slots)``."""
        self.epoch += 1
        self.active[slots.as_id] = slots
        hist = self.history[slots.as_id]
        hist.append((self.epoch, slots))
        if len(hist) > self.history_len:
            del hist[0]

    def in_force_since(self, as_id: int, epoch: int) -> list[Memslots]:
        """Every snapshot of ``as_id`` in force at some time from ``epoch`` until now."""
        hist = self.history[as_id]
        out: list[Memslots] = []
        for i, (_, slots) in enumerate(hist):
            nxt = hist[i + 1][0] if i + 1 < len(hist) else None
            if nxt is None or nxt > epoch:
                out.append(slots)
        return out


def _swap_active_memslots(state: MemslotState, arch: ArchHooks, srcu: Srcu,
                          as_id: int, by_id: SlotSet, change: Change) -> Steps[None]:
    """``kvm_swap_active_memslots()`` (modern) / ``install_new_memslots()`` (2013, 2014)."""
    old_gen = state.active[as_id].generation
    era = state.era
    if era == "2013":
        new = Memslots(as_id, by_id, old_gen + 1)
    elif era in ("2014", "2015"):
        new = Memslots(as_id, by_id, old_gen + 1)  # odd: disables caching until the second step
    else:
        new = Memslots(as_id, by_id, old_gen | KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)
    yield PUBLISH_MEMSLOTS
    state.publish(new)
    yield from srcu.synchronize()
    if era == "2013":
        yield from arch.memslots_updated(as_id, new.generation, change)
    elif era in ("2014", "2015"):
        yield WRITE_GENERATION
        # 2014: + 1; 2015: += KVM_ADDRESS_SPACE_NUM * 2 - 1 ("the generation space is evenly
        # split across address spaces").
        new.generation += 1 if era == "2014" else 2 * state.nr_as - 1
        yield from arch.memslots_updated(as_id, new.generation, change)
    else:
        gen = (new.generation & ~KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS) + state.nr_as
        yield from arch.memslots_updated(as_id, gen, change)
        yield WRITE_GENERATION
        new.generation = gen


def set_memory_region(state: MemslotState, arch: ArchHooks, srcu: Srcu, plan: MemslotPlan
                      ) -> Steps[None]:
    """``kvm_set_memslot()``: publish the change, with the invalid copy first for DELETE/MOVE."""
    if plan.change is NO_CHANGE:
        return
    as_id = plan.as_id
    state.updating = True
    state.stable_epoch = state.epoch  # until it returns, the ioctl promises nothing new
    try:
        if plan.change in INVALIDATES:
            assert plan.old is not None
            invalid = plan.old.invalidated()
            yield from _swap_active_memslots(state, arch, srcu, as_id,
                                             state.active[as_id].with_slot(invalid), plan.change)
            # From here no vCPU can create SPTEs for the old slot: faults on it retry.
            yield from arch.flush_shadow_memslot(plan.old)
            if plan.prepare_error is not None:
                yield from _swap_active_memslots(state, arch, srcu, as_id,
                                                 state.active[as_id].with_slot(plan.old),
                                                 NO_CHANGE)
                raise plan.prepare_error
        if plan.new is None:
            assert plan.old is not None
            by_id = state.active[as_id].without_slot(plan.old.id)
        else:
            by_id = state.active[as_id].with_slot(plan.new)
        yield from _swap_active_memslots(state, arch, srcu, as_id, by_id, plan.change)
        yield from arch.commit_memory_region(plan)
    finally:
        state.updating = False
        state.stable_epoch = state.epoch
