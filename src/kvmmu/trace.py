"""Tracepoints in the kernel's own text format (``arch/x86/kvm/mmu/mmutrace.h``, ``trace.h``).

Design. People who debug KVM already grep ftrace output; a model that speaks the same lines can be
read with the same tools and compared with ``trace-cmd`` output of the real kernel.  Each event is a
method that formats the kernel's ``TP_printk`` string and appends an ftrace line
``comm-pid [cpu] flags timestamp: event: fields``.  When tracing is off the model holds ``None``
instead of a tracer, so a disabled tracepoint costs one ``is not None`` test, like a static key.

Formats (design note section 5)::

    mark_mmio_spte:          "sptep:%p gfn %llx access %x gen %x"
    handle_mmio_page_fault:  "addr:%llx gfn %llx access %x"
    check_mmio_spte:         "spte %llx kvm_gen %x spte-gen %x valid %d"
    kvm_mmu_zap_all_fast:    "kvm-mmu-valid-gen %u used_pages %x"
    kvm_mmu_get_page:        "<sp> new" | "<sp> existing"
    kvm_mmu_prepare_zap_page:"<sp>"
    kvm_mmio:                "mmio %s len %u gpa 0x%llx val 0x%llx"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

ACCESS_STR = ("---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux")


@dataclass(slots=True)
class TraceEvent:
    """One recorded tracepoint: when, on which CPU, which event, and its formatted fields."""

    ts_ns: int
    cpu: int
    event: str
    text: str

    def ftrace_line(self, comm: str = "kvmmu", pid: int = 1) -> str:
        task = f"{comm}-{pid}"
        return (f"{task:>16} [{self.cpu:03d}] ...1. {self.ts_ns // 1000 / 1e6:12.6f}: "
                f"{self.event}: {self.text}")


def _clock_counter() -> Callable[[], int]:
    ticks = [0]

    def clock() -> int:
        ticks[0] += 1000  # one microsecond per event when no simulated clock is attached
        return ticks[0]

    return clock


@dataclass(slots=True)
class Tracer:
    """Records enabled events; ``clock`` gives nanoseconds (simulated time in a timed run).

    ``events`` filters by name (None: all).  ``sink`` receives each ftrace line as it is made.
    """

    clock: Callable[[], int] = field(default_factory=_clock_counter)
    events: frozenset[str] | None = None
    sink: TextIO | None = None
    records: list[TraceEvent] = field(default_factory=list)
    cpu: int = 0

    def emit(self, event: str, text: str, cpu: int | None = None) -> None:
        if self.events is not None and event not in self.events:
            return
        rec = TraceEvent(self.clock(), self.cpu if cpu is None else cpu, event, text)
        self.records.append(rec)
        if self.sink is not None:
            self.sink.write(rec.ftrace_line() + "\n")

    def lines(self) -> list[str]:
        return [r.ftrace_line() for r in self.records]

    # --- the events ----------------------------------------------------------------------
    def mark_mmio_spte(self, cpu: int, sptep: int, gfn: int, access: int, gen: int) -> None:
        self.emit("mark_mmio_spte", f"sptep:{sptep:016x} gfn {gfn:x} access {access:x} gen {gen:x}",
                  cpu)

    def handle_mmio_page_fault(self, cpu: int, addr: int, gfn: int, access: int) -> None:
        self.emit("handle_mmio_page_fault", f"addr:{addr:x} gfn {gfn:x} access {access:x}", cpu)

    def check_mmio_spte(self, cpu: int, spte: int, kvm_gen: int, spte_gen: int,
                        valid: bool) -> None:
        self.emit("check_mmio_spte",
                  f"spte {spte:x} kvm_gen {kvm_gen:x} spte-gen {spte_gen:x} valid {int(valid)}", cpu)

    def kvm_mmu_zap_all_fast(self, cpu: int, mmu_valid_gen: int, used_pages: int) -> None:
        self.emit("kvm_mmu_zap_all_fast",
                  f"kvm-mmu-valid-gen {mmu_valid_gen} used_pages {used_pages:x}", cpu)

    @staticmethod
    def sp_text(mmu_valid_gen: int, gfn: int, level: int, root_count: int,
                invalid: bool = False) -> str:
        """``KVM_MMU_PAGE_PRINTK()`` for a direct page with all access bits."""
        return (f"sp gen {mmu_valid_gen} gfn {gfn:x} l{level} 8-byte q0 direct "
                f"{ACCESS_STR[7]}{' invalid' if invalid else ''} nxe ad root {root_count} sync")

    def kvm_mmu_get_page(self, cpu: int, sp_text: str, created: bool) -> None:
        self.emit("kvm_mmu_get_page", f"{sp_text} {'new' if created else 'existing'}", cpu)

    def kvm_mmu_prepare_zap_page(self, cpu: int, sp_text: str) -> None:
        self.emit("kvm_mmu_prepare_zap_page", sp_text, cpu)

    def kvm_mmio(self, cpu: int, kind: str, size: int, gpa: int, value: int) -> None:
        self.emit("kvm_mmio", f"mmio {kind} len {size} gpa 0x{gpa:x} val 0x{value:x}", cpu)
