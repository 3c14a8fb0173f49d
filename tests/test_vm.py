"""The VM: random churn under every strategy is correct; statistics; parameters; state digest."""

from __future__ import annotations

import contextlib
import random
import zlib
from typing import Any

import pytest

from kvmmu import STRATEGIES, VM, KvmError, Step
from kvmmu.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from kvmmu.vm import VmSpec

HVA = 0x7F00_0000_0000


def churn(vm: VM, ops: int, seed: int, gfns: int = 80, check: bool = True) -> int:
    """Random memslot changes, dirty-log reads and accesses from 3 vCPUs; returns ops applied.

    Slots and accesses fall in the first ``gfns`` frames; every 1000 operations the state
    invariant is checked (with ``check``).
    """
    rng = random.Random(seed)
    vcpus = [vm.create_vcpu() for _ in range(3)]
    for i in range(ops):
        r = rng.random()
        if r < 0.15:
            slot = rng.randrange(6)
            old = vm.kvm.memslots.active[0].by_id.get(slot)
            flags = rng.choice([0, 0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY])
            gpa = rng.randrange(gfns * 4 // 5) << 12
            size = rng.choice([0, 1, 2, 4, 8, 512][: 6 if gfns > 16 else 3]) << 12
            uaddr = HVA + (slot << 24)
            if old is not None and rng.random() < 0.7:  # mostly valid moves, toggles, deletes
                size = old.npages << 12 if rng.random() < 0.8 else 0
                uaddr = old.userspace_addr
                flags = (flags & KVM_MEM_LOG_DIRTY_PAGES) | (old.flags & KVM_MEM_READONLY)
            with contextlib.suppress(KvmError):
                vm.set_user_memory_region(slot, flags, gpa, size, uaddr)
        elif r < 0.17 and vm.memslots():
            with contextlib.suppress(KvmError):
                vm.get_dirty_log(rng.choice(vm.memslots()).id)
        else:
            gpa = (rng.randrange(gfns) << 12) | (rng.randrange(512) * 8)
            rng.choice(vcpus).access(gpa, write=rng.random() < 0.3, size=8,
                                     value=rng.getrandbits(64), emulated=rng.random() < 0.2)
        if check and i % 1000 == 0:
            assert vm.check_state() == []
    return ops


CORRECT = [name for name, s in STRATEGIES.items() if not s.expected_violations]
BUGGY = [name for name, s in STRATEGIES.items() if s.expected_violations]
#: What a historically buggy kernel's MMIO bugs may show; a wrong RAM mapping never.
MMIO_BUG_KINDS = {"stale-mmio", "stale-mmio-cache", "stale-mmio-spte", "exit-unknown"}
CONFIGS = [
    {},
    {"slot_zap": "slot", "large_pages": True},
    {"mmio_gen_bits": 3, "start_near_wrap": 4, "mmu": "shadow"},
]
CONFIG_IDS = ["default", "slot-zap+large-pages", "narrow-generation+shadow"]


def seed_of(*parts: object) -> int:
    """A seed that is the same in every process (``hash()`` of a str is not)."""
    return zlib.crc32(repr(parts).encode()) & 0xFFFF


@pytest.mark.parametrize("strategy", CORRECT)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_random_churn_of_10000_operations_has_no_oracle_violation(
        strategy: str, config: dict[str, object]) -> None:
    vm = VM(strategy, strict=True, **config)  # type: ignore[arg-type]
    assert churn(vm, 10_000, seed=seed_of(strategy, config)) == 10_000
    stats = vm.stats
    assert stats["oracle_violations"] == 0
    assert stats["oracle_checked"] > 7_000 and stats["memslot_updates"] > 300


@pytest.mark.parametrize("strategy", BUGGY)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_historically_buggy_kernels_only_ever_err_on_mmio_never_on_ram(
        strategy: str, config: dict[str, object]) -> None:
    """Their known bugs (``Strategy.known_bugs``) are MMIO answers; RAM is always right."""
    vm = VM(strategy, strict=False, **config)  # type: ignore[arg-type]
    churn(vm, 10_000, seed=seed_of(strategy, config), check=False)
    assert vm.oracle is not None
    assert {v.kind for v in vm.oracle.violations} <= MMIO_BUG_KINDS


@pytest.mark.parametrize("strategy", ["zap-all-3.9", "zap-mmio-3.10", "generation-3.11"])
def test_kernels_before_the_2014_cache_fix_fail_the_denser_churn(strategy: str) -> None:
    """v3.9-v3.16 ``vcpu_match_mmio_gpa()`` had no generation (fixed by 56f17dd3fbc4): an access
    to a gfn a new slot backs can still be answered as MMIO by the per-vCPU cache."""
    vm = VM(strategy, strict=False)
    for seed in range(3):
        churn(vm, 10_000, seed=seed, gfns=8, check=False)
    assert vm.oracle is not None
    assert vm.stats["oracle_violations"] > 0
    assert {v.kind for v in vm.oracle.violations} <= MMIO_BUG_KINDS


@pytest.mark.parametrize("seed", range(3))
def test_the_broken_cache_variant_fails_a_denser_churn(seed: int) -> None:
    vm = VM("generation+cache-without-gen", strict=False)
    churn(vm, 10_000, seed=seed, gfns=8, check=False)
    assert vm.stats["oracle_violations"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_the_correct_strategy_passes_the_denser_churn(seed: int) -> None:
    vm = VM("generation", strict=True)
    churn(vm, 10_000, seed=seed, gfns=8)
    assert vm.stats["oracle_violations"] == 0


def test_statistics_carry_kvms_names() -> None:
    vm = VM("generation")
    vm.create_vcpu().access(0x1000)
    for name in ("mmu_cache_miss", "mmu_shadow_zapped", "pf_mmio_spte_created", "mmio_exits",
                 "pf_taken", "pf_fixed", "exits", "mmio_fast_path", "mmio_cache_hits",
                 "generation_wraps", "invalidation_pages_walked", "invalidation_sptes_walked",
                 "mmu_lock_acquisitions", "refaults", "oracle_violations"):
        assert name in vm.stats
    assert vm.stats["pf_mmio_spte_created"] == 1 and vm.stats["mmio_exits"] == 1


def test_get_dirty_log_errno_matches_the_kernel() -> None:
    vm = VM("generation")
    vm.set_user_memory_region(0, 0, 0, 0x1000, HVA)
    with pytest.raises(KvmError) as e:
        vm.get_dirty_log(0)
    assert e.value.errno_name == "ENOENT"
    with pytest.raises(KvmError) as e:
        vm.get_dirty_log(3)
    assert e.value.errno_name == "ENOENT"
    with pytest.raises(KvmError) as e:
        vm.get_dirty_log(40000)
    assert e.value.errno_name == "EINVAL"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layout": "2015"}, "unknown layout"),
    ({"mmu": "npt2"}, "mmu must be"),
    ({"slot_zap": "some"}, "slot_zap must be"),
    ({"address_spaces": 3}, "address_spaces"),
    ({"mmio_gen_bits": 40}, "mmio_gen_bits"),
    ({"phys_bits": 60}, "phys_bits"),
])
def test_bad_parameters_are_refused_with_a_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VM("generation", **kwargs)  # type: ignore[arg-type]


def test_is_blocked_answers_for_the_lock_and_the_grace_period() -> None:
    vm = VM("generation")
    assert not vm.is_blocked(Step.MMU_LOCK)
    vcpu = vm.create_vcpu()
    access = vcpu.access_steps(0x1000)
    assert next(access) is Step.MMU_LOCK  # kvm_mmu_load()
    next(access)  # holds mmu_lock now
    assert vm.is_blocked(Step.MMU_LOCK) and not vm.is_blocked(Step.GUEST_ACCESS)


def _touch_regions(order: list[int], first_hpa: int = 0x1000) -> VM:
    """A VM whose vCPU touched the 2 MiB regions ``order`` in that order (one leaf page each)."""
    vm = VM("generation")
    vm.kvm.mmu.next_hpa = first_hpa  # where the model allocates its pages: not part of the state
    vm.set_user_memory_region(0, 0, 0, 8 << 20, HVA)
    vcpu = vm.create_vcpu()
    for r in order:
        vcpu.access(r << 21)
    return vm


def test_the_state_digest_names_pages_by_content_not_by_address() -> None:
    a, b = _touch_regions([0, 1, 2, 3]), _touch_regions([0, 1, 2, 3], first_hpa=0x100000)
    assert [sp.hpa for sp in a.kvm.mmu.active.values()] != [
        sp.hpa for sp in b.kvm.mmu.active.values()]
    assert a.state_key() == b.state_key()
    a.vcpus[0].access(0x1000, write=True, value=1)
    assert a.state_key() != b.state_key()


def test_the_state_digest_keeps_the_active_lists_order() -> None:
    # v3.17 arch/x86/kvm/mmu.c, kvm_mmu_alloc_page(): "The active_mmu_pages list is the FIFO
    # list ... kvm_zap_obsolete_pages depends on this feature"; kvm_zap_obsolete_pages() walks
    # it oldest first (list_for_each_entry_safe_reverse).  The same pages made in another order
    # are zapped in another order: another state.
    a, b = _touch_regions([0, 1, 2, 3]), _touch_regions([3, 2, 1, 0])
    pages_a, pages_b = a.state_key()[3], b.state_key()[3]
    assert sorted(pages_a, key=repr) == sorted(pages_b, key=repr)
    assert pages_a != pages_b
    assert a.state_key() != b.state_key()


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"strategy": None}, TypeError, "strategy must be a strategy name"),
        ({"strategy": 3}, TypeError, "strategy must be a strategy name"),
        ({"strategy": "nope"}, ValueError, "unknown strategy 'nope'"),
        ({"start_near_wrap": -1}, ValueError, "an int >= 0, not -1"),
        ({"start_near_wrap": 1.5}, TypeError, "start_near_wrap must be None, a bool or an int"),
        ({"nr_memslots": -5}, ValueError, "nr_memslots must be 1..32764"),
        ({"nr_memslots": 0}, ValueError, "nr_memslots must be 1..32764"),
        ({"nr_memslots": 40000}, ValueError, "nr_memslots must be 1..32764"),
        ({"address_spaces": 3}, ValueError, "address_spaces must be 1, or 2"),
        ({"address_spaces": True}, TypeError, "address_spaces must be an int"),
        ({"phys_bits": "52"}, TypeError, "phys_bits must be an int"),
        ({"maxphyaddr": 99}, ValueError, "maxphyaddr must be 32..52"),
        ({"slot_zap": "some"}, ValueError, "slot_zap must be one of"),
        ({"mmu": "npt"}, ValueError, "mmu must be one of"),
    ],
)
def test_nonsensical_constructor_arguments_raise_a_clear_exception(
    kwargs: dict[str, object], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        VM(**kwargs)  # type: ignore[arg-type]


def test_start_near_wrap_zero_and_true_are_accepted() -> None:
    assert VM(start_near_wrap=0).generation == VM(start_near_wrap=False).generation
    assert VM(start_near_wrap=True).generation != VM(start_near_wrap=False).generation


@pytest.mark.parametrize("field", ["slot", "flags", "guest_phys_addr", "memory_size", "userspace_addr"])
def test_a_memslot_request_with_a_non_integer_field_names_it(field: str) -> None:
    args = {"slot": 0, "flags": 0, "guest_phys_addr": 0, "memory_size": 4096, "userspace_addr": HVA}
    args[field] = "0"
    with pytest.raises(TypeError, match=f"{field} must be an int"):
        VM().set_user_memory_region(**args)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="slot must be an int"):
        VM().get_dirty_log("a")  # type: ignore[arg-type]


def test_the_state_digest_tells_a_zapped_root_from_a_live_one() -> None:
    """A vCPU holding a root that two toggles of the one-bit mmu_valid_gen made look current
    again (5.4+, ca333add6933) must not share a state with one holding a live root: the digest
    keys role.invalid as well as the generation."""
    vm = VM("generation", oracle=False)
    vm.set_user_memory_region(0, 0, 0, 1 << 20, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)
    root = vcpu.arch.root
    assert root is not None and not root.invalid
    live = vm.state_key()
    root.invalid = True  # the same page and generation, zapped (as after two toggles)
    assert vm.state_key() != live


@pytest.mark.parametrize("kwargs", [
    {},
    {"strategy": "generation-3.11", "mmu": "shadow", "maxphyaddr": 39},
    {"strategy": "generation+no-wrap-zap", "mmio_gen_bits": 2, "start_near_wrap": 1,
     "slot_zap": "slot", "address_spaces": 1},
    {"strategy": "generation", "tdp_mmu": True, "mmio_caching": False, "nr_memslots": 3,
     "oracle": False},
])
def test_a_vm_from_a_spec_is_the_vm_the_same_arguments_build(kwargs: dict[str, Any]) -> None:
    """``VM.from_spec`` is ``VM(...)`` with the arguments checked once: same profile, same
    state, the same answers to the same operations."""
    spec = VmSpec.of(**kwargs)
    built, direct = VM.from_spec(spec), VM(**kwargs)
    for vm in (built, direct):
        vm.set_user_memory_region(0, 0, 0, 0x10000, HVA)
        vcpu = vm.create_vcpu()
        vcpu.access(0x1000, write=True, value=7)
        vcpu.access(0x10_0000)
        vm.set_user_memory_region(0, 0, 0, 0, 0)
    assert built.strategy == direct.strategy and built.nr_memslots == direct.nr_memslots
    assert built.kvm.gen_mask == direct.kvm.gen_mask and built.generation == direct.generation
    assert built.kvm.mmu.codec == direct.kvm.mmu.codec
    assert built.kvm.mmu.tdp_mmu == direct.kvm.mmu.tdp_mmu
    assert built.arch.slot_zap == direct.arch.slot_zap
    assert built.state_key() == direct.state_key()
    assert built.stats == direct.stats


def test_vms_built_from_one_spec_share_no_state() -> None:
    spec = VmSpec.of("generation")
    a, b = VM.from_spec(spec), VM.from_spec(spec)
    a.set_user_memory_region(0, 0, 0, 0x10000, HVA)
    a.create_vcpu().access(0x1000, write=True, value=1)
    assert b.memslots() == [] and b.vcpus == [] and not b.kvm.mmu.active
    assert b.state_key() == VM("generation").state_key() != a.state_key()


@pytest.mark.parametrize(("kwargs", "error", "needle"), [
    ({"strategy": "nope"}, ValueError, "unknown strategy 'nope'"),
    ({"layout": "2015"}, ValueError, "unknown layout"),
    ({"tdp_mmu": True, "mmu": "shadow"}, ValueError, "needs two-dimensional paging"),
    ({"preempt": 1}, TypeError, "preempt must be a bool"),
])
def test_a_spec_refuses_what_the_constructor_refuses(
    kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        VmSpec.of(**kwargs)
    with pytest.raises(error, match=needle):
        VM(**kwargs)
