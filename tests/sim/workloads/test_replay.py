"""A capture as the timed simulation's workload: requests and accesses at their recorded times."""

from __future__ import annotations

from pathlib import Path

from kvmmu.kvm.capture import Capture, CapturedEvent, CaptureMeta, KernelInfo, load_capture
from kvmmu.kvm.strace import MemslotCall
from kvmmu.sim.costs import load_costs
from kvmmu.sim.run import SimOptions, simulate
from kvmmu.sim.workloads.replay import replay_workload

POST = Path(__file__).parents[2] / "data" / "qemu-q35-post" / "capture.json.gz"


def test_the_post_becomes_its_requests_with_the_vmms_own_host_addresses_and_its_accesses() -> None:
    cap = load_capture(POST)
    sc, wl = replay_workload(cap)
    assert [r.region.userspace_addr for r in wl.requests] == [c.hva for c in cap.memslots]
    assert [r.time for r in wl.requests] == [c.t_ns for c in cap.memslots]
    assert wl.n_accesses == len(cap.mmio_accesses())
    assert sc.guest.vcpus == len(cap.meta.vcpu_tids)
    assert {d.name for d in sc.devices if d.in_kernel} == {"local APIC", "IOAPIC"}
    assert sc.duration > max(r.time for r in wl.requests)


def test_a_simulated_replay_issues_every_request_at_its_time_and_performs_every_access() -> None:
    calls = [
        MemslotCall(1_000_000, 10_000, 7, 1, 0, 0, 0x100000, 0x10000, 0x7F0000000000),
        MemslotCall(3_000_000, 10_000, 7, 1, 0, 0, 0x100000, 0, 0x7F0000000000),
    ]
    events = [
        CapturedEvent(t, 9, "kvm_mmio", f"mmio write len 4 gpa 0x{g:x} val 0x1")
        for t, g in ((500_000, 0xFEBF0000), (2_000_000, 0xFEBF0000), (2_500_000, 0xFEBF0004))
    ]
    cap = Capture(
        CaptureMeta(sources=("tracefs",), kernel=KernelInfo(), vcpu_tids=(9,), duration_ns=4_000_000),
        tuple(calls),
        tuple(events),
    )
    sc, wl = replay_workload(cap)
    r = simulate(sc, "generation", load_costs(None), SimOptions(workload=wl, oracle=True))
    assert [(u.time_ns, u.op, u.change) for u in r.updates] == [
        (1_000_000, "create", "create"),
        (3_000_000, "delete", "delete"),
    ]
    (vcpu,) = [t for t in r.threads if t.kind == "vcpu"]
    assert vcpu.accesses == 3
    assert r.violations == ()
    # The stall spans start at the recorded times: handling never shifts the timeline.
    faults = sorted(s.start_ns for s in r.spans if s.cat == "fault")
    assert faults[:3] == [500_000, 2_000_000, 2_500_000]


def test_page_faults_become_ram_accesses_only_where_their_address_is_a_gpa() -> None:
    fault = CapturedEvent(
        10, 9, "kvm_page_fault", "vcpu 0 rip 0xfff0 address 0x0000000000002000 error_code 0x6"
    )
    calls = (MemslotCall(0, 1000, 7, 0, 0, 0, 0, 1 << 20, 0x7F0000000000),)
    for mmu, expected in (("tdp", 1), ("shadow", 0)):
        meta = CaptureMeta(sources=("tracefs",), kernel=KernelInfo(mmu=mmu), vcpu_tids=(9,))
        _, wl = replay_workload(Capture(meta, calls, (fault,)))
        assert wl.n_accesses == expected, mmu
        if expected:
            (a,) = wl.accesses[0]
            assert (a.gpa, a.write) == (0x2000, True)
