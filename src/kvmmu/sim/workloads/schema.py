"""Scenario files: what a simulated guest does, as validated TOML.

Design. A scenario describes a guest (vCPUs, RAM, page size), its initial memslots and devices,
what each vCPU does (a *sampled* access stream: mean think time between accesses that matter to the
MMU, a working set, the share of accesses that hit MMIO or ROM) and what the VMM does to the
memslots over time (operations with a start time, a repeat count and an interval, or a seeded random
mix). Nothing here enumerates pages or accesses: a 1 TiB guest with 512 vCPUs is a few numbers, and
the generators in :mod:`kvmmu.sim.workloads.guest` and :mod:`kvmmu.sim.workloads.vmm` produce
accesses and operations lazily.

Validation is pydantic dataclasses (frozen, slotted) over :mod:`tomllib`'s output; sizes and times
may be written with units (``"2MiB"``, ``"50us"``) or as plain integers (bytes, ns). Every error
names the file, the field (``vmm[2].op``) and what is allowed. Prior art: the job files of fio
(one declarative file per workload, sizes with units, ``rate``/``thinktime``) and the scenario
descriptions of SimPy's examples, made declarative.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import dataclasses as pdc
from pydantic_core import PydanticCustomError

from kvmmu.tomlfile import field_path, parse_toml, read_toml, take_kind

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
PAGE_4K = 4 * KIB
PAGE_2M = 2 * MIB
MAX_VCPUS = 512
MAX_MEMORY = TIB
MAX_SLOT_ID = 32763  # KVM_CAP_NR_MEMSLOTS on this project's machines is 32764

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": KIB,
    "kib": KIB,
    "m": MIB,
    "mib": MIB,
    "g": GIB,
    "gib": GIB,
    "t": TIB,
    "tib": TIB,
}
_TIME_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def parse_size(value: object) -> object:
    """``"2MiB"`` -> 2097152; integers pass through (bytes)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise PydanticCustomError(
                "size", "must be a size: bytes, or a number with B, KiB, MiB, GiB or TiB"
            )
        scaled = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
        if scaled != int(scaled):
            raise PydanticCustomError("size", "must be a whole number of bytes")
        return int(scaled)
    return value


def parse_time(value: object) -> object:
    """``"50us"`` -> 50000; integers pass through (ns)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)\s*", value)
        if not m:
            raise PydanticCustomError("time", "must be a time: ns, or a number with ns/us/ms/s")
        scaled = float(m.group(1)) * _TIME_UNITS[m.group(2)]
        if scaled != int(scaled):
            raise PydanticCustomError("time", "must be a whole number of ns")
        return int(scaled)
    return value


Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0, strict=True)]
Time = Annotated[int, BeforeValidator(parse_time), Field(ge=0, strict=True)]
Address = Annotated[int, BeforeValidator(parse_size), Field(ge=0, strict=True)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
#: A relative weight: finite (an ``inf`` weight makes every other one zero, then NaN), bounded so
#: that sums of many stay exact enough.
Weight = Annotated[float, Field(gt=0.0, le=1e9, allow_inf_nan=False)]
SlotId = Annotated[int, Field(ge=0, le=MAX_SLOT_ID, strict=True)]
Flag = Literal["dirty-log", "readonly"]
OpName = Literal["create", "delete", "move", "remap", "dirty-log-on", "dirty-log-off"]

_CONFIG = ConfigDict(extra="forbid")


def _check(cond: bool, field: str, msg: str) -> None:
    """A cross-field rule: the error names ``field`` (relative to the table it sits in)."""
    if not cond:
        raise PydanticCustomError("rule", "{field}: " + msg, {"field": field})


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class Guest:
    """The machine: vCPUs and main RAM (one memslot at ``ram_base``)."""

    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS, strict=True)] = 4
    memory: Size = 4 * GIB
    page_size: Annotated[Literal[4096, 2097152], BeforeValidator(parse_size)] = 4096
    ram_base: Size = 4 * GIB
    ram_slot: SlotId = 1
    ram_flags: tuple[Flag, ...] = ()
    phys_bits: Annotated[int, Field(ge=32, le=52, strict=True)] = 46
    address_spaces: Literal[1, 2] = 1
    #: Which MMU the host runs: ``shadow`` (mmu_lock for write everywhere), ``tdp`` (the TDP MMU:
    #: faults under the read lock), or ``auto``: what the strategy's kernel uses on an EPT/NPT
    #: host (the TDP MMU from 5.15).  ``kvmmu run --mmu`` overrides it.
    mmu: Literal["auto", "shadow", "tdp"] = "auto"
    #: Share of each vCPU's working set faulted in (untimed) before the clock starts.
    prefault: Fraction = 0.0
    #: Prefault every n-th page of the window (512 with 4 KiB pages: one leaf shadow page each).
    prefault_stride: Annotated[int, Field(ge=1, strict=True)] = 1
    #: Before the clock, vCPU 0 reads every n-th 4 KiB page of each device (0: none), so that
    #: MMIO SPTEs exist as in a guest that has been running for a while.
    prefault_devices: Annotated[int, Field(ge=0, strict=True)] = 0

    def __post_init__(self) -> None:
        _check(PAGE_4K <= self.memory <= MAX_MEMORY, "memory", "must be between 4KiB and 1TiB")
        _check(self.memory % self.page_size == 0, "memory", "must be a multiple of page_size")
        _check(self.ram_base % self.page_size == 0, "ram_base", "must be aligned to page_size")
        _check(
            self.ram_base + self.memory <= 1 << self.phys_bits,
            "memory",
            "ram_base + memory must fit in phys_bits",
        )


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class SlotSpec:
    """A memslot present when the run starts (ROM, low RAM, a framebuffer...)."""

    id: SlotId
    gpa: Address
    size: Size
    flags: tuple[Flag, ...] = ()
    role: Literal["ram", "rom"] = "ram"

    def __post_init__(self) -> None:
        _check(self.gpa % PAGE_4K == 0, "gpa", "must be 4KiB aligned")
        _check(
            self.size > 0 and self.size % PAGE_4K == 0,
            "size",
            "must be a positive multiple of 4KiB",
        )


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class DeviceSpec:
    """An MMIO range the vCPUs access (no memslot behind it, or one that comes and goes)."""

    name: str
    gpa: Address
    size: Size
    weight: Weight = 1.0
    write_fraction: Fraction = 0.5
    #: Emulated by an in-kernel device (no exit to userspace), like KVM's IOAPIC or ioeventfd.
    in_kernel: bool = False

    def __post_init__(self) -> None:
        _check(self.size > 0, "size", "must be > 0")


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class VcpuSpec:
    """What every active vCPU does: sampled accesses separated by exponential think time."""

    #: Mean guest time between two sampled accesses.
    think: Time = 2_000
    #: RAM each vCPU touches (windows of consecutive vCPUs are disjoint while RAM lasts).
    working_set: Size = 64 * MIB
    #: ``sweep``: pages in order (first touch of fresh memory); ``random``: uniform in the window.
    pattern: Literal["sweep", "random"] = "random"
    write_fraction: Fraction = 0.3
    mmio_fraction: Fraction = 0.0
    rom_fraction: Fraction = 0.0
    #: How many vCPUs run the workload (the others stay idle); default all.
    active: Annotated[int, Field(ge=0, le=MAX_VCPUS, strict=True)] | None = None

    def __post_init__(self) -> None:
        _check(self.think > 0, "think", "must be > 0")
        _check(
            self.mmio_fraction + self.rom_fraction <= 1.0,
            "rom_fraction",
            "mmio_fraction + rom_fraction must be <= 1",
        )


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class SlotRange:
    """Slots ``first .. first+count-1``, used round-robin by a repeated operation."""

    first: SlotId
    count: Annotated[int, Field(ge=1, le=MAX_SLOT_ID + 1, strict=True)]


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class VmmOp:
    """A memslot operation the VMM performs ``repeat`` times, ``every`` ns apart, from ``at``.

    ``create`` needs ``gpa`` and ``size`` (with ``slots``, slot *i* of the range sits at
    ``gpa + i*size``); ``move`` needs ``to`` (gpas visited in turn); ``remap`` is delete then
    create of the same range (a ROM/PAM toggle, a VGA bank switch).
    """

    op: OpName
    at: Time = 0
    slot: SlotId | None = None
    slots: SlotRange | None = None
    gpa: Address | None = None
    size: Size | None = None
    to: tuple[Address, ...] = ()
    flags: tuple[Flag, ...] = ()
    repeat: Annotated[int, Field(ge=1, le=10_000_000, strict=True)] = 1
    every: Time = 0

    def __post_init__(self) -> None:
        _check((self.slot is None) != (self.slots is None), "slot", "give exactly one of slot or slots")
        if self.op == "create":
            _check(
                self.gpa is not None and self.size is not None,
                "gpa",
                "create needs gpa and size",
            )
        if self.op == "move":
            _check(len(self.to) > 0, "to", "move needs to = [gpa, ...]")
        _check(self.repeat == 1 or self.every > 0, "every", "a repeated op needs every > 0")


def _default_mix() -> dict[OpName, float]:
    return {
        "create": 3.0,
        "delete": 2.0,
        "move": 1.0,
        "remap": 1.0,
        "dirty-log-on": 1.0,
        "dirty-log-off": 1.0,
    }


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class RandomSpec:
    """A seeded random stream of memslot operations over a range of slots."""

    ops: Annotated[int, Field(ge=1, le=10_000_000, strict=True)]
    every: Time
    slots: SlotRange
    gpa: Address
    size: Size
    at: Time = 0
    mix: dict[OpName, Annotated[float, Field(ge=0.0, le=1e9, allow_inf_nan=False)]] = Field(
        default_factory=_default_mix
    )

    def __post_init__(self) -> None:
        _check(self.every > 0, "every", "must be > 0")
        _check(sum(self.mix.values()) > 0, "mix", "needs a positive weight")
        _check(
            self.size > 0 and self.size % PAGE_4K == 0,
            "size",
            "must be a positive multiple of 4KiB",
        )


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class Scenario:
    """A whole scenario file."""

    name: str
    description: str
    #: Simulated time the vCPUs run; VMM operations due later are not issued.
    duration: Time
    guest: Guest = Field(default_factory=Guest)
    vcpu: VcpuSpec = Field(default_factory=VcpuSpec)
    slots: tuple[SlotSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    vmm: tuple[VmmOp, ...] = ()
    random: RandomSpec | None = None

    def __post_init__(self) -> None:
        _check(self.duration > 0, "duration", "must be > 0")
        ids = [s.id for s in self.slots] + [self.guest.ram_slot]
        _check(len(ids) == len(set(ids)), "slots", "slot ids must be unique (ram_slot included)")
        ranges = sorted(
            [(s.gpa, s.gpa + s.size, f"slot {s.id}") for s in self.slots]
            + [
                (
                    self.guest.ram_base,
                    self.guest.ram_base + self.guest.memory,
                    f"RAM slot {self.guest.ram_slot}",
                )
            ]
        )
        for (_, end, a), (start, _, b) in itertools.pairwise(ranges):
            _check(end <= start, "slots", f"{a} overlaps {b}")
        if self.vcpu.rom_fraction > 0:
            _check(
                any(s.role == "rom" for s in self.slots),
                "vcpu.rom_fraction",
                "rom_fraction > 0 needs a slot with role = 'rom'",
            )
        devs = sorted((d.gpa, d.gpa + d.size, d.name) for d in self.devices)
        for (_, end, a), (start, _, b) in itertools.pairwise(devs):
            _check(end <= start, "devices", f"device {a} overlaps device {b}")
        # A device is MMIO: never inside main RAM, whose slot stays for the whole run. Over a
        # [[slots]] entry it is deliberate: a window that is RAM while that slot is mapped (a VGA
        # bank the VMM remaps), MMIO while it is not.
        lo, hi = self.guest.ram_base, self.guest.ram_base + self.guest.memory
        for i, d in enumerate(self.devices):
            _check(
                d.gpa + d.size <= lo or hi <= d.gpa,
                f"devices[{i}].gpa",
                f"device {d.name} [{d.gpa:#x}, {d.gpa + d.size:#x}) overlaps guest RAM "
                f"[{lo:#x}, {hi:#x}) (guest.ram_base + guest.memory); put it outside RAM",
            )
            _check(
                d.gpa + d.size <= 1 << self.guest.phys_bits,
                f"devices[{i}].gpa",
                f"gpa + size must fit in guest.phys_bits = {self.guest.phys_bits}",
            )
        g = self.guest
        _check(  # larger than RAM is fine: the window is RAM's (so that --memory may shrink it)
            self.vcpu.working_set >= g.page_size,
            "vcpu.working_set",
            f"must be at least one page, guest.page_size = {g.page_size} (got {self.vcpu.working_set})",
        )
        if self.vcpu.active is not None:
            _check(
                self.vcpu.active <= g.vcpus,
                "vcpu.active",
                f"must be between 0 and guest.vcpus = {g.vcpus} (got {self.vcpu.active})",
            )
        if self.vcpu.mmio_fraction > 0:
            _check(len(self.devices) > 0, "vcpu.mmio_fraction", "> 0 needs [[devices]]")

    def request_problems(self) -> list[str]:
        """Explicit [[vmm]] requests KVM would refuse every time: a create inside guest RAM
        (EEXIST), an empty or misaligned range or one beyond phys_bits (EINVAL), an operation
        on a slot nothing ever creates (ENOENT/EINVAL). Checked for files (see
        :func:`scenario_from_dict`), not for scenarios built or overridden in code: a sweep
        that grows RAM under a hot-add region, or a test of refusals, means them. The [random]
        stream is exempt: refusals are part of its point."""
        g = self.guest
        ram_lo, ram_hi = g.ram_base, g.ram_base + g.memory
        problems: list[str] = []

        def check(cond: bool, field: str, msg: str) -> None:
            if not cond:
                problems.append(f"{field}: {msg}")

        def ids(op: VmmOp) -> list[int]:  # the slot ids one operation names
            if op.slot is not None:
                return [op.slot]
            return list(range(op.slots.first, op.slots.first + op.slots.count)) if op.slots else []

        known = {g.ram_slot, *(s.id for s in self.slots)}
        known |= {i for op in self.vmm if op.op == "create" for i in ids(op)}
        ram_touched = any(g.ram_slot in ids(op) for op in self.vmm if op.op != "create")
        for n, op in enumerate(self.vmm):
            where = f"vmm[{n}]"
            for i in ids(op):
                check(i in known, f"{where}.slot",
                      f"slot {i} is neither guest RAM, a [[slots]] entry nor created by a "
                      f"[[vmm]] create: KVM would refuse every {op.op}")
            if op.op != "create" or op.gpa is None or op.size is None:
                continue
            check(op.size > 0 and op.size % PAGE_4K == 0, f"{where}.size",
                  "must be a positive multiple of 4KiB (KVM refuses others with EINVAL)")
            check(op.gpa % PAGE_4K == 0, f"{where}.gpa", "must be 4KiB aligned (EINVAL otherwise)")
            count = len(ids(op))
            end = op.gpa + count * op.size
            check(end <= 1 << g.phys_bits, f"{where}.gpa",
                  f"gpa + size x {count} slot(s) = {end:#x} is beyond guest.phys_bits = "
                  f"{g.phys_bits} (EINVAL)")
            if not ram_touched:
                check(end <= ram_lo or ram_hi <= op.gpa, f"{where}.gpa",
                      f"[{op.gpa:#x}, {end:#x}) overlaps guest RAM [{ram_lo:#x}, {ram_hi:#x}), "
                      "which stays mapped: KVM would refuse every create with EEXIST")
            check(g.ram_slot not in ids(op) or ram_touched, f"{where}.slot",
                  f"slot {g.ram_slot} is guest RAM (guest.ram_slot), which exists already")
        return problems

    def with_overrides(self, vcpus: int | None = None, memory: int | None = None) -> Scenario:
        """The same scenario with another vCPU count or RAM size (for sweeps), re-validated."""
        data = TypeAdapter(Scenario).dump_python(self)
        if vcpus is not None:
            data["guest"]["vcpus"] = vcpus
        if memory is not None:
            data["guest"]["memory"] = memory
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as exc:
            msg = "; ".join(_message(e) for e in exc.errors())
            raise ScenarioError(f"{self.name} (overridden): {msg}") from None


_ADAPTER = TypeAdapter(Scenario)


class ScenarioError(ValueError):
    """An unusable scenario; the message names the file, the field and what is allowed."""


def _message(err: Any) -> str:
    where = field_path(err["loc"])
    msg = err["msg"]
    if err["type"] == "rule":  # our own cross-field rules: "field: message"
        field, _, text = msg.partition(": ")
        return f"{where}.{field}: {text}" if where != "(top level)" else f"{field}: {text}"
    if err["type"] in {"unexpected_keyword_argument", "extra_forbidden"}:
        return f"{where}: unknown field; allowed: {', '.join(_fields_at(err['loc'][:-1]))}"
    if err["type"] == "missing_argument" or err["type"] == "missing":
        return f"{where}: required field is missing"
    got = err.get("input")
    tail = "" if isinstance(got, dict | list | tuple) else f" (got {got!r})"
    return f"{where}: {msg}{tail}"


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The field names of the table at ``loc`` (for "unknown field" errors)."""
    cls: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        hint = typing.get_type_hints(cls, include_extras=True).get(part)
        cls = _dataclass_in(hint)
        if cls is None:
            return []
    return [f.name for f in dataclasses.fields(cls)]


def _dataclass_in(hint: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


BUILT = "<built>"


def scenario_from_dict(data: dict[str, Any], path: str = BUILT) -> Scenario:
    """Validate a scenario given as the dict a TOML file would parse to; ``path`` names it in
    errors. A scenario read from a file (any ``path`` but :data:`BUILT`) must not make
    requests KVM refuses every time (:meth:`Scenario.request_problems`)."""
    data = take_kind(data, "workload", path, ScenarioError)
    try:
        sc = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: " + "; ".join(_message(e) for e in exc.errors())) from None
    problems = sc.request_problems() if path != BUILT else []
    if problems:
        raise ScenarioError(f"{path}: " + "; ".join(problems))
    return sc


def parse_scenario(text: str, path: str) -> Scenario:
    """Parse and validate a scenario's TOML text; ``path`` names it in errors."""
    return scenario_from_dict(parse_toml(text, path, ScenarioError), path)


def scenario_names() -> tuple[str, ...]:
    """The names of the embedded scenarios (``kvmmu/data/scenarios/*.toml``)."""
    root = resources.files("kvmmu").joinpath("data", "scenarios")
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml")))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """An embedded scenario by name (``boot``) or a scenario file by path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return scenario_from_dict(read_toml(p, ScenarioError, "scenario"), str(p))
    name = str(name_or_path)
    if name not in scenario_names():
        raise ScenarioError(
            f"{name}: no such scenario file or embedded scenario; embedded: {', '.join(scenario_names())}"
        )
    ref = resources.files("kvmmu").joinpath("data", "scenarios", f"{name}.toml")
    return parse_scenario(ref.read_text(encoding="utf-8"), f"<kvmmu>/data/scenarios/{name}.toml")
