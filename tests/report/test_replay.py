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
    # zap-all-fast zaps on every change, generation only on the deletes (the zap-all quirk).
    assert fast.work["zap_all_fast"] == 23 + 50 and gen.work["zap_all_fast"] == 23
    assert v.lines[0].startswith("cheapest: generation (")
    assert any(
        line.startswith("zap-all-fast: +") and "73 kvm_mmu_zap_all_fast vs 23" in line for line in v.lines
    )
