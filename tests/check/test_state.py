"""Tests of kvmmu.check.state: what the visited-set key distinguishes and what it merges."""

from __future__ import annotations

import pytest

from kvmmu.check.scenario import Access, Region, Scenario, Script
from kvmmu.check.state import (
    KeyCache,
    UnknownLocalError,
    canonical,
    dropped,
    frames,
    shared_key,
    thread_key,
    world_key,
)
from kvmmu.check.world import CheckConfig, World
from kvmmu.memslots import Memslot, Memslots
from kvmmu.mmu.steps import Step
from kvmmu.vm import VM

RAM = 0x7F00_0000_0000


def run(world: World, schedule: list[int]) -> World:
    for t in schedule:
        assert world.enabled(t)
        world.step(t)
    return world


def to_pending(world: World, t: int, step: Step) -> None:
    while world.threads[t].pending is not step:
        world.step(t)


def test_a_generation_held_in_a_local_separates_states_with_equal_shared_state() -> None:
    # The 2014 race's two orders: the vCPU reads the generation before or after the publish.
    # Afterwards all shared state is equal; only the vCPU's local `gen` differs.
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)
    before = World(config)
    to_pending(before, 0, Step.READ_GENERATION)
    after = World(config)
    to_pending(after, 0, Step.READ_GENERATION)
    before.step(0)  # reads the old generation ...
    run(before, [1, 1])  # ... then the VMM begins and publishes
    run(after, [1, 1, 0])  # the VMM publishes, then the vCPU reads the new one
    assert before.threads[0].pending is after.threads[0].pending is Step.WRITE_SPTE
    assert shared_key(before) == shared_key(after)
    assert world_key(before) != world_key(after)
    gens = [frames(w.threads[0].gen)[-1].f_locals["gen"] for w in (before, after)]
    assert gens[0] + 1 == gens[1]


def test_same_schedule_same_key_and_the_cache_agrees() -> None:
    config = CheckConfig("generation", vcpus=2, updates=2)
    a, b = World(config), World(config)
    cache = KeyCache(len(b.threads))
    schedule = [0] * 9 + [2] * 3 + [1] * 5 + [0] * 4 + [2] * 2
    for t in schedule:
        a.step(t)
        b.step(t)
        cache.ran(t)
        assert world_key(a) == world_key(b, None, cache)
    assert world_key(a, extra=1) != world_key(a, extra=2)


def test_a_retry_loop_closes_on_a_visited_state() -> None:
    # A vCPU faulting on a slot being deleted retries until the delete completes; only its
    # `traps` counter grows, which the key abstracts to 0/1, so the loop revisits a state.
    scenario = Scenario(name="delete", slots=(Region(slot=0, gpa=0, size=0x10000,
                                                     userspace_addr=RAM),),
                        vcpus=(Script((Access(gpa=0x1000),)),),
                        updates=(Region(slot=0, gpa=0, size=0),))
    world = World(CheckConfig("generation", scenario, vcpus=1, slot_zap="slot"))
    run(world, [1, 1])  # the VMM publishes slot 0 marked invalid
    to_pending(world, 0, Step.RETRY)
    first = world_key(world)
    traps = frames(world.threads[0].gen)[0].f_locals["traps"]
    world.step(0)
    to_pending(world, 0, Step.RETRY)
    assert frames(world.threads[0].gen)[0].f_locals["traps"] == traps + 1
    assert world_key(world) == first


def test_canonical_forms() -> None:
    slot = Memslot(1, 0, 0x100, 1, 0, RAM)
    snap = Memslots(0, {1: slot}, 7)
    assert canonical(slot) == canonical(Memslot(1, 0, 0x100, 1, 0, RAM))
    assert canonical(snap) == ("slots", 0, 7, ((1, 0, 0x100, 1, 0, RAM, False),))
    assert canonical(Step.MMU_LOCK) == ("Step", int(Step.MMU_LOCK))
    assert canonical({2: [1, 2], 1: None}) == ((1, None), (2, (1, 2)))
    assert dropped(VM("generation"))
    assert not dropped(0)


def test_an_unknown_local_type_is_an_error_not_silently_dropped() -> None:
    class Mystery:
        pass

    with pytest.raises(UnknownLocalError, match="Mystery"):
        canonical(Mystery(), "f.x")


def test_thread_key_names_each_frame_and_position() -> None:
    world = World(CheckConfig("generation", vcpus=1, updates=1))
    assert thread_key(world.threads[0]) == (0,)
    to_pending(world, 0, Step.READ_MEMSLOTS)
    key = thread_key(world.threads[0])
    assert [frame[0] for frame in key[1]] == ["access", "_page_fault"]
    assert all(isinstance(frame[1], int) for frame in key[1])
