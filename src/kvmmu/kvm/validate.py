"""Hold the model against the kernel that made a capture: the same memslot calls and MMIO accesses,
on a model configured like that kernel, compared event by event and in totals.

Design. A capture (:mod:`kvmmu.kvm.capture`) says what a real VMM asked of KVM and what the kernel
did about it.  :func:`validate` replays the asks on a :class:`kvmmu.vm.VM` built like the capturing
kernel (``meta.kernel``: MMU kind, ``mmio_caching``, address spaces, the slot-zap quirk; the modern
``generation`` strategy, since the kernel is a modern one) with the model's tracer on, in the
capture's time order (memslot ioctls and the guest's MMIO accesses, one model vCPU per vCPU
thread), and compares what the two traces say:

* per memslot ioctl: how many ``kvm_mmu_zap_all_fast`` it fired (the kernel's events are paired
  with a call by thread and time: inside the call's strace window) and how many shadow pages it
  zapped (``kvm_mmu_prepare_zap_page`` in that window);
* in totals: ``kvm_mmu_zap_all_fast``, shadow pages created (``kvm_mmu_get_page ... new``) and
  zapped, MMIO accesses and exits; kernel events paired with no call are disagreements too;
* MMIO exits per region (pages of accessed MMIO clustered, architectural ranges named).

With ``KVM_CREATE_IRQCHIP`` in the capture the model gets the in-kernel local APIC
(``APIC_DEFAULT_PHYS_BASE`` 0xfee00000, ``LAPIC_MMIO_LENGTH`` 4 KiB, ``arch/x86/kvm/lapic.c``) and
IOAPIC (``IOAPIC_DEFAULT_BASE_ADDRESS`` 0xfec00000, ``arch/x86/kvm/ioapic.h``) on its MMIO bus.
Coalesced MMIO zones are not modelled (strace does not decode their addresses, and the model's bus
has no write-only buffering); a region whose writes the kernel buffered shows as a disagreement,
named as such.  Accesses are replayed as emulated (``emulated=True``) when the capture holds no
``kvm_page_fault``: the guest then ran in KVM's instruction emulator, as SeaBIOS does on this
project's machines (``real-kvm-here.md``, "Guest modes").

Nothing is tuned to make the figures agree: a disagreement is a finding about the model (or the
capture), printed with its timestamp.  Prior art: differential testing of a model against an
implementation (``kvmmu diff`` does it for guest-visible values); trace-driven validation of
cache simulators against hardware counters.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmmu.devices import RegisterBank
from kvmmu.errors import KvmError
from kvmmu.kvm.capture import Capture, MmioAccess, classify
from kvmmu.kvm.strace import MemslotCall
from kvmmu.trace import Tracer
from kvmmu.vm import VM

#: The strategy of a modern kernel (the capturing kernel is one; see ``kvmmu strategies``).
MODERN = "generation"
#: Architectural MMIO ranges of a PC, named in the per-region table.
KNOWN_REGIONS: tuple[tuple[int, int, str], ...] = (
    (0xA0000, 0x20000, "VGA legacy window"),
    (0xFEC00000, 0x1000, "IOAPIC"),
    (0xFED00000, 0x400, "HPET"),
    (0xFEE00000, 0x1000, "local APIC"),
)
#: Accessed MMIO pages closer than this are one region (PCIe ECAM functions are 4 KiB apart).
REGION_GAP = 1 << 20
_USED = re.compile(r"used_pages (?P<n>[0-9a-f]+)")


@dataclass(frozen=True, slots=True)
class CallCheck:
    """One memslot ioctl: what the kernel did and what the model did."""

    index: int
    t_ns: int
    tid: int
    op: str
    call: MemslotCall
    kernel_zap_all_fast: int
    model_zap_all_fast: int
    kernel_pages_zapped: int
    model_pages_zapped: int
    kernel_errno: str
    model_errno: str

    @property
    def agrees(self) -> bool:
        return (
            self.kernel_zap_all_fast == self.model_zap_all_fast
            and self.kernel_pages_zapped == self.model_pages_zapped
            and self.kernel_errno == self.model_errno
        )


@dataclass(frozen=True, slots=True)
class RegionCheck:
    """MMIO accesses and exits to userspace in one region of guest-physical space."""

    start: int
    end: int
    name: str
    accesses: int
    writes: int
    kernel_exits: int
    model_exits: int
    first_t_ns: int

    @property
    def agrees(self) -> bool:
        return self.kernel_exits == self.model_exits


@dataclass(frozen=True, slots=True)
class Total:
    """One total measure, kernel beside model."""

    name: str
    kernel: int
    model: int

    @property
    def agrees(self) -> bool:
        return self.kernel == self.model


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A place where model and kernel differ, with when it happened and what may explain it."""

    t_ns: int
    what: str
    why: str = ""


@dataclass(slots=True)
class Validation:
    """Everything :func:`validate` found."""

    config: dict[str, object]
    #: False for a memslot-only capture (an strace log): the model's figures stand alone.
    kernel_trace: bool = True
    calls: list[CallCheck] = field(default_factory=list)
    regions: list[RegionCheck] = field(default_factory=list)
    totals: list[Total] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def agreed(self) -> int:
        if not self.kernel_trace:
            return 0
        return (
            sum(c.agrees for c in self.calls)
            + sum(r.agrees for r in self.regions)
            + sum(t.agrees for t in self.totals)
        )

    @property
    def compared(self) -> int:
        if not self.kernel_trace:
            return 0
        return len(self.calls) + len(self.regions) + len(self.totals)


def model_config(cap: Capture) -> dict[str, object]:
    """The :class:`VM` keyword arguments that configure the model like the capturing kernel."""
    k = cap.meta.kernel
    return {
        "strategy": MODERN,
        "mmu": "ept" if k.mmu == "tdp" else "shadow",
        "mmio_caching": k.mmio_caching is not False,
        "address_spaces": 2 if k.address_spaces >= 2 else 1,
        "slot_zap": k.slot_zap if k.slot_zap in ("all", "slot") else "all",
        "phys_bits": 52,
        "start_near_wrap": False,
    }


def _region_name(page: int) -> tuple[str, int, int] | None:
    for base, size, name in KNOWN_REGIONS:
        if base <= page < base + size:
            return name, base, base + size
    return None


def regions_of(accesses: Sequence[MmioAccess]) -> list[tuple[int, int, str]]:
    """Regions ``[start, end)`` covering the accessed pages: architectural ranges by name, the
    rest by clustering pages less than :data:`REGION_GAP` apart."""
    pages = sorted({a.gpa & ~0xFFF for a in accesses})
    out: list[tuple[int, int, str]] = []
    for p in pages:
        known = _region_name(p)
        if known is not None:
            name, start, end = known
            if not out or out[-1][2] != name:
                out.append((start, end, name))
            continue
        if out and out[-1][2] == "" and p - out[-1][1] < REGION_GAP:
            out[-1] = (out[-1][0], p + 0x1000, "")
        else:
            out.append((p, p + 0x1000, ""))
    return out


def validate(cap: Capture, emulated: bool | None = None) -> Validation:
    """Replay ``cap`` on the model configured like its kernel and compare (see the module notes).

    ``emulated``: replay accesses through the emulator (True), the hardware walk (False), or
    decide from the capture (None: emulated when it holds no ``kvm_page_fault``).
    """
    cfg = model_config(cap)
    if emulated is None:
        emulated = cap.count("kvm_page_fault") == 0
    tracer = Tracer()
    vm = VM(oracle=False, trace=tracer, **cfg)  # type: ignore[arg-type]
    result = Validation(
        config={**cfg, "accesses": "emulated" if emulated else "hardware walk"}, kernel_trace=cap.has_trace
    )
    if cap.meta.irqchip:
        vm.register_device(0xFEE00000, 0x1000, RegisterBank("local APIC"))
        vm.register_device(0xFEC00000, 0x1000, RegisterBank("IOAPIC"))
        result.notes.append(
            "in-kernel irqchip (KVM_CREATE_IRQCHIP): local APIC and IOAPIC on the model's bus"
        )
    if not cap.has_trace:
        result.notes.append("no kernel trace in this capture (an strace log): the model's figures only")
    if cap.meta.undecoded_memslot_ioctls:
        result.notes.append(
            f"{cap.meta.undecoded_memslot_ioctls} memslot ioctls strace did not decode are missing"
        )
    accesses = cap.mmio_accesses()
    vcpus = {tid: vm.create_vcpu() for tid in cap.meta.vcpu_tids}
    fallback = vm.create_vcpu() if not vcpus else None
    model_exit = [False] * len(accesses)
    kinds = classify(cap.memslots)
    model_calls: list[tuple[int, int, str]] = []  # (zap_all_fast, prepare_zap, errno) per call
    order = sorted(
        [(c.t_ns, 0, i) for i, c in enumerate(cap.memslots)]
        + [(a.t_ns, 1, i) for i, a in enumerate(accesses)]
    )
    records = tracer.records
    for _, kind, i in order:
        if kind == 0:
            c = cap.memslots[i]
            before = len(records)
            errno = ""
            try:
                vm.set_user_memory_region((c.address_space << 16) | c.slot, c.flags, c.gpa, c.size, c.hva)
            except KvmError as exc:
                errno = exc.errno_name
            new = records[before:]
            model_calls.append(
                (
                    sum(1 for r in new if r.event == "kvm_mmu_zap_all_fast"),
                    sum(1 for r in new if r.event == "kvm_mmu_prepare_zap_page"),
                    errno,
                )
            )
            continue
        a = accesses[i]
        vcpu = vcpus.get(a.tid, fallback) or next(iter(vcpus.values()))
        value = a.value & ((1 << (8 * a.size)) - 1) if a.write else 0
        out = vcpu.access(a.gpa, a.write, a.size, value, emulated=emulated)
        model_exit[i] = out.exit_to_userspace

    _compare_calls(cap, kinds, model_calls, result)
    _compare_regions(cap, accesses, model_exit, result)
    _compare_totals(cap, accesses, model_exit, tracer, result)
    result.disagreements.sort(key=lambda d: d.t_ns)
    return result


#: Pairing slacks, tried in turn: the trace's microsecond rounding, then a clock-offset error.
SLACKS_NS = (1_000, 20_000)


def _paired(cap: Capture) -> tuple[list[list[int]], list[int]]:
    """Kernel event indices inside each call's window (same thread), and those in none.

    Windows are tried tight first (:data:`SLACKS_NS`): calls of one burst are tens of µs apart,
    so a wide window would hand an event to the neighbouring call.
    """
    per_call: list[list[int]] = [[] for _ in cap.memslots]
    by_tid: dict[int, list[tuple[int, int, int]]] = {}
    for i, c in enumerate(cap.memslots):
        by_tid.setdefault(c.tid, []).append((c.t_ns, c.t_ns + c.dur_ns, i))
    for calls in by_tid.values():
        calls.sort()
    unpaired: list[int] = []
    for j, e in enumerate(cap.events):
        if e.event not in ("kvm_mmu_zap_all_fast", "kvm_mmu_prepare_zap_page"):
            continue
        calls = by_tid.get(e.tid, [])
        hit = None
        for slack in SLACKS_NS:
            # The thread's calls do not overlap: the one starting last before the event (plus
            # slack) is the only one whose window can hold it.
            k = bisect.bisect_right(calls, (e.t_ns + slack, 1 << 62, 0)) - 1
            if k >= 0 and calls[k][0] - slack <= e.t_ns <= calls[k][1] + slack:
                hit = calls[k][2]
                break
        if hit is None:
            if e.event == "kvm_mmu_zap_all_fast":
                unpaired.append(j)
        else:
            per_call[hit].append(j)
    return per_call, unpaired


def _compare_calls(
    cap: Capture, kinds: list[str], model: list[tuple[int, int, str]], result: Validation
) -> None:
    per_call, unpaired = _paired(cap) if cap.has_trace else ([[] for _ in cap.memslots], [])
    for i, c in enumerate(cap.memslots):
        evs = [cap.events[j] for j in per_call[i]]
        check = CallCheck(
            index=i,
            t_ns=c.t_ns,
            tid=c.tid,
            op=kinds[i],
            call=c,
            kernel_zap_all_fast=sum(1 for e in evs if e.event == "kvm_mmu_zap_all_fast"),
            model_zap_all_fast=model[i][0],
            kernel_pages_zapped=sum(1 for e in evs if e.event == "kvm_mmu_prepare_zap_page"),
            model_pages_zapped=model[i][1],
            kernel_errno=c.errno,
            model_errno=model[i][2],
        )
        result.calls.append(check)
        if not cap.has_trace or check.agrees:
            continue
        parts = []
        if check.kernel_zap_all_fast != check.model_zap_all_fast:
            parts.append(
                f"kvm_mmu_zap_all_fast kernel {check.kernel_zap_all_fast}, model {check.model_zap_all_fast}"
            )
        if check.kernel_pages_zapped != check.model_pages_zapped:
            parts.append(f"pages zapped kernel {check.kernel_pages_zapped}, model {check.model_pages_zapped}")
        if check.kernel_errno != check.model_errno:
            parts.append(f"errno kernel {check.kernel_errno or 'none'}, model {check.model_errno or 'none'}")
        why = ""
        if check.kernel_pages_zapped != check.model_pages_zapped:
            why = "the model's shadow pages differ from the kernel's (see the shadow-page totals)"
        result.disagreements.append(
            Disagreement(
                c.t_ns, f"{kinds[i]} slot {c.slot} gpa {c.gpa:#x} size {c.size:#x}: " + "; ".join(parts), why
            )
        )
    for j in unpaired:
        e = cap.events[j]
        result.disagreements.append(
            Disagreement(e.t_ns, f"kernel {e.event} ({e.text}) outside every memslot ioctl of its thread")
        )


def _compare_regions(
    cap: Capture, accesses: Sequence[MmioAccess], model_exit: Sequence[bool], result: Validation
) -> None:
    regions = regions_of(accesses)
    starts = [r[0] for r in regions]
    acc = [[0, 0, 0, 0, -1] for _ in regions]  # accesses, writes, kernel exits, model exits, first
    for a, m in zip(accesses, model_exit, strict=True):
        k = bisect.bisect_right(starts, a.gpa) - 1
        row = acc[k]
        row[0] += 1
        row[1] += a.write
        row[2] += a.exited
        row[3] += m
        if row[4] < 0:
            row[4] = a.t_ns
    for (start, end, name), (n, w, ke, me, first) in zip(regions, acc, strict=True):
        check = RegionCheck(start, end, name, n, w, ke, me, first)
        result.regions.append(check)
        if not cap.has_trace or check.agrees:
            continue
        why = ""
        zones = [(a, sz) for a, sz in cap.meta.coalesced_mmio if a < end and start < a + sz]
        if me > ke and zones:
            where = ", ".join(f"{a:#x}+{sz:#x}" for a, sz in zones)
            why = (
                f"writes the kernel buffered in the coalesced MMIO zone {where} the VMM registered "
                "(KVM_REGISTER_COALESCED_MMIO); the model has no coalesced MMIO"
            )
        elif me > ke and w == n and cap.meta.coalesced_zones:
            why = (
                "writes the kernel buffered without an exit: a coalesced MMIO zone "
                f"(the VMM registered {cap.meta.coalesced_zones}); the model has no coalesced MMIO"
            )
        elif me > ke:
            why = "accesses the kernel completed in-kernel (an in-kernel device the model lacks)"
        label = f" ({name})" if name else ""
        result.disagreements.append(
            Disagreement(
                first,
                f"MMIO {start:#x}-{end - 1:#x}{label}: {n} accesses, exits kernel {ke}, model {me}",
                why,
            )
        )


def _compare_totals(
    cap: Capture,
    accesses: Sequence[MmioAccess],
    model_exit: Sequence[bool],
    tracer: Tracer,
    result: Validation,
) -> None:
    recs = tracer.records

    def model_count(name: str, suffix: str = "") -> int:
        return sum(1 for r in recs if r.event == name and r.text.endswith(suffix))

    def kernel_count(name: str, suffix: str = "") -> int:
        return sum(1 for e in cap.events if e.event == name and e.text.endswith(suffix))

    totals = [
        Total("memslot ioctls", len(cap.memslots), len(result.calls)),
        Total(
            "deletes paired with one kvm_mmu_zap_all_fast",
            sum(1 for c in result.calls if c.op == "delete" and c.kernel_zap_all_fast == 1),
            sum(1 for c in result.calls if c.op == "delete" and c.model_zap_all_fast == 1),
        ),
        Total(
            "creates that fired kvm_mmu_zap_all_fast",
            sum(1 for c in result.calls if c.op == "create" and c.kernel_zap_all_fast),
            sum(1 for c in result.calls if c.op == "create" and c.model_zap_all_fast),
        ),
        Total(
            "kvm_mmu_zap_all_fast", kernel_count("kvm_mmu_zap_all_fast"), model_count("kvm_mmu_zap_all_fast")
        ),
        Total(
            "shadow pages created (kvm_mmu_get_page new)",
            kernel_count("kvm_mmu_get_page", " new"),
            model_count("kvm_mmu_get_page", " new"),
        ),
        Total(
            "shadow pages zapped (kvm_mmu_prepare_zap_page)",
            kernel_count("kvm_mmu_prepare_zap_page"),
            model_count("kvm_mmu_prepare_zap_page"),
        ),
        Total("MMIO accesses", len(accesses), model_count("kvm_mmio")),
        Total("MMIO exits to userspace", sum(a.exited for a in accesses), sum(model_exit)),
    ]
    if not cap.has_trace:
        totals = totals[:1]
    result.totals = totals
    pages = next(t for t in totals if t.name.startswith("shadow pages created")) if cap.has_trace else None
    if pages is not None and not pages.agrees:
        first = next((e.t_ns for e in cap.events if e.event == "kvm_mmu_get_page"), 0)
        why = (
            "the kernel reloads a vCPU's roots at every guest entry after a zap (kvm_mmu_reload() in "
            "vcpu_enter_guest()), and a non-paging guest's shadow root is 4 PAE pages (l2, gfn 0, "
            "40000, 80000, c0000); the model builds one 4-level root, and only when an access walks "
            "the page tables"
            if result.config["accesses"] == "emulated"
            else "the model's direct map (one 4-level root, tables on demand) is not the kernel's "
            "shadow of the guest's paging mode"
        )
        result.disagreements.append(
            Disagreement(first, f"shadow pages created: kernel {pages.kernel}, model {pages.model}", why)
        )
