"""Tests of kvmmu.check.por: the sleep sets cut runs, never states, and keep every bug.

Each reduced search is compared with the unreduced one on the same configuration: the same set of
state keys, the same verdict; ``verify_sleep`` replays every cut transition and checks it leads
where the reduction said.
"""

from __future__ import annotations

import pytest

from kvmmu.check.explore import explore
from kvmmu.check.por import Edges, footprint, independent
from kvmmu.check.scenario import Access, Region, Scenario, Script, VmSettings
from kvmmu.check.world import CheckConfig

WRAP = {"mmio_gen_bits": 2, "slot_zap": "slot", "updates": 3}
HVA = 0x7F0000000000
#: Two vCPUs make four leaf pages in an order the schedule decides; the DELETE's slot zap
#: (``slot_zap = "slot"``) walks them in the active list's order.
ZAP_ORDER = Scenario(
    name="zap-order", vm=VmSettings(slot_zap="slot"),
    slots=(Region(slot=0, gpa=0, size=8 << 20, userspace_addr=HVA),),
    vcpus=(Script(accesses=(Access(gpa=0x000000), Access(gpa=0x600000))),
           Script(accesses=(Access(gpa=0x400000), Access(gpa=0x200000)))),
    updates=(Region(slot=0, gpa=0, size=0),))


@pytest.mark.parametrize(("config", "bound"), [
    (CheckConfig("generation", vcpus=2, updates=2), 1),
    (CheckConfig("generation-3.18", vcpus=2, updates=2), 1),
    (CheckConfig("generation", vcpus=1, updates=2), None),
    (CheckConfig("generation", vcpus=3, updates=1, accesses=1), 1),
    (CheckConfig("generation", vcpus=1, mmio_gen_bits=2, updates=3), 1),
], ids=["generation-2x2x2-b1", "generation-3.18-2x2x2-b1", "generation-1x2x2-unbounded",
        "generation-3x1x1-b1", "generation-wrap-1x2x3-b1"])
def test_the_reduced_search_reaches_the_same_states_in_fewer_runs(config: CheckConfig,
                                                                  bound: int | None) -> None:
    full = explore(config, preemptions=bound, reduce=False, keep_states=True)
    reduced = explore(config, preemptions=bound, reduce=True, keep_states=True,
                      verify_sleep=True)
    assert full.failure is None and reduced.failure is None
    assert reduced.states == full.states and full.states
    assert reduced.stats.sleep_pruned > 0
    assert reduced.stats.schedules < full.stats.schedules


def test_a_world_explored_from_a_context_no_worse_stands_for_the_others() -> None:
    # Under a preemption bound the key holds the thread that ran last; a world explored with no
    # such context (or with one and fewer preemptions) cuts the same world reached with another.
    config = CheckConfig("generation", vcpus=2, updates=2)
    full = explore(config, preemptions=1, reduce=False, keep_states=True)
    reduced = explore(config, preemptions=1, reduce=True, keep_states=True, verify_sleep=True)
    assert full.states is not None and full.stats.context_pruned == 0
    assert reduced.stats.context_pruned > 0
    assert reduced.states == full.states
    assert reduced.stats.worlds == full.stats.worlds == len(full.states)
    assert reduced.stats.states < full.stats.states


@pytest.mark.parametrize(("config", "bound", "kinds"), [
    (CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1), 1, {"stale-mmio-spte"}),
    (CheckConfig("generation-3.11+tagged-cache", vcpus=2, updates=2), 2,
     {"stale-mmio-spte", "stale-mmio", "stale-mmio-cache"}),
    (CheckConfig("generation-3.11", vcpus=2, updates=2), 1, {"stale-mmio-cache"}),
    (CheckConfig("generation+no-wrap-zap", vcpus=1, **WRAP), 0, {"stale-mmio-spte"}),
    (CheckConfig("generation-3.18+no-wrap-zap", vcpus=2, **WRAP), 1, {"stale-mmio-spte"}),
    (CheckConfig("generation+cache-without-gen", vcpus=2, updates=1), 1, {"stale-mmio-cache"}),
    (CheckConfig("zap-all-fast+cache-without-gen", vcpus=1, updates=1), 1, {"stale-mmio-cache"}),
], ids=["2014-race-1-vcpu", "2014-race-2-vcpus-b2", "3.11-stale-cache", "no-wrap-zap",
        "no-wrap-zap-3.18-2-vcpus", "cache-without-gen", "zap-all-fast-cache-without-gen"])
def test_the_reduced_search_finds_every_bug_the_unreduced_search_finds(
        config: CheckConfig, bound: int, kinds: set[str]) -> None:
    full = explore(config, preemptions=bound, reduce=False)
    reduced = explore(config, preemptions=bound, reduce=True, verify_sleep=True)
    assert full.failure is not None and reduced.failure is not None
    assert {f.kind for f in full.failure.findings} & kinds
    assert {f.kind for f in reduced.failure.findings} == {f.kind for f in full.failure.findings}


def test_footprints_and_independence() -> None:
    assert footprint([1, 2, 3], [1, 5, 3]) == 0b010
    assert footprint([1, 2], [1, 2]) == 0
    s_only, m_only = 0b1, 0b10
    # Two vCPUs that wrote only their own parts commute; a write to what the other reads does not.
    assert independent(0, s_only, 1 << 5, 1, s_only, 1 << 7)
    assert not independent(0, s_only, s_only, 1, s_only, 0)
    assert not independent(0, m_only, 0, 1, s_only, m_only)
    assert not independent(0, 0, 0, 0, 0, 0)  # a thread never commutes with itself


def test_the_edge_map_remembers_successor_and_context() -> None:
    edges = Edges()
    edges.add(-12345, 2, 678, 2)  # thread 2 is the context after its step
    edges.add(-12345, 1, -9, None)  # switching away from thread 1 is free
    edges.add(99, 0, 5, False)  # not known (a commuted order, waiting at a blocking step)
    assert edges.get_full(-12345, 2) == (678, 2)
    assert edges.get_full(-12345, 1) == (-9, None)
    assert edges.get_full(99, 0) == (5, False)
    assert edges.get(-12345, 0) is None and len(edges) == 3


def test_symmetry_reaches_the_same_orbits_with_fewer_states() -> None:
    # vCPU0 and vCPU2 run the same script: states that differ only by swapping them are one.
    config = CheckConfig("generation", vcpus=3, updates=1, accesses=1)
    plain = explore(config, preemptions=1, reduce=False, symmetry=False, keep_states=True)
    both = explore(config, preemptions=1, reduce=True, symmetry=True, keep_states=True)
    assert plain.failure is None and both.failure is None
    assert both.states == plain.states
    assert both.stats.states < plain.stats.states


@pytest.mark.parametrize(("config", "bound", "kind"), [
    (CheckConfig("generation-3.11", vcpus=3, updates=1), 1, "stale-mmio-cache"),
    (CheckConfig("generation+cache-without-gen", vcpus=3, updates=1), 1, "stale-mmio-cache"),
    (CheckConfig("generation+no-wrap-zap", vcpus=3, accesses=1, **WRAP), 0, "stale-mmio-spte"),
], ids=["3.11-stale-cache", "cache-without-gen", "no-wrap-zap"])
def test_symmetry_keeps_the_bugs(config: CheckConfig, bound: int, kind: str) -> None:
    full = explore(config, preemptions=bound, reduce=False, symmetry=False)
    reduced = explore(config, preemptions=bound, reduce=True, symmetry=True)
    assert full.failure is not None and reduced.failure is not None
    assert kind in {f.kind for f in reduced.failure.findings}
    assert {f.kind for f in reduced.failure.findings} == {f.kind for f in full.failure.findings}


def test_under_the_tdp_mmu_the_reduced_search_reaches_the_same_states() -> None:
    # Readers of mmu_lock are part of the lock's shared state (L) and of each vCPU's (V_i): a read
    # acquisition and a write acquisition do not commute, two read acquisitions do.
    config = CheckConfig("generation", vcpus=2, updates=1, tdp_mmu=True)
    full = explore(config, preemptions=1, reduce=False, keep_states=True)
    reduced = explore(config, preemptions=1, reduce=True, keep_states=True, verify_sleep=True)
    assert full.failure is None and reduced.failure is None
    assert reduced.states == full.states and full.states


def test_the_vmms_steps_in_the_edge_map_cut_runs_never_states() -> None:
    # The VMM's zap loop walks a copy of the active list; with the list's order in the key
    # (VM.state_key) its steps are functions of the key and enter the edge map like the vCPUs'.
    # verify_sleep replays every transition the edge map or a sleep set cut.
    config = CheckConfig("generation", scenario=ZAP_ORDER, vcpus=2)
    full = explore(config, preemptions=1, reduce=False, keep_states=True)
    reduced = explore(config, preemptions=1, reduce=True, keep_states=True, verify_sleep=True)
    assert full.failure is None and reduced.failure is None
    assert reduced.states == full.states and full.states
    assert reduced.stats.schedules < full.stats.schedules
