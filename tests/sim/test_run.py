"""Tests of kvmmu.sim.run: the timed run drives the model's own generators, deterministically."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from kvmmu import STRATEGIES
from kvmmu.sim.costs import CostModel, default_costs
from kvmmu.sim.engine import SeededRandom
from kvmmu.sim.run import SimOptions, simulate, simulate_all
from kvmmu.sim.workloads.schema import Scenario, load_scenario, scenario_from_dict
from kvmmu.sim.workloads.vmm import schedule


def small(**vcpu: object) -> Scenario:
    return scenario_from_dict(
        {
            "name": "small",
            "description": "a small guest with devices, ROM and memslot churn",
            "duration": "1ms",
            "guest": {"vcpus": 3, "memory": "64MiB", "ram_base": "4GiB", "prefault": 0.25},
            "vcpu": {
                "think": "2us",
                "working_set": "4MiB",
                "mmio_fraction": 0.2,
                "rom_fraction": 0.1,
                **vcpu,
            },
            "slots": [{"id": 2, "gpa": 0xC0000, "size": "64KiB", "role": "rom"}],
            "devices": [
                {"name": "dev", "gpa": 0xFE000000, "size": "16KiB"},
                {"name": "kdev", "gpa": 0xFE100000, "size": "4KiB", "in_kernel": True},
            ],
            "vmm": [
                {"op": "remap", "slot": 2, "at": "50us", "repeat": 8, "every": "100us"},
                {"op": "create", "slot": 9, "gpa": "1TiB", "size": "2MiB", "at": "300us"},
                {"op": "dirty-log-on", "slot": 1, "at": "500us"},
                {"op": "delete", "slot": 77, "at": "600us"},  # refused: no such slot
            ],
        }
    )


@pytest.fixture(scope="module")
def costs() -> CostModel:
    return default_costs()


def test_same_seed_same_result_other_seed_other_workload(costs: CostModel) -> None:
    sc = small()
    a = simulate(sc, "generation", costs, SimOptions(seed=1))
    b = simulate(sc, "generation", costs, SimOptions(seed=1))
    c = simulate(sc, "generation", costs, SimOptions(seed=2))
    assert {k: v for k, v in a.summary().items() if k != "wall_s"} == {
        k: v for k, v in b.summary().items() if k != "wall_s"
    }
    assert a.updates == b.updates and a.spans == b.spans
    assert a.stats["pf_taken"] != c.stats["pf_taken"] or a.sim_time_ns != c.sim_time_ns


def test_every_strategy_runs_clean_and_issues_every_update(costs: CostModel) -> None:
    sc = small()
    run = simulate_all(sc, list(STRATEGIES), costs, SimOptions(seed=0))
    actions = list(schedule(sc, 0))
    for r in run.strategies:
        row = r.summary()
        assert row["oracle_violations"] == 0, r.strategy
        # A remap is two requests; everything else one; the delete of slot 77 is refused.
        assert len(r.updates) == sum(2 if a.op == "remap" else 1 for a in actions)
        assert r.vmm_errors == 1 and [u.change for u in r.updates].count("error") == 1
        # The model counted the same updates that the VMM saw accepted (plus the setup's two).
        assert r.stats["memslot_updates"] == len(r.latencies) + 2
        assert all(u.latency_ns >= costs["memslot_ioctl_ns"] for u in r.updates)
        for t in r.threads:
            assert 0 <= t.lock_hold_ns <= r.sim_time_ns
        assert sum(r.series.updates) == len(r.latencies)
        assert sum(r.series.faults) <= r.stats["pf_taken"]


def test_broken_variants_are_caught_by_the_oracle_in_the_timed_run(costs: CostModel) -> None:
    # The timed run executes the model's code, safeguards and all: remove one and it shows.
    sc = load_scenario("rom-loop")
    opts = SimOptions(vm_options={"start_near_wrap": True, "mmio_gen_bits": 4, "slot_zap": "slot"})
    broken = simulate(sc, "generation-2013+no-wrap-zap", costs, opts)
    fixed = simulate(sc, "generation", costs, opts)
    assert broken.stats["generation_wraps"] > 0 and broken.summary()["oracle_violations"] > 0
    assert broken.violations and fixed.summary()["oracle_violations"] == 0


def test_mmu_lock_waiters_spin_and_the_holder_accounting_matches(costs: CostModel) -> None:
    # Many vCPUs faulting fresh memory at once contend for mmu_lock.
    sc = small(pattern="sweep", mmio_fraction=0.0, rom_fraction=0.0, think="200ns")
    r = simulate(sc, "zap-walk", costs, SimOptions(seed=0))
    wait = sum(t.lock_wait_ns for t in r.threads)
    assert wait > 0
    assert r.stats["mmu_lock_contended"] >= 0
    spins = [s for s in r.spans if s.cat == "lock-wait"]
    assert spins and sum(s.dur_ns for s in spins) == wait
    holds = [s for s in r.spans if s.cat == "mmu_lock"]
    assert sum(s.dur_ns for s in holds) == sum(t.lock_hold_ns for t in r.threads)
    # The lock is exclusive: no two hold spans overlap.
    holds.sort(key=lambda s: s.start_ns)
    for a, b in itertools.pairwise(holds):
        assert a.start_ns + a.dur_ns <= b.start_ns


def test_other_tie_orders_change_interleavings_not_correctness(costs: CostModel) -> None:
    sc = small()
    for seed in range(3):
        r = simulate(sc, "generation", costs, SimOptions(seed=0, rule=SeededRandom(seed)))
        assert r.summary()["oracle_violations"] == 0
        assert len(r.updates) == len(simulate(sc, "generation", costs).updates)


def test_costs_scale_time_not_work(costs: CostModel) -> None:
    sc = small()
    doubled = CostModel.from_mapping({k: 2 * v for k, v in costs.costs.items()})
    a = simulate(sc, "generation", costs, SimOptions(seed=0, trace=False))
    b = simulate(sc, "generation", doubled, SimOptions(seed=0, trace=False))
    assert b.summary()["update_latency_mean_ns"] > a.summary()["update_latency_mean_ns"]
    assert len(b.updates) == len(a.updates)


def test_a_tib_guest_with_512_vcpus_runs(costs: CostModel) -> None:
    sc = scenario_from_dict(
        {
            "name": "huge",
            "description": "1 TiB, 2 MiB pages, 512 vCPUs",
            "duration": "40us",
            "guest": {"vcpus": 512, "memory": "1TiB", "page_size": "2MiB", "ram_base": "1TiB"},
            "vcpu": {"think": "10us", "working_set": "2GiB", "mmio_fraction": 0.0},
            "vmm": [{"op": "create", "slot": 5, "gpa": "8TiB", "size": "1GiB", "at": "10us"}],
        }
    )
    r = simulate(sc, "generation", costs, SimOptions(seed=0, trace=False, oracle=False))
    assert len([t for t in r.threads if t.kind == "vcpu"]) == 512
    assert r.stats["pf_taken"] > 0 and len(r.latencies) == 1


def test_before_5_17_each_update_pays_a_copy_of_the_slot_array(costs: CostModel) -> None:
    # v5.12 virt/kvm/kvm_main.c kvm_set_memslot(): kvm_dup_memslots() copies every used slot per
    # update; 5.17+ (a54d806688fe series) swaps trees.  The same run under both storages differs
    # in each update's latency by the copy of the address space's slots.
    sc = small(think="2ms")  # vCPUs that stay out of the way: no lock waits in the latencies
    tree = simulate(sc, "generation", costs, SimOptions(trace=False, memslot_array=False))
    array = simulate(sc, "generation", costs, SimOptions(trace=False, memslot_array=True))
    assert not STRATEGIES["generation"].memslot_array
    assert STRATEGIES["generation-5.1"].memslot_array
    ok = [(t, a) for t, a in zip(tree.updates, array.updates, strict=True) if t.change != "error"]
    assert ok
    copy = costs["memslot_copy_per_slot_ns"]
    for t, a in ok:
        assert a.latency_ns - t.latency_ns >= copy  # at least the RAM slot is copied
        assert (a.latency_ns - t.latency_ns) % copy == 0


def test_the_obsolete_page_zap_breaks_the_lock_only_when_vcpus_spin_on_it(
        costs: CostModel) -> None:
    # v6.8 kvm_zap_obsolete_pages(): cond_resched_rwlock_write() after BATCH_ZAP_PAGES pages,
    # which drops the lock only if rwlock_needbreak() (a waiter) or a resched is due (never here:
    # a host CPU per thread).  With every vCPU idle no one spins and the zap never breaks.
    opts = SimOptions(trace=False, oracle=False, vm_options={"slot_zap": "all"})
    idle = simulate(small(active=0), "generation", costs, opts)
    busy = simulate(small(), "generation", costs, opts)
    assert idle.stats["zap_all_fast"] > 0 and idle.stats["mmu_lock_breaks"] == 0
    # With three vCPUs faulting, some spin during each zap and the zap lets them in.
    assert busy.stats["zap_all_fast"] > 0 and busy.stats["mmu_lock_breaks"] > 0
    assert sum(t.lock_wait_ns for t in busy.threads if t.kind == "vcpu") > 0
    # A kernel built without CONFIG_PREEMPTION never breaks for a waiter.
    opts.vm_options["preempt"] = False
    nopreempt = simulate(small(), "generation", costs, opts)
    assert nopreempt.stats["mmu_lock_breaks"] == 0


def test_tdp_mmu_faults_share_mmu_lock_so_vcpus_stop_waiting_for_each_other(
        costs: CostModel) -> None:
    # Shadow MMU: every fault takes mmu_lock for write (v5.12.9 direct_page_fault(): write_lock()
    # for a non-TDP root); TDP MMU: for read (read_lock(), a2855afc7ee8), and from 5.13 the zapped
    # roots are torn down under the read lock too (b7cccd397f31).  Same workload, same seed.
    sc = small(pattern="sweep", mmio_fraction=0.0, rom_fraction=0.0, think="200ns")
    opts = SimOptions(seed=0, vm_options={"slot_zap": "all"})
    shadow = simulate(sc, "generation", costs, replace(opts, mmu="shadow"))
    tdp = simulate(sc, "generation", costs, replace(opts, mmu="tdp"))
    assert (shadow.mmu, tdp.mmu) == ("shadow", "tdp")
    s, t = shadow.summary(), tdp.summary()
    assert s["mmu_lock_read_hold_ns"] == 0 and t["mmu_lock_read_hold_ns"] > 0
    assert t["mmu_lock_hold_ns"] < s["mmu_lock_hold_ns"] / 2  # writes: root reloads and zaps only
    vcpu_spin = {r.mmu: sum(th.lock_wait_ns for th in r.threads if th.kind == "vcpu")
                 for r in (shadow, tdp)}
    assert vcpu_spin["tdp"] < vcpu_spin["shadow"] / 2
    assert s["oracle_violations"] == t["oracle_violations"] == 0
    # Readers overlap: some two read-hold spans of different threads intersect.
    reads = sorted((sp for sp in tdp.spans if sp.cat == "mmu_lock-read"), key=lambda sp: sp.start_ns)
    assert any(b.start_ns < a.start_ns + a.dur_ns and a.tid != b.tid
               for a, b in itertools.pairwise(reads))
    # The VMM's teardown of the zapped roots runs under the read lock (5.13+).
    vmm = next(th for th in tdp.threads if th.kind == "vmm")
    assert vmm.lock_read_hold_ns > 0 and tdp.stats["zap_all_fast"] > 0


def test_auto_mmu_is_the_kernels_choice_on_an_ept_host(costs: CostModel) -> None:
    sc = small(active=0)
    opts = SimOptions(seed=0, trace=False)
    assert simulate(sc, "generation", costs, opts).mmu == "tdp"  # 5.15+ default (71ba3f3189c7)
    assert simulate(sc, "generation-3.18", costs, opts).mmu == "shadow"
    # A kernel without a TDP MMU ran the shadow MMU whatever the host offered.
    assert simulate(sc, "generation-3.18", costs, replace(opts, mmu="tdp")).mmu == "shadow"
    with pytest.raises(ValueError, match="mmu must be one of"):
        simulate(sc, "generation", costs, replace(opts, mmu="ept"))
