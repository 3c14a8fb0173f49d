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

Kernel counterparts: ``kvm->mmu_lock`` (an rwlock on x86 since 5.12, used for write here: the model
has no TDP-MMU read-side faults) and ``kvm->srcu`` with ``srcu_read_lock()`` held by a vCPU across an
exit's handling and ``synchronize_srcu_expedited()`` in ``kvm_swap_active_memslots()``.  The SRCU
model is the classic "wait for every reader that started before the grace period began".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmmu.mmu.steps import MMU_LOCK, MMU_UNLOCK, SRCU_SYNC, Steps


@dataclass(slots=True)
class MmuLock:
    """``kvm->mmu_lock``: at most one holder; counts acquisitions and contended attempts."""

    holder: object | None = None
    acquisitions: int = 0
    contended: int = 0
    #: Threads spinning on the lock now (kept by a driver that sets ``contention_tracked``).
    spinning: int = 0
    contention_tracked: bool = False
    #: ``CONFIG_PREEMPTION``: ``spin_needbreak()`` / ``rwlock_needbreak()`` see contention.
    preempt: bool = True
    breaks: int = 0  # lock breaks taken (cond_resched_lock() returned 1)

    def acquire(self, who: object) -> Steps[None]:
        """``write_lock(&kvm->mmu_lock)``: spin until free."""
        while True:
            yield MMU_LOCK
            if self.holder is None:
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

    def is_blocked(self) -> bool:
        return self.holder is not None

    def needbreak(self) -> bool:
        """``cond_resched_lock()``'s test: does the holder drop the lock here?

        With contention tracked: only if a waiter spins and the kernel is preemptible (no time
        slice ends: a CPU per thread).  Untracked: yes, every point where the kernel may break.
        """
        if not self.contention_tracked:
            return True
        return self.preempt and self.spinning > 0

    def lock_break(self, who: object) -> Steps[None]:
        """``cond_resched_lock()`` having decided to break: drop the lock, take it again."""
        self.breaks += 1
        yield from self.release(who)
        yield from self.acquire(who)


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
        return any(e < target for e in self.readers.values())

    def is_blocked(self) -> bool:
        return self.waiting_for is not None and self._has_readers_before(self.waiting_for)
