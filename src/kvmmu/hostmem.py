"""The VMM's address space, as far as guest RAM goes: sparse words addressed by host virtual address.

Design. A memslot's ``userspace_addr`` names host memory; two slots may share it, and a slot that
is deleted and re-created over other backing must show the new contents.  Reads of memory never
written return zeros (fresh anonymous memory: the kernel maps the shared zero page on a read fault,
``do_anonymous_page()`` in ``mm/memory.c``), so a 1 TiB guest costs nothing until written.

What is stored is the written 8-byte *words*, per 4 KiB page: the simulated workloads touch a word
or two per page, and a 4 KiB buffer per touched page made guest RAM cost ~1 GiB of host RSS per GiB
"written" (issue 12).  A page is a ``dict`` from word index (0..511) to the word's little-endian
value until it holds :data:`DENSE_AT` words; then it becomes a 4 KiB ``bytearray`` (what a dict of
that many entries costs anyway), so a page written all over never costs more than before.  The same
two-level idea as a sparse radix array (the kernel's xarray of pages, ``lib/xarray.c``) with the
leaves themselves sparse.

An aligned access of 1, 2, 4 or 8 bytes (every guest access the model makes) touches one word and
is one dict probe per level; anything else goes through the byte-wise :meth:`HostMemory.read` and
:meth:`HostMemory.write`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from kvmmu.spte import PAGE_SHIFT, PAGE_SIZE

WORD: Final = 8
WORDS_PER_PAGE: Final = PAGE_SIZE // WORD
#: A sparse page with this many words becomes dense.  A dict of 40 64-bit words costs ~2.6 KiB with
#: its int objects (``sys.getsizeof``, CPython 3.11 64-bit); the next dict resize (at 43 entries)
#: would take it past the 4 KiB buffer.
DENSE_AT: Final = 40
_PAGE_MASK: Final = PAGE_SIZE - 1

#: A page: word index -> value (sparse) or the page's 4 KiB (dense).
Page = dict[int, int] | bytearray


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


@dataclass(slots=True)
class HostMemory:
    """Sparse host memory: ``read``/``write`` of bytes at any host virtual address."""

    pages: dict[int, Page] = field(default_factory=dict)

    # --- the guest's loads and stores (hot: every RAM access of the model) ------------------
    def read_int(self, hva: int, size: int) -> int:
        """A little-endian load of ``size`` bytes (the guest's view of a read)."""
        page = self.pages.get(hva >> PAGE_SHIFT)
        off = hva & _PAGE_MASK
        if page is None:
            if off + size <= PAGE_SIZE:
                return 0
        elif isinstance(page, dict):
            shift = (hva & 7) << 3
            if shift + (size << 3) <= 64:
                return (page.get(off >> 3, 0) >> shift) & _mask(size)
        elif off + size <= PAGE_SIZE:
            return int.from_bytes(page[off:off + size], "little")
        return int.from_bytes(self.read(hva, size), "little")

    def write_int(self, hva: int, size: int, value: int) -> None:
        """A little-endian store of the low ``size`` bytes of ``value``."""
        value &= _mask(size)
        pages = self.pages
        pfn = hva >> PAGE_SHIFT
        page = pages.get(pfn)
        off = hva & _PAGE_MASK
        shift = (hva & 7) << 3
        if shift + (size << 3) <= 64:
            if page is None:
                pages[pfn] = {off >> 3: value << shift}
                return
            if isinstance(page, dict):
                widx = off >> 3
                if size == WORD:
                    page[widx] = value
                else:
                    m = _mask(size) << shift
                    page[widx] = (page.get(widx, 0) & ~m) | (value << shift)
                if len(page) >= DENSE_AT:
                    pages[pfn] = _densify(page)
                return
        if isinstance(page, bytearray) and off + size <= PAGE_SIZE:
            page[off:off + size] = value.to_bytes(size, "little")
            return
        self.write(hva, value.to_bytes(size, "little"))

    # --- byte ranges (loaders, the VMM side of diff runs) -----------------------------------
    def write(self, hva: int, data: bytes) -> None:
        """Store ``data`` at ``hva``; a run of :data:`DENSE_AT` words or more is stored dense."""
        pos = 0
        pages = self.pages
        while pos < len(data):
            a = hva + pos
            pfn, off = a >> PAGE_SHIFT, a & _PAGE_MASK
            n = min(len(data) - pos, PAGE_SIZE - off)
            page = pages.get(pfn)
            if page is None and n < DENSE_AT * WORD:
                page = pages[pfn] = {}
            if isinstance(page, dict) and n < DENSE_AT * WORD:
                # Word by word, each merged into what the page holds.
                end = off + n
                w = off & ~7
                while w < end:
                    lo, hi = max(off, w), min(end, w + WORD)
                    old = page.get(w >> 3, 0).to_bytes(WORD, "little")
                    new = old[:lo - w] + data[pos + lo - off:pos + hi - off] + old[hi - w:]
                    page[w >> 3] = int.from_bytes(new, "little")
                    w += WORD
                if len(page) >= DENSE_AT:
                    pages[pfn] = _densify(page)
            else:
                buf = page if isinstance(page, bytearray) else _densify(page or {})
                pages[pfn] = buf
                buf[off:off + n] = data[pos:pos + n]
            pos += n

    def read(self, hva: int, n: int) -> bytes:
        """``n`` bytes from ``hva``; unwritten bytes are zero."""
        out = bytearray()
        while len(out) < n:
            a = hva + len(out)
            off = a & _PAGE_MASK
            k = min(n - len(out), PAGE_SIZE - off)
            page = self.pages.get(a >> PAGE_SHIFT)
            if page is None:
                out += bytes(k)
            elif isinstance(page, bytearray):
                out += page[off:off + k]
            else:
                first, last = off >> 3, (off + k - 1) >> 3
                words = b"".join(page.get(i, 0).to_bytes(WORD, "little")
                                 for i in range(first, last + 1))
                out += words[off & 7:(off & 7) + k]
        return bytes(out)

    def key(self) -> tuple[tuple[int, int], ...]:
        """A canonical digest of the contents: the non-zero words by address, sorted.

        Independent of how each page happens to be stored and of zeros written over zeros, so two
        schedules that leave the same bytes behind compare equal (the explorer's visited set).
        """
        if not self.pages:
            return ()  # nothing written yet: the explorer asks at every state
        out: list[tuple[int, int]] = []
        for pfn, page in self.pages.items():
            base = pfn * WORDS_PER_PAGE
            if isinstance(page, dict):
                out.extend((base + i, v) for i, v in page.items() if v)
            else:
                for i in range(WORDS_PER_PAGE):
                    v = int.from_bytes(page[i * WORD:(i + 1) * WORD], "little")
                    if v:
                        out.append((base + i, v))
        out.sort()
        return tuple(out)

    def words_stored(self) -> int:
        """How many words the memory holds (dense pages count all 512): a footprint measure."""
        return sum(len(p) if isinstance(p, dict) else WORDS_PER_PAGE for p in self.pages.values())


def _densify(words: dict[int, int]) -> bytearray:
    buf = bytearray(PAGE_SIZE)
    for i, v in words.items():
        buf[i * WORD:(i + 1) * WORD] = v.to_bytes(WORD, "little")
    return buf
