"""Host memory: sparse pages, reads of untouched memory are zero, accesses may cross pages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvmmu.hostmem import HostMemory


def test_untouched_memory_reads_zero_and_allocates_nothing() -> None:
    mem = HostMemory()
    assert mem.read(0x7F00_0000_0000, 16) == bytes(16) and mem.read_int(0x1000, 8) == 0
    assert mem.pages == {}


@given(addr=st.integers(0, 1 << 40), data=st.binary(min_size=1, max_size=9000))
def test_what_is_written_reads_back_across_page_boundaries(addr: int, data: bytes) -> None:
    mem = HostMemory()
    mem.write(addr, data)
    assert mem.read(addr, len(data)) == data


def test_integers_are_little_endian_and_truncated_to_their_size() -> None:
    mem = HostMemory()
    mem.write_int(0xFFE, 4, 0x1_AABBCCDD)
    assert mem.read(0xFFE, 4) == b"\xdd\xcc\xbb\xaa"
    assert mem.read_int(0xFFE, 4) == 0xAABBCCDD
