"""Tests of kvmmu.sim.workloads.vmm: the merged schedule and the VMM's requests."""

from __future__ import annotations

from itertools import islice

from kvmmu.sim.workloads.schema import load_scenario, parse_scenario
from kvmmu.sim.workloads.vmm import KVM_MEM_LOG_DIRTY_PAGES, Action, VmmState, schedule

HEAD = 'name = "t"\ndescription = "d"\nduration = "1ms"\n'


def test_schedule_is_time_ordered_and_counts_repeats() -> None:
    s = load_scenario("boot")
    actions = list(schedule(s, seed=0))
    assert [a.time for a in actions] == sorted(a.time for a in actions)
    assert len(actions) == sum(op.repeat for op in s.vmm)
    moves = [a for a in actions if a.op == "move"]
    assert [m.gpa for m in moves] == [0xE0000000, 0xFD000000] * 2


def test_schedule_is_lazy_for_huge_repeat_counts() -> None:
    s = parse_scenario(HEAD + '[[vmm]]\nop = "remap"\nslot = 1\nrepeat = 10000000\nevery = 1\n', "x")
    first = list(islice(schedule(s, seed=0), 3))
    assert [a.time for a in first] == [0, 1, 2]


def test_slot_ranges_round_robin_with_their_own_gpas() -> None:
    s = load_scenario("virtio-mem")
    creates = [a for a in schedule(s, seed=0) if a.op == "create"]
    assert [a.slot for a in creates[:3]] == [100, 101, 102]
    assert creates[1].gpa == creates[0].gpa + (128 << 20)


def test_random_ops_are_seeded() -> None:
    s = load_scenario("random")
    a = [(x.op, x.slot) for x in schedule(s, seed=3)]
    assert a == [(x.op, x.slot) for x in schedule(s, seed=3)]
    assert a != [(x.op, x.slot) for x in schedule(s, seed=4)]
    assert len({op for op, _ in a}) == 6


def test_state_turns_actions_into_region_requests() -> None:
    s = load_scenario("boot")
    st = VmmState()
    for r in st.initial(s):
        st.accepted(r)
    assert st.slots[2].flags & 2  # ROM is read-only
    remap = st.requests(Action(0, "remap", 2))
    assert [r.memory_size for r in remap] == [0, 128 << 10]
    assert remap[1].userspace_addr != st.slots[2].userspace_addr
    on = st.requests(Action(0, "dirty-log-on", 1))
    assert on[0].flags & KVM_MEM_LOG_DIRTY_PAGES and on[0].memory_size == s.guest.memory
    st.accepted(st.requests(Action(0, "delete", 5))[0])
    assert 5 not in st.slots
    assert st.requests(Action(0, "delete", 5))[0].memory_size == 0  # sent anyway, refused later
