"""kvmmu.kvm.asm: labels resolve to the right targets and encodings decode back to the source."""

from __future__ import annotations

import pytest

from kvmmu.kvm.asm import Asm, R, listing


def test_loop_with_labels_round_trips() -> None:
    a = Asm()
    top, out = a.label(), a.label()
    a.bind(top)
    a.mov_r64_m(R.RAX, R.RSI, 0x18)
    a.test_r64_r64(R.RAX, R.RAX)
    a.jz(out)
    a.dec_r64(R.RAX)
    a.jmp(top)
    a.bind(out)
    a.mov_m_r64(R.RDI, 8, R.RAX)
    code = a.encode(0x40005000)
    lines = listing(code, 0x40005000)
    assert lines[0] == "0x40005000: mov rax,[rsi+18h]"
    assert "je short 000000004000500Eh" in lines[2]  # the label bound to the final store
    assert lines[4].endswith("jmp short 0000000040005000h")
    assert lines[5] == "0x4000500e: mov [rdi+8],rax"


@pytest.mark.parametrize(
    ("size", "load", "store"),
    [
        (1, "movzx eax,byte [rbx]", "mov [rbx],al"),
        (2, "movzx eax,word [rbx]", "mov [rbx],ax"),
        (4, "mov eax,[rbx]", "mov [rbx],eax"),
        (8, "mov rax,[rbx]", "mov [rbx],rax"),
    ],
)
def test_sized_loads_and_stores(size: int, load: str, store: str) -> None:
    a = Asm()
    a.load(size, R.RAX, R.RBX)
    a.store(size, R.RBX, R.RAX)
    text = [line.split(": ", 1)[1] for line in listing(a.encode(0), 0)]
    assert text == [load, store]


def test_unbound_label_and_bad_size_are_refused() -> None:
    a = Asm()
    with pytest.raises(ValueError, match="size"):
        a.load(3, R.RAX, R.RBX)
    a.bind(a.label())
    with pytest.raises(ValueError, match="label"):
        a.encode(0)
