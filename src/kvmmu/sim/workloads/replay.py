"""A recorded run as the timed simulation's workload: memslot requests and guest accesses replayed
at the times a real VMM made them.

Design. A scenario file describes a workload by its statistics and the generators in
:mod:`kvmmu.sim.workloads.guest` and :mod:`kvmmu.sim.workloads.vmm` sample it.  A capture of a real
VMM (:mod:`kvmmu.kvm.capture`) is the workload itself: the exact ``KVM_SET_USER_MEMORY_REGION``
requests (slot, flags, gpa, size, *the VMM's own host addresses*, so that aliases of one host
range at two gpas stay aliases) and the guest's MMIO accesses (gpa, size, direction, value) from
the kernel's ``kvm_mmio`` trace, one stream per vCPU thread.  :class:`RecordedWorkload` hands them
to the simulation (``SimOptions.workload``) in place of the sampled streams:

* the VMM thread issues each request at its recorded time (or as soon as the previous one is
  done, if the simulated ioctls ran late); a refused request is counted like a scenario's;
* each vCPU performs its recorded accesses at their recorded times: the think time before an
  access is computed from the simulation clock when the access is due, so handling costs never
  shift the recording's timeline;
* RAM the guest touched is replayed where the capture records it (``kvm_page_fault`` on a TDP host,
  whose addresses are gpas); under shadow paging a fault address is a guest-virtual one and is
  not used.

A :class:`~kvmmu.sim.workloads.schema.Scenario` built beside it carries what the reports print
(name, duration, vCPUs, address spaces) and the in-kernel devices the VMM created (the local APIC
and IOAPIC when it called ``KVM_CREATE_IRQCHIP``).  What a capture cannot say stays out: coalesced
MMIO (strace does not decode its zones) is not modelled, so each buffered write is an MMIO access
here.

Prior art: trace-driven simulation (the "trace replay" modes of cache and storage simulators such
as DineroIV and fio's ``read_iolog``, which issue recorded I/O at its recorded times).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvmmu.sim.workloads.guest import Access, AccessKind
from kvmmu.sim.workloads.schema import MIB, Scenario, scenario_from_dict
from kvmmu.sim.workloads.vmm import Region

if TYPE_CHECKING:  # a type only: the capture is read by the kvm layer
    from kvmmu.kvm.capture import Capture

#: Simulated time after the last recorded event (in-flight work drains anyway).
TAIL_NS = 1_000_000
_FAULT = re.compile(r"address 0x(?P<addr>[0-9a-f]+) error_code 0x(?P<err>[0-9a-f]+)")
_LAPIC = (0xFEE00000, 0x1000)
_IOAPIC = (0xFEC00000, 0x1000)


@dataclass(frozen=True, slots=True)
class TimedRequest:
    """One recorded memslot request: when, what kind (for the report) and the region asked for."""

    time: int
    op: str
    region: Region


@dataclass(frozen=True, slots=True)
class TimedAccess:
    """One recorded guest access at ``time`` ns."""

    time: int
    gpa: int
    write: bool
    size: int
    value: int
    kind: AccessKind = "mmio"


@dataclass(frozen=True, slots=True)
class RecordedWorkload:
    """Recorded memslot requests and per-vCPU accesses, in time order."""

    requests: tuple[TimedRequest, ...]
    accesses: tuple[tuple[TimedAccess, ...], ...]

    def initial(self) -> list[Region]:
        """Memslots present before the clock starts: none, a capture starts with the VMM."""
        return []

    def plan(self) -> Iterator[tuple[int, str, list[Region]]]:
        """``(time, op, [region])`` for the VMM thread, in time order."""
        for r in self.requests:
            yield r.time, r.op, [r.region]

    def access_stream(self, index: int, now: Callable[[], int]) -> Iterator[Access]:
        """vCPU ``index``'s accesses; ``now`` reads the simulation clock when the next is due."""
        if index >= len(self.accesses):
            return
        for a in self.accesses[index]:
            yield Access(max(0, a.time - now()), a.gpa, a.write, a.size, a.kind)

    @property
    def n_accesses(self) -> int:
        return sum(len(a) for a in self.accesses)


def replay_workload(cap: Capture, name: str | None = None) -> tuple[Scenario, RecordedWorkload]:
    """The scenario (for the reports) and the recorded workload of a capture."""
    from kvmmu.kvm.capture import classify

    kinds = classify(cap.memslots)
    requests = tuple(
        TimedRequest(
            max(0, c.t_ns),
            k,
            Region((c.address_space << 16) | c.slot, c.flags, c.gpa, c.size, c.hva),
        )
        for c, k in zip(cap.memslots, kinds, strict=True)
    )
    tids = list(cap.meta.vcpu_tids)
    accesses_by_tid: dict[int, list[TimedAccess]] = {}
    for a in cap.mmio_accesses():
        if a.tid not in tids:
            tids.append(a.tid)
        value = a.value & ((1 << (8 * a.size)) - 1) if a.write else 0
        accesses_by_tid.setdefault(a.tid, []).append(
            TimedAccess(max(0, a.t_ns), a.gpa, a.write, a.size, value)
        )
    if cap.meta.kernel.mmu == "tdp":  # kvm_page_fault's address is a gpa only under TDP
        for e in cap.events:
            m = _FAULT.search(e.text) if e.event == "kvm_page_fault" else None
            if m is not None:
                gpa = int(m["addr"], 16) & ~0x7
                write = bool(int(m["err"], 16) & 0x2)
                if e.tid not in tids:
                    tids.append(e.tid)
                touch = TimedAccess(max(0, e.t_ns), gpa, write, 8, 0, "ram")
                accesses_by_tid.setdefault(e.tid, []).append(touch)
    streams = tuple(tuple(sorted(accesses_by_tid.get(t, []), key=lambda x: x.time)) for t in tids)
    end = max([r.time for r in requests] + [s[-1].time for s in streams if s] + [cap.meta.duration_ns, 1])
    vcpus = max(1, len(tids))
    ram = max((c.size for c in cap.memslots), default=MIB)
    label = name or (" ".join(Path(cap.meta.command[0]).name.split()) if cap.meta.command else "strace log")
    devices: list[dict[str, Any]] = []
    if cap.meta.irqchip:
        devices = [
            {"name": "local APIC", "gpa": _LAPIC[0], "size": _LAPIC[1], "in_kernel": True},
            {"name": "IOAPIC", "gpa": _IOAPIC[0], "size": _IOAPIC[1], "in_kernel": True},
        ]
    n_acc = sum(len(s) for s in streams)
    scenario = scenario_from_dict(
        {
            "name": f"replay-{_slug(label)}",
            "description": (
                f"Replay of a capture of {' '.join(cap.meta.command) or label}: {len(requests)} memslot "
                f"requests and {n_acc} guest accesses at their recorded times "
                f"({end / 1e9:.2f} s)."
            ),
            "duration": end + TAIL_NS,
            "guest": {
                "vcpus": min(vcpus, 512),
                "memory": max(4096, ram - ram % 4096),
                "ram_base": 0,
                "ram_slot": 0,
                "phys_bits": 52,
                "address_spaces": 2 if any(c.address_space for c in cap.memslots) else 1,
            },
            "devices": devices,
        },
        "<replay>",
    )
    return scenario, RecordedWorkload(requests, streams)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "capture"
