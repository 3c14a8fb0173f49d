"""The test guest: 64-bit long mode at CPL3, identity-mapped, driven through a mailbox.

Design. On this host (kvm_pvm, see ``shared/design/real-kvm-here.md``) only 64-bit *user-mode*
guests run natively; anything at CPL0 goes through the instruction emulator, which would hide the
shadow MMU behind an emulator.  So the harness builds the guest's page tables itself, enters long
mode at CPL3 directly with ``KVM_SET_SREGS`` (no boot code), and never takes an exception: the
IDT limit is 0, so any fault becomes a triple fault, i.e. ``KVM_EXIT_SHUTDOWN``.

Guest-physical layout (``gpa == gva`` everywhere, so a scenario names guest-physical addresses):

* ``[0, window)``: the scenario window, mapped with 4 KiB user pages whether or not a memslot
  backs them (an access with no memslot must exit as ``KVM_EXIT_MMIO``, not fault);
* ``[HARNESS_GPA, HARNESS_GPA + harness_size)``: the harness memslot, which scenarios never touch:
  page tables, code, one mailbox per vCPU;
* ``DOORBELL_GPA``: an unbacked, mapped page; a guest store there is an MMIO exit that tells the
  host "step done" (``+0``, the data is the step's result) or "idle, nothing to do" (``+8``).

The program (:func:`build_program`) loops: spin on the mailbox's sequence number for at most
``spin`` iterations (``pause`` in between), ring the *idle* doorbell if nothing arrived; on a new
command perform one access (read or write of 1, 2, 4 or 8 bytes at a gpa), then ring the *done*
doorbell with the value in ``rax``.  With ``spin == 0`` each step is two exits and the vCPU sits
in userspace between steps; with ``spin > 0`` idle vCPUs stay inside ``KVM_RUN`` polling memory,
so memslot updates happen while they run (what the kernel's kick and zap paths are for).

Prior art: kvm-hello-world's ``run_long_mode`` (page tables and segments poked into guest memory,
then KVM_SET_SREGS), the kernel selftests' ``vcpu_init_sregs`` / ``virt_pg_map`` and their
``ucall`` mechanism (a guest reports to the host through an MMIO/PIO exit).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from kvmmu.kvm.asm import Asm, R, listing
from kvmmu.kvm.bindings import PAGE_SIZE, KvmRegs, KvmSegment, KvmSregs

LARGE_PAGE = 2 << 20
#: Where the harness memslot starts (1 GiB): above every scenario window.
HARNESS_GPA = 1 << 30
#: The harness memslot's id: the last one KVM accepts here, far from scenario slot ids.
HARNESS_SLOT = 32763
#: An unbacked page mapped by the guest page tables: stores here are the guest's reports.
DOORBELL_GPA = HARNESS_GPA + LARGE_PAGE - PAGE_SIZE
DOORBELL_DONE = DOORBELL_GPA
DOORBELL_IDLE = DOORBELL_GPA + 8
#: Largest scenario window (its page tables must fit below the doorbell).
MAX_WINDOW = 512 << 20

# Offsets inside the harness memslot.
_PML4, _PDPT, _PD_LOW, _PD_HARNESS, _PT_HARNESS = 0x0000, 0x1000, 0x2000, 0x3000, 0x4000
_CODE = 0x5000
_MAILBOXES = 0x6000
_GDT = 0x7000
_PT_WINDOW = 0x8000
MAILBOX_STRIDE = 0x100

# Page-table entry bits.
_P, _RW, _US = 1 << 0, 1 << 1, 1 << 2
_TABLE = _P | _RW | _US


class MailboxField(IntEnum):
    """Byte offsets of the u64 fields of a vCPU's mailbox."""

    SEQ = 0x00  # the host bumps it to post a command
    OP = 0x08
    GPA = 0x10
    VALUE = 0x18
    SPIN = 0x20  # polling iterations before the idle doorbell
    STRIDE = 0x28  # TOUCH: bytes between two touched addresses


class Op(IntEnum):
    """A mailbox command. Reads and writes by size; HANG spins forever (timeout tests); TOUCH
    reads one byte at ``gpa``, ``gpa + stride``, ... ``value`` times with no exit in between
    (first-touch faults and MMIO exit loops for ``kvmmu calibrate``); TOUCH_WRITE stores one
    byte at each instead, the stride's low byte (first-touch write faults)."""

    READ1, READ2, READ4, READ8 = 0, 1, 2, 3
    WRITE1, WRITE2, WRITE4, WRITE8 = 4, 5, 6, 7
    HANG = 8
    TOUCH = 9
    TOUCH_WRITE = 10

    @staticmethod
    def access(write: bool, size: int) -> Op:
        return Op((4 if write else 0) + {1: 0, 2: 1, 4: 2, 8: 3}[size])


@dataclass(frozen=True, slots=True)
class GuestLayout:
    """The guest-physical map for one VM: scenario window size and number of vCPUs."""

    window: int = 64 << 20
    nr_vcpus: int = 1

    def __post_init__(self) -> None:
        if self.window <= 0 or self.window % LARGE_PAGE or self.window > MAX_WINDOW:
            raise ValueError(f"window {self.window:#x}: a multiple of 2 MiB up to {MAX_WINDOW:#x}")
        if not 1 <= self.nr_vcpus <= PAGE_SIZE // MAILBOX_STRIDE:
            raise ValueError(f"nr_vcpus {self.nr_vcpus}")

    @property
    def harness_size(self) -> int:
        return _PT_WINDOW + (self.window // LARGE_PAGE) * PAGE_SIZE

    @property
    def code_gpa(self) -> int:
        return HARNESS_GPA + _CODE

    def mailbox_offset(self, vcpu: int) -> int:
        """Offset of vCPU ``vcpu``'s mailbox inside the harness memory."""
        return _MAILBOXES + vcpu * MAILBOX_STRIDE

    def page_tables(self) -> dict[int, bytes]:
        """Harness-memory offset -> contents of every page-table page (4-level, 4 KiB leaves)."""
        hg = HARNESS_GPA
        pml4 = struct.pack("<Q", hg + _PDPT | _TABLE)
        # PDPT[0] covers [0, 1 GiB): the window; PDPT[1] covers [1 GiB, 2 GiB): the harness.
        pdpt = struct.pack("<QQ", hg + _PD_LOW | _TABLE, hg + _PD_HARNESS | _TABLE)
        n_pt = self.window // LARGE_PAGE
        pd_low = b"".join(
            struct.pack("<Q", hg + _PT_WINDOW + i * PAGE_SIZE | _TABLE) for i in range(n_pt)
        )
        pd_harness = struct.pack("<Q", hg + _PT_HARNESS | _TABLE)
        pt_harness = b"".join(struct.pack("<Q", hg + i * PAGE_SIZE | _TABLE) for i in range(512))
        window_pts = b"".join(
            self.pristine_pte(i * PAGE_SIZE) for i in range(self.window // PAGE_SIZE)
        )
        return {
            _PML4: pml4,
            _PDPT: pdpt,
            _PD_LOW: pd_low,
            _PD_HARNESS: pd_harness,
            _PT_HARNESS: pt_harness,
            _PT_WINDOW: window_pts,
        }

    def pte_offset(self, gpa: int) -> int:
        """Offset in harness memory of the 4 KiB PTE that maps scenario ``gpa``."""
        if not 0 <= gpa < self.window:
            raise ValueError(f"gpa {gpa:#x} outside the window [0, {self.window:#x})")
        return _PT_WINDOW + (gpa // PAGE_SIZE) * 8

    @staticmethod
    def pristine_pte(gpa: int) -> bytes:
        """The PTE the harness writes for ``gpa``: present, writable, user; A and D clear."""
        return struct.pack("<Q", (gpa & ~(PAGE_SIZE - 1)) | _TABLE)

    def sregs(self, base: KvmSregs) -> KvmSregs:
        """Long mode, paging on, CPL3 code and data segments, IDT limit 0 (faults shut down)."""
        s = base
        code = KvmSegment(
            base=0, limit=0xFFFFFFFF, selector=0x33, type=0xB, present=1, dpl=3, db=0, s=1, l=1, g=1
        )
        data = KvmSegment(
            base=0, limit=0xFFFFFFFF, selector=0x2B, type=0x3, present=1, dpl=3, db=1, s=1, l=0, g=1
        )
        s.cs = code
        s.ss = s.ds = s.es = s.fs = s.gs = data
        # A busy 64-bit TSS and an unusable LDT: what VM entry checks insist on.
        s.tr = KvmSegment(
            base=HARNESS_GPA + _GDT + 0x100, limit=0x67, selector=0x40, type=0xB, present=1, s=0
        )
        s.ldt = KvmSegment(selector=0, type=0x2, present=0, unusable=1)
        s.gdt.base, s.gdt.limit = HARNESS_GPA + _GDT, 0x7F
        s.idt.base, s.idt.limit = 0, 0
        s.cr0 = 0x80050033  # PG | AM | WP | NE | ET | MP | PE
        s.cr3 = HARNESS_GPA + _PML4
        s.cr4 = 0x20  # PAE
        s.efer = 0x500  # LME | LMA
        return s

    def regs(self, vcpu: int) -> KvmRegs:
        """Entry state: rip at the program, rsi = mailbox, rdi = doorbell, r12 = last seq (0)."""
        regs = KvmRegs()
        regs.rip = self.code_gpa
        regs.rsi = HARNESS_GPA + self.mailbox_offset(vcpu)
        regs.rdi = DOORBELL_GPA
        regs.rflags = 0x2
        return regs


def build_program() -> Asm:
    """The mailbox loop every vCPU runs (see the module docstring)."""
    a = Asm()
    wait, spin, idle, have, done, hang = (a.label() for _ in range(6))
    mbox, bell, seq, budget = R.RSI, R.RDI, R.R12, R.R13
    a.bind(wait)
    a.mov_r64_m(budget, mbox, MailboxField.SPIN)
    a.bind(spin)
    a.mov_r64_m(R.RAX, mbox, MailboxField.SEQ)
    a.cmp_r64_r64(R.RAX, seq)
    a.jne(have)
    a.test_r64_r64(budget, budget)
    a.jz(idle)
    a.pause()
    a.dec_r64(budget)
    a.jmp(spin)
    a.bind(idle)
    a.mov_m_r64(bell, DOORBELL_IDLE - DOORBELL_GPA, R.RAX)  # exit: "nothing to do"
    a.jmp(wait)

    a.bind(have)
    a.mov_r64_r64(seq, R.RAX)
    a.mov_r64_m(R.RCX, mbox, MailboxField.OP)
    a.mov_r64_m(R.RBX, mbox, MailboxField.GPA)
    a.mov_r64_m(R.RAX, mbox, MailboxField.VALUE)
    handlers = []
    for op in Op:
        lbl = a.label()
        handlers.append((op, lbl))
        a.cmp_r64_imm(R.RCX, int(op))
        a.je(lbl)
    a.jmp(hang)  # an unknown op: spin so that the host's timeout reports it
    for op, lbl in handlers:
        a.bind(lbl)
        if op == Op.HANG:
            a.jmp(hang)
            continue
        if op in (Op.TOUCH, Op.TOUCH_WRITE):
            # rax = count, rbx = address, r14 = stride: while (rax--) { (u8)[rbx]; rbx += r14; }
            # TOUCH_WRITE stores instead: (u8)[rbx] = dl, the stride's low byte (0 for pages).
            loop = a.label()
            a.mov_r64_m(R.R14, mbox, MailboxField.STRIDE)
            a.test_r64_r64(R.RAX, R.RAX)
            a.jz(done)
            if op == Op.TOUCH_WRITE:
                a.mov_r64_r64(R.RDX, R.R14)
            a.bind(loop)
            if op == Op.TOUCH_WRITE:
                a.store(1, R.RBX, R.RDX)
            else:
                a.load(1, R.RDX, R.RBX)
            a.add_r64_r64(R.RBX, R.R14)
            a.dec_r64(R.RAX)
            a.jne(loop)
            a.jmp(done)
            continue
        size = 1 << (int(op) & 3)
        if int(op) >= Op.WRITE1:
            a.store(size, R.RBX, R.RAX)
        else:
            a.load(size, R.RAX, R.RBX)
        a.jmp(done)
    a.bind(hang)
    a.jmp(hang)
    a.bind(done)
    a.mov_m_r64(bell, 0, R.RAX)  # exit: "done", the data is the result
    a.jmp(wait)
    return a


def program_listing(layout: GuestLayout) -> list[str]:
    """The guest program as disassembled text (what actually runs)."""
    return listing(build_program().encode(layout.code_gpa), layout.code_gpa)
