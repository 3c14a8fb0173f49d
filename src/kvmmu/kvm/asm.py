"""A tiny label-aware assembler over iced-x86, so guest code is readable source, not a hex blob.

Design. iced-x86's Python API has no code assembler, only ``Instruction.create*`` constructors and
a :class:`iced_x86.BlockEncoder` that relocates branches: an instruction's ``ip`` is its "original
address", and a branch whose target equals another instruction's ``ip`` is re-encoded to point at
that instruction's final address.  Labels are therefore small integers used as fake original
addresses (iced's own Python example does exactly this).  :class:`Asm` wraps that in a handful of
mnemonic-shaped methods for the instructions the guest needs, and :meth:`Asm.listing` decodes the
result back to text so a test or a curious reader can see what runs.

Prior art: iced-x86's README ("Create and encode instructions" with ``create_label``/``add_label``),
and the kernel selftests' habit of writing guest code as C compiled into the test binary: the code
a guest runs should be reviewable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import iced_x86 as ix

Register = ix.Register_
R = ix.Register


@dataclass(frozen=True, slots=True)
class Label:
    """A branch target; its id is the fake original ip given to the instruction it marks."""

    id: int


@dataclass(slots=True)
class Asm:
    """Accumulates 64-bit instructions; :meth:`encode` resolves labels at a base address."""

    instructions: list[ix.Instruction] = field(default_factory=list)
    _next_label: int = 1
    _pending: list[Label] = field(default_factory=list)

    def label(self) -> Label:
        lbl = Label(self._next_label)
        self._next_label += 1
        return lbl

    def bind(self, lbl: Label) -> None:
        """Mark the next emitted instruction as the target of ``lbl``."""
        self._pending.append(lbl)

    def _emit(self, ins: ix.Instruction) -> None:
        if self._pending:
            if len(self._pending) > 1:
                # Two labels on one instruction: emit a NOP for all but the last one.
                for lbl in self._pending[:-1]:
                    nop = ix.Instruction.create(ix.Code.NOPD)
                    nop.ip = lbl.id
                    self.instructions.append(nop)
            ins.ip = self._pending[-1].id
            self._pending.clear()
        self.instructions.append(ins)

    # --- the instructions the guest uses -----------------------------------------------------
    def mov_r64_m(self, dst: Register, base: Register, disp: int = 0) -> None:
        """``mov dst, qword [base+disp]``"""
        self._emit(ix.Instruction.create_reg_mem(ix.Code.MOV_R64_RM64, dst, _mem(base, disp)))

    def mov_m_r64(self, base: Register, disp: int, src: Register) -> None:
        """``mov qword [base+disp], src``"""
        self._emit(ix.Instruction.create_mem_reg(ix.Code.MOV_RM64_R64, _mem(base, disp), src))

    def load(self, size: int, dst64: Register, base: Register) -> None:
        """A zero-extending load of ``size`` bytes from ``[base]`` into ``dst64``."""
        m = _mem(base, 0)
        if size == 1:
            ins = ix.Instruction.create_reg_mem(ix.Code.MOVZX_R32_RM8, _r32(dst64), m)
        elif size == 2:
            ins = ix.Instruction.create_reg_mem(ix.Code.MOVZX_R32_RM16, _r32(dst64), m)
        elif size == 4:
            ins = ix.Instruction.create_reg_mem(ix.Code.MOV_R32_RM32, _r32(dst64), m)
        elif size == 8:
            ins = ix.Instruction.create_reg_mem(ix.Code.MOV_R64_RM64, dst64, m)
        else:
            raise ValueError(f"load size {size}")
        self._emit(ins)

    def store(self, size: int, base: Register, src64: Register) -> None:
        """A store of the low ``size`` bytes of ``src64`` to ``[base]``."""
        m = _mem(base, 0)
        codes = {
            1: (ix.Code.MOV_RM8_R8, _r8(src64)),
            2: (ix.Code.MOV_RM16_R16, _r16(src64)),
            4: (ix.Code.MOV_RM32_R32, _r32(src64)),
            8: (ix.Code.MOV_RM64_R64, src64),
        }
        if size not in codes:
            raise ValueError(f"store size {size}")
        code, reg = codes[size]
        self._emit(ix.Instruction.create_mem_reg(code, m, reg))

    def mov_r64_r64(self, dst: Register, src: Register) -> None:
        self._emit(ix.Instruction.create_reg_reg(ix.Code.MOV_R64_RM64, dst, src))

    def cmp_r64_r64(self, a: Register, b: Register) -> None:
        self._emit(ix.Instruction.create_reg_reg(ix.Code.CMP_R64_RM64, a, b))

    def cmp_r64_imm(self, a: Register, imm: int) -> None:
        self._emit(ix.Instruction.create_reg_i32(ix.Code.CMP_RM64_IMM8, a, imm))

    def test_r64_r64(self, a: Register, b: Register) -> None:
        self._emit(ix.Instruction.create_reg_reg(ix.Code.TEST_RM64_R64, a, b))

    def add_r64_r64(self, a: Register, b: Register) -> None:
        self._emit(ix.Instruction.create_reg_reg(ix.Code.ADD_R64_RM64, a, b))

    def dec_r64(self, a: Register) -> None:
        self._emit(ix.Instruction.create_reg(ix.Code.DEC_RM64, a))

    def pause(self) -> None:
        self._emit(ix.Instruction.create(ix.Code.PAUSE))

    def jmp(self, target: Label) -> None:
        self._emit(ix.Instruction.create_branch(ix.Code.JMP_REL32_64, target.id))

    def je(self, target: Label) -> None:
        self._emit(ix.Instruction.create_branch(ix.Code.JE_REL32_64, target.id))

    def jne(self, target: Label) -> None:
        self._emit(ix.Instruction.create_branch(ix.Code.JNE_REL32_64, target.id))

    def jz(self, target: Label) -> None:
        self.je(target)

    # --- output --------------------------------------------------------------------------------
    def encode(self, base: int) -> bytes:
        """Machine code for the instructions placed at guest-virtual ``base``."""
        if self._pending:
            raise ValueError("a label is bound past the last instruction")
        enc = ix.BlockEncoder(64)
        enc.add_many(self.instructions)
        code: bytes = enc.encode(base)
        return code


def listing(code: bytes, base: int) -> list[str]:
    """Decode ``code`` at ``base`` back to Intel-syntax lines (``address: text``)."""
    fmt = ix.Formatter(ix.FormatterSyntax.NASM)
    return [f"{ins.ip:#x}: {fmt.format(ins)}" for ins in ix.Decoder(64, code, ip=base)]


def _mem(base: Register, disp: int) -> ix.MemoryOperand:
    return ix.MemoryOperand(base, displ=disp, displ_size=1 if disp else 0)


_R64: list[Register] = [
    R.RAX,
    R.RCX,
    R.RDX,
    R.RBX,
    R.RSP,
    R.RBP,
    R.RSI,
    R.RDI,
    R.R8,
    R.R9,
    R.R10,
    R.R11,
    R.R12,
    R.R13,
    R.R14,
    R.R15,
]
_R32: list[Register] = [
    R.EAX,
    R.ECX,
    R.EDX,
    R.EBX,
    R.ESP,
    R.EBP,
    R.ESI,
    R.EDI,
    R.R8D,
    R.R9D,
    R.R10D,
    R.R11D,
    R.R12D,
    R.R13D,
    R.R14D,
    R.R15D,
]
_R16: list[Register] = [
    R.AX,
    R.CX,
    R.DX,
    R.BX,
    R.SP,
    R.BP,
    R.SI,
    R.DI,
    R.R8W,
    R.R9W,
    R.R10W,
    R.R11W,
    R.R12W,
    R.R13W,
    R.R14W,
    R.R15W,
]
_R8: list[Register] = [
    R.AL,
    R.CL,
    R.DL,
    R.BL,
    R.SPL,
    R.BPL,
    R.SIL,
    R.DIL,
    R.R8L,
    R.R9L,
    R.R10L,
    R.R11L,
    R.R12L,
    R.R13L,
    R.R14L,
    R.R15L,
]


def _r32(r64: Register) -> Register:
    return _R32[_R64.index(r64)]


def _r16(r64: Register) -> Register:
    return _R16[_R64.index(r64)]


def _r8(r64: Register) -> Register:
    return _R8[_R64.index(r64)]
