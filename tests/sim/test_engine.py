"""Tests of kvmmu.sim.engine: time, processes, events, and the ordering rules for ties."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.sim.engine import (
    Engine,
    Fifo,
    Lifo,
    Pending,
    SeededChoice,
    SeededRandom,
    SimulationError,
    ordering_rule,
)

# A schedule: for each process, its list of delays.
schedules = st.lists(st.lists(st.integers(0, 5), max_size=6), min_size=1, max_size=8)


def run_schedule(engine: Engine, schedule: list[list[int]]) -> list[tuple[int, int, int]]:
    """Run one process per delay list; return (time, process, step) in execution order."""
    trace: list[tuple[int, int, int]] = []

    def proc(pid: int, delays: list[int]) -> Generator[int, None, None]:
        for step, delay in enumerate(delays):
            trace.append((engine.now, pid, step))
            yield delay
        trace.append((engine.now, pid, len(delays)))

    for pid, delays in enumerate(schedule):
        engine.process(proc(pid, delays), label=f"p{pid}")
    engine.run()
    return trace


@given(schedules, st.sampled_from(["fifo", "lifo", "random", "choice"]), st.integers(0, 2**32))
@settings(max_examples=150, deadline=None)
def test_every_rule_is_deterministic_and_keeps_time_order(
    schedule: list[list[int]], rule: str, seed: int
) -> None:
    a = run_schedule(Engine(ordering_rule(rule, seed)), schedule)
    b = run_schedule(Engine(ordering_rule(rule, seed)), schedule)
    assert a == b
    assert [t for t, _, _ in a] == sorted(t for t, _, _ in a)
    # Whatever the tie order, each process's own steps happen at the same times.
    fifo = run_schedule(Engine(Fifo()), schedule)
    assert sorted(a) == sorted(fifo)


@given(schedules)
@settings(max_examples=100, deadline=None)
def test_fifo_runs_simultaneous_events_in_insertion_order(schedule: list[list[int]]) -> None:
    trace = run_schedule(Engine(), schedule)
    # At time 0, every process's first step runs in the order the processes were started.
    first = [pid for t, pid, step in trace if step == 0]
    assert first == list(range(len(schedule)))


def test_lifo_reverses_simultaneous_starts() -> None:
    trace = run_schedule(Engine(Lifo()), [[1], [1], [1]])
    assert [pid for _, pid, step in trace if step == 0] == [2, 1, 0]


def test_seeded_random_orders_differ_between_seeds() -> None:
    schedule = [[0] for _ in range(8)]
    orders = {
        tuple(pid for _, pid, step in run_schedule(Engine(SeededRandom(s)), schedule) if step == 0)
        for s in range(10)
    }
    assert len(orders) > 1


def test_choosing_rule_sees_every_due_entry() -> None:
    seen: list[list[str]] = []

    class Last:
        def choose(self, now: int, pending: Sequence[Pending]) -> int:
            seen.append([p.label for p in pending])
            return len(pending) - 1

    trace = run_schedule(Engine(Last()), [[1], [1], [1]])
    assert [pid for _, pid, step in trace if step == 0] == [2, 1, 0]
    assert seen[0] == ["p0", "p1", "p2"]


def test_time_advances_by_yielded_delays_and_run_until_stops() -> None:
    engine = Engine()
    times: list[int] = []

    def p() -> Generator[int, None, None]:
        for d in (10, 20, 30):
            yield d
            times.append(engine.now)

    engine.process(p())
    engine.run(until=35)
    assert times == [10, 30]
    assert engine.now == 35
    engine.run()
    assert times == [10, 30, 60]


def test_events_carry_values_and_processes_join() -> None:
    engine = Engine()
    ev = engine.event("go")
    got: list[Any] = []

    def waiter() -> Generator[Any, Any, str]:
        value = yield ev
        got.append((engine.now, value))
        return "done"

    def trigger() -> Generator[int, None, None]:
        yield 7
        ev.succeed("v")

    def joiner(proc: Any) -> Generator[Any, Any, None]:
        result = yield proc
        got.append((engine.now, result))

    w = engine.process(waiter())
    engine.process(trigger())
    engine.process(joiner(w))
    engine.run()
    assert got == [(7, "v"), (7, "done")]
    assert not w.alive


def test_failed_event_throws_into_waiter() -> None:
    engine = Engine()
    ev = engine.event()
    caught: list[str] = []

    def waiter() -> Generator[Any, Any, None]:
        try:
            yield ev
        except KeyError as exc:
            caught.append(str(exc))

    engine.process(waiter())
    engine.call_later(3, lambda: ev.fail(KeyError("x")))
    engine.run()
    assert caught == ["'x'"]


def test_timeout_and_already_triggered_event() -> None:
    engine = Engine()
    t = engine.timeout(5, value=42)
    got: list[tuple[int, Any]] = []

    def p() -> Generator[Any, Any, None]:
        first = yield t
        got.append((engine.now, first))
        again = yield t  # already triggered: resumes at once
        got.append((engine.now, again))

    engine.process(p())
    engine.run()
    assert got == [(5, 42), (5, 42)]


def test_misuse_is_reported() -> None:
    engine = Engine()

    def bad() -> Generator[Any, None, None]:
        yield "soon"

    engine.process(bad(), label="bad")
    with pytest.raises(SimulationError, match="bad"):
        engine.run()
    with pytest.raises(SimulationError):
        Engine().call_at(-1, lambda: None)
    ev = engine.event("once")
    ev.succeed()
    with pytest.raises(SimulationError, match="twice"):
        ev.succeed()
    with pytest.raises(ValueError, match="fifo"):
        ordering_rule("nope")


def test_exceptions_in_processes_propagate() -> None:
    engine = Engine()

    def boom() -> Generator[int, None, None]:
        yield 1
        raise RuntimeError("model bug")

    engine.process(boom())
    with pytest.raises(RuntimeError, match="model bug"):
        engine.run()


def test_event_count_is_exact() -> None:
    # Like SimPy's benchmark tests: a behaviour change shows up as a different number.
    engine = Engine(SeededChoice(3))
    trace = run_schedule(engine, [[1, 2], [0], [3, 3, 3]])
    assert engine.events_processed == 3 + 6
    assert len(trace) == 9


class ConstantTie:
    """FIFO by insertion, but through the general heap (a tie-break the engine cannot skip)."""

    def tiebreak(self, seq: int) -> int:
        return 0


def run_mixed(engine: Engine, plan: list[tuple[int, list[int]]]) -> list[tuple[int, str]]:
    """Processes that sleep, wait on events others trigger, and schedule callbacks."""
    trace: list[tuple[int, str]] = []
    gates = [engine.event(f"g{i}") for i in range(len(plan))]

    def proc(pid: int, kind: int, delays: list[int]) -> Generator[Any, Any, None]:
        for step, delay in enumerate(delays):
            trace.append((engine.now, f"p{pid}.{step}"))
            if kind == 1 and step == 1:
                yield gates[(pid + 1) % len(gates)]  # wait for a neighbour's gate
            elif kind == 2 and step == 0:
                engine.call_later(delay, lambda pid=pid: trace.append((engine.now, f"cb{pid}")))
            yield delay
        if not gates[pid].triggered:
            gates[pid].succeed()
        trace.append((engine.now, f"p{pid}.end"))

    for pid, (kind, delays) in enumerate(plan):
        engine.process(proc(pid, kind, delays), label=f"p{pid}")
    engine.run()
    return trace


@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 4), max_size=5)),
                min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_the_fifo_calendar_runs_exactly_what_the_general_heap_runs(
        plan: list[tuple[int, list[int]]]) -> None:
    calendar, heap = Engine(), Engine(ConstantTie())
    assert run_mixed(calendar, plan) == run_mixed(heap, plan)
    assert calendar.events_processed == heap.events_processed and calendar.now == heap.now


def test_an_exception_mid_instant_leaves_the_rest_of_that_instant_due() -> None:
    engine = Engine()
    ran: list[str] = []

    def boom() -> Generator[int, None, None]:
        yield 1
        raise RuntimeError("model bug")

    def after() -> Generator[int, None, None]:
        yield 1
        ran.append(f"after at {engine.now}")

    engine.process(boom())
    engine.process(after())
    with pytest.raises(RuntimeError, match="model bug"):
        engine.run()
    assert engine.peek() == 1 and engine.events_processed == 3
    engine.run()
    assert ran == ["after at 1"] and engine.events_processed == 4
