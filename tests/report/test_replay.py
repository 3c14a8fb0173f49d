"""The verdict on a replay: the cheapest strategy and the work that explains the others' cost."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kvmmu.kvm.capture import classify, load_capture
from kvmmu.report.replay import verdict
from kvmmu.sim.costs import load_costs
from kvmmu.sim.run import SimOptions, simulate_all
from kvmmu.sim.workloads.replay import replay_workload

POST = Path(__file__).parents[1] / "data" / "qemu-q35-post" / "capture.json.gz"


def test_zap_all_fast_is_not_cheapest_for_the_post_and_its_extra_zaps_are_named() -> None:
    cap = load_capture(POST)
    kinds = classify(cap.memslots)
    deletes, creates = kinds.count("delete"), kinds.count("create")
    sc, wl = replay_workload(cap)
    opts = SimOptions(oracle=False, trace=False, workload=wl, vm_options={"slot_zap": "all"})
    run = simulate_all(sc, ["generation", "zap-all-fast"], load_costs(None), opts)
    v = verdict(run)
    assert [c.strategy for c in v.ranking] == ["generation", "zap-all-fast"]
    gen, fast = v.ranking
    assert fast.total_ns > gen.total_ns
    # The zap-all quirk zaps once per delete under both; zap-all-fast also on every create.
    assert gen.work["zap_all_fast"] == deletes
    assert fast.work["zap_all_fast"] == deletes + creates
    assert v.lines[0].startswith("cheapest: generation (")
    expected = f"{deletes + creates} kvm_mmu_zap_all_fast vs {deletes}"
    assert any(line.startswith("zap-all-fast: +") and expected in line for line in v.lines)


def test_a_buggy_kernel_that_comes_out_cheaper_is_named_but_never_chosen() -> None:
    sc, wl = replay_workload(load_capture(POST))
    opts = SimOptions(oracle=True, trace=False, workload=wl, vm_options={"slot_zap": "all"})
    run = simulate_all(sc, ["generation", "generation-3.11"], load_costs(None), opts)
    # Make the historically buggy 3.11 the cheaper one: its memslot updates cost nothing.
    free = tuple(dataclasses.replace(u, latency_ns=0) for u in run.by_strategy("generation-3.11").updates)
    run = dataclasses.replace(
        run,
        strategies=tuple(
            dataclasses.replace(r, updates=free) if r.strategy == "generation-3.11" else r
            for r in run.strategies
        ),
    )
    v = verdict(run)
    costs = {c.strategy: c for c in v.ranking}
    assert costs["generation-3.11"].total_ns < costs["generation"].total_ns
    assert costs["generation-3.11"].suspect.startswith("historically buggy")
    assert v.cheapest == "generation"
    assert any(line.startswith("cheaper but not correct: generation-3.11") for line in v.lines)
