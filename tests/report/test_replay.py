"""The verdict on a replay: the cheapest strategy and the work that explains the others' cost."""

from __future__ import annotations

from pathlib import Path

from kvmmu.kvm.capture import load_capture
from kvmmu.report.replay import verdict
from kvmmu.sim.costs import load_costs
from kvmmu.sim.run import SimOptions, simulate_all
from kvmmu.sim.workloads.replay import replay_workload

POST = Path(__file__).parents[1] / "data" / "qemu-q35-post" / "capture.json.gz"


def test_zap_all_fast_is_not_cheapest_for_the_post_and_its_extra_zaps_are_named() -> None:
    sc, wl = replay_workload(load_capture(POST))
    opts = SimOptions(oracle=False, trace=False, workload=wl, vm_options={"slot_zap": "all"})
    run = simulate_all(sc, ["generation", "zap-all-fast"], load_costs(None), opts)
    v = verdict(run)
    assert [c.strategy for c in v.ranking] == ["generation", "zap-all-fast"]
    gen, fast = v.ranking
    assert fast.total_ns > gen.total_ns
    # zap-all-fast zaps on each of the 27 creates too, generation only on the 23 deletes (the
    # zap-all quirk).
    assert fast.work["zap_all_fast"] == 23 + 27 and gen.work["zap_all_fast"] == 23
    assert v.lines[0].startswith("cheapest: generation (")
    assert any(
        line.startswith("zap-all-fast: +") and "50 kvm_mmu_zap_all_fast vs 23" in line for line in v.lines
    )


def test_a_historically_buggy_kernel_cheaper_by_skipping_a_check_is_named_but_not_chosen() -> None:
    sc, wl = replay_workload(load_capture(POST))
    # The same memslot storage for both (3.11's sorted array would add its per-update copy, issue
    # 10), so that the checks alone tell them apart.
    opts = SimOptions(oracle=True, trace=False, workload=wl, vm_options={"slot_zap": "all"},
                      memslot_array=False)
    run = simulate_all(sc, ["generation", "generation-3.11"], load_costs(None), opts)
    v = verdict(run)
    costs = {c.strategy: c for c in v.ranking}
    # 3.11's per-vCPU MMIO cache has no generation: it skips refaults the fixed kernels take.
    assert costs["generation-3.11"].total_ns < costs["generation"].total_ns
    assert costs["generation-3.11"].suspect.startswith("historically buggy")
    assert v.cheapest == "generation"
    assert any(line.startswith("cheaper but not correct: generation-3.11") for line in v.lines)
