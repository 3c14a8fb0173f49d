"""Derived measures of work: summed the same way for every report."""

from __future__ import annotations

from kvmmu import VM
from kvmmu.stats import lock_work, shadow_pages_walked


def test_work_measures_sum_the_kvm_counters() -> None:
    stats = {"invalidation_pages_walked": 3, "mmu_shadow_zapped": 4, "mmu_lock_acquisitions": 5,
             "sptes_zapped": 6, "sptes_write_protected": 7}
    assert shadow_pages_walked(stats) == 7
    assert lock_work(stats) == 5 + 6 + 4 + 3 + 7
    assert shadow_pages_walked({}) == lock_work({}) == 0


def test_a_3_10_update_counts_every_page_it_walked() -> None:
    vm = VM("zap-mmio-3.10")
    vm.set_user_memory_region(0, 0, 0, 4 << 20, 0x7F00_0000_0000)
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)
    vcpu.access(0x20_1000)
    before = shadow_pages_walked(vm.stats)
    vm.set_user_memory_region(1, 0, 1 << 32, 0x1000, 0x7E00_0000_0000)
    assert shadow_pages_walked(vm.stats) - before == vm.stats["shadow_pages"] == 5


def test_lock_work_counts_read_acquisitions_of_the_tdp_mmu_too() -> None:
    from kvmmu.stats import lock_work

    assert lock_work({"mmu_lock_acquisitions": 3, "mmu_lock_read_acquisitions": 5}) == 8
