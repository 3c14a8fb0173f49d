"""Tests of kvmmu.check.minimize: delta debugging and the shortest-counterexample search."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from kvmmu.check.explore import explore
from kvmmu.check.minimize import ddmin, finding_class, minimise, shortest_failure
from kvmmu.check.schedule import run_schedule
from kvmmu.check.world import CheckConfig

RACE_1 = CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)


def race_schedule() -> tuple[int, ...]:
    found = explore(RACE_1)
    assert found.failure is not None
    return found.failure.schedule


@given(st.lists(st.integers(0, 30), max_size=40, unique=True), st.data())
def test_ddmin_finds_exactly_the_needed_elements(items: list[int], data: st.DataObject) -> None:
    needed = set(data.draw(st.lists(st.sampled_from(items), unique=True))) if items else set()
    calls: list[list[int]] = []

    def fails(c: list[int]) -> bool:
        calls.append(c)
        return needed <= set(c)

    out = ddmin(items, fails)
    assert set(out) == needed
    assert [x for x in items if x in needed] == out  # order is kept


def test_ddmin_result_is_one_minimal_for_a_non_monotone_test() -> None:
    # fails when the list holds an even count of 1s and at least one 2
    def fails(c: list[int]) -> bool:
        return c.count(1) % 2 == 0 and 2 in c and len(c) > 0

    out = ddmin([1, 2, 1, 1, 3, 2, 1], fails)
    assert fails(out)
    assert all(not fails(out[:i] + out[i + 1:]) for i in range(len(out)))


def test_finding_classes() -> None:
    assert finding_class("stale-mmio-spte") == finding_class("stale-mmio") == "oracle"
    assert finding_class("deadlock") == "deadlock" and finding_class("crash") == "crash"


def test_the_race_found_with_two_vcpus_shrinks_to_the_one_vcpu_race() -> None:
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=2, updates=2)
    found = explore(config, preemptions=2)
    assert found.failure is not None
    m = minimise(config, found.failure.schedule, found.failure.findings[0].kind)
    alone = minimise(RACE_1, race_schedule(), "stale-mmio-spte")
    assert m.shortest and alone.shortest
    assert len(m.run.executed) == len(alone.run.executed) < len(found.failure.schedule)
    assert m.run.preemptions == 1
    assert {m.run.world.threads[t].name for t in m.run.executed} == {"vCPU0", "VMM"}
    again = run_schedule(config, m.run.executed)
    assert {f.kind for f in again.findings} == {f.kind for f in m.run.findings}


def test_nothing_shorter_than_the_shortest() -> None:
    m = minimise(RACE_1, race_schedule(), "stale-mmio-spte")
    n = len(m.run.executed)
    shorter, finished, _ = shortest_failure(RACE_1, "oracle", n, 1, time.perf_counter() + 60)
    assert shorter is None and finished
    same, finished, _ = shortest_failure(RACE_1, "oracle", n + 1, 1, time.perf_counter() + 60)
    assert same is not None and len(same) == n


def test_a_race_needing_no_preemption_minimises_to_none() -> None:
    config = CheckConfig("generation+cache-without-gen", vcpus=2, updates=2)
    found = explore(config, preemptions=1)
    assert found.failure is not None
    m = minimise(config, found.failure.schedule, found.failure.findings[0].kind)
    assert m.run.preemptions == 0
    assert len(m.run.executed) <= len(found.failure.schedule)


def test_an_exhausted_budget_keeps_the_delta_debugged_result() -> None:
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=2, updates=2)
    found = explore(config, preemptions=2)
    assert found.failure is not None
    m = minimise(config, found.failure.schedule, found.failure.findings[0].kind, budget=0.0)
    assert not m.shortest
    assert m.run.findings  # still a failing run
