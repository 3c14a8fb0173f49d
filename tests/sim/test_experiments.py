"""Tests of kvmmu.sim.experiments: the *shapes* of the issue's figures (never timing thresholds)."""

from __future__ import annotations

import pytest

from kvmmu.sim import experiments as ex
from kvmmu.sim.costs import CostModel, default_costs
from kvmmu.sim.workloads.schema import load_scenario


@pytest.fixture(scope="module")
def costs() -> CostModel:
    return default_costs()


def test_walks_grow_linearly_with_shadow_pages_generation_stays_flat(costs: CostModel) -> None:
    """The seed's argument ("walking all shadow pages is not scale"): v3.9 kvm_mmu_zap_all() and
    v3.10 kvm_mmu_zap_mmio_sptes() both visit every shadow page under mmu_lock, so a CREATE costs
    in proportion to them; the generation (3.11+) costs the same at every size."""
    names = ["zap-all-3.9", "zap-mmio-3.10", "generation-3.11", "generation"]
    sw = ex.shadow_page_sweep([1, 64, 256, 1024], names, costs)
    xs, zap_all = sw.series("zap-all-3.9", "update_latency_mean_ns")
    _, hold = sw.series("zap-all-3.9", "vmm_lock_hold_per_update_ns")
    _, walk310 = sw.series("zap-mmio-3.10", "update_latency_mean_ns")
    for series in (zap_all, hold, walk310):  # linear: equal steps in pages, equal steps in cost
        slopes = [(series[i + 1] - series[i]) / (xs[i + 1] - xs[i]) for i in range(1, len(xs) - 1)]
        assert min(slopes) > 0 and max(slopes) / min(slopes) < 1.2
    for name in ("generation-3.11", "generation"):
        _, gen = sw.series(name, "update_latency_mean_ns")
        _, gen_hold = sw.series(name, "vmm_lock_hold_per_update_ns")
        assert max(gen) == min(gen) and max(gen_hold) == 0
    # 3.10 frees only the flagged pages but visits all: cheaper than 3.9, growing all the same.
    assert walk310[-1] < zap_all[-1] and walk310[-1] > 1.3 * walk310[0]


def test_create_refaults_everything_under_zap_all_fast_and_only_mmio_under_generation(
    costs: CostModel,
) -> None:
    data = ex.refault_after_create(["zap-all-fast", "generation"], costs, vcpus=2, pages=128)
    fast, gen = data["zap-all-fast"], data["generation"]
    assert fast["refaults_ram"] == fast["working_set_pages"] == 256
    assert gen["refaults_ram"] == 0
    assert 0 < gen["refaults_mmio"] <= gen["mmio_sptes_created"]


def test_vcpu_sweep_generation_stays_flat_while_zap_all_fast_grows(costs: CostModel) -> None:
    sw = ex.vcpu_sweep([1, 8, 32], ["generation", "zap-all-fast"], costs)
    _, gen = sw.series("generation", "stall_per_vcpu_ns")
    _, fast = sw.series("zap-all-fast", "stall_per_vcpu_ns")
    assert max(gen) / min(gen) < 1.5
    assert fast[-1] > 2 * fast[0] and all(f > g for f, g in zip(fast, gen, strict=True))


def test_fast_zap_delete_add_scales_with_the_mapped_memory(costs: CostModel) -> None:
    base = load_scenario("fast-zap-2013")
    small = ex.vcpu_scenario(base, 6, memory=96 << 20)
    large = ex.vcpu_scenario(base, 6, memory=192 << 20)
    a = ex.fast_zap_2013(["generation"], costs, scenario=small)["generation"]
    b = ex.fast_zap_2013(["generation"], costs, scenario=large)["generation"]
    assert a["operations"] == b["operations"] == 1
    assert 1.8 < b["shadow_pages_zapped"] / a["shadow_pages_zapped"] < 2.2
    assert 1.8 < b["delete_add_mean_ms"] / a["delete_add_mean_ms"] < 2.2


def test_fast_zap_eras_run_the_3_10_and_3_11_configurations_on_the_same_guest(
        costs: CostModel) -> None:
    small = ex.vcpu_scenario(load_scenario("fast-zap-2013"), 6, memory=96 << 20)
    eras = ex.fast_zap_eras(costs, scenario=small)
    assert set(eras) == {"before", "after"} == set(ex.PUBLISHED_FAST_ZAP_MS)
    before, after = eras["before"], eras["after"]
    assert before["operations"] == after["operations"] == 1
    assert before["shadow_pages_zapped"] == after["shadow_pages_zapped"] > 40
    # Both zaps free every page under mmu_lock: most of the latency is lock hold.
    for era in (before, after):
        assert era["lock_hold_per_op_ms"] > 0.8 * era["delete_add_mean_ms"]


def test_under_the_tdp_mmu_vcpus_stop_spinning_through_a_delete_that_takes_as_long(
        costs: CostModel) -> None:
    # Shadow MMU: the zap holds mmu_lock for write and every faulting vCPU spins (v5.12.9
    # kvm_mmu_zap_all_fast()); 5.13+ TDP MMU: the zapped roots are torn down under the read lock
    # while the vCPUs fault under it too (v6.8 kvm_tdp_mmu_zap_invalidated_roots(), b7cccd397f31).
    sw = ex.mmu_sweep([2, 8], costs)
    for n in (2, 8):
        row = {p.strategy: p.row for p in sw.points if p.x == n}
        shadow, tdp = row["generation (shadow MMU)"], row["generation (TDP MMU)"]
        assert float(tdp["vcpu_lock_wait_ns"]) * 5 < float(shadow["vcpu_lock_wait_ns"])
        assert abs(float(tdp["delete_latency_ns"]) / float(shadow["delete_latency_ns"]) - 1) < 0.1
        assert shadow["mmu"] == "shadow" and tdp["mmu"] == "tdp"
