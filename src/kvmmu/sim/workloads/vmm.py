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
#: Host addresses are handed out from here, 2 MiB aligned, one range per (slot, bank, size).
_HVA_BASE = 1 << 32
_HVA_ALIGN = 2 << 20
#: Banks per slot: a remap cycles through this many host ranges (dosemu2's VGA has 19 banks).
BANKS = 19


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
    #: From the random mix: becomes a create when the slot is missing and a delete when a
    #: create finds it present, so that most of the mix is valid.
    adapt: bool = False


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


def _random_ops(scenario: Scenario, seed: int, order: int) -> Iterator[tuple[int, int, int, Action]]:
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
        action = Action(time, op, spec.slots.first + i, gpa, spec.size, 0, k, adapt=True)
        yield time, order, k, action


def schedule(scenario: Scenario, seed: int) -> Iterator[Action]:
    """Every VMM action of the scenario in time order (ties: file order), lazily."""
    streams = [_expand(op, n) for n, op in enumerate(scenario.vmm)]
    streams.append(_random_ops(scenario, seed, len(scenario.vmm)))
    for _, _, _, action in heapq.merge(*streams, key=lambda e: (e[0], e[1], e[2])):
        yield action


class VmmState:
    """The VMM's own map of its memslots: slot -> (gpa, size, flags, host address)."""

    __slots__ = ("_hvas", "_next_hva", "slots")

    def __init__(self) -> None:
        self.slots: dict[int, Region] = {}
        self._hvas: dict[tuple[int, int, int], int] = {}
        self._next_hva = _HVA_BASE

    def _hva(self, slot: int, bank: int, size: int) -> int:
        """A host range for ``slot``'s ``bank`` (stable, so a remap cycles through banks)."""
        key = (slot, bank % BANKS, size)
        hva = self._hvas.get(key)
        if hva is None:
            hva = self._next_hva
            self._next_hva += -(-size // _HVA_ALIGN) * _HVA_ALIGN
            self._hvas[key] = hva
        return hva

    def initial(self, scenario: Scenario) -> list[Region]:
        """The requests that set up the scenario's starting memslots (RAM first)."""
        g = scenario.guest
        ram = Region(
            g.ram_slot, flag_bits(g.ram_flags), g.ram_base, g.memory, self._hva(g.ram_slot, 0, g.memory)
        )
        regions = [ram]
        for s in scenario.slots:
            flags = flag_bits(s.flags) | (KVM_MEM_READONLY if s.role == "rom" else 0)
            regions.append(Region(s.id, flags, s.gpa, s.size, self._hva(s.id, 0, s.size)))
        return regions

    def requests(self, action: Action) -> list[Region]:
        """The region requests that carry out ``action`` given what the VMM believes exists."""
        cur = self.slots.get(action.slot)
        op = action.op
        if action.adapt and (cur is None) != (op == "create"):
            op = "create" if cur is None else "delete"
        if op == "create":
            assert action.gpa is not None and action.size is not None
            hva = self._hva(action.slot, action.serial, action.size)
            return [Region(action.slot, action.flags, action.gpa, action.size, hva)]
        if cur is None:  # nothing to act on: issue the delete anyway, the model refuses it
            return [Region(action.slot, 0, action.gpa or 0, 0, 0)]
        if op == "delete":
            return [Region(cur.slot, cur.flags, cur.guest_phys_addr, 0, cur.userspace_addr)]
        if op == "move":
            gpa = action.gpa if action.gpa is not None else cur.guest_phys_addr
            return [Region(cur.slot, cur.flags, gpa, cur.memory_size, cur.userspace_addr)]
        if op == "remap":  # the next bank / shadow copy: same gpa, another host range
            hva = self._hva(cur.slot, action.serial + 1, cur.memory_size)
            return [
                Region(cur.slot, cur.flags, cur.guest_phys_addr, 0, cur.userspace_addr),
                Region(cur.slot, cur.flags, cur.guest_phys_addr, cur.memory_size, hva),
            ]
        if op == "dirty-log-on":
            bits = cur.flags | KVM_MEM_LOG_DIRTY_PAGES
        else:
            bits = cur.flags & ~KVM_MEM_LOG_DIRTY_PAGES
        return [Region(cur.slot, bits, cur.guest_phys_addr, cur.memory_size, cur.userspace_addr)]

    def accepted(self, region: Region) -> None:
        """Record a request the model accepted."""
        if region.is_delete:
            self.slots.pop(region.slot, None)
        else:
            self.slots[region.slot] = region
