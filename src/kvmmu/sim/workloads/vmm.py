"""The VMM's memslot operations over time, generated lazily from a scenario.

Design. A scenario lists operations (``create``, ``delete``, ``move``, ``remap``, dirty logging on
and off), each with a start, a repeat count and an interval, plus an optional seeded random mix.
:func:`schedule` merges them into one time-ordered stream without materialising it (a ROM loop of
a million toggles is a generator). :class:`VmmState` is the VMM's *own* view of its memslots, as
QEMU keeps its memory map: it turns an operation into ``KVM_SET_USER_MEMORY_REGION`` requests
(a remap is two) and learns the result only when the model accepts a request. Whether a request is
valid is the model's business; a refused one is counted, not prevented, so a random scenario
exercises the model's checks too.

Prior art: QEMU's ``kvm_set_phys_mem()`` (one region change becomes a delete then an add of
memslots) and the operation lists of trace-driven simulators.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass

from kvmmu.sim.workloads.schema import Flag, OpName, Scenario, VmmOp

KVM_MEM_LOG_DIRTY_PAGES = 1
KVM_MEM_READONLY = 2
_FLAG_BITS = {"dirty-log": KVM_MEM_LOG_DIRTY_PAGES, "readonly": KVM_MEM_READONLY}
#: Host addresses: each slot (and bank) gets its own, far from the others.
_HVA_BASE = 1 << 46
_HVA_STRIDE = 1 << 41


def flag_bits(flags: tuple[Flag, ...]) -> int:
    """KVM's flag word for scenario flag names."""
    bits = 0
    for f in flags:
        bits |= _FLAG_BITS[f]
    return bits


@dataclass(frozen=True, slots=True)
class Action:
    """One operation due at ``time`` on ``slot``; ``gpa``/``size`` where the op needs them."""

    time: int
    op: OpName
    slot: int
    gpa: int | None = None
    size: int | None = None
    flags: int = 0
    serial: int = 0  # how many times this op was issued before: picks a move target or a bank


@dataclass(frozen=True, slots=True)
class Region:
    """A ``struct kvm_userspace_memory_region`` (address space 0)."""

    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int

    @property
    def is_delete(self) -> bool:
        return self.memory_size == 0


def _expand(op: VmmOp, order: int) -> Iterator[tuple[int, int, int, Action]]:
    for k in range(op.repeat):
        time = op.at + k * op.every
        if op.slots is not None:
            i = k % op.slots.count
            slot = op.slots.first + i
            gpa = None if op.gpa is None or op.size is None else op.gpa + i * op.size
            serial = k // op.slots.count
        else:
            assert op.slot is not None
            slot, gpa, serial = op.slot, op.gpa, k
        if op.op == "move":
            gpa = op.to[serial % len(op.to)]
        yield time, order, k, Action(time, op.op, slot, gpa, op.size, flag_bits(op.flags), serial)


def _random_ops(
    scenario: Scenario, seed: int, order: int
) -> Iterator[tuple[int, int, int, Action]]:
    spec = scenario.random
    if spec is None:
        return
    rng = random.Random(f"{seed}:vmm")
    names = list(spec.mix)
    weights = [spec.mix[n] for n in names]
    for k in range(spec.ops):
        time = spec.at + k * spec.every
        i = rng.randrange(spec.slots.count)
        op = rng.choices(names, weights)[0]
        gpa = spec.gpa + i * spec.size
        if op == "move":  # to a free place above the range, or back
            gpa = spec.gpa + (spec.slots.count + rng.randrange(spec.slots.count)) * spec.size
        yield time, order, k, Action(time, op, spec.slots.first + i, gpa, spec.size, 0, k)


def schedule(scenario: Scenario, seed: int) -> Iterator[Action]:
    """Every VMM action of the scenario in time order (ties: file order), lazily."""
    streams = [_expand(op, n) for n, op in enumerate(scenario.vmm)]
    streams.append(_random_ops(scenario, seed, len(scenario.vmm)))
    for _, _, _, action in heapq.merge(*streams, key=lambda e: (e[0], e[1], e[2])):
        yield action


class VmmState:
    """The VMM's own map of its memslots: slot -> (gpa, size, flags, host address)."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots: dict[int, Region] = {}

    def initial(self, scenario: Scenario) -> list[Region]:
        """The requests that set up the scenario's starting memslots (RAM first)."""
        g = scenario.guest
        regions = [
            Region(g.ram_slot, flag_bits(g.ram_flags), g.ram_base, g.memory, _hva(g.ram_slot, 0))
        ]
        for s in scenario.slots:
            flags = flag_bits(s.flags) | (KVM_MEM_READONLY if s.role == "rom" else 0)
            regions.append(Region(s.id, flags, s.gpa, s.size, _hva(s.id, 0)))
        return regions

    def requests(self, action: Action) -> list[Region]:
        """The region requests that carry out ``action`` given what the VMM believes exists."""
        cur = self.slots.get(action.slot)
        op = action.op
        if op == "create":
            assert action.gpa is not None and action.size is not None
            return [
                Region(
                    action.slot,
                    action.flags,
                    action.gpa,
                    action.size,
                    _hva(action.slot, action.serial),
                )
            ]
        if cur is None:  # nothing to act on: issue the delete anyway, the model refuses it
            return [Region(action.slot, 0, action.gpa or 0, 0, 0)]
        if op == "delete":
            return [Region(cur.slot, cur.flags, cur.guest_phys_addr, 0, cur.userspace_addr)]
        if op == "move":
            gpa = action.gpa if action.gpa is not None else cur.guest_phys_addr
            return [Region(cur.slot, cur.flags, gpa, cur.memory_size, cur.userspace_addr)]
        if op == "remap":  # a new bank / shadow copy: same gpa, another host address
            hva = _hva(cur.slot, action.serial + 1)
            return [
                Region(cur.slot, cur.flags, cur.guest_phys_addr, 0, cur.userspace_addr),
                Region(cur.slot, cur.flags, cur.guest_phys_addr, cur.memory_size, hva),
            ]
        bits = (
            cur.flags | KVM_MEM_LOG_DIRTY_PAGES
            if op == "dirty-log-on"
            else (cur.flags & ~KVM_MEM_LOG_DIRTY_PAGES)
        )
        return [Region(cur.slot, bits, cur.guest_phys_addr, cur.memory_size, cur.userspace_addr)]

    def accepted(self, region: Region) -> None:
        """Record a request the model accepted."""
        if region.is_delete:
            self.slots.pop(region.slot, None)
        else:
            self.slots[region.slot] = region


def _hva(slot: int, bank: int) -> int:
    return _HVA_BASE + (slot % 1024) * _HVA_STRIDE + (bank % 64) * (_HVA_STRIDE >> 6)
