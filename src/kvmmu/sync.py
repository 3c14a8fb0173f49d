"""``mmu_lock`` and SRCU: the two synchronisation objects the protocol waits on.

Design. Both are written against the steppable protocol (``kvmmu.mmu.steps``): acquiring
``mmu_lock`` and waiting for an SRCU grace period are generators that yield a blocking step and
re-check their condition when resumed.  A plain run never finds them blocked (it runs one thread to
completion at a time); the timed simulation lets waiters burn time; the explorer asks
:meth:`MmuLock.is_blocked` / :meth:`Srcu.is_blocked` so that it never schedules a useless spin.

Lock breaks (``cond_resched_lock()`` / ``cond_resched_rwlock_write()``, v3.10 and v6.8
``kernel/sched/core.c``): the holder drops the lock only if ``spin_needbreak()`` /
``rwlock_needbreak()`` says a waiter spins on it -- and those return 0 unless the kernel is built
with ``CONFIG_PREEMPT`` (3.x) / ``CONFIG_PREEMPTION`` (v5.12 ``include/linux/sched.h``, v6.8
``include/linux/spinlock.h``) -- or ``should_resched()`` says the time slice is up, which never
happens here (each thread has a host CPU of its own, as in the timed simulation).  A driver that
knows who spins (the timed simulation) sets ``contention_tracked`` and keeps ``spinning`` up to
date; without one (a plain run, the explorer) :meth:`MmuLock.needbreak` answers yes, so that every
point where the kernel *may* break stays a point where the model breaks.

Kernel counterparts: ``kvm->mmu_lock``, a spinlock up to 5.11 and an rwlock on x86 since 5.12
(Ben Gardon, "KVM: x86/mmu: Use an rwlock for the x86 MMU"; v5.12.9 ``include/linux/kvm_host.h``
``KVM_HAVE_MMU_RWLOCK``).  The shadow MMU takes
it for write everywhere; the TDP MMU's faults take it for read (a2855afc7ee8, 5.12: v5.12.9
``arch/x86/kvm/mmu/mmu.c`` ``direct_page_fault()``: ``if (is_tdp_mmu_root(...))
read_lock(&vcpu->kvm->mmu_lock); else write_lock(...)``), and so does the teardown of invalidated
roots from 5.13 (b7cccd397f31; v6.8 ``kvm_tdp_mmu_zap_invalidated_roots()``).  x86 rwlocks are
queued rwlocks (``kernel/locking/qrwlock.c``): a reader gets in unless a writer holds the lock or
waits at the head of the queue (``queued_read_lock()`` tests ``_QW_WMASK``, which covers
``_QW_WAITING``), so readers cannot starve a writer; a writer waits until every reader has left.
The model's rule: a reader is blocked while a writer holds the lock or (with contention tracked)
spins for it; a writer while anyone holds it.  ``kvm->srcu`` is held with ``srcu_read_lock()`` by a
vCPU across an exit's handling and waited out by ``synchronize_srcu_expedited()`` in
``kvm_swap_active_memslots()``.  The SRCU model is the classic "wait for every reader that started
before the grace period began".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmmu.mmu.steps import MMU_LOCK, MMU_READ_LOCK, MMU_READ_UNLOCK, MMU_UNLOCK, SRCU_SYNC, Steps


@dataclass(slots=True)
class MmuLock:
    """``kvm->mmu_lock``: one writer or many readers; counts acquisitions and contended attempts."""

    holder: object | None = None  # the writer
    #: Threads holding the lock for read (TDP MMU faults, the 5.13+ root teardown).
    readers: set[object] = field(default_factory=set)
    acquisitions: int = 0
    read_acquisitions: int = 0
    contended: int = 0
    #: Threads spinning on the lock now, readers and writers, and whether a writer is first in
    #: line (qrwlock's ``_QW_WAITING``); both kept by a driver that sets ``contention_tracked``.
    spinning: int = 0
    writer_waiting: bool = False
    contention_tracked: bool = False
    #: ``CONFIG_PREEMPTION``: ``spin_needbreak()`` / ``rwlock_needbreak()`` see contention.
    preempt: bool = True
    breaks: int = 0  # lock breaks taken (cond_resched_lock() returned 1)

    def acquire(self, who: object) -> Steps[None]:
        """``write_lock(&kvm->mmu_lock)`` (``spin_lock`` before 5.12): spin until free."""
        while True:
            yield MMU_LOCK
            if self.holder is None and not self.readers:
                self.holder = who
                self.acquisitions += 1
                return
            self.contended += 1

    def release(self, who: object) -> Steps[None]:
        """``write_unlock(&kvm->mmu_lock)``."""
        yield MMU_UNLOCK
        if self.holder is not who:
            raise RuntimeError(f"mmu_lock released by {who!r} but held by {self.holder!r}")
        self.holder = None

    def acquire_read(self, who: object) -> Steps[None]:
        """``read_lock(&kvm->mmu_lock)``: spin while a writer holds or waits for the lock."""
        while True:
            yield MMU_READ_LOCK
            if not self.is_read_blocked():
                self.readers.add(who)
                self.read_acquisitions += 1
                return
            self.contended += 1

    def release_read(self, who: object) -> Steps[None]:
        """``read_unlock(&kvm->mmu_lock)``."""
        yield MMU_READ_UNLOCK
        if who not in self.readers:
            raise RuntimeError(f"mmu_lock read-released by {who!r}, which does not hold it")
        self.readers.discard(who)

    def take(self, who: object, shared: bool) -> Steps[None]:
        """The lock for read (``shared``: the TDP MMU's side) or for write."""
        if shared:
            yield from self.acquire_read(who)
        else:
            yield from self.acquire(who)

    def drop(self, who: object, shared: bool) -> Steps[None]:
        """Release what :meth:`take` took."""
        if shared:
            yield from self.release_read(who)
        else:
            yield from self.release(who)

    def is_blocked(self) -> bool:
        """Would a writer only spin now?"""
        return self.holder is not None or bool(self.readers)

    def is_read_blocked(self) -> bool:
        """Would a reader only spin now? (qrwlock: a writer holds it or waits at the head.)"""
        return self.holder is not None or (self.contention_tracked and self.writer_waiting)

    def needbreak(self) -> bool:
        """``cond_resched_lock()``'s test: does the holder drop the lock here?

        With contention tracked: only if a waiter spins and the kernel is preemptible (no time
        slice ends: a CPU per thread).  Untracked: yes, every point where the kernel may break.
        """
        if not self.contention_tracked:
            return True
        return self.preempt and self.spinning > 0

    def read_needbreak(self) -> bool:
        """``cond_resched_rwlock_read()``'s test: only a *writer* waiting makes a reader yield
        (``rwlock_needbreak()`` -> ``rwlock_is_contended()``, i.e. ``_QW_WAITING``)."""
        if not self.contention_tracked:
            return True
        return self.preempt and self.writer_waiting

    def lock_break(self, who: object) -> Steps[None]:
        """``cond_resched_lock()`` having decided to break: drop the lock, take it again."""
        self.breaks += 1
        yield from self.release(who)
        yield from self.acquire(who)

    def read_lock_break(self, who: object) -> Steps[None]:
        """``cond_resched_rwlock_read()`` having decided to break: let the writer in."""
        self.breaks += 1
        yield from self.release_read(who)
        yield from self.acquire_read(who)


@dataclass(slots=True)
class Srcu:
    """``kvm->srcu``: readers record the epoch they entered in; a grace period waits them out."""

    readers: dict[object, int] = field(default_factory=dict)
    epoch: int = 0
    #: epoch of the grace period being waited for, or None.
    waiting_for: int | None = None
    grace_periods: int = 0

    def read_lock(self, who: object) -> None:
        self.readers[who] = self.epoch

    def read_unlock(self, who: object) -> None:
        self.readers.pop(who, None)

    def synchronize(self) -> Steps[None]:
        """``synchronize_srcu_expedited()``: wait until every reader from before has left."""
        self.epoch += 1
        target = self.epoch
        self.waiting_for = target
        while True:
            yield SRCU_SYNC
            if not self._has_readers_before(target):
                self.waiting_for = None
                self.grace_periods += 1
                return

    def _has_readers_before(self, target: int) -> bool:
        # The oldest reader's epoch decides; min() runs in C where any() over a generator would
        # resume a Python frame per reader (the explorer asks at every state).
        return min(self.readers.values(), default=target) < target

    def is_blocked(self) -> bool:
        return self.waiting_for is not None and self._has_readers_before(self.waiting_for)
