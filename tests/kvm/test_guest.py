"""kvmmu.kvm.guest: page tables, CPL3 long-mode state and the mailbox program."""

from __future__ import annotations

import struct

import pytest

from kvmmu.kvm.guest import (
    DOORBELL_DONE,
    DOORBELL_IDLE,
    HARNESS_GPA,
    GuestLayout,
    Op,
    build_program,
    program_listing,
)


def _walk(tables: dict[int, bytes], cr3: int, gva: int) -> int:
    """A 4-level walk over the harness's page-table pages (offsets into the harness slot)."""
    flat = bytearray(max(off + len(d) for off, d in tables.items()))
    for off, d in tables.items():
        flat[off : off + len(d)] = d
    table = cr3
    for shift in (39, 30, 21, 12):
        idx = (gva >> shift) & 511
        (entry,) = struct.unpack_from("<Q", flat, table - HARNESS_GPA + idx * 8)
        assert entry & 0b111 == 0b111, f"level {shift}: not present/writable/user"
        table = entry & ~0xFFF
    return table | (gva & 0xFFF)


def test_window_harness_and_doorbell_are_identity_mapped() -> None:
    layout = GuestLayout(window=8 << 20, nr_vcpus=2)
    tables = layout.page_tables()
    pml4 = HARNESS_GPA  # cr3, checked in test_cpl3_long_mode_state
    for gva in (0, 0x1234, (8 << 20) - 8, layout.code_gpa, DOORBELL_DONE, DOORBELL_IDLE):
        assert _walk(tables, pml4, gva) == gva
    assert layout.pte_offset(0x5000) + 8 == layout.pte_offset(0x6000)
    assert layout.pristine_pte(0x5123) == struct.pack("<Q", 0x5007)


def test_cpl3_long_mode_state() -> None:
    from kvmmu.kvm.bindings import KvmSregs

    layout = GuestLayout()
    s = layout.sregs(KvmSregs())
    assert s.cs.dpl == 3 and s.cs.l == 1 and s.ss.dpl == 3 and s.cs.selector & 3 == 3
    assert s.efer & 0x500 == 0x500 and s.cr0 & 0x80000001 == 0x80000001 and s.cr4 & 0x20
    assert s.cr3 == HARNESS_GPA and s.idt.limit == 0  # any exception: triple fault
    regs = layout.regs(1)
    assert regs.rip == layout.code_gpa and regs.rsi == HARNESS_GPA + layout.mailbox_offset(1)


def test_program_is_readable_and_has_every_access() -> None:
    text = "\n".join(program_listing(GuestLayout()))
    for needle in (
        "pause",
        "movzx eax,byte [rbx]",
        "mov [rbx],ax",
        "mov [rdi+8],rax",
        "mov [rdi],rax",
    ):
        assert needle in text
    assert len(build_program().instructions) > 40
    assert Op.access(True, 4) == Op.WRITE4 and Op.access(False, 1) == Op.READ1


def test_layout_limits() -> None:
    with pytest.raises(ValueError, match="multiple of 2 MiB"):
        GuestLayout(window=3 << 20)
    with pytest.raises(ValueError, match="outside the window"):
        GuestLayout(window=2 << 20).pte_offset(2 << 20)
