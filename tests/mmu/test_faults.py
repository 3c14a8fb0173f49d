"""Fault paths: hardware walk, MMIO fast path, slow path, emulator, per-vCPU cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmmu import STRATEGIES, VM, AccessKind, Path, RegisterBank
from kvmmu.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from kvmmu.mmu.steps import Step
from kvmmu.spte import SPTE_LARGE, SPTE_WRITABLE
from kvmmu.vcpu import Vcpu

HVA = 0x7F00_0000_0000
MMIO = 0xFEE0_0000


@pytest.fixture
def vm() -> VM:
    v = VM("generation", strict=True)
    v.set_user_memory_region(0, 0, 0, 0x400000, HVA)
    return v


def test_first_touch_takes_the_slow_path_then_the_hardware_walk_hits(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    first = vcpu.access(0x1000)
    assert (first.kind, first.path, first.traps, first.hva) == (AccessKind.RAM, Path.SLOW, 1,
                                                                 HVA + 0x1000)
    again = vcpu.access(0x1004)
    assert (again.path, again.traps) == (Path.HW, 0)
    assert vcpu.stats.pf_fixed == 1 and vcpu.stats.hw_hits == 1


def test_ram_reads_return_what_was_written_through_host_memory(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    vcpu.access(0x2008, write=True, size=8, value=0x1122334455667788)
    assert vcpu.access(0x2008, size=8).value == 0x1122334455667788
    assert vm.host_memory.read(HVA + 0x2008, 2) == b"\x88\x77"


def test_an_mmio_access_creates_an_mmio_spte_then_the_cache_then_the_fast_path_answer(
        vm: VM) -> None:
    vcpu = vm.create_vcpu()
    first = vcpu.access(MMIO)
    assert (first.kind, first.path, first.exit_to_userspace) == (AccessKind.MMIO, Path.SLOW, True)
    assert vcpu.stats.pf_mmio_spte_created == 1
    assert vcpu.access(MMIO).path is Path.CACHE  # vcpu->arch.mmio_gfn matches
    vcpu.access(MMIO + 0x1000)  # caches another gfn
    assert vcpu.access(MMIO).path is Path.FAST  # the SPTE's generation matches
    assert vcpu.stats.mmio_exits == 4


def test_a_stale_mmio_spte_goes_to_the_slow_path_which_maps_the_new_ram(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    vcpu.access(MMIO)
    vm.set_user_memory_region(1, 0, MMIO, 0x1000, HVA + 0x1000_0000)
    out = vcpu.access(MMIO)
    assert (out.kind, out.path) == (AccessKind.RAM, Path.SLOW)
    # The per-vCPU cache refused (stale generation), then the SPTE check said INVALID.
    assert vcpu.stats.mmio_cache_hits == 0 and vcpu.stats.mmio_fast_invalid == 1


def test_the_fast_path_counts_a_stale_generation_as_invalid(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    vcpu.access(MMIO)
    vcpu.access(MMIO + 0x1000)  # the cache now names another gfn
    vm.set_user_memory_region(1, 0, 0x800000, 0x1000, HVA + 0x1000_0000)  # unrelated CREATE
    out = vcpu.access(MMIO)
    assert (out.kind, out.path) == (AccessKind.MMIO, Path.SLOW)
    assert vcpu.stats.mmio_fast_invalid == 1 and vcpu.stats.pf_mmio_spte_created == 3


def test_a_write_to_a_readonly_slot_exits_as_mmio_and_leaves_memory_unchanged(vm: VM) -> None:
    vm.set_user_memory_region(1, KVM_MEM_READONLY, 0x800000, 0x1000, HVA + 0x100_0000)
    vm.host_memory.write(HVA + 0x100_0000, b"\x2a")
    vcpu = vm.create_vcpu()
    assert vcpu.access(0x800000, size=1).value == 0x2A
    out = vcpu.access(0x800000, write=True, size=1, value=7)
    assert (out.kind, out.write, out.exit_to_userspace) == (AccessKind.MMIO, True, True)
    assert vm.host_memory.read(HVA + 0x100_0000, 1) == b"\x2a"
    leaf = vcpu.arch.psc_page
    assert leaf is not None and not leaf.spt[0] & SPTE_WRITABLE


def test_in_kernel_devices_answer_without_an_exit(vm: VM) -> None:
    bank = RegisterBank("doorbell")
    vm.register_device(MMIO, 0x1000, bank)
    vcpu = vm.create_vcpu()
    vcpu.access(MMIO + 8, write=True, value=0xABCD)
    out = vcpu.access(MMIO + 8)
    assert (out.kind, out.value, out.exit_to_userspace) == (AccessKind.MMIO, 0xABCD, False)
    assert vcpu.stats.mmio_exits == 0 and bank.writes == 1


def test_emulated_accesses_consult_the_cache_then_the_memslots(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    ram = vcpu.access(0x3000, emulated=True)
    assert (ram.kind, ram.path) == (AccessKind.RAM, Path.EMULATOR)
    vcpu.access(MMIO)  # fills the cache
    out = vcpu.access(MMIO, emulated=True)
    assert (out.kind, out.path) == (AccessKind.MMIO, Path.CACHE)
    assert 0x3 not in vm.kvm.mmu.ever_mapped  # the emulator reads memory, maps nothing


def test_dirty_logging_maps_read_only_until_the_first_write_which_it_logs(vm: VM) -> None:
    vm.set_user_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 0x400000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x5000)
    assert vm.get_dirty_log(0)[0] == 0
    vcpu.access(0x5000, write=True, value=1)
    bitmap = vm.get_dirty_log(0)
    assert bitmap[0] == 1 << 5 and not any(bitmap[1:])
    assert not any(vm.get_dirty_log(0))  # cleared by the read
    vcpu.access(0x5000, write=True, value=2)  # re-protected: logged again
    assert vm.get_dirty_log(0)[0] == 1 << 5


def test_large_pages_map_a_2mib_region_with_one_leaf() -> None:
    vm = VM("generation", large_pages=True, strict=True)
    vm.set_user_memory_region(0, 0, 0, 0x400000, HVA)
    vcpu = vm.create_vcpu()
    out = vcpu.access(0x201234, write=True, value=9)
    assert out.hva == HVA + 0x201234
    assert vcpu.access(0x3FF000).path is Path.HW  # same 2 MiB leaf
    level2 = vcpu.arch.root.children[0].children[0]  # type: ignore[union-attr]
    assert level2 is not None and level2.spt[1] & SPTE_LARGE


def test_dirty_logging_splits_a_large_leaf_on_write() -> None:
    vm = VM("generation", large_pages=True, strict=True)
    vm.set_user_memory_region(0, 0, 0, 0x400000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x200000)
    vm.set_user_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 0x400000, HVA)
    vcpu.access(0x203000, write=True, value=5)
    assert vm.get_dirty_log(0)[0x203 // 8] == 1 << (0x203 % 8)
    assert vcpu.access(0x203000).value == 5


def test_a_fault_on_a_slot_being_deleted_retries_until_the_delete_completes(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    update = vm.set_user_memory_region_steps(0, 0, 0, 0, HVA)
    while next(update) is not Step.SRCU_SYNC:  # the invalid copy is now published
        pass
    access = vcpu.access_steps(0x1000)
    steps = [next(access) for _ in range(6)]
    assert Step.RETRY in steps  # kvm_faultin_pfn(): KVM_MEMSLOT_INVALID -> RET_PF_RETRY
    for _ in update:
        pass
    out = None
    try:
        while True:
            next(access)
    except StopIteration as stop:
        out = stop.value
    assert out is not None and out.kind is AccessKind.MMIO


def test_every_step_the_access_yields_is_a_step() -> None:
    vm = VM("generation")
    vcpu = vm.create_vcpu()
    steps = list(vcpu.access_steps(MMIO))
    assert steps and all(isinstance(s, Step) for s in steps)
    assert steps[:2] == [Step.MMU_LOCK, Step.ROOT_RELOAD]  # kvm_mmu_load() first
    assert Step.READ_GENERATION in steps and steps[-1] == Step.EXIT_TO_USERSPACE


def test_bad_access_arguments_are_refused_with_a_reason(vm: VM) -> None:
    vcpu = vm.create_vcpu()
    with pytest.raises(ValueError, match="size"):
        vcpu.access(0, size=3)
    with pytest.raises(ValueError, match="crosses a page"):
        vcpu.access(0xFFE, size=4)
    with pytest.raises(ValueError, match="address width"):
        vcpu.access(1 << 52)


@pytest.mark.parametrize("strategy", ["zap-all-fast"])
def test_a_zapped_spte_read_mid_update_is_not_cached_as_current(strategy: str) -> None:
    """With a tagged per-vCPU cache, SPTEs without a generation tag the cache with the
    generation read before the SPTE, and the zap runs while the generation says "in progress";
    the real 3.9/3.10 zapped at commit with untagged caches (see the next test)."""
    # The interleaving kvmmu check found: vCPU1 reads an MMIO SPTE that the update is about to
    # zap, the update finishes and returns, then vCPU1 fills its per-vCPU cache.
    vm = VM(strategy, slot_zap="slot")
    vm.set_user_memory_region(0, 0, 0, 0x10000, HVA)
    v0, v1 = vm.create_vcpu(), vm.create_vcpu()
    v0.access(0x100000)  # an MMIO SPTE for gfn 0x100
    v1.access(0x1000)  # vCPU1 has a root
    update = vm.set_user_memory_region_steps(1, 0, 0x100000, 0x1000, HVA + 0x100000)
    for step in update:
        if step is Step.MMU_LOCK:  # published, grace period over: the zap is next
            break
    access = v1.access_steps(0x100000, write=True, value=0x5A)
    for step in access:
        if step is Step.READ_SPTE_LOCKLESS:
            break
    next(access)  # the lockless read of the (still present) MMIO SPTE
    for _ in update:  # the zap runs and the ioctl returns
        pass
    for _ in access:
        pass
    assert vm.check_state() == []  # no stale per-vCPU cache
    assert v1.access(0x100000).kind is AccessKind.RAM


@pytest.mark.parametrize("strategy", ["zap-all-3.9", "zap-mmio-3.10"])
def test_before_3_18_the_same_window_leaves_a_stale_per_vcpu_cache(strategy: str) -> None:
    """v3.9/v3.10 vcpu_cache_mmio_info() stored no generation (56f17dd3fbc4 added it in 3.18):
    the SPTE read before the zap is cached after the ioctl returns and answers MMIO for RAM."""
    vm = VM(strategy, slot_zap="slot")
    vm.set_user_memory_region(0, 0, 0, 0x10000, HVA)
    v0, v1 = vm.create_vcpu(), vm.create_vcpu()
    v0.access(0x100000)
    v1.access(0x1000)
    update = vm.set_user_memory_region_steps(1, 0, 0x100000, 0x1000, HVA + 0x100000)
    for step in update:
        if step is Step.MMU_LOCK:
            break
    access = v1.access_steps(0x100000, write=True, value=0x5A)
    for step in access:
        if step is Step.READ_SPTE_LOCKLESS:
            break
    next(access)
    for _ in update:
        pass
    for _ in access:
        pass
    assert {v.kind for v in vm.check_state()} == {"stale-mmio-cache"}
    assert STRATEGIES[strategy].expected_violations  # a known bug of the kernel, so marked


def test_the_per_vcpu_cache_is_filled_before_the_max_gfn_test() -> None:
    """Current mmu.c kvm_handle_noslot_fault(): vcpu_cache_mmio_info() first, then the
    mmio_caching test, then ``fault->gfn > kvm_mmu_max_gfn()`` (no MMIO SPTE for such a gfn)."""
    vm = VM("generation", mmu="ept", maxphyaddr=46, phys_bits=46)
    vcpu = vm.create_vcpu()
    high = (1 << 46) - 0x1000  # the last gfn: still allowed
    vcpu.access(high)
    assert vm.stats["pf_mmio_spte_created"] == 1
    # A guest told a wider MAXPHYADDR than the host's (nested, "tricked by L0 userspace"): the
    # vCPU accepts 52-bit gpas, kvm_mmu_max_gfn() is the host's 46 bits.
    wide = VM("generation", phys_bits=52, maxphyaddr=46)
    v = wide.create_vcpu()
    wide.kvm.phys_bits = 46
    v.access(1 << 47)
    assert v.arch.mmio_gfn == (1 << 47) >> 12  # cached ...
    assert wide.stats["pf_mmio_spte_created"] == 0  # ... but no MMIO SPTE


def test_the_per_vcpu_cache_is_tagged_with_address_space_0s_generation() -> None:
    """x86.h vcpu_cache_mmio_info()/vcpu_match_mmio_gen() read kvm_memslots(vcpu->kvm), i.e.
    address space 0, even for a vCPU in SMM (v4.4, v5.1, v6.1, v6.8)."""
    vm = VM("generation", address_spaces=2)
    vcpu = vm.create_vcpu()
    vcpu.as_id = 1
    vcpu.access(0xFEE0_0000)
    assert vcpu.arch.mmio_gen == vm.kvm.memslots.active[0].generation
    assert vcpu.arch.mmio_gen != vm.kvm.memslots.active[1].generation


def test_a_fault_that_finds_its_spte_already_there_is_pf_spurious() -> None:
    """kvm_mmu_do_page_fault() counts RET_PF_SPURIOUS in pf_spurious: mmu_set_spte() found the
    SPTE it would write (another vCPU fixed the fault first); a retry is not spurious."""
    vm = VM("generation")
    vm.set_user_memory_region(0, 0, 0, 0x10000, HVA)
    a, b = vm.create_vcpu(), vm.create_vcpu()
    b.access(0)  # b has a root
    steps = a.access_steps(0x1000)
    for step in steps:
        if step is Step.MMU_LOCK and a.arch.root is not None:
            break  # a has seen the SPTE missing and waits for mmu_lock
    b.access(0x1000)  # b maps it first
    for _ in steps:
        pass
    assert a.stats.pf_spurious == 1 and a.stats.pf_fixed == 0
    assert vm.stats["pf_retry"] == 0


def test_turning_dirty_logging_off_lets_huge_pages_come_back_from_4_1() -> None:
    """kvm_mmu_zap_collapsible_sptes() (3ea3b7fa9af0, 4.1): when logging stops, the 4 KiB
    tables of the slot are zapped so the next fault maps 2 MiB again; 3.18 kept them."""
    for name, huge_again in (("generation", True), ("generation-3.18", False)):
        vm = VM(name, large_pages=True)
        vm.set_user_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 4 << 20, HVA)
        vcpu = vm.create_vcpu()
        vcpu.access(0x1000, write=True, value=1)  # logging: mapped at 4 KiB
        assert not vcpu.access(0x1000).spte & SPTE_LARGE
        vm.set_user_memory_region(0, 0, 0, 4 << 20, HVA)  # logging off
        out = vcpu.access(0x1000)
        assert bool(out.spte & SPTE_LARGE) is huge_again, name
        assert out.value == 1


def test_3_9_zapped_nothing_on_a_create_at_gpa_0() -> None:
    """v3.9 kvm_arch_commit_memory_region() had no change type: ``if (npages && old.base_gfn !=
    mem->guest_phys_addr >> PAGE_SHIFT)``, and an empty old slot has base_gfn 0."""
    vm = VM("zap-all-3.9", oracle=False)
    vm.set_user_memory_region(0, 0, 0x100000, 0x10000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x100000)
    pages = vm.stats["shadow_pages"]
    vm.set_user_memory_region(1, 0, 0, 0x1000, HVA + (1 << 32))  # CREATE at gpa 0
    assert vm.stats["shadow_pages"] == pages
    vm.set_user_memory_region(2, 0, 0x200000, 0x1000, HVA + (2 << 32))  # elsewhere: zap all
    assert vm.stats["shadow_pages"] == 0


def test_x86_vms_have_two_address_spaces_from_4_2_on() -> None:
    """KVM_ADDRESS_SPACE_NUM is 2 on x86 since f481b069e674 (4.2; from 6.2 under CONFIG_KVM_SMM,
    default y); 3.x had one."""
    assert VM("generation").kvm.memslots.nr_as == 2
    assert VM("generation-4.2").kvm.memslots.nr_as == 2
    assert VM("generation-3.18").kvm.memslots.nr_as == 1
    assert VM("generation", address_spaces=1).kvm.memslots.nr_as == 1
    with pytest.raises(ValueError, match=r"address_spaces must be 1\.\.1 for generation-3\.11"):
        VM("generation-3.11", address_spaces=2)


def test_a_write_to_a_write_protected_spte_is_fixed_by_fast_page_fault_without_mmu_lock(
        vm: VM) -> None:
    # v3.10 arch/x86/kvm/mmu.c fast_page_fault() (c7ba5b48cc8d, 3.6): under dirty logging the
    # read fault maps read-only; the write that follows is fixed with a cmpxchg on the SPTE,
    # without mmu_lock, and logged (fast_pf_fix_direct_spte() -> mark_page_dirty_in_slot()).
    vm.set_user_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 0x400000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x5000)  # slow path: maps read-only
    taken = vcpu.stats.pf_taken
    lock = vm.kvm.mmu.lock
    acquisitions = lock.acquisitions
    steps = list(vcpu.access_steps(0x5000, write=True, size=1, value=7))
    assert Step.MMU_LOCK not in steps
    assert Step.WRITE_SPTE in steps and Step.READ_SPTE_LOCKLESS in steps
    out = vcpu.arch.last_outcome
    assert out is not None and out.path is Path.FAST and out.traps == 1
    assert vcpu.stats.pf_fast == 1 and vcpu.stats.pf_taken == taken
    assert lock.acquisitions == acquisitions
    assert vm.get_dirty_log(0)[0] == 1 << 5  # logged
    assert vcpu.access(0x5000, size=1).value == 7
    # GET_DIRTY_LOG write-protected it again: the next write is fast again and logged again.
    vcpu.access(0x5000, write=True, size=1, value=8)
    assert vcpu.stats.pf_fast == 2 and vm.get_dirty_log(0)[0] == 1 << 5


def test_a_fast_fix_whose_spte_changed_under_it_falls_back_to_the_slow_path(vm: VM) -> None:
    # The cmpxchg fails if the SPTE changed after the lockless read (here: zapped), and the
    # fault goes on to the slow path under mmu_lock.
    vm.set_user_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 0x400000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x5000)
    taken = vcpu.stats.pf_taken
    gen = vcpu.access_steps(0x5000, write=True, size=1, value=7)
    seen = []
    for step in gen:
        seen.append(step)
        if step is Step.WRITE_SPTE and Step.MMU_LOCK not in seen:
            mmu = vm.kvm.mmu
            for _ in mmu.zap_gfn_range(vm.vmm, 5, 6, 0):
                pass
    assert Step.MMU_LOCK in seen
    assert vcpu.stats.pf_fast == 0 and vcpu.stats.pf_taken == taken + 1
    assert vcpu.access(0x5000, size=1).value == 7
    assert vm.get_dirty_log(0)[0] == 1 << 5


def test_a_write_protected_huge_leaf_is_not_fast_fixed() -> None:
    # fast_page_fault() fixes 4 KiB leaves; a 2 MiB leaf under dirty logging is split by the
    # slow path (page_fault_can_be_fast(): only direct 4 KiB write-protect faults qualify).
    vm = VM("generation", large_pages=True, strict=True)
    vm.set_user_memory_region(0, 0, 0, 0x400000, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x201000)
    vm.set_user_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 0x400000, HVA)
    taken = vcpu.stats.pf_taken
    out = vcpu.access(0x201000, write=True, value=1)
    assert out.path is Path.SLOW and vcpu.stats.pf_taken == taken + 1
    assert vcpu.stats.pf_fast == 0


# --- the TDP MMU's faults: mmu_lock for read, SPTEs installed with cmpxchg ---------------------
# v5.12.9 arch/x86/kvm/mmu/mmu.c direct_page_fault(): "if (is_tdp_mmu_root(vcpu->kvm,
# vcpu->arch.mmu->root_hpa)) read_lock(&vcpu->kvm->mmu_lock); else write_lock(...)" (a2855afc7ee8);
# tdp_mmu.c tdp_mmu_map_handle_target_level(): "else if (!tdp_mmu_set_spte_atomic(vcpu->kvm, iter,
# new_spte)) return RET_PF_RETRY;" and kvm_tdp_mmu_map(): a lost tdp_mmu_link_sp() cmpxchg frees
# the new table and retries.


def _until(steps: Iterator[Step], want: Step, after: int = 0) -> None:
    """Advance a protocol generator until it yields ``want`` for the ``after+1``-th time."""
    seen = 0
    for step in steps:
        if step is want:
            if seen == after:
                return
            seen += 1
    raise AssertionError(f"never yielded {want}")


def _two_vcpus(tdp: bool) -> tuple[VM, Vcpu, Vcpu]:
    vm = VM("generation", tdp_mmu=tdp, strict=True)
    vm.set_user_memory_region(0, 0, 0, 0x400000, HVA)
    a, b = vm.create_vcpu(), vm.create_vcpu()
    a.access(0)
    b.access(0)  # both have the root and the tables of the first 2 MiB
    return vm, a, b


def test_shadow_mmu_faults_hold_mmu_lock_for_write_so_a_second_fault_waits() -> None:
    vm, a, b = _two_vcpus(tdp=False)
    steps_a = a.access_steps(0x1000)
    _until(steps_a, Step.WRITE_SPTE)  # a holds mmu_lock, about to write its leaf
    assert vm.kvm.mmu.lock.holder is a.arch
    steps_b = b.access_steps(0x2000)
    _until(steps_b, Step.MMU_LOCK)
    assert vm.is_blocked(Step.MMU_LOCK)  # b would only spin


def test_tdp_mmu_faults_hold_mmu_lock_for_read_so_two_faults_run_at_once() -> None:
    vm, a, b = _two_vcpus(tdp=True)
    steps_a = a.access_steps(0x1000)
    _until(steps_a, Step.WRITE_SPTE)  # a holds mmu_lock for read
    lock = vm.kvm.mmu.lock
    assert lock.holder is None and lock.readers == {a.arch}
    out = b.access(0x2000)
    assert out.kind is AccessKind.RAM and b.stats.pf_fixed == 1
    assert lock.read_acquisitions >= 3 and lock.contended == 0
    for _ in steps_a:
        pass
    assert a.stats.pf_fixed == 2  # its first fault and this one


def test_a_tdp_fault_that_loses_the_cmpxchg_on_its_leaf_retries_where_shadow_is_spurious() -> None:
    for tdp in (False, True):
        _vm, a, b = _two_vcpus(tdp)
        steps_a = a.access_steps(0x1000)
        _until(steps_a, Step.MMU_READ_LOCK if tdp else Step.MMU_LOCK)
        if not tdp:  # a shadow fault reads the SPTE under the write lock: b must go first
            b.access(0x1000)
            for _ in steps_a:
                pass
            assert a.stats.pf_spurious == 1 and a.stats.pf_retry == 0
            continue
        _until(steps_a, Step.WRITE_SPTE)  # a read SPTE 0 under the read lock
        b.access(0x1000)  # b maps it meanwhile
        for _ in steps_a:
            pass
        # RET_PF_RETRY, then the re-executed access hits the SPTE b installed.
        assert a.stats.pf_retry == 1 and a.stats.pf_spurious == 0
        assert a.arch.last_outcome.path is Path.SLOW


def test_a_tdp_fault_that_loses_the_race_to_link_a_table_retries() -> None:
    vm, a, b = _two_vcpus(tdp=True)
    steps_a = a.access_steps(0x200000)  # second 2 MiB: no table yet
    _until(steps_a, Step.WRITE_SPTE)  # about to link the level-1 table
    b.access(0x201000)  # links it first
    pages = len(vm.kvm.mmu.active)
    for _ in steps_a:
        pass
    assert a.stats.pf_retry == 1
    assert len(vm.kvm.mmu.active) == pages  # a's table was not linked twice


def test_the_tdp_mmu_needs_a_kernel_that_has_one_and_two_dimensional_paging() -> None:
    with pytest.raises(ValueError, match="no TDP MMU"):
        VM("generation-3.18", tdp_mmu=True)
    with pytest.raises(ValueError, match="two-dimensional paging"):
        VM("generation", tdp_mmu=True, mmu="shadow")
    with pytest.raises(TypeError, match="tdp_mmu must be a bool"):
        VM("generation", tdp_mmu="yes")
