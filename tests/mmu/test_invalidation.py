"""Invalidation strategies: each does its own work, the shapes the issue asks for, broken variants."""

from __future__ import annotations

import pytest

from kvmmu import STRATEGIES, VM, AccessKind, OracleViolation, Path, resolve_strategy
from kvmmu.mmu.invalidation import generation_wrapped, strategy_choices

HVA = 0x7F00_0000_0000
MMIO = 0xFEE0_0000
MIB = 1 << 20


def touch_regions(vm: VM, regions: int) -> None:
    """Touch one page in each of ``regions`` 2 MiB regions: one level-1 table each."""
    vcpu = vm.vcpus[0] if vm.vcpus else vm.create_vcpu()
    for r in range(regions):
        vcpu.access(r * 2 * MIB)


def test_strategy_names_resolve_and_variants_are_marked_broken() -> None:
    assert set(STRATEGIES) == {"zap-walk", "zap-mmio-cached", "generation-2013",
                               "generation-2014", "generation", "zap-all-fast"}
    broken = resolve_strategy("generation-2013+no-wrap-zap")
    assert broken.broken and not broken.wrap_zap and broken.name == "generation-2013+no-wrap-zap"
    assert "generation+cache-without-gen" in strategy_choices()
    with pytest.raises(ValueError, match="choose from"):
        resolve_strategy("generation+nope")
    with pytest.raises(ValueError, match="choose from"):
        resolve_strategy("nope")


@pytest.mark.parametrize("regions", [4, 16, 64])
def test_zap_walk_walks_every_shadow_page_on_each_change(regions: int) -> None:
    vm = VM("zap-walk", oracle=False)
    vm.set_user_memory_region(0, 0, 0, regions * 2 * MIB, HVA)
    touch_regions(vm, regions)
    pages = len(vm.kvm.mmu.active)
    assert pages == regions + 3  # level 1 tables + one table each at levels 2, 3, 4
    before = vm.stats["invalidation_pages_walked"]
    vm.set_user_memory_region(1, 0, 1 << 40, 0x1000, 0x6000_0000_0000)
    assert vm.stats["invalidation_pages_walked"] - before == pages
    assert vm.stats["invalidation_sptes_walked"] == 512 * pages


@pytest.mark.parametrize("strategy", ["generation-2013", "generation-2014", "generation"])
def test_generation_strategies_walk_nothing_except_at_a_wrap(strategy: str) -> None:
    vm = VM(strategy, oracle=True, strict=True, start_near_wrap=6)
    vm.set_user_memory_region(0, 0, 0, 16 * MIB, HVA)
    touch_regions(vm, 8)
    vcpu = vm.vcpus[0]
    vcpu.access(MMIO)
    walked = []
    for i in range(8):
        vm.set_user_memory_region(1, i % 2, 1 << 40, 0x1000, 0x6000_0000_0000)
        walked.append((vm.stats["generation_wraps"], vm.stats["mmu_shadow_zapped"],
                       vm.stats["invalidation_pages_walked"]))
    assert all(w[2] == 0 for w in walked)  # never a walk of the active list
    wraps = vm.stats["generation_wraps"]
    assert wraps >= 1
    zapped_before_wrap = [z for (w, z, _) in walked if w == 0]
    assert all(z == 0 for z in zapped_before_wrap)  # nothing zapped until the wrap
    assert vm.stats["zap_all_fast"] == wraps  # the wrap zaps everything, fast
    assert vcpu.access(MMIO).kind is AccessKind.MMIO  # and the run stays correct


def working_set_refaults(strategy: str) -> tuple[int, int]:
    """(RAM refaults, MMIO refaults) of a re-touched working set after one CREATE."""
    vm = VM(strategy, strict=True)
    vm.set_user_memory_region(0, 0, 0, 4 * MIB, HVA)
    vcpus = [vm.create_vcpu() for _ in range(2)]
    ram = [p * 4096 for p in range(0, 1024, 8)]  # 128 pages
    mmio = [MMIO + p * 4096 for p in range(4)]
    for v in vcpus:
        for gpa in ram + mmio:
            v.access(gpa)
    base = vm.stats["refaults"]
    vm.set_user_memory_region(1, 0, 0x4000_0000, MIB, HVA + (1 << 32))  # CREATE elsewhere
    for v in vcpus:
        for gpa in ram:
            v.access(gpa)
    ram_refaults = vm.stats["refaults"] - base
    for v in vcpus:
        for gpa in mmio:
            v.access(gpa)
    return ram_refaults, vm.stats["refaults"] - base - ram_refaults


def test_after_a_create_zap_all_fast_refaults_the_whole_working_set_generation_only_mmio() -> None:
    ram, mmio = working_set_refaults("zap-all-fast")
    assert ram == 128  # every RAM page refaults (once: the vCPUs share the new root)
    assert mmio == 4
    ram, mmio = working_set_refaults("generation")
    assert ram == 0  # RAM SPTEs survive a CREATE
    assert mmio == 4  # only the MMIO SPTEs touched again refault


def test_zap_mmio_cached_zaps_whole_pages_ram_included() -> None:
    vm = VM("zap-mmio-cached", strict=True)
    vm.set_user_memory_region(0, 0, 0, 1 * MIB, HVA)  # gfns 0..255 of table 0 are RAM
    vm.set_user_memory_region(1, 0, 2 * MIB, 2 * MIB, HVA + 0x1000_0000)  # table 1: all RAM
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)  # RAM SPTE in table 0
    vcpu.access(0x12_C000)  # gfn 300: MMIO SPTE in table 0, which becomes mmio_cached
    vcpu.access(2 * MIB + 0x1000)  # RAM SPTE in table 1
    walked = vm.stats["invalidation_pages_walked"]
    vm.set_user_memory_region(2, 0, 0x4000_0000, 0x1000, HVA + (1 << 32))
    assert vm.stats["invalidation_pages_walked"] - walked == 1  # only the mmio_cached table
    assert vcpu.access(0x1000).path is Path.SLOW  # its RAM SPTE went with it
    assert vcpu.access(2 * MIB + 0x1000).path is Path.HW  # the other table was left alone


def test_zap_all_fast_obsoletes_every_page_and_vcpus_reload_their_root() -> None:
    vm = VM("zap-all-fast", strict=True)
    vm.set_user_memory_region(0, 0, 0, 2 * MIB, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)
    old_root = vcpu.arch.root
    vm.set_user_memory_region(1, 0, 0x4000_0000, 0x1000, HVA + (1 << 32))
    assert vm.kvm.mmu.mmu_valid_gen == 2 and vm.stats["zap_all_fast"] == 2  # both CREATEs
    assert vm.stats["shadow_pages"] == 0  # freed in batches, all of them
    out = vcpu.access(0x1000)
    assert out.path is Path.SLOW and vcpu.arch.root is not old_root
    assert vcpu.stats.root_reloads == 2


@pytest.mark.parametrize("slot_zap", ["all", "slot"])
def test_delete_zaps_everything_or_only_the_slot(slot_zap: str) -> None:
    vm = VM("generation", slot_zap=slot_zap, strict=True)
    vm.set_user_memory_region(0, 0, 0, 2 * MIB, HVA)
    vm.set_user_memory_region(1, 0, 2 * MIB, 2 * MIB, HVA + 0x1000_0000)
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)
    vcpu.access(2 * MIB + 0x1000)
    vm.set_user_memory_region(1, 0, 2 * MIB, 0, HVA + 0x1000_0000)
    survivor = vcpu.access(0x1000)
    assert survivor.path is (Path.SLOW if slot_zap == "all" else Path.HW)
    assert vcpu.access(2 * MIB + 0x1000).kind is AccessKind.MMIO


def test_the_2013_wrap_test_fires_at_mmio_max_gen_minus_one() -> None:
    vm = VM("generation-2013", mmio_gen_bits=3)
    assert [generation_wrapped(vm.kvm, g) for g in range(8)] == [False] * 7 + [True]
    vm14 = VM("generation-2014", mmio_gen_bits=3)
    assert [generation_wrapped(vm14.kvm, g) for g in (0, 2, 8, 16)] == [True, False, True, True]
    vm2 = VM("generation", mmio_gen_bits=3, address_spaces=2)
    assert [generation_wrapped(vm2.kvm, g) for g in (0, 1, 2, 8, 9)] == \
        [True, True, False, True, True]


def test_a_per_vcpu_cache_without_its_generation_is_caught_by_the_oracle() -> None:
    vm = VM("generation+cache-without-gen", strict=True)
    vcpu = vm.create_vcpu()
    vcpu.access(MMIO)  # MMIO SPTE + cache
    vm.set_user_memory_region(0, 0, MMIO, 0x1000, HVA)  # now RAM
    with pytest.raises(OracleViolation, match="stale-mmio"):
        vcpu.access(MMIO)  # the stale cache answers first (mmio_info_in_cache)


def test_skipping_the_zap_at_wrap_around_is_caught_by_the_oracle() -> None:
    vm = VM("generation+no-wrap-zap", mmio_gen_bits=3, start_near_wrap=2, slot_zap="slot")
    a, b = vm.create_vcpu(), vm.create_vcpu()
    a.access(MMIO)  # MMIO SPTE tagged with this generation
    a.access(MMIO + 0x1000)  # the cache of vCPU a moves on
    vm.set_user_memory_region(0, 0, MMIO, 0x1000, HVA)  # MMIO is RAM now: the SPTE is stale
    for i in range(7):  # 8 bumps in all: the 3-bit generation comes back to the SPTE's
        vm.set_user_memory_region(1, i % 2, 1 << 40, 0x1000, 0x6000_0000_0000)
    assert vm.stats["generation_wraps"] >= 1
    out = b.access(MMIO)
    assert out.kind is AccessKind.MMIO and out.path is Path.FAST  # a stale SPTE matched
    assert vm.oracle is not None and vm.oracle.count == 1
    assert vm.oracle.violations[0].kind == "stale-mmio"


def test_with_the_wrap_zap_the_same_run_is_correct() -> None:
    vm = VM("generation", mmio_gen_bits=3, start_near_wrap=2, slot_zap="slot", strict=True)
    a, b = vm.create_vcpu(), vm.create_vcpu()
    a.access(MMIO)
    a.access(MMIO + 0x1000)
    vm.set_user_memory_region(0, 0, MMIO, 0x1000, HVA)
    for i in range(7):
        vm.set_user_memory_region(1, i % 2, 1 << 40, 0x1000, 0x6000_0000_0000)
    assert b.access(MMIO).kind is AccessKind.RAM
