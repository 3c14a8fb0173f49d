"""Run one scenario on the model and on the real KVM, and compare what the guest observes.

Design. Both sides are driven by the same list of scenario steps and each step yields one
:class:`Observation` per side, reduced to a canonical string: ``"ok"`` or an errno name for a
memslot request, ``"ram read 0x1234"`` / ``"ram write"`` / ``"mmio read len 4 gpa 0x1000"`` for an
access, the set bits of a dirty log, and at the end a digest of every backing buffer (what the
VMM would find in its memory).  Comparing strings keeps the comparison honest: there is no
tolerance and no side-specific interpretation, and a divergence prints as two readable lines.

What the sides share, so that differences are the MMU's and not the harness's:

* the harness memslot (page tables, code, mailboxes) exists on both sides under the same slot id
  and gpa, so a scenario request that collides with it gets the same EEXIST from both;
* each backing buffer has the same contents (a pattern: u64 at offset ``o`` is ``tag<<48 | o``)
  on both sides; on the model it lives at a fixed fake host address, on the real side at the
  ``mmap``-ed address; requests name buffers, never raw host addresses;
* the guest-physical width the model enforces is *probed* on the real KVM (a slot at the top of
  each candidate width), not assumed: 52 bits here (shadow paging), whatever the host CPU says.

The model runs with the oracle on; its violation count is reported with the result, since an
oracle violation is a model bug even when the guest-visible answers agree.

Prior art: differential testing as in Csmith and in syzkaller's "kvm" descriptions; the per-step
canonical log is the same trick as ``diff``-ing two ``trace-cmd report`` outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from kvmmu import VM, KvmError, Outcome
from kvmmu.kvm.bindings import Cap, Kvm, KvmIoctlError, Vm
from kvmmu.kvm.guest import HARNESS_GPA, HARNESS_SLOT, GuestLayout
from kvmmu.kvm.harness import Access, RealMachine, RealOutcome
from kvmmu.kvm.scenario import (
    AccessSpec,
    DirtyLogStep,
    HostWriteStep,
    MemoryDef,
    ParallelStep,
    Scenario,
    ScenarioError,
    SetStep,
)

#: Fake host addresses of the model's buffers (well below TASK_SIZE_MAX, 4 GiB apart).
MODEL_HVA_BASE = 0x1000_0000_0000
MODEL_HVA_STRIDE = 1 << 32
MODEL_HARNESS_HVA = 0x2000_0000_0000
#: Widest gpa probed, and the narrowest, by :func:`probe_phys_bits`.
_PROBE_BITS = range(57, 31, -1)


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing the guest or the VMM observed at one step."""

    label: str  # "step 3", "step 3 vcpu 1", "memory a"
    request: str  # what was asked, for people
    result: str  # the canonical answer compared between the sides


@dataclass(frozen=True, slots=True)
class DiffResult:
    """Both sides' observations and where they first differ (``None``: they agree)."""

    scenario: Scenario
    model: tuple[Observation, ...]
    real: tuple[Observation, ...]
    divergence: int | None
    oracle_violations: int
    phys_bits: int

    @property
    def agree(self) -> bool:
        return self.divergence is None and self.oracle_violations == 0

    def report(self, context: int = 8) -> str:
        """Agreement in one line, or the first divergence with the steps leading to it."""
        name = self.scenario.scenario.name
        if self.divergence is None:
            head = f"{name}: model and real KVM agree on all {len(self.real)} observations"
            if self.oracle_violations:
                head += f", but the model's oracle reported {self.oracle_violations} violation(s)"
            return head
        i = self.divergence
        lines = [f"{name}: first divergence at observation {i} ({self.real[i].label}):"]
        lines.append("  leading steps (both sides agreed):")
        for o in self.real[max(0, i - context) : i]:
            lines.append(f"    {o.label:<16} {o.request:<44} -> {o.result}")
        lines.append(f"  {self.real[i].label}: {self.real[i].request}")
        lines.append(f"    real KVM: {self.real[i].result}")
        lines.append(f"    model   : {self.model[i].result}")
        return "\n".join(lines)


def pattern(tag: int, size: int) -> bytes:
    """A buffer's initial contents: u64 at offset ``o`` holds ``tag << 48 | o`` (distinct values)."""
    return ((np.arange(size // 8, dtype=np.uint64) * np.uint64(8)) | np.uint64(tag << 48)).tobytes()


def probe_phys_bits(vm: Vm) -> int:
    """The guest-physical width KVM enforces on memslots (``kvm_mmu_max_gfn``), probed.

    Creates (then deletes) a 4 KiB slot ending at ``2^b`` for ``b`` from 57 down; the first that
    KVM accepts gives the width.  Uses the last slot id so as to disturb nothing else.
    """
    slot = vm.check_extension(Cap.NR_MEMSLOTS) - 1
    for bits in _PROBE_BITS:
        try:
            vm.set_user_memory_region(slot, 0, (1 << bits) - 4096, 4096, 0x10000)
        except KvmIoctlError as exc:
            if exc.errno_name != "EINVAL":
                raise
            continue
        vm.set_user_memory_region(slot, 0, (1 << bits) - 4096, 0, 0x10000)
        return bits
    raise RuntimeError("no guest-physical width accepted a memslot")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the real KVM here allows, read once per run."""

    phys_bits: int
    nr_vcpus: int
    nr_memslots: int


def host_facts(kvm_path: str = "/dev/kvm") -> HostFacts:
    with Kvm(kvm_path) as kvm, kvm.create_vm() as vm:
        return HostFacts(
            probe_phys_bits(vm),
            kvm.check_extension(Cap.NR_VCPUS),
            vm.check_extension(Cap.NR_MEMSLOTS),
        )


def check_against_host(scn: Scenario, facts: HostFacts, path: str = "<scenario>") -> None:
    """The checks that depend on this host (one-line :class:`ScenarioError`)."""
    if scn.scenario.vcpus > facts.nr_vcpus:
        raise ScenarioError(
            f"{path}: scenario.vcpus: {scn.scenario.vcpus} vCPUs, but this host allows "
            f"{facts.nr_vcpus} (KVM_CAP_NR_VCPUS)"
        )


# --- canonical results ---------------------------------------------------------------------


def _describe_access(a: AccessSpec) -> str:
    what = f"write {a.size} @{a.gpa:#x} = {a.value:#x}" if a.write else f"read {a.size} @{a.gpa:#x}"
    return f"vcpu{a.vcpu} {what}"


def _describe_set(s: SetStep) -> str:
    if s.size == 0:
        return f"delete slot {s.slot}" + (f" (gpa {s.gpa:#x})" if s.gpa else "")
    return (
        f"set slot {s.slot} flags {s.flags:#x} gpa {s.gpa:#x} size {s.size:#x} "
        f"<- {s.memory}+{s.offset:#x}"
    )


def model_result(out: Outcome) -> str:
    if out.kind == "mmio":
        if not out.exit_to_userspace:
            return (
                f"mmio in-kernel {'write' if out.write else 'read'} len {out.size} gpa {out.gpa:#x}"
            )
        return f"mmio {'write' if out.write else 'read'} len {out.size} gpa {out.gpa:#x}"
    if out.write:
        return "ram write"
    return f"ram read {out.value:#x}" if out.value is not None else "ram read <none>"


def real_result(a: AccessSpec, out: RealOutcome) -> str:
    if out.mmio:
        return " + ".join(
            f"mmio {'write' if e.is_write else 'read'} len {e.len} gpa {e.gpa:#x}" for e in out.mmio
        )
    if a.write:
        return "ram write"
    return f"ram read {out.value & ((1 << (8 * a.size)) - 1):#x}"


def _bits(bitmap: bytes) -> str:
    n = int.from_bytes(bitmap, "little")
    pages = [i for i in range(n.bit_length()) if n >> i & 1]
    return "dirty pages [" + ", ".join(map(str, pages)) + "]"


def _digest(data: bytes) -> str:
    return f"{len(data):#x} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


# --- the two sides ---------------------------------------------------------------------------


class ModelSide:
    """The scenario's VM on the model (``kvmmu.VM``)."""

    def __init__(self, scn: Scenario, facts: HostFacts, strategy: str = "generation") -> None:
        h = scn.scenario
        self.vm = VM(
            strategy=strategy,
            address_spaces=1,
            oracle=True,
            phys_bits=facts.phys_bits,
            slot_zap="all" if h.zap_all else "slot",
            nr_memslots=facts.nr_memslots,
        )
        self.hva: dict[str, int] = {}
        for i, m in enumerate(scn.memory):
            self.hva[m.name] = MODEL_HVA_BASE + i * MODEL_HVA_STRIDE
            self.vm.host_memory.write(self.hva[m.name], pattern(i + 1, m.size))
        layout = GuestLayout(window=h.window, nr_vcpus=h.vcpus)
        self.vm.set_user_memory_region(
            HARNESS_SLOT, 0, HARNESS_GPA, layout.harness_size, MODEL_HARNESS_HVA
        )
        self.vcpus = [self.vm.create_vcpu() for _ in range(h.vcpus)]

    def set(self, s: SetStep) -> str:
        uaddr = self.hva[s.memory] + s.offset if s.memory is not None else 0
        try:
            self.vm.set_user_memory_region(s.slot, s.flags, s.gpa, s.size, uaddr)
        except KvmError as exc:
            return exc.errno_name
        return "ok"

    def access(self, a: AccessSpec) -> str:
        return model_result(
            self.vcpus[a.vcpu].access(a.gpa, write=a.write, size=a.size, value=a.value)
        )

    def dirty_log(self, d: DirtyLogStep) -> str:
        try:
            return _bits(self.vm.get_dirty_log(d.slot))
        except KvmError as exc:
            return exc.errno_name

    def host_write(self, w: HostWriteStep) -> None:
        self.vm.host_memory.write(self.hva[w.memory] + w.offset, w.value.to_bytes(w.size, "little"))

    def memory(self, m: MemoryDef) -> bytes:
        return self.vm.host_memory.read(self.hva[m.name], m.size)

    @property
    def oracle_violations(self) -> int:
        return int(self.vm.stats["oracle_violations"])


class RealSide:
    """The scenario's VM on ``/dev/kvm`` (a :class:`RealMachine` running the test guest)."""

    def __init__(self, scn: Scenario, timeout: float, kvm_path: str = "/dev/kvm") -> None:
        h = scn.scenario
        self.machine = RealMachine(
            GuestLayout(window=h.window, nr_vcpus=h.vcpus),
            spin=h.spin,
            zap_all_quirk=h.zap_all,
            timeout=timeout,
            kvm_path=kvm_path,
        )
        try:
            self.mem = {}
            for i, m in enumerate(scn.memory):
                self.mem[m.name] = self.machine.allocate(m.size)
                self.mem[m.name].write(0, pattern(i + 1, m.size))
        except BaseException:
            self.machine.close()
            raise

    def set(self, s: SetStep) -> str:
        uaddr = self.mem[s.memory].addr + s.offset if s.memory is not None else 0
        try:
            self.machine.set_user_memory_region(s.slot, s.flags, s.gpa, s.size, uaddr)
        except KvmIoctlError as exc:
            return exc.errno_name
        return "ok"

    def access_many(self, accesses: list[AccessSpec]) -> list[str]:
        outs = self.machine.access_many(
            [Access(a.vcpu, a.gpa, a.write, a.size, a.value) for a in accesses]
        )
        return [real_result(a, o) for a, o in zip(accesses, outs, strict=True)]

    def dirty_log(self, d: DirtyLogStep) -> str:
        try:
            # Scenario slots are at most 16 MiB (4096 pages): a bitmap of that size always fits.
            return _bits(self.machine.get_dirty_log(d.slot, 4096 * 4096))
        except KvmIoctlError as exc:
            return exc.errno_name

    def host_write(self, w: HostWriteStep) -> None:
        self.mem[w.memory].write(w.offset, w.value.to_bytes(w.size, "little"))

    def memory(self, m: MemoryDef) -> bytes:
        return self.mem[m.name].read(0, m.size)

    def close(self) -> None:
        self.machine.close()


@contextmanager
def _real_side(scn: Scenario, timeout: float, kvm_path: str) -> Iterator[RealSide]:
    side = RealSide(scn, timeout, kvm_path)
    try:
        yield side
    finally:
        side.close()


# --- the comparison --------------------------------------------------------------------------


@dataclass(slots=True)
class _Log:
    model: list[Observation] = field(default_factory=list)
    real: list[Observation] = field(default_factory=list)

    def add(self, label: str, request: str, model: str, real: str) -> bool:
        self.model.append(Observation(label, request, model))
        self.real.append(Observation(label, request, real))
        return model == real


def run_diff(
    scn: Scenario,
    facts: HostFacts | None = None,
    *,
    strategy: str = "generation",
    timeout: float = 5.0,
    stop_at_divergence: bool = True,
    kvm_path: str = "/dev/kvm",
    path: str = "<scenario>",
) -> DiffResult:
    """Run ``scn`` on both sides step by step; stop at the first divergence (by default)."""
    facts = facts or host_facts(kvm_path)
    check_against_host(scn, facts, path)
    model = ModelSide(scn, facts, strategy)
    log = _Log()
    first: int | None = None

    def note(ok: bool) -> bool:
        nonlocal first
        if not ok and first is None:
            first = len(log.real) - 1
        return first is not None and stop_at_divergence

    with _real_side(scn, timeout, kvm_path) as real:
        for i, st in enumerate(scn.step):
            label = f"step {i}"
            if isinstance(st, SetStep):
                if note(log.add(label, _describe_set(st), model.set(st), real.set(st))):
                    break
            elif isinstance(st, AccessSpec | ParallelStep):
                accesses = [st] if isinstance(st, AccessSpec) else list(st.accesses)
                real_res = real.access_many(accesses)
                stop = False
                for a, r in zip(accesses, real_res, strict=True):
                    lab = label if isinstance(st, AccessSpec) else f"{label} vcpu {a.vcpu}"
                    stop = note(log.add(lab, _describe_access(a), model.access(a), r)) or stop
                if stop:
                    break
            elif isinstance(st, DirtyLogStep):
                req = f"dirty log of slot {st.slot}"
                if note(log.add(label, req, model.dirty_log(st), real.dirty_log(st))):
                    break
            else:
                model.host_write(st)
                real.host_write(st)
        else:
            for m in scn.memory:
                mb, rb = model.memory(m), real.memory(m)
                res_m, res_r = _digest(mb), _digest(rb)
                if mb != rb:
                    off = next(k for k in range(len(mb)) if mb[k] != rb[k])
                    res_m += f" (first difference at {off:#x}: {mb[off]:#04x})"
                    res_r += f" (first difference at {off:#x}: {rb[off]:#04x})"
                if note(log.add(f"memory {m.name}", f"final contents of {m.name}", res_m, res_r)):
                    break
    return DiffResult(
        scn, tuple(log.model), tuple(log.real), first, model.oracle_violations, facts.phys_bits
    )


@dataclass(frozen=True, slots=True)
class RandomDiffSummary:
    """The outcome of many random scenarios."""

    scenarios: int
    multi_vcpu: int
    observations: int
    failures: tuple[DiffResult, ...]


def run_random(
    n: int,
    seed: int,
    *,
    strategy: str = "generation",
    timeout: float = 5.0,
    on_result: Callable[[int, DiffResult], None] | None = None,
    kvm_path: str = "/dev/kvm",
) -> RandomDiffSummary:
    """Scenarios ``seed``, ``seed+1``, ... ``seed+n-1`` from :func:`random_scenario`."""
    from kvmmu.kvm.scenario import random_scenario

    facts = host_facts(kvm_path)
    failures: list[DiffResult] = []
    multi = observations = 0
    for k in range(n):
        scn = random_scenario(seed + k)
        if scn.scenario.vcpus > facts.nr_vcpus:
            scn = scn.model_copy(update={"scenario": scn.scenario.model_copy(update={"vcpus": 1})})
        res = run_diff(scn, facts, strategy=strategy, timeout=timeout, kvm_path=kvm_path)
        multi += scn.scenario.vcpus > 1
        observations += len(res.real)
        if not res.agree:
            failures.append(res)
        if on_result is not None:
            on_result(seed + k, res)
    return RandomDiffSummary(n, multi, observations, tuple(failures))
