"""Tests of kvmmu.check.schedule: text form, strict and lenient replay, preemption counting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmmu.check.schedule import (
    ScheduleError,
    default_choice,
    format_schedule,
    is_preemption,
    parse_schedule,
    run_schedule,
)
from kvmmu.check.world import CheckConfig, World
from kvmmu.mmu.steps import Step

RACE = CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)


@given(st.lists(st.integers(0, 2), max_size=60))
def test_format_and_parse_round_trip(schedule: list[int]) -> None:
    world = World(CheckConfig("generation", vcpus=2, updates=1))
    text = format_schedule(world, schedule)
    assert parse_schedule(world, text) == tuple(schedule)


def test_text_form_is_run_length_labels() -> None:
    world = World(RACE)
    assert format_schedule(world, [0, 0, 0, 1, 1, 0]) == "0:3,vmm:2,0:1"
    assert format_schedule(world, []) == "-"
    assert parse_schedule(world, " 0:2, vmm ,0:1 ") == (0, 0, 1, 0)


@pytest.mark.parametrize(("text", "message"), [
    ("3:1", "thread must be one of 0, vmm"),
    ("0:x", "count after ':' must be a positive integer"),
    ("0:0", "count after ':' must be a positive integer"),
])
def test_parse_errors_say_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(World(RACE), text)


def test_strict_replay_refuses_a_schedule_that_does_not_fit() -> None:
    # The VMM waits for the grace period while vCPU0 is inside SRCU: it cannot be scheduled.
    schedule = [0] * 6 + [1, 1, 1]
    with pytest.raises(ScheduleError, match="step 9: VMM is blocked at SRCU_SYNC"):
        run_schedule(RACE, schedule, lenient=False)
    lenient = run_schedule(RACE, schedule, lenient=True)
    assert lenient.executed[:8] == (0, 0, 0, 0, 0, 0, 1, 1)


def test_the_2014_race_replays_and_fails() -> None:
    # vCPU0 looks up the old memslots (step 6), the VMM publishes (13), vCPU0 tags its MMIO SPTE
    # with the new generation (14-15); when the update completes the SPTE still matches.
    r = run_schedule(RACE, parse_schedule(World(RACE), "0:11,vmm:2,0:6,vmm:1"))
    assert [f.kind for f in r.findings] == ["stale-mmio-spte"]
    assert r.preemptions == 1
    assert r.world.threads[1].done  # the update has returned


def test_the_same_schedule_on_the_2014_fix_does_not_fail() -> None:
    fixed = CheckConfig("generation-3.18", vcpus=1, updates=1)
    r = run_schedule(fixed, parse_schedule(World(fixed), "0:11,vmm:2,0:6,vmm:1"))
    assert r.findings == ()
    assert r.finished


def test_completion_policy_runs_everything_to_the_end() -> None:
    r = run_schedule(CheckConfig("generation", vcpus=2, updates=2), [])
    assert r.finished and r.findings == () and r.preemptions == 0
    assert r.executed == tuple(sorted(r.executed))  # vCPU0, then vCPU1, then the VMM


def test_preemptions_are_switches_away_from_a_thread_that_could_go_on() -> None:
    world = World(RACE)
    assert not is_preemption(world, None, 1)
    world.step(0)  # vCPU0 began its access: it is inside it
    assert is_preemption(world, 0, 1)
    assert not is_preemption(world, 0, 0)
    while world.threads[0].pending is not None:
        world.step(0)
    assert not is_preemption(world, 0, 1)  # between two accesses: a free switch
    assert default_choice(world, 0) == 0


def test_a_retrying_vcpu_yields_for_free() -> None:
    world = World(CheckConfig("generation", vcpus=1, updates=2, slot_zap="slot"))
    while world.threads[1].op_index < 1:
        world.step(1)  # the create completes
    world.step(1)
    world.step(1)  # DELETE publishes slot 0 marked invalid
    for _ in range(40):
        if world.threads[0].pending is Step.RETRY and world.threads[0].op_index == 1:
            break
        world.step(0)
    assert world.threads[0].pending is Step.RETRY
    assert not is_preemption(world, 0, 1)
