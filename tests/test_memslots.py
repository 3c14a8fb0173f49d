"""Memslots: KVM_SET_USER_MEMORY_REGION semantics and errno, lookup, snapshots, generations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu import VM, Change, KvmError
from kvmmu.memslots import (
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS,
    KVM_USER_MEM_SLOTS,
    MemoryRegionRequest,
    Memslot,
    Memslots,
    MemslotState,
    plan_memory_region,
)
from kvmmu.mmu.steps import Step

MIB = 1 << 20
HVA = 0x7F00_0000_0000


def errno_of(vm: VM, *args: int) -> str:
    try:
        vm.set_user_memory_region(*args)
    except KvmError as e:
        return e.errno_name
    return "ok"


@pytest.fixture
def vm() -> VM:
    v = VM("generation")
    v.set_user_memory_region(0, 0, 0x100000, 2 * MIB, HVA)
    return v


@pytest.mark.parametrize(("args", "want"), [
    ((1, 0x8, 0x400000, 0x1000, HVA), "EINVAL"),  # unknown flag bit
    ((1, 0, 0x400800, 0x1000, HVA), "EINVAL"),  # gpa not 4 KiB aligned
    ((1, 0, 0x400000, 0x1800, HVA), "EINVAL"),  # size not aligned
    ((1, 0, 0x400000, 0x1000, HVA + 0x10), "EINVAL"),  # userspace address not aligned
    ((32764, 0, 0x400000, 0x1000, HVA), "EINVAL"),  # slot id >= KVM_CAP_NR_MEMSLOTS
    ((2 << 16 | 1, 0, 0x400000, 0x1000, HVA), "EINVAL"),  # address space 2: x86 has two
    ((1, 0, 0xFFFF_FFFF_FFFF_F000, 0x2000, HVA), "EINVAL"),  # gpa + size wraps past 2^64
    ((1, 0, 1 << 52, 0x1000, HVA), "EINVAL"),  # beyond the guest physical width
    ((7, 0, 0x400000, 0, HVA), "EINVAL"),  # delete a slot that does not exist
    ((0, 0, 0x100000, 4 * MIB, HVA), "EINVAL"),  # change the size of a slot
    ((0, 0, 0x100000, 2 * MIB, HVA + 0x1000), "EINVAL"),  # change its userspace address
    ((0, KVM_MEM_READONLY, 0x100000, 2 * MIB, HVA), "EINVAL"),  # toggle READONLY
    ((1, 0, 0x200000, 2 * MIB, HVA), "EEXIST"),  # new slot overlapping slot 0
    ((1, 0, 0x300000, 0x1000, HVA), "ok"),  # adjacent: allowed
    ((1, 0, 0x500000, 2 * MIB, HVA), "ok"),  # same userspace memory as slot 0: allowed
    ((0, 0, 0x100000, 2 * MIB, HVA), "ok"),  # identical request: success
    ((32763, 0, 0x400000, 0x1000, HVA), "ok"),  # the last slot id
])
def test_requests_get_the_errno_the_kernel_gives(vm: VM, args: tuple[int, ...], want: str) -> None:
    assert errno_of(vm, *args) == want


def test_an_overlap_is_eexist_even_beyond_the_address_width_as_the_kernel_orders_checks() -> None:
    vm = VM("generation", phys_bits=40)
    vm.set_user_memory_region(0, 0, (1 << 40) - 0x2000, 0x1000, HVA)
    assert errno_of(vm, 1, 0, (1 << 40) - 0x2000, 0x4000, HVA) == "EEXIST"
    assert errno_of(vm, 1, 0, (1 << 40) - 0x1000, 0x2000, HVA) == "EINVAL"


def test_errors_say_what_was_wrong(vm: VM) -> None:
    with pytest.raises(KvmError, match="overlaps slot 0") as e:
        vm.set_user_memory_region(1, 0, 0x200000, 2 * MIB, HVA)
    assert e.value.errno_name == "EEXIST" and e.value.errno == 17


def test_each_request_is_classified_like_kvm_mr_change(vm: VM) -> None:
    assert vm.set_user_memory_region(1, 0, 0x400000, 0x1000, HVA) is Change.CREATE
    assert vm.set_user_memory_region(1, 0, 0x400000, 0x1000, HVA) is Change.NONE
    assert vm.set_user_memory_region(1, KVM_MEM_LOG_DIRTY_PAGES, 0x400000, 0x1000,
                                     HVA) is Change.FLAGS_ONLY
    assert vm.set_user_memory_region(1, KVM_MEM_LOG_DIRTY_PAGES, 0x800000, 0x1000,
                                     HVA) is Change.MOVE
    assert vm.set_user_memory_region(1, 0, 0x800000, 0, HVA) is Change.DELETE


def test_a_second_address_space_keeps_its_own_slots_and_generation() -> None:
    vm = VM("generation", address_spaces=2)
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    vm.set_user_memory_region(1 << 16, 0, 0, 0x1000, HVA)  # same gpa, other space: no overlap
    gens = [s.generation for s in vm.kvm.memslots.active]
    assert gens == [2, 3]  # modern: start at as_id, step by the number of address spaces


@pytest.mark.parametrize(("strategy", "steps"), [
    ("generation-3.11", {Change.CREATE: 1, Change.FLAGS_ONLY: 1, Change.MOVE: 2,
                         Change.DELETE: 2}),
    ("generation-3.18", {Change.CREATE: 2, Change.FLAGS_ONLY: 2, Change.MOVE: 4,
                         Change.DELETE: 4}),
    ("generation-4.2", {Change.CREATE: 2, Change.FLAGS_ONLY: 2, Change.MOVE: 4,
                        Change.DELETE: 4}),  # v4.4.121: +1, ++ in each address space
    ("generation-4.19", {Change.CREATE: 4, Change.FLAGS_ONLY: 4, Change.MOVE: 8,
                         Change.DELETE: 8}),  # v4.19: +1, += KVM_ADDRESS_SPACE_NUM * 2 - 1
    ("generation", {Change.CREATE: 2, Change.FLAGS_ONLY: 2, Change.MOVE: 4,
                    Change.DELETE: 4}),  # 5.1+: += KVM_ADDRESS_SPACE_NUM (2 with SMM)
])
def test_the_generation_steps_as_the_era_did(strategy: str, steps: dict[Change, int]) -> None:
    vm = VM(strategy, start_near_wrap=False)
    ops = [(Change.CREATE, (0, 0, 0, 0x1000, HVA)),
           (Change.FLAGS_ONLY, (0, KVM_MEM_LOG_DIRTY_PAGES, 0, 0x1000, HVA)),
           (Change.MOVE, (0, KVM_MEM_LOG_DIRTY_PAGES, 0x1000, 0x1000, HVA)),
           (Change.DELETE, (0, 0, 0x1000, 0, HVA))]
    for change, args in ops:
        before = vm.generation
        assert vm.set_user_memory_region(*args) is change
        assert vm.generation - before == steps[change]
    before = vm.generation
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)  # identical: nothing bumps
    assert vm.generation - before == steps[Change.CREATE]


def published_generations(vm: VM, *args: int) -> list[int]:
    """The generation seen right after each publish of one update."""
    seen = []
    gen = vm.set_user_memory_region_steps(*args)
    for step in gen:
        if step is Step.SRCU_SYNC:  # just after PUBLISH_MEMSLOTS
            seen.append(vm.kvm.memslots.active[0].generation)
    return seen


def test_modern_updates_publish_with_the_in_progress_flag_set() -> None:
    vm = VM("generation")
    seen = published_generations(vm, 0, 0, 0, 0x1000, HVA)
    assert seen == [KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS | 0]
    assert vm.generation == 2  # two address spaces (SMM): steps of 2


def test_2014_updates_publish_an_odd_generation_then_step_again() -> None:
    vm = VM("generation-3.18", start_near_wrap=False)
    assert published_generations(vm, 0, 0, 0, 0x1000, HVA) == [1]
    assert vm.generation == 2


def test_2013_updates_publish_the_final_generation_at_once() -> None:
    vm = VM("generation-3.11", start_near_wrap=False)
    assert published_generations(vm, 0, 0, 0, 0x1000, HVA) == [1]
    assert vm.generation == 1


def test_delete_publishes_the_slot_marked_invalid_first() -> None:
    vm = VM("generation")
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    invalid_seen = []
    for step in vm.set_user_memory_region_steps(0, 0, 0, 0, HVA):
        if step is Step.SRCU_SYNC:
            slot = vm.kvm.memslots.active[0].by_id.get(0)
            invalid_seen.append(slot is not None and slot.invalid)
    assert invalid_seen == [True, False]
    assert vm.memslots() == []


def test_start_near_wrap_starts_150_below() -> None:
    """v3.11 kvm_current_mmio_generation(): (0 + MMIO_MAX_GEN - 150) & MMIO_GEN_MASK = 0x7FF69;
    v3.18 kvm_create_vm(): generation = -150 (20 bits); 5.1 removed the hack ("KVM: Remove the
    hack to trigger memslot generation wraparound"); v4.19: i * 2 - 150 per address space."""
    assert VM("generation-3.11").generation == 0x7FF69 == (1 << 19) - 1 - 150
    assert VM("generation-3.18").generation == (1 << 20) - 150
    assert VM("generation").generation == 0
    assert VM("generation", start_near_wrap=True).generation == (1 << 19) - 150
    v419 = VM("generation-4.19")
    assert [m.generation for m in v419.kvm.memslots.active] == [(1 << 20) - 150, (1 << 20) - 148]
    v42 = VM("generation-4.2")  # v4.4.121: every address space at -150
    assert [m.generation for m in v42.kvm.memslots.active] == [(1 << 20) - 150] * 2


def test_a_reader_keeps_the_snapshot_it_took() -> None:
    vm = VM("generation")
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    snapshot = vm.kvm.memslots.active[0]
    vm.set_user_memory_region(0, 0, 0, 0, HVA)
    vm.set_user_memory_region(1, 0, 0, 0x2000, HVA + 0x10000)
    assert snapshot.lookup(0) is not None and snapshot.lookup(0).id == 0
    assert snapshot.lookup(1) is None
    assert vm.kvm.memslots.active[0].lookup(1).id == 1  # type: ignore[union-attr]


request = st.tuples(
    st.integers(0, 5),  # slot
    st.sampled_from([0, 0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, 0x4]),
    st.integers(0, 40).map(lambda p: p << 12),  # gpa
    st.sampled_from([0, 1, 2, 3, 8]).map(lambda p: p << 12),  # size
    st.sampled_from([HVA, HVA + 0x100000]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(request, max_size=40))
def test_any_request_sequence_keeps_slots_disjoint_and_refusals_change_nothing(
        requests: list[tuple[int, int, int, int, int]]) -> None:
    vm = VM("generation")
    for req in requests:
        before_slots = vm.memslots()
        before_gen = vm.generation
        try:
            change = vm.set_user_memory_region(*req)
        except KvmError:
            assert vm.memslots() == before_slots and vm.generation == before_gen
            continue
        if change is Change.NONE:
            assert vm.generation == before_gen
        slots = vm.memslots()
        for i, a in enumerate(slots):
            for b in slots[i + 1:]:
                assert a.end_gfn <= b.base_gfn or b.end_gfn <= a.base_gfn
        for gfn in range(0, 48):
            brute = [s for s in slots if s.contains(gfn)]
            found = vm.kvm.memslots.active[0].lookup(gfn)
            assert (found is None and not brute) or (found is not None and [found] == brute)


def test_plan_refuses_values_that_do_not_fit_the_ioctl_struct() -> None:
    state = MemslotState.create("modern", 1, gen_mask=(1 << 19) - 1, start_below_wrap=None)
    with pytest.raises(KvmError, match="u32"):
        plan_memory_region(MemoryRegionRequest(1 << 32, 0, 0, 0x1000, HVA), state, phys_bits=52)


def test_lookup_finds_each_of_thousands_of_slots() -> None:
    vm = VM("generation", oracle=False)
    n = 2000  # enough to exercise the binary search; the id limit is pinned above
    for i in range(n):
        vm.set_user_memory_region(i, 0, i << 13, 0x1000, HVA + (i << 12))
    slots = vm.kvm.memslots.active[0]
    assert all(slots.lookup(i << 1).id == i for i in range(n))  # type: ignore[union-attr]
    assert all(slots.lookup((i << 1) | 1) is None for i in range(n))


def test_every_slot_id_up_to_the_limit_can_be_created_found_and_deleted() -> None:
    vm = VM("generation", oracle=False)
    n = KVM_USER_MEM_SLOTS
    for i in range(n):
        vm.set_user_memory_region(i, 0, i << 13, 0x1000, HVA + (i << 12))
    full = vm.kvm.memslots.active[0]
    assert len(full) == n and [s.id for s in full] == list(range(n))
    assert all(full.lookup(i << 1).id == i for i in range(0, n, 97))  # type: ignore[union-attr]
    assert errno_of(vm, 5, 0, 5 << 13, 0x1000, HVA + (5 << 12)) == "ok"  # identical: a no-op
    assert errno_of(vm, 7, 0, 7 << 13, 0x2000, HVA + (7 << 12)) == "EINVAL"  # size changed
    assert errno_of(vm, 7, 0, 6 << 13, 0x1000, HVA + (7 << 12)) == "EEXIST"  # moved onto slot 6
    for i in range(n):
        vm.set_user_memory_region(i, 0, i << 13, 0, HVA + (i << 12))
    assert len(vm.kvm.memslots.active[0]) == 0 and len(full) == n  # the old snapshot is intact


def test_a_new_snapshot_shares_all_but_a_path_with_its_predecessor() -> None:
    vm = VM("generation", oracle=False)
    for i in range(1000):
        vm.set_user_memory_region(i, 0, i << 13, 0x1000, HVA + (i << 12))
    before = vm.kvm.memslots.active[0]
    vm.set_user_memory_region(500, KVM_MEM_LOG_DIRTY_PAGES, 500 << 13, 0x1000, HVA + (500 << 12))
    after = vm.kvm.memslots.active[0]

    def leaves(slots: Memslots) -> set[int]:
        out, stack = set(), [slots.slot_set.by_gfn._root]
        while stack:
            node = stack.pop()
            if node.leaf:
                out.add(id(node))
            else:
                stack.extend(node.items)
        return out

    shared = leaves(before) & leaves(after)
    assert len(leaves(after)) - len(shared) == 1  # only the changed slot's leaf was copied
    assert before.by_id[500].flags == 0 and after.by_id[500].flags == KVM_MEM_LOG_DIRTY_PAGES


def test_each_kernel_has_its_own_slot_limit() -> None:
    """KVM_USER_MEM_SLOTS: 125 in v3.10/v3.17/v3.18 (so 3.11), 509 by v4.4, 32764 on current
    kernels (KVM_CAP_NR_MEMSLOTS on this project's machines)."""
    for name, limit in (("generation-3.11", 125), ("generation-3.18", 125),
                        ("generation-4.19", 509), ("generation", 32764)):
        vm = VM(name)
        assert errno_of(vm, limit - 1, 0, 0x400000, 0x1000, HVA) == "ok", name
        assert errno_of(vm, limit, 0, 0x800000, 0x1000, HVA) == "EINVAL", name


def test_a_slot_over_the_apic_access_page_is_eexist_from_4_4_on() -> None:
    """The APIC access page is a private memslot at 0xFEE00000 on VMX hosts with an in-kernel
    LAPIC; v4.4.121's overlap check sees private slots (EEXIST), 3.x skipped ``id >=
    KVM_USER_MEM_SLOTS``.  This project's host (kvm_pvm) has no such slot: off by default."""
    apic = (0, 0, 0xFEE0_0000, 0x1000, HVA)
    assert errno_of(VM("generation", apic_access_page=True), *apic) == "EEXIST"
    assert errno_of(VM("generation-4.2", apic_access_page=True), *apic) == "EEXIST"
    assert errno_of(VM("generation-3.18", apic_access_page=True), *apic) == "ok"
    assert errno_of(VM("generation"), *apic) == "ok"
    assert errno_of(VM("generation", apic_access_page=True), 0, 0, 0xFEC0_0000, 0x20_1000,
                    HVA) == "EEXIST"  # any overlap, not only the exact page
    assert errno_of(VM("generation", apic_access_page=True), 1 << 16, 0, 0xFEE0_0000, 0x1000,
                    HVA) == "ok"  # SMM address space: the private slot is in space 0 only


def test_the_max_gfn_is_the_host_maxphyaddr_under_ept_and_52_bits_under_shadow_paging() -> None:
    """kvm_mmu_max_gfn(): ``max_gpa_bits = likely(tdp_enabled) ? shadow_phys_bits : 52``."""
    ept = VM("generation", mmu="ept", maxphyaddr=46)
    assert ept.kvm.phys_bits == 46
    assert errno_of(ept, 0, 0, (1 << 46) - 0x1000, 0x1000, HVA) == "ok"
    assert errno_of(ept, 1, 0, 1 << 46, 0x1000, HVA) == "EINVAL"
    shadow = VM("generation", mmu="shadow", maxphyaddr=46)
    assert shadow.kvm.phys_bits == 52
    assert errno_of(shadow, 1, 0, 1 << 46, 0x1000, HVA) == "ok"


def test_a_failing_move_is_invalidated_and_flushed_before_it_fails_on_6_x() -> None:
    """v6.1 kvm_set_memslot(): a MOVE first publishes the slot invalid (a generation bump) and
    flushes (kvm_mmu_zap_all_fast), then kvm_arch_prepare_memory_region() refuses a slot beyond
    kvm_mmu_max_gfn() and kvm_activate_memslot() restores the old one (another bump)."""
    vm = VM("generation", mmu="ept", maxphyaddr=46)
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x10)
    gen, zaps = vm.generation, vm.stats["zap_all_fast"]
    assert errno_of(vm, 0, 0, 1 << 46, 0x1000, HVA) == "EINVAL"
    assert vm.generation == gen + 4  # two publishes of two steps each (two address spaces)
    assert vm.stats["zap_all_fast"] == zaps + 1 and vm.stats["shadow_pages"] == 0
    (slot,) = vm.memslots()
    assert slot.base_gfn == 0 and not slot.invalid  # the old slot is back
    assert vcpu.access(0x10).kind.value == "ram"
    create = VM("generation", mmu="ept", maxphyaddr=46)
    assert errno_of(create, 0, 0, 1 << 46, 0x1000, HVA) == "EINVAL"
    assert create.generation == 0  # a CREATE is refused before anything is published


@pytest.mark.parametrize(("field", "value", "bits"), [
    ("slot", -1, 32), ("flags", 1 << 32, 32), ("guest_phys_addr", 1 << 64, 64),
    ("memory_size", -0x1000, 64), ("userspace_addr", 1 << 64, 64),
])
def test_plan_names_the_field_that_does_not_fit(field: str, value: int, bits: int) -> None:
    state = MemslotState.create("modern", 1, gen_mask=(1 << 19) - 1, start_below_wrap=None)
    args = {"slot": 1, "flags": 0, "guest_phys_addr": 0, "memory_size": 0x1000,
            "userspace_addr": HVA, field: value}
    with pytest.raises(KvmError, match=rf"^EINVAL: {field} .* does not fit in a u{bits}$"):
        plan_memory_region(MemoryRegionRequest(**args), state, phys_bits=52)


def test_the_invalid_copy_is_the_slot_marked_invalid_sharing_its_dirty_bitmap() -> None:
    slot = Memslot(3, 1, 0x100, 16, KVM_MEM_LOG_DIRTY_PAGES, HVA, dirty_bitmap=bytearray(8))
    copy = slot.invalidated()
    assert copy == replace(slot, invalid=True) and copy.invalid and not slot.invalid
    assert copy.dirty_bitmap is slot.dirty_bitmap


def test_every_new_vm_starts_without_slots_whatever_another_vm_did() -> None:
    """New VMs share the empty slot set: an update builds a new set and leaves it empty."""
    a = VM("generation")
    a.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    a.set_user_memory_region(1 << 16 | 2, 0, 0x10000, 0x1000, HVA)
    b = VM("generation")
    assert [len(s) for s in b.kvm.memslots.active] == [0, 0]
    assert b.kvm.memslots.active[0].lookup(0) is None
    assert len(a.kvm.memslots.active[0]) == len(a.kvm.memslots.active[1]) == 1
