"""The oracle: answers judged from the memslots alone; state invariant; overlapping updates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvmmu import VM, AccessKind, Path, Step
from kvmmu.memslots import KVM_MEM_READONLY, Memslot, Memslots
from kvmmu.mmu.faults import Outcome
from kvmmu.oracle import consistent
from kvmmu.spte import PAGE_SHIFT

HVA = 0x7F00_0000_0000


def outcome(gpa: int, kind: AccessKind, write: bool = False, hva: int | None = None,
            exit_: bool = False) -> Outcome:
    return Outcome(gpa, 4, write, kind, Path.SLOW, None, hva, exit_, 1, 0)


slots_strategy = st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4), st.booleans()),
                          max_size=5)


def build(spec: list[tuple[int, int, bool]]) -> Memslots:
    by_id: dict[int, Memslot] = {}
    end = 0
    for i, (gap, npages, ro) in enumerate(spec):
        base = end + gap
        by_id[i] = Memslot(i, 0, base, npages, KVM_MEM_READONLY if ro else 0, HVA + (i << 24))
        end = base + npages
    return Memslots(0, by_id, 0)


@given(spec=slots_strategy, gfn=st.integers(0, 200), write=st.booleans(),
       offset=st.integers(0, 4092))
def test_exactly_the_answer_the_memslots_describe_is_accepted(
        spec: list[tuple[int, int, bool]], gfn: int, write: bool, offset: int) -> None:
    slots = build(spec)
    gpa = (gfn << PAGE_SHIFT) | offset
    slot = slots.lookup(gfn)
    mmio_exit = outcome(gpa, AccessKind.MMIO, write, exit_=True)
    if slot is None:
        assert consistent(slots, mmio_exit)
        assert not consistent(slots, outcome(gpa, AccessKind.RAM, write, hva=HVA))
        return
    right = outcome(gpa, AccessKind.RAM, write, hva=slot.hva(gfn) | offset)
    wrong = outcome(gpa, AccessKind.RAM, write, hva=(slot.hva(gfn) | offset) + 4096)
    assert not consistent(slots, wrong)
    if write and slot.readonly:
        assert consistent(slots, mmio_exit) and not consistent(slots, right)
    else:
        assert consistent(slots, right) and not consistent(slots, mmio_exit)


def test_a_planted_stale_mmio_spte_violates_the_state_invariant() -> None:
    vm = VM("generation")
    vcpu = vm.create_vcpu()
    vcpu.access(0x10_0000)  # MMIO SPTE for gfn 0x100
    vcpu.access(0x20_0000)  # the vCPU's cache moves on
    assert vm.check_state() == []
    # Publish a slot over gfn 0x100 *without* bumping the generation: what the 2014 race does.
    state = vm.kvm.memslots
    slot = Memslot(0, 0, 0x100, 1, 0, HVA)
    state.active[0] = Memslots(0, {0: slot}, state.active[0].generation)
    found = vm.check_state()
    assert [v.kind for v in found] == ["stale-mmio-spte"]
    assert "gfn 0x100" in found[0].detail


def test_an_access_that_overlapped_an_update_may_see_either_side() -> None:
    vm = VM("generation", strict=True)
    vcpu = vm.create_vcpu()
    access = vcpu.access_steps(0x10_0000)
    next(access)  # the vCPU has begun
    vm.set_user_memory_region(0, 0, 0x10_0000, 0x1000, HVA)  # meanwhile the gfn becomes RAM
    result = None
    try:
        while True:
            next(access)
    except StopIteration as stop:
        result = stop.value
    assert result is not None and result.kind is AccessKind.RAM  # checked, accepted
    assert vm.oracle is not None and vm.oracle.count == 0 and vm.oracle.checked == 1


def test_an_access_starting_mid_update_may_see_the_state_the_update_began_from() -> None:
    vm = VM("generation", strict=False)
    vcpu = vm.create_vcpu()
    stale = outcome(0x10_0000, AccessKind.MMIO, exit_=True)  # what the old memslots say
    update = vm.set_user_memory_region_steps(0, 0, 0x10_0000, 0x1000, HVA)
    for step in update:
        if step is Step.SRCU_SYNC:  # the new memslots are published; the ioctl has not returned
            break
    oracle = vm.oracle
    assert oracle is not None
    oracle.check_access(vcpu.arch, stale, vm.kvm.memslots.stable_epoch)
    assert oracle.count == 0  # an access starting now may still see the old state
    for _ in update:
        pass
    oracle.check_access(vcpu.arch, stale, vm.kvm.memslots.stable_epoch)
    assert oracle.count == 1  # once the ioctl has returned, it may not
    assert oracle.violations[0].kind == "stale-mmio"
