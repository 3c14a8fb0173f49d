"""SPTE bit layouts as data: MMIO SPTEs of the 2013, 2014 and modern kernels, and RAM SPTEs.

Design. The kernel keeps the layout in ``arch/x86/kvm/mmu/spte.h`` as a handful of shift and mask
constants; the three eras differ only in where the generation's bits live and which bit of it is
dropped.  Here a layout is a frozen value (:class:`GenerationLayout`) and the MMIO marker is another
(:class:`MmioMask`, derived for EPT or for shadow paging/NPT from MAXPHYADDR), combined in a
:class:`MmioSpteCodec` that encodes and decodes.  Tests can then check every layout with one
property instead of one test per constant.

Facts (``../shared/design/kvm-mmio-generation.md`` section 2, and the kernel sources it cites):

* 2013 (3.11): 19-bit generation; gen[0:9) at SPTE bits 3..11, gen[9:19) at 52..61
  (``MMIO_SPTE_GEN_LOW_SHIFT 3``, ``MMIO_SPTE_GEN_HIGH_SHIFT 52``, ``MMIO_GEN_LOW_SHIFT 9``).
* 2014 (4.x, "fix potentially corrupt mmio cache"): 20-bit generation whose bit 0 is not stored;
  gen[1:10) at 3..11 and gen[10:20) at 52..61, so an odd ("update in progress") generation can never
  match a decoded SPTE generation (whose bit 0 reads as 0).
* modern: 19 bits; gen[0:8) at 3..10 (bit 11 became ``SPTE_MMU_PRESENT_MASK``), gen[8:19) at 52..62.

MMIO masks: EPT after 2013 is ``(0x3 << 62) | 0x6`` (W|X without R: an EPT misconfiguration) used as
both mask and value; modern EPT compares ``spte & (RWX | SUPPRESS_VE)`` against ``0x6`` and stores no
access bits.  Shadow paging/NPT in 2013 sets the reserved physical-address bits MAXPHYADDR..51, bits
62-63 and the present bit (``kvm_set_mmio_spte_mask``); modern kernels use bit 51 and present.  With
MAXPHYADDR 52 there is no reserved bit and MMIO caching is off.  The L1TF relocation of high gfn bits
(``shadow_nonpresent_or_rsvd_mask``) is not modelled: it moves bits, it does not change what matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
SPTES_PER_PAGE: Final = 512
#: gfn field of an SPTE: bits 12..51 (``PT64_BASE_ADDR_MASK``).
GFN_FIELD_BITS: Final = 40
GFN_FIELD_MASK: Final = (1 << GFN_FIELD_BITS) - 1

# Access bits, as the kernel's ACC_* (ACC_WRITE_MASK = PT_WRITABLE_MASK, ACC_USER_MASK = PT_USER_MASK).
ACC_EXEC: Final = 1
ACC_WRITE: Final = 2
ACC_USER: Final = 4
ACC_ALL: Final = ACC_EXEC | ACC_WRITE | ACC_USER

# RAM (shadow-present) SPTE bits. Bits 0..2 are R/W/X for EPT and P/W/U for shadow paging: the model
# uses the same positions for both, which is exactly why the MMIO markers had to differ.
SPTE_PRESENT: Final = 1 << 0
SPTE_WRITABLE: Final = 1 << 1
SPTE_EXEC_OR_USER: Final = 1 << 2
SPTE_LARGE: Final = 1 << 7  # PT_PAGE_SIZE_MASK: a 2 MiB leaf at level 2
SPTE_MMU_PRESENT: Final = 1 << 11  # modern SPTE_MMU_PRESENT_MASK
PFN_MASK: Final = GFN_FIELD_MASK << PAGE_SHIFT


def rsvd_bits(start: int, end: int) -> int:
    """Bits start..end inclusive set, as the kernel's ``rsvd_bits()`` (empty when end < start)."""
    if end < start:
        return 0
    return ((1 << (end - start + 1)) - 1) << start


@dataclass(frozen=True, slots=True)
class GenerationLayout:
    """Where an era stores the MMIO generation inside a 64-bit SPTE.

    ``gen_bits`` is the width of the generation the kernel keeps (``MMIO_GEN_MASK``);
    ``dropped_low_bits`` low bits of it are not stored (1 in the 2014 layout).  The stored bits are
    split in two runs: the low run at SPTE bits ``low_start..low_end`` and the high run at
    ``high_start..high_end`` (inclusive, as the modern ``MMIO_SPTE_GEN_*_START/END``).
    """

    name: str
    gen_bits: int
    dropped_low_bits: int
    low_start: int
    low_end: int
    high_start: int
    high_end: int
    mmu_present_bit: bool  # whether RAM SPTEs carry SPTE_MMU_PRESENT (bit 11)
    # Derived once (decode runs on every MMIO fast-path fault).
    low_len: int = field(init=False, repr=False, compare=False)
    high_len: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stored = (self.low_end - self.low_start + 1) + (self.high_end - self.high_start + 1)
        if stored != self.gen_bits - self.dropped_low_bits:
            raise ValueError(f"layout {self.name}: {stored} stored bits for a "
                             f"{self.gen_bits}-bit generation less {self.dropped_low_bits}")
        object.__setattr__(self, "low_len", self.low_end - self.low_start + 1)
        object.__setattr__(self, "high_len", self.high_end - self.high_start + 1)

    @property
    def gen_mask(self) -> int:
        """``MMIO_GEN_MASK``: the generation bits the kernel compares."""
        return (1 << self.gen_bits) - 1

    @property
    def spte_gen_mask(self) -> int:
        """The SPTE bits the generation occupies (``MMIO_SPTE_GEN_MASK`` in SPTE space)."""
        return rsvd_bits(self.low_start, self.low_end) | rsvd_bits(self.high_start, self.high_end)

    def encode(self, gen: int) -> int:
        """SPTE bits for generation ``gen`` (``generation_mmio_spte_mask()``)."""
        g = (gen & self.gen_mask) >> self.dropped_low_bits
        low = g & ((1 << self.low_len) - 1)
        return (low << self.low_start) | ((g >> self.low_len) << self.high_start)

    def decode(self, spte: int) -> int:
        """The generation stored in ``spte``, dropped bits read as 0 (``get_mmio_spte_generation``)."""
        low = (spte >> self.low_start) & ((1 << self.low_len) - 1)
        high = (spte >> self.high_start) & ((1 << self.high_len) - 1)
        return ((high << self.low_len) | low) << self.dropped_low_bits


LAYOUT_2013: Final = GenerationLayout("2013", 19, 0, 3, 11, 52, 61, mmu_present_bit=False)
LAYOUT_2014: Final = GenerationLayout("2014", 20, 1, 3, 11, 52, 61, mmu_present_bit=False)
LAYOUT_MODERN: Final = GenerationLayout("modern", 19, 0, 3, 10, 52, 62, mmu_present_bit=True)
LAYOUTS: Final[dict[str, GenerationLayout]] = {
    layout.name: layout for layout in (LAYOUT_2013, LAYOUT_2014, LAYOUT_MODERN)
}


@dataclass(frozen=True, slots=True)
class MmioMask:
    """How an MMIO SPTE is recognised: ``(spte & mask) == value`` (``is_mmio_spte``).

    ``access_mask`` is the access bits the SPTE stores (``shadow_mmio_access_mask``); bits that the
    marker itself occupies are absorbed by it and decode as nothing.  ``caching`` is false when no
    marker exists (MAXPHYADDR 52) or when ``kvm.mmio_caching=0``.
    """

    name: str
    mask: int
    value: int
    access_mask: int
    caching: bool = True

    @property
    def stored_access_mask(self) -> int:
        return self.access_mask & ~self.mask


def ept_mmio_mask(era: str) -> MmioMask:
    """EPT misconfiguration marker: ``ept_set_mmio_spte_mask`` (2013) / ``VMX_EPT_MISCONFIG_WX_VALUE``."""
    if era == "modern":
        return MmioMask("ept", mask=0x7 | (1 << 63), value=0x6, access_mask=0)
    marker = (0x3 << 62) | 0x6
    return MmioMask("ept", mask=marker, value=marker, access_mask=ACC_WRITE | ACC_USER)


def shadow_mmio_mask(era: str, maxphyaddr: int) -> MmioMask:
    """Reserved-bit marker for shadow paging and NPT (``kvm_set_mmio_spte_mask``)."""
    if not 32 <= maxphyaddr <= 52:
        raise ValueError(f"MAXPHYADDR must be 32..52, not {maxphyaddr}")
    caching = maxphyaddr < 52
    if era == "modern":
        mask = ((1 << 51) | SPTE_PRESENT) if caching else 0
        return MmioMask("shadow", mask, mask, ACC_WRITE | ACC_USER, caching)
    mask = rsvd_bits(maxphyaddr, 51) | (0x3 << 62) | SPTE_PRESENT
    if not caching:
        mask &= ~SPTE_PRESENT  # no reserved bit: the SPTE is merely not-present, faults go slow
    return MmioMask("shadow", mask, mask, ACC_WRITE | ACC_USER, caching)


@dataclass(frozen=True, slots=True)
class MmioSpteCodec:
    """Encoder and decoder of MMIO SPTEs for one layout and one marker (``make_mmio_spte`` etc.)."""

    layout: GenerationLayout
    marker: MmioMask
    # Derived once: the stored access bits, and what decoding strips before reading the gfn.
    access_mask: int = field(init=False, repr=False, compare=False)
    strip_mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "access_mask", self.marker.stored_access_mask)
        object.__setattr__(self, "strip_mask", self.marker.mask | self.layout.spte_gen_mask)

    def encode(self, gfn: int, access: int, gen: int) -> int:
        """``mark_mmio_spte``: marker | stored access | gfn << 12 | generation bits."""
        return (self.marker.value | (access & self.access_mask)
                | ((gfn & GFN_FIELD_MASK) << PAGE_SHIFT) | self.layout.encode(gen))

    def is_mmio(self, spte: int) -> bool:
        return self.marker.caching and (spte & self.marker.mask) == self.marker.value

    def gfn(self, spte: int) -> int:
        return ((spte & ~self.strip_mask) >> PAGE_SHIFT) & GFN_FIELD_MASK

    def access(self, spte: int) -> int:
        return spte & self.access_mask

    def generation(self, spte: int) -> int:
        return self.layout.decode(spte)


def make_ram_spte(pfn: int, writable: bool, large: bool, layout: GenerationLayout) -> int:
    """A shadow-present leaf SPTE mapping host frame ``pfn`` (``make_spte``)."""
    spte = SPTE_PRESENT | SPTE_EXEC_OR_USER | (pfn << PAGE_SHIFT)
    if writable:
        spte |= SPTE_WRITABLE
    if large:
        spte |= SPTE_LARGE
    if layout.mmu_present_bit:
        spte |= SPTE_MMU_PRESENT
    return spte


def make_nonleaf_spte(child_hpa: int, layout: GenerationLayout) -> int:
    """A non-leaf SPTE pointing at a child shadow page (``make_nonleaf_spte``)."""
    spte = SPTE_PRESENT | SPTE_WRITABLE | SPTE_EXEC_OR_USER | child_hpa
    if layout.mmu_present_bit:
        spte |= SPTE_MMU_PRESENT
    return spte


def spte_pfn(spte: int) -> int:
    return (spte & PFN_MASK) >> PAGE_SHIFT
