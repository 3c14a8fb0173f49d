"""The MMIO bus: devices claim disjoint ranges; unclaimed accesses are exits (None)."""

from __future__ import annotations

import pytest

from kvmmu.devices import MmioBus, RegisterBank


def test_a_claimed_access_reaches_its_device_at_the_range_offset() -> None:
    bus = MmioBus()
    bank = RegisterBank("bar0")
    bus.register(0x1000, 0x100, bank)
    assert bus.dispatch(0x1010, 4, True, 0x55) == 0
    assert bank.values == {0x10: 0x55}
    assert bus.dispatch(0x1010, 1, False, 0) == 0x55


def test_an_unclaimed_access_is_an_exit_to_userspace() -> None:
    bus = MmioBus()
    assert bus.dispatch(0x1000, 4, False, 0) is None
    bus.register(0x1000, 0x100, RegisterBank("x"))
    assert bus.dispatch(0x1100, 4, False, 0) is None


def test_overlapping_ranges_are_refused() -> None:
    bus = MmioBus()
    bus.register(0x1000, 0x100, RegisterBank("a"))
    with pytest.raises(ValueError, match="overlaps"):
        bus.register(0x10F0, 0x100, RegisterBank("b"))
    bus.register(0x1100, 0x100, RegisterBank("c"))  # adjacent is fine
