"""mmu_lock and SRCU: blocking steps that re-check their condition when resumed."""

from __future__ import annotations

import pytest

from kvmmu.mmu.steps import Step, run_to_completion
from kvmmu.sync import MmuLock, Srcu


def test_a_held_lock_makes_a_second_acquirer_spin_until_release() -> None:
    lock = MmuLock()
    a, b = object(), object()
    run_to_completion(lock.acquire(a))
    waiter = lock.acquire(b)
    assert next(waiter) is Step.MMU_LOCK and lock.is_blocked()
    assert next(waiter) is Step.MMU_LOCK  # still held: spins
    assert lock.contended == 1
    run_to_completion(lock.release(a))
    with pytest.raises(StopIteration):
        next(waiter)
    assert lock.holder is b and lock.acquisitions == 2


def test_releasing_a_lock_one_does_not_hold_is_an_error() -> None:
    lock = MmuLock()
    run_to_completion(lock.acquire("a"))
    with pytest.raises(RuntimeError, match="held by"):
        run_to_completion(lock.release("b"))


def test_a_grace_period_waits_for_readers_from_before_it_only() -> None:
    srcu = Srcu()
    srcu.read_lock("old")
    sync = srcu.synchronize()
    assert next(sync) is Step.SRCU_SYNC and srcu.is_blocked()
    srcu.read_lock("new")  # entered after the grace period began: not waited for
    srcu.read_unlock("old")
    assert not srcu.is_blocked()
    with pytest.raises(StopIteration):
        next(sync)
    assert srcu.grace_periods == 1


def test_needbreak_sees_contention_only_when_it_is_tracked_and_the_kernel_preempts() -> None:
    # v6.8 include/linux/spinlock.h rwlock_needbreak(): "#ifdef CONFIG_PREEMPTION return
    # rwlock_is_contended(lock); #else return 0;" and kernel/sched/core.c
    # __cond_resched_rwlock_write(): "if (rwlock_needbreak(lock) || resched)" (v3.10
    # __cond_resched_lock(): spin_needbreak() under CONFIG_PREEMPT).  No driver tracking who
    # spins (plain run, explorer): every point where the kernel may break is one.
    lock = MmuLock()
    assert lock.needbreak()
    lock.contention_tracked = True
    assert not lock.needbreak()  # nobody spins, and no time slice ends (a CPU per thread)
    lock.spinning = 1
    assert lock.needbreak()
    lock.preempt = False  # PREEMPT_NONE / VOLUNTARY: contention never breaks the lock
    assert not lock.needbreak()


def test_a_lock_break_hands_the_lock_over_and_takes_it_again() -> None:
    lock = MmuLock()
    holder = object()
    run_to_completion(lock.acquire(holder))
    steps = list(lock.lock_break(holder))
    assert steps == [Step.MMU_UNLOCK, Step.MMU_LOCK]
    assert lock.holder is holder and lock.breaks == 1 and lock.acquisitions == 2


# --- the rwlock (5.12+): v5.12.9 include/linux/kvm_host.h KVM_HAVE_MMU_RWLOCK; the x86 rwlock is a
# queued rwlock (kernel/locking/qrwlock.c, include/asm-generic/qrwlock.h).


def test_readers_share_mmu_lock_and_a_writer_waits_until_the_last_one_leaves() -> None:
    lock = MmuLock()
    a, b, w = object(), object(), object()
    run_to_completion(lock.acquire_read(a))
    run_to_completion(lock.acquire_read(b))  # a second reader is not blocked by the first
    assert lock.readers == {a, b} and lock.read_acquisitions == 2
    writer = lock.acquire(w)
    assert next(writer) is Step.MMU_LOCK and lock.is_blocked()
    run_to_completion(lock.release_read(a))
    assert next(writer) is Step.MMU_LOCK  # b still reads
    run_to_completion(lock.release_read(b))
    with pytest.raises(StopIteration):
        next(writer)
    assert lock.holder is w


def test_a_reader_waits_while_a_writer_holds_mmu_lock() -> None:
    lock = MmuLock()
    w, r = object(), object()
    run_to_completion(lock.acquire(w))
    reader = lock.acquire_read(r)
    assert next(reader) is Step.MMU_READ_LOCK and lock.is_read_blocked()
    assert next(reader) is Step.MMU_READ_LOCK and lock.contended == 1
    run_to_completion(lock.release(w))
    with pytest.raises(StopIteration):
        next(reader)
    assert lock.readers == {r}


def test_a_waiting_writer_stops_new_readers_and_makes_a_reader_yield_only_when_tracked() -> None:
    # queued_read_lock(): "if (likely(!(cnts & _QW_WMASK))) return;" -- _QW_WMASK includes
    # _QW_WAITING, set by the writer at the head of the queue; cond_resched_rwlock_read() yields
    # when rwlock_needbreak() (CONFIG_PREEMPTION: rwlock_is_contended()) says so (v6.8).
    lock = MmuLock()
    assert lock.read_needbreak()  # untracked: every point where the kernel may yield is one
    lock.contention_tracked = True
    run_to_completion(lock.acquire_read("teardown"))
    assert not lock.is_read_blocked() and not lock.read_needbreak()
    lock.writer_waiting = True  # a vCPU reloading its root spins for write
    assert lock.is_read_blocked() and lock.read_needbreak()
    lock.spinning = 1
    lock.writer_waiting = False  # only readers wait: a reader never yields to a reader
    assert not lock.read_needbreak()


def test_a_read_lock_break_lets_the_writer_in() -> None:
    lock = MmuLock()
    run_to_completion(lock.acquire_read("t"))
    steps = list(lock.read_lock_break("t"))
    assert steps == [Step.MMU_READ_UNLOCK, Step.MMU_READ_LOCK]
    assert lock.readers == {"t"} and lock.breaks == 1


def test_read_releasing_a_lock_one_does_not_read_is_an_error() -> None:
    lock = MmuLock()
    with pytest.raises(RuntimeError, match="does not hold it"):
        run_to_completion(lock.release_read("nobody"))
