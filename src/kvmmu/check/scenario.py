"""What the explorer runs: initial memslots, a short access script per vCPU, the VMM's updates.

Design. A model checker needs *small* closed programs: every access and every memslot update is a
thread operation whose steps the explorer interleaves, so a scenario names them one by one instead
of sampling them (as the timed simulation's scenarios do).  vCPU *i* runs script ``i mod n``, the
VMM runs the updates in order; the command line takes the first N vCPUs, the first K accesses of
each script and the first M updates, so one scenario serves configurations of growing size.

The default scenario is the 2014 race's setting: gfn 0x100 is MMIO until the first update creates a
slot over it, gfn 0x1 is RAM until the second update deletes slot 0, and a third update toggles
dirty logging on the new slot (one more generation step, so that a 2-bit generation wraps within
three updates).

Scenario files are TOML, validated by pydantic dataclasses (frozen, slotted); an error names the
file, the field (``updates[1].size``) and what is allowed.  Each update is the raw
``struct kvm_userspace_memory_region`` (``size = 0`` deletes), classified by the model's own
``plan_memory_region``; a scenario whose updates the model refuses in sequence (EINVAL, EEXIST) is
rejected at load time, naming the update.  Prior art: the litmus-test files of herd7/litmus7, which
describe a tiny concurrent program per file for exhaustive exploration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import dataclasses as pdc
from pydantic_core import PydanticCustomError

from kvmmu.errors import KvmError
from kvmmu.spte import PAGE_SIZE
from kvmmu.tomlfile import field_path, read_toml, take_kind
from kvmmu.vm import VM

U64 = Annotated[int, Field(ge=0, lt=1 << 64, strict=True)]
SlotField = Annotated[int, Field(ge=0, lt=1 << 32, strict=True)]
_CONFIG: Final = ConfigDict(extra="forbid")


def _check(cond: bool, field: str, msg: str) -> None:
    """A cross-field rule; the error names ``field`` relative to the table it sits in."""
    if not cond:
        raise PydanticCustomError("rule", "{field}: " + msg, {"field": field})


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class Access:
    """One guest access: ``vcpu.access_steps(gpa, write=..., emulated=...)``."""

    gpa: U64
    write: bool = False
    emulated: bool = False
    size: Literal[1, 2, 4, 8] = 4
    value: U64 = 0

    def __post_init__(self) -> None:
        _check((self.gpa % PAGE_SIZE) + self.size <= PAGE_SIZE, "gpa", "the access must not cross a page")
        _check(self.value < 1 << (8 * self.size), "value", f"must fit in {self.size} bytes")

    def describe(self) -> str:
        what = f"write of {self.value:#x} to" if self.write else "read of"
        how = " (emulated instruction)" if self.emulated else ""
        return f"{what} gpa {self.gpa:#x} ({self.size} bytes){how}"


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class Region:
    """One ``KVM_SET_USER_MEMORY_REGION`` request (``size = 0``: delete the slot)."""

    slot: SlotField
    gpa: U64
    size: U64
    userspace_addr: U64 = 0
    flags: SlotField = 0

    def describe(self) -> str:
        if self.size == 0:
            return f"delete slot {self.slot}"
        return (
            f"slot {self.slot} at gpa {self.gpa:#x}+{self.size:#x}, flags {self.flags:#x}, "
            f"userspace {self.userspace_addr:#x}"
        )


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class VmSettings:
    """Model knobs that make races reachable in a few steps (see ``kvmmu.vm.VM``)."""

    #: compare only this many generation bits, so the wrap is a few updates away (2..19).
    mmio_gen_bits: Annotated[int, Field(ge=2, le=20, strict=True)] | None = None
    #: start the generation this many below the wrap (None: as the era did).
    start_near_wrap: Annotated[int, Field(ge=1, strict=True)] | None = None
    #: DELETE/MOVE zap everything (``all``, the kernel's default quirk), only the slot's SPTEs
    #: (``slot``), or everything the pre-3.11 way (``all-slow``): ``kvmmu.mmu.invalidation``.
    slot_zap: Literal["all", "slot", "all-slow"] = "all"


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class Script:
    """The accesses one vCPU performs, in order."""

    accesses: tuple[Access, ...]

    def __post_init__(self) -> None:
        _check(len(self.accesses) > 0, "accesses", "a vCPU script needs at least one access")


@pdc.dataclass(frozen=True, slots=True, config=_CONFIG)
class Scenario:
    """Initial memslots, vCPU scripts (vCPU i runs ``vcpus[i % len]``) and the VMM's updates."""

    name: str = "scenario"
    description: str = ""
    vm: VmSettings = Field(default_factory=VmSettings)
    slots: tuple[Region, ...] = ()
    vcpus: tuple[Script, ...] = ()
    updates: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        _check(len(self.vcpus) > 0, "vcpus", "at least one [[vcpus]] script is needed")

    def script(self, vcpu: int) -> tuple[Access, ...]:
        return self.vcpus[vcpu % len(self.vcpus)].accesses


class ScenarioError(ValueError):
    """An unusable scenario; the message names the file, the field and what is allowed."""


RAM_HVA: Final = 0x7F00_0000_0000

#: The default: MMIO turned into RAM, RAM deleted, dirty logging toggled on the new slot.
DEFAULT_SCENARIO: Final = Scenario(
    name="mmio-to-ram",
    description="gfn 0x100 becomes RAM (create), gfn 0x1 stops being RAM (delete slot 0), "
    "then dirty logging is enabled on the new slot",
    slots=(Region(slot=0, gpa=0x0, size=0x10000, userspace_addr=RAM_HVA),),
    vcpus=(
        Script((Access(gpa=0x100000), Access(gpa=0x1000))),
        Script((Access(gpa=0x1000), Access(gpa=0x100000, write=True, value=0x5A))),
    ),
    updates=(
        Region(slot=1, gpa=0x100000, size=0x1000, userspace_addr=RAM_HVA + 0x100000),
        Region(slot=0, gpa=0x0, size=0),
        Region(slot=1, gpa=0x100000, size=0x1000, userspace_addr=RAM_HVA + 0x100000, flags=1),
    ),
)

_ADAPTER: Final = TypeAdapter(Scenario)


def _message(err: Any) -> str:
    where = field_path(err["loc"])
    msg: str = err["msg"]
    if err["type"] == "rule":
        field, _, text = msg.partition(": ")
        return f"{where}.{field}: {text}" if where != "(top level)" else f"{field}: {text}"
    if err["type"] in {"unexpected_keyword_argument", "extra_forbidden"}:
        return f"{where}: unknown field"
    if err["type"] == "literal_error":
        return f"{where}: {msg[0].lower()}{msg[1:]}"
    return f"{where}: {msg[0].lower()}{msg[1:]}"


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    """Validate a TOML document; errors name ``source``, the field and what is allowed."""
    data = take_kind(data, "interleaving", source, ScenarioError)
    try:
        scenario = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: " + "; ".join(_message(e) for e in exc.errors())) from None
    check_feasible(scenario, source)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """A scenario file by path."""
    return parse_scenario(read_toml(path, ScenarioError), str(path))


def check_feasible(scenario: Scenario, source: str) -> None:
    """Apply the memslots and updates in order on a model VM; name the first one refused.

    Only the VMM thread changes memslots, so the outcome of each request is the same in every
    interleaving: checking the sequential order once checks them all.
    """
    vm = VM("generation", oracle=False)
    for kind, regions in (("slots", scenario.slots), ("updates", scenario.updates)):
        for i, r in enumerate(regions):
            try:
                vm.set_user_memory_region(r.slot, r.flags, r.gpa, r.size, r.userspace_addr)
            except KvmError as exc:
                raise ScenarioError(f"{source}: {kind}[{i}]: {exc}") from None
    vcpu = vm.create_vcpu()
    for i, script in enumerate(scenario.vcpus):
        for j, a in enumerate(script.accesses):
            try:
                vcpu.access_steps(a.gpa, a.write, a.size, a.value, a.emulated).close()
            except ValueError as exc:
                raise ScenarioError(f"{source}: vcpus[{i}].accesses[{j}]: {exc}") from None
