"""The reference oracle: what every guest access must observe, judged from the memslots alone.

Design. The oracle knows nothing of SPTEs, generations or caches: it reads the memslot snapshots
that were in force while an access ran and decides what the guest may see (RAM at the slot's host
address; MMIO where no slot backs the gfn; an MMIO exit for a write to a READONLY slot).  An access
that overlapped a memslot update may legitimately see either side of it: KVM promises the new
memslots only once ``KVM_SET_USER_MEMORY_REGION`` has returned, so an access that starts while an
update is in flight may still see the state that update began from (before 2013, a stale MMIO
SPTE answered until the walk reached it).  The check accepts any snapshot in force from the
access's start (or the start of the update then in flight) to its end; a plain run has exactly
one.  A slot published as ``KVM_MEMSLOT_INVALID`` allows both its old RAM and MMIO.

:meth:`Oracle.check_state` is the invariant the explorer checks after every step, once no update
is in progress: no MMIO SPTE that would pass ``check_mmio_spte()`` names a gfn a slot now backs, no
RAM SPTE maps the wrong host frame, and no vCPU's MMIO cache would still answer for a backed gfn.
Such a state is wrong even before any access trips over it — the 2014 race leaves exactly one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kvmmu.errors import OracleViolation
from kvmmu.memslots import Memslots
from kvmmu.mmu.context import Kvm
from kvmmu.mmu.faults import AccessKind, Outcome, VcpuArch, match_mmio_gpa
from kvmmu.mmu.invalidation import mmio_generation_valid
from kvmmu.spte import PAGE_SHIFT, SPTE_LARGE, SPTE_PRESENT, SPTE_WRITABLE, spte_pfn

MAX_KEPT = 1000


@dataclass(frozen=True, slots=True)
class Violation:
    """One contradiction between what the model did and what the memslots allow."""

    kind: str  # stale-mmio, stale-ram, wrong-ram, readonly-write, stale-mmio-spte, ...
    vcpu: int | None
    gpa: int
    detail: str

    def __str__(self) -> str:
        who = f"vCPU{self.vcpu} " if self.vcpu is not None else ""
        return f"{self.kind}: {who}gpa {self.gpa:#x}: {self.detail}"


def expected(slots: Memslots, gpa: int, write: bool) -> str:
    """What the memslots allow for an access, as words (for reports)."""
    slot = slots.lookup(gpa >> PAGE_SHIFT)
    if slot is None:
        return "MMIO (no slot)"
    if slot.invalid:
        return f"RAM of slot {slot.id} or MMIO (slot being deleted or moved)"
    if write and slot.readonly:
        return f"an MMIO exit (write to READONLY slot {slot.id})"
    return f"RAM of slot {slot.id} at hva {slot.hva(gpa >> PAGE_SHIFT) | (gpa & 0xFFF):#x}"


def consistent(slots: Memslots, out: Outcome) -> bool:
    """Whether ``out`` is an answer the memslots ``slots`` allow."""
    if out.kind is AccessKind.UNKNOWN:
        return False  # KVM_EXIT_UNKNOWN is never a right answer (RET_MMIO_PF_BUG)
    gfn = out.gpa >> PAGE_SHIFT
    slot = slots.lookup(gfn)
    is_ram = out.kind is AccessKind.RAM
    if slot is None:
        return not is_ram
    want_hva = slot.hva(gfn) | (out.gpa & 0xFFF)
    if slot.invalid:
        return not is_ram or out.hva == want_hva
    if out.write and slot.readonly:
        return not is_ram and out.exit_to_userspace
    return is_ram and out.hva == want_hva


@dataclass(slots=True)
class Oracle:
    """Checks accesses as they complete (``check_access``) and states on demand (``check_state``).

    In strict mode the first violation raises :class:`OracleViolation`; otherwise violations are
    counted and the first ``MAX_KEPT`` kept.
    """

    kvm: Kvm
    strict: bool = False
    count: int = 0
    checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    def record(self, v: Violation) -> None:
        self.count += 1
        if len(self.violations) < MAX_KEPT:
            self.violations.append(v)
        if self.strict:
            raise OracleViolation(str(v))

    def check_access(self, vcpu: VcpuArch, out: Outcome, start_epoch: int) -> None:
        self.checked += 1
        state = self.kvm.memslots
        if start_epoch == state.epoch:
            if consistent(state.active[vcpu.as_id], out):
                return
            candidates = [state.active[vcpu.as_id]]
        else:
            candidates = state.in_force_since(vcpu.as_id, start_epoch)
            if any(consistent(s, out) for s in candidates):
                return
        current = candidates[-1]
        codec = self.kvm.mmu.codec
        if out.kind is AccessKind.UNKNOWN:
            kind, spte = "exit-unknown", " (RET_MMIO_PF_BUG: the SPTE was no longer MMIO)"
        elif out.kind is AccessKind.MMIO:
            kind = "stale-mmio"
            spte = (f"; SPTE {out.spte:#x} with spte-gen {codec.generation(out.spte):#x}"
                    if out.spte and codec.is_mmio(out.spte) else "")
        elif current.lookup(out.gpa >> PAGE_SHIFT) is None:
            kind, spte = "stale-ram", f"; SPTE {out.spte:#x}" if out.spte else ""
        else:
            kind, spte = "wrong-ram", f"; SPTE {out.spte:#x}" if out.spte else ""
        what = "write" if out.write else "read"
        got = (f"{out.kind.value.upper()}" + (f" at hva {out.hva:#x}" if out.hva is not None else "")
               + f" via the {out.path.value} path")
        self.record(Violation(kind, vcpu.id, out.gpa,
                              f"{what} answered {got}; memslots gen {current.generation:#x} "
                              f"allow {expected(current, out.gpa, out.write)}{spte}; "
                              f"vCPU cache gfn {vcpu.mmio_gfn:#x} gen {vcpu.mmio_gen:#x}"))

    def check_state(self, vcpus: Iterable[VcpuArch]) -> list[Violation]:
        """The invariant between steps; returns (and records) the violations found."""
        kvm = self.kvm
        found: list[Violation] = []
        if kvm.memslots.updating:
            return found
        mmu = kvm.mmu
        codec = mmu.codec
        for sp in list(mmu.active.values()):
            if mmu.is_obsolete(sp) or sp.level > 2:
                continue
            slots = kvm.memslots.active[sp.as_id]
            current = slots.generation
            for i, spte in enumerate(sp.spt):
                if not spte:
                    continue
                gfn = sp.gfn_of(i)
                if codec.is_mmio(spte):
                    slot = slots.lookup(gfn)
                    if slot is not None and mmio_generation_valid(kvm, current,
                                                                  codec.generation(spte)):
                        found.append(Violation(
                            "stale-mmio-spte", None, gfn << PAGE_SHIFT,
                            f"MMIO SPTE {spte:#x} (spte-gen {codec.generation(spte):#x}) still "
                            f"matches kvm_gen {current & kvm.gen_mask:#x} but slot {slot.id} "
                            f"backs gfn {gfn:#x}"))
                    continue
                if not spte & SPTE_PRESENT or (sp.level == 2 and not spte & SPTE_LARGE):
                    continue
                slot = slots.lookup(gfn)
                if slot is None or slot.invalid or spte_pfn(spte) != slot.hva(gfn) >> PAGE_SHIFT:
                    found.append(Violation("stale-ram-spte", None, gfn << PAGE_SHIFT,
                                           f"SPTE {spte:#x} maps pfn {spte_pfn(spte):#x}; "
                                           f"the memslots say {expected(slots, gfn << 12, False)}"))
                elif slot.readonly and spte & SPTE_WRITABLE:
                    found.append(Violation("writable-readonly", None, gfn << PAGE_SHIFT,
                                           f"SPTE {spte:#x} is writable in READONLY slot {slot.id}"))
        for v in vcpus:
            if v.mmio_gfn and match_mmio_gpa(kvm, v, v.mmio_gfn):
                slots = kvm.memslots.active[v.as_id]
                slot = slots.lookup(v.mmio_gfn)
                if slot is not None:
                    found.append(Violation(
                        "stale-mmio-cache", v.id, v.mmio_gfn << PAGE_SHIFT,
                        f"the per-vCPU cache (gen {v.mmio_gen:#x}) still answers MMIO for gfn "
                        f"{v.mmio_gfn:#x}, which slot {slot.id} backs (memslots gen "
                        f"{slots.generation:#x})"))
        for violation in found:
            self.record(violation)
        return found
