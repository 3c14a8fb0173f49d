"""SPTE layouts: round trips over the whole generation range, disjoint fields, pinned encodings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmmu.spte import (
    ACC_USER,
    ACC_WRITE,
    GFN_FIELD_MASK,
    LAYOUT_2013,
    LAYOUT_2014,
    LAYOUT_MODERN,
    LAYOUTS,
    SPTE_LARGE,
    SPTE_MMU_PRESENT,
    SPTE_WRITABLE,
    GenerationLayout,
    MmioSpteCodec,
    ept_mmio_mask,
    make_ram_spte,
    rsvd_bits,
    shadow_mmio_mask,
    spte_pfn,
)


def marker_era(layout: GenerationLayout) -> str:
    return "modern" if layout is LAYOUT_MODERN else "2013"


def codecs(maxphyaddr: int = 46) -> list[MmioSpteCodec]:
    out = []
    for layout in LAYOUTS.values():
        era = marker_era(layout)
        out.append(MmioSpteCodec(layout, ept_mmio_mask(era)))
        out.append(MmioSpteCodec(layout, shadow_mmio_mask(era, maxphyaddr)))
    return out


ALL_CODECS = codecs()


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: f"{c.layout.name}-{c.marker.name}")
@given(gen=st.integers(0, (1 << 20) - 1), gfn=st.integers(0, (1 << 34) - 1),
       access=st.integers(0, 7))
def test_every_field_round_trips_for_random_gfns_and_generations(
        codec: MmioSpteCodec, gen: int, gfn: int, access: int) -> None:
    spte = codec.encode(gfn, access, gen)
    assert codec.is_mmio(spte)
    assert codec.gfn(spte) == gfn
    assert codec.access(spte) == access & codec.marker.stored_access_mask
    g = gen & codec.layout.gen_mask
    dropped = (1 << codec.layout.dropped_low_bits) - 1
    assert codec.generation(spte) == g & ~dropped


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=lambda layout: layout.name)
def test_the_whole_generation_range_round_trips(layout: GenerationLayout) -> None:
    dropped = (1 << layout.dropped_low_bits) - 1
    for gen in range(layout.gen_mask + 1):
        assert layout.decode(layout.encode(gen)) == gen & ~dropped


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: f"{c.layout.name}-{c.marker.name}")
def test_generation_marker_access_and_gfn_fields_never_overlap(codec: MmioSpteCodec) -> None:
    gen_bits = codec.layout.spte_gen_mask
    marker = codec.marker.mask
    access = codec.marker.stored_access_mask
    gfn_bits = (GFN_FIELD_MASK << 12) & ~rsvd_bits(46, 51)  # gfns below MAXPHYADDR 46
    fields = [gen_bits, marker, access, gfn_bits]
    for i, a in enumerate(fields):
        for b in fields[i + 1:]:
            assert a & b == 0, f"{a:#x} overlaps {b:#x}"
    if codec.layout.mmu_present_bit:
        assert not any(f & SPTE_MMU_PRESENT for f in fields)


def test_layouts_place_generation_bits_where_the_kernel_constants_say() -> None:
    assert LAYOUT_2013.spte_gen_mask == rsvd_bits(3, 11) | rsvd_bits(52, 61)
    assert LAYOUT_2014.spte_gen_mask == rsvd_bits(3, 11) | rsvd_bits(52, 61)
    assert LAYOUT_MODERN.spte_gen_mask == rsvd_bits(3, 10) | rsvd_bits(52, 62)
    assert (LAYOUT_2013.gen_mask, LAYOUT_2014.gen_mask, LAYOUT_MODERN.gen_mask) == \
        ((1 << 19) - 1, (1 << 20) - 1, (1 << 19) - 1)


def test_pinned_encodings_computed_by_hand() -> None:
    # 2013, EPT: (3<<62)|6 | all 19 gen bits (0xff8 and 0x3ff<<52) | gfn 0x12345 << 12.
    ept13 = MmioSpteCodec(LAYOUT_2013, ept_mmio_mask("2013"))
    assert ept13.encode(0x12345, ACC_WRITE | ACC_USER, 0x7FFFF) == 0xFFF0_0000_1234_5FFE
    # Modern EPT: value 0x6, gen 0x101 -> bit 3 and bit 52, gfn 1, no access bits stored.
    eptm = MmioSpteCodec(LAYOUT_MODERN, ept_mmio_mask("modern"))
    assert eptm.encode(0x1, ACC_WRITE, 0x101) == 0x0010_0000_0000_100E
    # 2014: an odd generation loses bit 0: gen 3 is stored as 1 at bit 3 and decodes as 2.
    ept14 = MmioSpteCodec(LAYOUT_2014, ept_mmio_mask("2013"))
    assert ept14.encode(0, 0, 3) == 0xC000_0000_0000_000E
    assert ept14.generation(0xC000_0000_0000_000E) == 2
    # 2013 shadow paging, MAXPHYADDR 46: bits 46..51, 62, 63 and present; W|U stored.
    sh13 = MmioSpteCodec(LAYOUT_2013, shadow_mmio_mask("2013", 46))
    assert sh13.marker.mask == 0xC00F_C000_0000_0001
    assert sh13.encode(0x10, ACC_WRITE | ACC_USER, 0) == 0xC00F_C000_0001_0007


def test_ept_access_bits_are_absorbed_by_the_2013_marker() -> None:
    ept13 = MmioSpteCodec(LAYOUT_2013, ept_mmio_mask("2013"))
    assert ept13.access(ept13.encode(5, ACC_WRITE | ACC_USER, 0)) == 0


def test_maxphyaddr_52_leaves_no_reserved_bit_and_turns_caching_off() -> None:
    assert shadow_mmio_mask("2013", 52).caching is False
    assert shadow_mmio_mask("modern", 52).caching is False
    assert shadow_mmio_mask("modern", 46).mask == (1 << 51) | 1
    codec = MmioSpteCodec(LAYOUT_MODERN, shadow_mmio_mask("modern", 52))
    assert not codec.is_mmio(codec.encode(1, 0, 0))


def test_maxphyaddr_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="MAXPHYADDR"):
        shadow_mmio_mask("2013", 53)


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: f"{c.layout.name}-{c.marker.name}")
@given(pfn=st.integers(0, (1 << 34) - 1), writable=st.booleans(), large=st.booleans())
def test_ram_sptes_are_never_mistaken_for_mmio(codec: MmioSpteCodec, pfn: int, writable: bool,
                                               large: bool) -> None:
    spte = make_ram_spte(pfn, writable, large, codec.layout)
    assert not codec.is_mmio(spte)
    assert spte_pfn(spte) == pfn
    assert bool(spte & SPTE_WRITABLE) == writable
    assert bool(spte & SPTE_LARGE) == large


def test_a_layout_whose_bits_do_not_add_up_is_rejected() -> None:
    with pytest.raises(ValueError, match="stored bits"):
        GenerationLayout("bad", 19, 0, 3, 11, 52, 60, mmu_present_bit=False)
