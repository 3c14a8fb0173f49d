"""The MMIO bus and device models: where emulated MMIO accesses go.

Design. KVM hands an emulated MMIO access first to the in-kernel devices registered on
``KVM_MMIO_BUS`` (``kvm_io_bus_write``/``read``: ioeventfd, the in-kernel APIC, coalesced MMIO);
an access nobody claims becomes ``KVM_EXIT_MMIO`` for the VMM.  The model keeps the same split: a
device claims a gpa range on :class:`MmioBus`; :meth:`MmioBus.dispatch` returns the value of a
claimed access and ``None`` for an exit to userspace.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Protocol


class MmioDevice(Protocol):
    """What a device model answers: reads return a value, writes return nothing."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(slots=True)
class RegisterBank:
    """A bank of registers that read back what was last written (a doorbell, a BAR, a scratch)."""

    name: str
    values: dict[int, int] = field(default_factory=dict)
    reads: int = 0
    writes: int = 0

    def read(self, offset: int, size: int) -> int:
        self.reads += 1
        return self.values.get(offset, 0) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes += 1
        self.values[offset] = value & ((1 << (8 * size)) - 1)


@dataclass(slots=True)
class MmioBus:
    """``KVM_MMIO_BUS``: non-overlapping ``[base, base+size)`` ranges, each claimed by a device."""

    _bases: list[int] = field(default_factory=list)
    _ranges: list[tuple[int, int, MmioDevice]] = field(default_factory=list)

    def register(self, base: int, size: int, device: MmioDevice) -> None:
        """``kvm_io_bus_register_dev()``; an overlapping range is refused (EEXIST in spirit)."""
        if size <= 0 or base < 0:
            raise ValueError(f"bad MMIO range {base:#x}+{size:#x}")
        i = bisect.bisect_left(self._bases, base)
        for j in (i - 1, i):
            if 0 <= j < len(self._ranges):
                b, s, _ = self._ranges[j]
                if b < base + size and base < b + s:
                    raise ValueError(f"MMIO range {base:#x}+{size:#x} overlaps {b:#x}+{s:#x}")
        self._bases.insert(i, base)
        self._ranges.insert(i, (base, size, device))

    def find(self, gpa: int) -> tuple[int, MmioDevice] | None:
        i = bisect.bisect_right(self._bases, gpa) - 1
        if i >= 0:
            base, size, dev = self._ranges[i]
            if gpa < base + size:
                return base, dev
        return None

    def dispatch(self, gpa: int, size: int, write: bool, value: int) -> int | None:
        """Complete an emulated access in the kernel, or return None: exit to userspace."""
        if not self._bases:
            return None
        hit = self.find(gpa)
        if hit is None:
            return None
        base, dev = hit
        if write:
            dev.write(gpa - base, size, value)
            return 0
        return dev.read(gpa - base, size)
