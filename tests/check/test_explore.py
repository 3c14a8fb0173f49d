"""Tests of kvmmu.check.explore: the races the kernel shipped are found, the fixes pass.

Exhaustive searches here use a preemption bound of 1 (CHESS: most races need one or two); the
benchmark (benchmarks/bench_check.py) reports the same configurations at bound 2.
"""

from __future__ import annotations

import pytest

from kvmmu.check.explore import explore, explore_random
from kvmmu.check.scenario import DEFAULT_SCENARIO, Scenario, Script
from kvmmu.check.schedule import run_schedule
from kvmmu.check.world import CheckConfig, ConfigError, Finding, World
from kvmmu.mmu.invalidation import STRATEGIES

ORACLE_KINDS = {"stale-mmio-spte", "stale-mmio-cache", "stale-mmio", "stale-ram-spte",
                "stale-ram", "wrong-ram"}
#: The wrap within three updates: a 2-bit generation, DELETE zapping only its slot.
WRAP = {"mmio_gen_bits": 2, "slot_zap": "slot", "updates": 3}


def test_the_2014_update_race_is_found_in_generation_2013() -> None:
    result = explore(CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1), preemptions=None)
    assert result.failure is not None
    assert "stale-mmio-spte" in {f.kind for f in result.failure.findings}
    # The schedule is a real one: replaying it fails the same way.
    replayed = run_schedule(CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1),
                            result.failure.schedule, complete=False)
    assert {f.kind for f in replayed.findings} == {f.kind for f in result.failure.findings}


def test_the_race_needs_one_preemption() -> None:
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)
    none = explore(config, preemptions=0)
    assert none.failure is None and none.complete
    one = explore(config, preemptions=1)
    assert one.failure is not None


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_cache_without_generation_is_found(strategy: str) -> None:
    result = explore(CheckConfig(f"{strategy}+cache-without-gen", vcpus=1, updates=1),
                     preemptions=1)
    assert result.failure is not None
    assert "stale-mmio-cache" in {f.kind for f in result.failure.findings}


@pytest.mark.parametrize("strategy", ["generation-3.11+tagged-cache", "generation-3.18", "generation"])
def test_skipping_the_zap_at_the_wrap_is_found(strategy: str) -> None:
    # No preemption is needed to wrap (and generation-3.11+tagged-cache's update race needs one), so at
    # bound 0 the strategy passes and its variant without the wrap zap fails.
    correct = explore(CheckConfig(strategy, vcpus=1, **WRAP), preemptions=0)
    assert correct.failure is None and correct.complete
    broken = explore(CheckConfig(f"{strategy}+no-wrap-zap", vcpus=1, **WRAP), preemptions=0)
    assert broken.failure is not None
    assert "stale-mmio-spte" in {f.kind for f in broken.failure.findings}


@pytest.mark.parametrize("strategy", ["generation", "generation-3.18"])
def test_the_fixed_generation_schemes_pass_two_vcpus_two_accesses_two_updates(
        strategy: str) -> None:
    result = explore(CheckConfig(strategy, vcpus=2, updates=2), preemptions=1)
    assert result.failure is None
    assert result.complete and result.stats.cut == 0
    assert result.stats.states > 10_000  # the search did cover the configuration
    assert result.stats.completed > 0


# The hypothetical zap-all-fast zaps while the generation still says "in progress" and tags the
# per-vCPU cache with the generation read before the SPTE: it passes.
@pytest.mark.parametrize("strategy", ["zap-all-fast"])
def test_the_zap_schemes_pass_two_vcpus_two_accesses_two_updates(strategy: str) -> None:
    result = explore(CheckConfig(strategy, vcpus=2, updates=2), preemptions=1)
    assert result.failure is None, result.failure.findings


@pytest.mark.parametrize("strategy", ["zap-all-3.9", "zap-mmio-3.10", "generation-3.11"])
def test_the_untagged_per_vcpu_cache_of_3_x_is_found(strategy: str) -> None:
    """v3.9-v3.17 vcpu_cache_mmio_info()/vcpu_match_mmio_gpa() carry no generation (fixed by
    56f17dd3fbc4 in 3.18): the explorer finds a per-vCPU cache that answers MMIO for RAM."""
    result = explore(CheckConfig(strategy, vcpus=1, updates=1), preemptions=2)
    assert result.failure is not None
    assert {f.kind for f in result.failure.findings} <= {"stale-mmio-cache", "stale-mmio"}


def test_generation_passes_across_the_wrap_with_two_vcpus() -> None:
    result = explore(CheckConfig("generation", vcpus=2, mmio_gen_bits=2, updates=3),
                     preemptions=1)
    assert result.failure is None, result.failure.findings


def test_the_2019_wrap_window_of_the_2014_scheme_is_found() -> None:
    # 2014 kernels wrote the new generation before kvm_arch_memslots_updated() zapped at the wrap
    # (fixed by "KVM: Call kvm_arch_memslots_updated() before updating memslots", 2019): with a
    # 2-bit generation a vCPU can match an MMIO SPTE from a full wrap ago inside that window.
    config = CheckConfig("generation-3.18", vcpus=2, mmio_gen_bits=2, updates=3)
    result = explore(config, preemptions=1)
    assert result.failure is not None
    assert {f.kind for f in result.failure.findings} <= ORACLE_KINDS


def test_random_mode_finds_the_race_and_is_reproducible() -> None:
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=2, updates=2)
    a = explore_random(config, schedules=300, seed=1)
    b = explore_random(config, schedules=300, seed=1)
    assert a.failure is not None and a.failure == b.failure
    assert a.stats.schedules == b.stats.schedules <= 300
    assert not a.complete


def test_random_mode_on_a_correct_scheme_runs_every_schedule() -> None:
    result = explore_random(CheckConfig("generation", vcpus=2, updates=2), schedules=30, seed=3)
    assert result.failure is None
    assert result.stats.schedules == 30 and result.stats.completed == 30
    assert result.stats.cut == 0


def test_the_depth_cap_is_reported_and_makes_the_result_incomplete() -> None:
    result = explore(CheckConfig("generation", vcpus=1, updates=1), max_depth=10)
    assert result.failure is None
    assert result.stats.cut > 0 and not result.complete


def test_a_depth_bound_is_respected_by_the_state_cache() -> None:
    config = CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)
    short = explore(config, max_depth=12, depth_is_bound=True)
    assert short.failure is None  # the race needs more than 12 steps
    deep = explore(config, max_depth=40, depth_is_bound=True)
    assert deep.failure is not None


def test_progress_is_reported() -> None:
    seen: list[int] = []
    explore(CheckConfig("generation", vcpus=1, updates=1), preemptions=1,
            progress=lambda s: seen.append(s.states), progress_every=5)
    assert seen and seen == sorted(seen) and seen[-1] > 0


def test_a_crash_of_the_model_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    real = World.step

    def step(self: World, t: int) -> list[Finding]:
        if self.threads[t].name == "VMM" and self.threads[t].pending is not None:
            raise RuntimeError("boom")
        return real(self, t)

    monkeypatch.setattr(World, "step", step)
    result = explore(CheckConfig("generation", vcpus=1, updates=1), preemptions=0)
    assert result.failure is not None
    assert result.failure.findings[0].kind == "crash"
    assert "VMM raised RuntimeError: boom" in result.failure.findings[0].text


def test_the_final_state_is_checked() -> None:
    # The only violation of this run is in the state after the last update: the vCPU's single
    # access made an MMIO SPTE, and three updates later a 2-bit generation matches it again.
    one = Scenario(name="one", slots=DEFAULT_SCENARIO.slots,
                   vcpus=(Script(DEFAULT_SCENARIO.script(0)[:1]),),
                   updates=DEFAULT_SCENARIO.updates)
    config = CheckConfig("generation+no-wrap-zap", one, vcpus=1, mmio_gen_bits=2, slot_zap="slot")
    result = explore(config, preemptions=0)
    assert result.failure is not None
    world = run_schedule(config, result.failure.schedule, complete=False).world
    assert world.all_done()


# --- the TDP MMU explored: faults under the read lock, SPTEs installed with cmpxchg, the 5.13+
# teardown of zapped roots under the read lock (v5.12.9 direct_page_fault(), v6.8
# kvm_tdp_mmu_map() and kvm_mmu_zap_all_fast()).  The explorer drives the same fault code.


@pytest.mark.parametrize("strategy", ["generation", "zap-all-fast"])
def test_the_tdp_mmu_passes_two_vcpus_two_accesses_two_updates(strategy: str) -> None:
    result = explore(CheckConfig(strategy, vcpus=2, updates=2, tdp_mmu=True), preemptions=1)
    assert result.failure is None, result.failure.findings
    assert result.complete and result.stats.states > 10_000


def test_under_the_tdp_mmu_the_broken_variants_are_still_found() -> None:
    wrap = explore(CheckConfig("generation+no-wrap-zap", vcpus=1, mmio_gen_bits=2, slot_zap="slot",
                               updates=3, tdp_mmu=True), preemptions=0)
    cache = explore(CheckConfig("generation+cache-without-gen", vcpus=2, updates=1, tdp_mmu=True),
                    preemptions=1)
    assert wrap.failure is not None and cache.failure is not None
    assert "stale-mmio-spte" in {f.kind for f in wrap.failure.findings}
    assert "stale-mmio-cache" in {f.kind for f in cache.failure.findings}


def test_the_tdp_mmu_config_rebuilds_itself_and_needs_a_kernel_that_had_one() -> None:
    config = CheckConfig("generation", tdp_mmu=True)
    assert config.command_args()[-2:] == ["--mmu", "tdp"] and "TDP MMU" in config.summary()
    with pytest.raises(ConfigError, match="no TDP MMU"):
        CheckConfig("generation-3.18", tdp_mmu=True).validate()
