"""The protocol driver helpers: run_to_completion returns the result; exhaust drops it."""

from __future__ import annotations

from collections.abc import Generator

from kvmmu.mmu.steps import BLOCKING_STEPS, Step, exhaust, run_to_completion


def counted(n: int, sink: list[int]) -> Generator[Step, None, str]:
    for i in range(n):
        sink.append(i)
        yield Step.READ_MEMSLOTS
    return f"done {n}"


def test_run_to_completion_runs_every_step_and_returns_the_result() -> None:
    sink: list[int] = []
    assert run_to_completion(counted(3, sink)) == "done 3"
    assert sink == [0, 1, 2]


def test_exhaust_runs_every_step() -> None:
    sink: list[int] = []
    exhaust(counted(4, sink))
    assert sink == [0, 1, 2, 3]


def test_only_the_lock_both_ways_and_the_grace_period_block() -> None:
    assert {Step.MMU_LOCK, Step.MMU_READ_LOCK, Step.SRCU_SYNC} == BLOCKING_STEPS
