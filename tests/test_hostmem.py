"""Host memory: sparse words, reads of untouched memory are zero, accesses may cross pages."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.hostmem import DENSE_AT, PAGE_SIZE, WORD, HostMemory


def test_untouched_memory_reads_zero_and_allocates_nothing() -> None:
    mem = HostMemory()
    assert mem.read(0x7F00_0000_0000, 16) == bytes(16) and mem.read_int(0x1000, 8) == 0
    assert mem.read_int(0xFFE, 4) == 0  # across a page boundary
    assert mem.pages == {} and mem.words_stored() == 0


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


def test_a_word_written_per_page_stores_one_word_per_page() -> None:
    mem = HostMemory()
    for page in range(1000):
        mem.write_int(page * PAGE_SIZE + 8, 8, page + 1)
    assert mem.words_stored() == 1000
    assert all(isinstance(p, dict) and len(p) == 1 for p in mem.pages.values())


def test_a_page_written_all_over_becomes_one_dense_buffer_with_the_same_contents() -> None:
    mem = HostMemory()
    for i in range(DENSE_AT):
        mem.write_int(0x5000 + i * WORD, WORD, i + 1)
    assert isinstance(mem.pages[5], bytearray) and mem.words_stored() == PAGE_SIZE // WORD
    assert [mem.read_int(0x5000 + i * WORD, WORD) for i in range(DENSE_AT)] == \
        list(range(1, DENSE_AT + 1))
    mem.write_int(0x5FFC, 4, 0xDEADBEEF)  # stores into the dense page
    assert mem.read_int(0x5FFC, 4) == 0xDEADBEEF and mem.read_int(0x5FF8, 4) == 0


def test_the_key_depends_on_contents_only_not_on_how_pages_are_stored() -> None:
    sparse, dense = HostMemory(), HostMemory()
    sparse.write_int(0x2010, 4, 7)
    sparse.write_int(0x3000, 8, 0)  # a zero written changes no byte
    dense.write(0x2000, bytes(PAGE_SIZE))
    dense.write_int(0x2010, 4, 7)
    assert isinstance(dense.pages[2], bytearray)
    assert sparse.key() == dense.key() == ((0x2010 // WORD, 7),)


accesses = st.lists(st.tuples(
    st.booleans(),  # write?
    st.integers(0, 3 * PAGE_SIZE - 1),  # offset in a three-page window
    st.sampled_from([1, 2, 4, 8, 3, 16]),  # access size (odd sizes take the byte-wise path)
    st.integers(0, (1 << 128) - 1),
), max_size=200)


@settings(max_examples=150, deadline=None)
@given(ops=accesses)
def test_any_mix_of_loads_and_stores_behaves_like_a_flat_byte_array(
        ops: list[tuple[bool, int, int, int]]) -> None:
    base = 0x7F00_0000_0000
    mem, flat = HostMemory(), bytearray(4 * PAGE_SIZE)
    for write, off, size, value in ops:
        if write:
            mem.write_int(base + off, size, value)
            flat[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        else:
            assert mem.read_int(base + off, size) == int.from_bytes(flat[off:off + size], "little")
    assert mem.read(base, len(flat)) == bytes(flat)


def test_memory_never_written_or_written_only_zeros_has_the_empty_key() -> None:
    mem = HostMemory()
    assert mem.key() == ()
    mem.write_int(0x5000, 8, 0)
    mem.write(0x9000, bytes(2 * PAGE_SIZE))
    assert mem.pages and mem.key() == ()
    mem.write_int(0x9008, 1, 1)
    assert mem.key() == ((0x9008 // WORD, 1),)
