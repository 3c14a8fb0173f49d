"""Tests of kvmmu.check.keys: the incremental key equals the from-scratch one and keeps its partition."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Generator

import pytest

from kvmmu.check.keys import (
    FrameCanon,
    Keyer,
    L,
    S,
    TrackedTable,
    scratch_components,
    scratch_thread_hash,
    stable_id,
)
from kvmmu.check.state import world_key
from kvmmu.check.world import CheckConfig, World
from kvmmu.mmu.invalidation import STRATEGIES


def _step_and_check(keyer: Keyer, world: World, t: int) -> None:
    """Step thread ``t``, then hold the incremental key to the one computed from scratch."""
    keyer.ran(t)
    world.step(t)
    parts = keyer.shared.components()
    assert parts == scratch_components(world)
    m = keyer.token(parts)
    for i, thread in enumerate(world.threads):
        assert keyer.threads.thread_hash(i, m) == scratch_thread_hash(thread)


@pytest.mark.parametrize("strategy", [*STRATEGIES, "generation+no-wrap-zap", "generation@tdp"])
def test_the_incremental_key_equals_the_key_from_scratch_on_random_runs(strategy: str) -> None:
    rng = random.Random(strategy)
    canon = FrameCanon()
    steps = 0
    strategy, _, mmu = strategy.partition("@")  # NAME@tdp: its TDP MMU
    for slot_zap in ("all", "slot"):
        config = CheckConfig(strategy, vcpus=2, updates=3, mmio_gen_bits=2, slot_zap=slot_zap,
                             tdp_mmu=mmu == "tdp")
        for _ in range(12):
            world = World(config)
            keyer = Keyer(world, canon)
            while not world.all_done() and world.enabled_threads():
                _step_and_check(keyer, world, rng.choice(world.enabled_threads()))
                steps += 1
    assert steps > 500


def test_the_key_partitions_states_exactly_as_the_reference_key() -> None:
    # Two states get the same fast key if and only if they get the same reference key
    # (VM.state_key() and every frame's locals, pickled and digested).
    rng = random.Random(7)
    canon = FrameCanon()
    fast_to_ref: dict[int, bytes] = {}
    ref_to_fast: dict[bytes, int] = {}
    for strategy in ("generation-2013", "zap-walk", "generation"):
        for _ in range(40):
            world = World(CheckConfig(strategy, vcpus=2, updates=2))
            keyer = Keyer(world, canon)
            while not world.all_done() and world.enabled_threads():
                t = rng.choice(world.enabled_threads())
                keyer.ran(t)
                world.step(t)
                fast = hash((strategy, keyer.world_hash(keyer.shared.components())))
                ref = world_key(world, strategy)
                assert fast_to_ref.setdefault(fast, ref) == ref
                assert ref_to_fast.setdefault(ref, fast) == fast
    assert len(fast_to_ref) > 1000


def test_writes_to_a_tracked_table_are_seen_and_a_slice_rescans() -> None:
    config = CheckConfig("generation", vcpus=1, updates=1)
    world = World(config)
    keyer = Keyer(world, FrameCanon())
    while not world.vm.kvm.mmu.active:
        keyer.ran(0)
        world.step(0)
    before = keyer.shared.components()
    sp = next(iter(world.vm.kvm.mmu.active.values()))
    assert isinstance(sp.spt, TrackedTable)
    sp.spt[5] = 0x1234_5007
    assert keyer.shared.components() != before
    assert keyer.shared.components() == scratch_components(world)
    sp.spt[5] = 0
    assert keyer.shared.components() == before
    sp.spt[:] = [0] * len(sp.spt)
    assert keyer.shared.components() == scratch_components(world)


_KEY_IN_A_PROCESS = """
from kvmmu.check.keys import FrameCanon, Keyer
from kvmmu.check.world import CheckConfig, World
w = World(CheckConfig("generation", vcpus=2, updates=2))
k = Keyer(w, FrameCanon())
for t in [0] * 9 + [2] * 3 + [1] * 5:
    k.ran(t)
    w.step(t)
print(k.world_hash(k.shared.components()))
"""


def test_the_key_is_the_same_in_every_process() -> None:
    # Distributed workers compare keys: str hashing is randomised per process, None hashes by
    # address before Python 3.12; the key must use neither.
    keys = {subprocess.run([sys.executable, "-c", _KEY_IN_A_PROCESS], check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(keys) == 1 and keys != {""}
    assert stable_id("access") == stable_id("access") != stable_id("_page_fault")


def test_a_replayed_world_adopting_the_seeds_hashes_as_from_scratch() -> None:
    # The explorer replays a prefix on a fresh world and adopts the original world's frame hashes
    # and page terms before the prefix's last step; from then on only what changes is hashed.
    rng = random.Random(3)
    canon = FrameCanon()
    config = CheckConfig("generation", vcpus=2, updates=2, mmio_gen_bits=2, slot_zap="slot")
    adopted = 0
    for _ in range(30):
        world = World(config)
        keyer = Keyer(world, canon)
        schedule: list[int] = []
        cut = rng.randrange(1, 40)
        seeds = None
        pages = None
        while not world.all_done() and world.enabled_threads():
            if len(schedule) == cut:
                keyer.world_hash(keyer.shared.components())
                seeds = keyer.threads.seeds()
                pages = keyer.shared.page_seeds()
                break
            t = rng.choice(world.enabled_threads())
            keyer.ran(t)
            world.step(t)
            schedule.append(t)
        if seeds is None or pages is None:
            continue
        replayed = World(config)
        for t in schedule:
            replayed.step(t)
        again = Keyer(replayed, canon)
        again.threads.adopt(seeds)
        again.shared.adopt(pages)
        adopted += bool(pages)
        for _ in range(15):
            if replayed.all_done() or not replayed.enabled_threads():
                break
            _step_and_check(again, replayed, rng.choice(replayed.enabled_threads()))
    assert adopted > 10


def _no_loop() -> Generator[int, None, None]:
    yield 1
    total = 0
    for i in range(3):
        total += i
    yield total


def _loop() -> Generator[int, None, None]:
    yield 0
    for i in range(3):
        yield i * 2  # a loop that yields, as the zap loops do


def test_only_loops_whose_body_yields_are_looked_for_iterators() -> None:
    canon = FrameCanon()
    assert canon.yielding_loops(_no_loop.__code__) == ()
    (start, end), = canon.yielding_loops(_loop.__code__)
    gen = _loop()
    next(gen)
    assert not start < gen.gi_frame.f_lasti < end  # suspended before the loop: no iterator
    next(gen)
    assert start < gen.gi_frame.f_lasti < end
    assert canon.frame_hash(gen) == canon.frame_hash(gen, exact=True)


def test_a_read_holder_of_mmu_lock_is_part_of_the_lock_state() -> None:
    # The TDP MMU's faults hold mmu_lock for read; a writer's MMU_LOCK step reads who does, so the
    # lock part (which the partial-order reduction's footprints compare) must change with it.
    world = World(CheckConfig("generation", vcpus=2, updates=1))
    keyer = Keyer(world, FrameCanon())
    lock = world.vm.kvm.mmu.lock
    free = keyer.shared.components()
    lock.readers.add(world.vcpus[0].arch)
    one = keyer.shared.components()
    lock.readers.add(world.vcpus[1].arch)
    two = keyer.shared.components()
    assert len({free.parts[L], one.parts[L], two.parts[L]}) == 3
    assert two == scratch_components(world)
    lock.readers.clear()
    assert keyer.shared.components() == free


def test_the_same_pages_made_in_another_order_are_another_state() -> None:
    # The active list's order is kernel state (v3.17 kvm_mmu_alloc_page(): "The active_mmu_pages
    # list is the FIFO list ... kvm_zap_obsolete_pages depends on this feature"), and the zap
    # walks copy it: the shared part S keeps it, incrementally as from scratch (VM.state_key).
    canon = FrameCanon()

    def touched(order: list[int]) -> tuple[World, Keyer]:
        world = World(CheckConfig("generation", vcpus=1, updates=0))
        world.vm.set_user_memory_region(2, 0, 16 << 20, 8 << 20, 0x7F0000000000)
        keyer = Keyer(world, canon)
        keyer.shared.components()  # the tables are tracked from here on
        for r in order:
            world.vcpus[0].access((16 << 20) + (r << 21))
        return world, keyer

    (wa, ka), (wb, kb) = touched([0, 1, 2, 3]), touched([3, 2, 1, 0])
    a, b = ka.shared.components(), kb.shared.components()
    assert a.parts == scratch_components(wa).parts and b.parts == scratch_components(wb).parts
    assert a.parts[S] != b.parts[S]
    assert a.parts[1:] == b.parts[1:]  # memslots, lock, SRCU, host memory, the vCPU: alike
    assert wa.vm.state_key() != wb.vm.state_key()
