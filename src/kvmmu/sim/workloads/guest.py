"""The vCPUs' access streams, generated lazily from a scenario.

Design. A timed run cannot afford to model every guest load and store, and does not need to: an
access the hardware translates costs the same under every invalidation scheme. So each vCPU
produces a *sample* of accesses, one every ``think`` ns on average (exponential gaps, as in an
open-loop load generator), drawn from a working set of RAM pages, the devices' MMIO ranges and ROM.
The working set is a window of pages at a per-vCPU offset (disjoint windows while RAM lasts), so a
1 TiB guest with 512 vCPUs costs O(1) memory per vCPU: an access is computed, never stored.
``sweep`` walks the window in order (first touch of fresh memory, as a booting guest zeroes it);
``random`` draws pages uniformly, so re-touches dominate once the window is warm.

Each vCPU has its own :class:`random.Random` seeded from (run seed, vCPU index): streams are
repeatable and independent of how the engine interleaves the vCPUs. Prior art: fio's
``random_distribution``/``thinktime`` and the open-loop generators of queueing simulations.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

from kvmmu.sim.workloads.schema import Scenario

AccessKind = Literal["ram", "mmio", "rom"]


@dataclass(frozen=True, slots=True)
class Access:
    """One sampled guest access, after ``think`` ns of guest execution."""

    think: int
    gpa: int
    write: bool
    size: int
    kind: AccessKind


@dataclass(frozen=True, slots=True)
class Window:
    """The RAM pages one vCPU touches: ``count`` pages from page index ``first`` (wrapping)."""

    first: int
    count: int
    total: int  # pages of main RAM

    def page(self, i: int) -> int:
        """The RAM page index of the window's ``i``-th page."""
        return (self.first + i % self.count) % self.total


def window(scenario: Scenario, index: int) -> Window:
    """vCPU ``index``'s working-set window."""
    g = scenario.guest
    total = g.memory // g.page_size
    count = max(1, min(total, scenario.vcpu.working_set // g.page_size))
    return Window(first=(index * count) % total, count=count, total=total)


def active_vcpus(scenario: Scenario) -> int:
    """How many vCPUs run the workload (the rest stay idle)."""
    active = scenario.vcpu.active
    return scenario.guest.vcpus if active is None else min(active, scenario.guest.vcpus)


def prefault_gpas(scenario: Scenario, index: int) -> Iterator[int]:
    """The gpas vCPU ``index`` touches before the clock starts (``guest.prefault``).

    Idle vCPUs prefault too: a guest that touched its memory and then went idle is the setting of
    the published fast-zap figures.
    """
    g = scenario.guest
    w = window(scenario, index)
    for i in range(0, round(w.count * g.prefault), g.prefault_stride):
        yield g.ram_base + w.page(i) * g.page_size


def prefault_device_gpas(scenario: Scenario) -> Iterator[int]:
    """The device gpas vCPU 0 reads before the clock (every ``prefault_devices``-th page)."""
    stride = scenario.guest.prefault_devices
    if not stride:
        return
    for d in scenario.devices:
        yield from range(d.gpa, d.gpa + d.size, stride * 4096)


def accesses(scenario: Scenario, index: int, seed: int) -> Iterator[Access]:
    """vCPU ``index``'s endless access stream (empty for an idle vCPU)."""
    if index >= active_vcpus(scenario):
        return
    # A str seed is hashed by SHA-512, not hash(): repeatable whatever PYTHONHASHSEED is.
    rng = random.Random(f"{seed}:{index}")
    g, v = scenario.guest, scenario.vcpu
    w = window(scenario, index)
    devices = scenario.devices
    dev_cum = list(accumulate(d.weight for d in devices))
    roms = [s for s in scenario.slots if s.role == "rom"]
    rom_cum = list(accumulate(s.size for s in roms))
    mmio_p = v.mmio_fraction
    rom_p = mmio_p + v.rom_fraction
    rate = 1.0 / v.think
    expo, rand, randrange = rng.expovariate, rng.random, rng.randrange
    # A sweep starts where the prefault stopped: the prefaulted pages are the window's first ones.
    cursor = round(w.count * g.prefault)
    while True:
        think = int(expo(rate)) + 1
        r = rand()
        if r < mmio_p:
            d = devices[bisect_right(dev_cum, rand() * dev_cum[-1])]
            gpa = d.gpa + (randrange(max(1, d.size // 4)) * 4)
            yield Access(think, gpa, rand() < d.write_fraction, 4, "mmio")
        elif r < rom_p:
            s = roms[bisect_right(rom_cum, rand() * rom_cum[-1])]
            yield Access(think, s.gpa + randrange(s.size // 4) * 4, False, 4, "rom")
        else:
            if v.pattern == "sweep":
                i = cursor
                cursor += 1
            else:
                i = randrange(w.count)
            gpa = g.ram_base + w.page(i) * g.page_size
            yield Access(think, gpa, rand() < v.write_fraction, 8, "ram")
