"""The VMM's address space, as far as guest RAM goes: sparse pages addressed by host virtual address.

Design. A memslot's ``userspace_addr`` names host memory; two slots may share it, and a slot that
is deleted and re-created over other backing must show the new contents.  The model keeps host
memory as a dictionary of 4 KiB pages created on first write, so a 1 TiB guest costs nothing until
written and reads of untouched memory return zeros (fresh anonymous memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmmu.spte import PAGE_SHIFT, PAGE_SIZE


@dataclass(slots=True)
class HostMemory:
    """Sparse host memory: ``read``/``write`` of bytes at any host virtual address."""

    pages: dict[int, bytearray] = field(default_factory=dict)

    def write(self, hva: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, off = (hva + pos) >> PAGE_SHIFT, (hva + pos) & (PAGE_SIZE - 1)
            n = min(len(data) - pos, PAGE_SIZE - off)
            buf = self.pages.get(page)
            if buf is None:
                buf = self.pages[page] = bytearray(PAGE_SIZE)
            buf[off:off + n] = data[pos:pos + n]
            pos += n

    def read(self, hva: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            a = hva + len(out)
            page, off = a >> PAGE_SHIFT, a & (PAGE_SIZE - 1)
            k = min(n - len(out), PAGE_SIZE - off)
            buf = self.pages.get(page)
            out += buf[off:off + k] if buf is not None else bytes(k)
        return bytes(out)

    def read_int(self, hva: int, size: int) -> int:
        """A little-endian load of ``size`` bytes (the guest's view of a read)."""
        buf = self.pages.get(hva >> PAGE_SHIFT)
        off = hva & (PAGE_SIZE - 1)
        if off + size <= PAGE_SIZE:
            return 0 if buf is None else int.from_bytes(buf[off:off + size], "little")
        return int.from_bytes(self.read(hva, size), "little")

    def write_int(self, hva: int, size: int, value: int) -> None:
        self.write(hva, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
