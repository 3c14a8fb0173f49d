"""Differential scenarios: memslot operations interleaved with guest accesses, as TOML.

Design. A scenario is data, not code, so that a divergence found by the random generator can be
saved, read, edited and replayed by anyone (``kvmmu diff FILE``).  The file is TOML (parsed with
:mod:`tomllib`) and validated with pydantic into frozen models; every error is one line naming the
file, the field (``step[3].gpa``) and what is allowed.  Checks that depend on the host (how many
vCPUs KVM allows) are made by the runner, with the same one-line style.

The format::

    [scenario]
    name = "delete-then-read"
    vcpus = 1                 # 1 or 2 (KVM_CAP_NR_VCPUS here)
    window_mib = 16           # accesses stay in [0, window); identity-mapped with 4 KiB pages
    zap_all = true            # KVM_X86_QUIRK_SLOT_ZAP_ALL on (the default) or off
    spin = 0                  # > 0: idle vCPUs poll inside KVM_RUN while memslots change

    [[memory]]                # host memory (the VMM's) that slots can be backed by
    name = "a"
    pages = 16                # 4 KiB each; filled with a pattern: u64 at offset o = tag<<48 | o

    [[step]]
    op = "set"                # KVM_SET_USER_MEMORY_REGION (size 0: delete)
    slot = 0
    flags = 0                 # 1: KVM_MEM_LOG_DIRTY_PAGES, 2: KVM_MEM_READONLY
    gpa = 0x100000
    size = 0x10000
    memory = "a"              # backing; omitted for a delete
    offset = 0                # into the backing

    [[step]]
    op = "read"               # or "write" (with value = ...)
    vcpu = 0
    gpa = 0x100010
    size = 4                  # 1, 2, 4 or 8, naturally aligned

    [[step]]
    op = "parallel"           # accesses of distinct vCPUs issued at once
    accesses = [{op = "read", vcpu = 0, gpa = 0x100000, size = 8},
                {op = "write", vcpu = 1, gpa = 0x104000, size = 8, value = 7}]

    [[step]]
    op = "dirty_log"          # KVM_GET_DIRTY_LOG
    slot = 0

    [[step]]
    op = "host_write"         # the VMM writes its own memory
    memory = "a"
    offset = 0x20
    size = 8
    value = 0x1234

:func:`random_scenario` generates scenarios from a seed; it aims memslot operations at a small
gpa range so that creates, deletes, moves, overlaps and accesses keep colliding.

Prior art: the kernel selftests' ``set_memory_region_test`` and ``memslot_modification_stress_test``
(the interleavings), syzkaller's KVM descriptions (random ioctl sequences), and Hypothesis'
practice of printing a failing example that can be pasted back in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kvmmu.tomlfile import field_path, parse_toml, read_toml, take_kind

PAGE = 4096
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
#: Most vCPUs a scenario may name (the harness has mailboxes for more; KVM here allows 2).
MAX_SCENARIO_VCPUS = 8
MAX_MEMORY_PAGES = 4096  # 16 MiB per backing buffer: scenarios stay small
Size = Literal[1, 2, 4, 8]
SIZES: tuple[Size, ...] = (1, 2, 4, 8)


class ScenarioError(ValueError):
    """An unusable scenario; ``str()`` is one line naming the file, the field and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Header(_Model):
    name: str = "scenario"
    vcpus: int = Field(default=1, ge=1, le=MAX_SCENARIO_VCPUS)
    window_mib: int = Field(default=16, ge=2, le=512)
    zap_all: bool = True
    spin: int = Field(default=0, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _window_even(self) -> Header:
        if self.window_mib % 2:
            raise ValueError(f"window_mib must be a multiple of 2 (got {self.window_mib})")
        return self

    @property
    def window(self) -> int:
        return self.window_mib << 20


class MemoryDef(_Model):
    name: str
    pages: int = Field(ge=1, le=MAX_MEMORY_PAGES)

    @property
    def size(self) -> int:
        return self.pages * PAGE


class SetStep(_Model):
    op: Literal["set"]
    slot: int = Field(ge=0, le=U32)
    flags: int = Field(default=0, ge=0, le=U32)
    gpa: int = Field(ge=0, le=U64)
    size: int = Field(ge=0, le=U64)
    memory: str | None = None
    offset: int = Field(default=0, ge=0, le=U64)


class AccessSpec(_Model):
    op: Literal["read", "write"]
    vcpu: int = Field(default=0, ge=0, lt=MAX_SCENARIO_VCPUS)
    gpa: int = Field(ge=0, le=U64)
    size: Size = 4
    value: int = Field(default=0, ge=0, le=U64)

    @property
    def write(self) -> bool:
        return self.op == "write"


class ParallelStep(_Model):
    op: Literal["parallel"]
    accesses: list[AccessSpec] = Field(min_length=1)


class DirtyLogStep(_Model):
    op: Literal["dirty_log"]
    slot: int = Field(ge=0, le=U32)


class HostWriteStep(_Model):
    op: Literal["host_write"]
    memory: str
    offset: int = Field(ge=0)
    size: Size = 8
    value: int = Field(default=0, ge=0, le=U64)


Step = Annotated[
    SetStep | AccessSpec | ParallelStep | DirtyLogStep | HostWriteStep,
    Field(discriminator="op"),
]


class Scenario(_Model):
    scenario: Header = Field(default_factory=Header)
    memory: list[MemoryDef] = Field(default_factory=list)
    step: list[Step] = Field(default_factory=list)

    @property
    def header(self) -> Header:
        return self.scenario

    def memory_by_name(self) -> dict[str, MemoryDef]:
        return {m.name: m for m in self.memory}


# --- semantic checks pydantic's field types cannot express --------------------------------------


def _check(scn: Scenario) -> None:
    """Raise ``ValueError("loc: message")`` for the first semantic error."""
    h = scn.scenario
    mems = {}
    for i, m in enumerate(scn.memory):
        if m.name in mems:
            raise ValueError(f"memory[{i}].name: duplicate memory name {m.name!r}")
        mems[m.name] = m
    for i, st in enumerate(scn.step):
        loc = f"step[{i}]"
        if isinstance(st, SetStep):
            if st.size and st.memory is None:
                raise ValueError(f"{loc}.memory: a set with size > 0 needs a backing memory name")
            if st.memory is not None:
                if st.memory not in mems:
                    raise ValueError(
                        f"{loc}.memory: unknown memory {st.memory!r}; defined: "
                        f"{', '.join(sorted(mems)) or 'none'}"
                    )
                if st.offset + st.size > mems[st.memory].size:
                    raise ValueError(
                        f"{loc}.size: offset {st.offset:#x} + size {st.size:#x} runs past memory "
                        f"{st.memory!r} ({mems[st.memory].size:#x} bytes)"
                    )
        elif isinstance(st, AccessSpec):
            _check_access(st, h, f"{loc}")
        elif isinstance(st, ParallelStep):
            seen: set[int] = set()
            for j, a in enumerate(st.accesses):
                _check_access(a, h, f"{loc}.accesses[{j}]")
                if a.vcpu in seen:
                    raise ValueError(f"{loc}.accesses[{j}].vcpu: vCPU {a.vcpu} appears twice")
                seen.add(a.vcpu)
            for j, a in enumerate(st.accesses):
                for b in st.accesses[j + 1 :]:
                    if (a.write or b.write) and a.gpa < b.gpa + b.size and b.gpa < a.gpa + a.size:
                        raise ValueError(
                            f"{loc}.accesses[{j}]: overlaps another access and one of them writes "
                            "(the outcome would depend on timing)"
                        )
        elif isinstance(st, HostWriteStep):
            if st.memory not in mems:
                raise ValueError(f"{loc}.memory: unknown memory {st.memory!r}")
            if st.offset % st.size or st.offset + st.size > mems[st.memory].size:
                raise ValueError(
                    f"{loc}.offset: {st.offset:#x} must be aligned to size {st.size} and inside "
                    f"memory {st.memory!r} ({mems[st.memory].size:#x} bytes)"
                )


def _check_access(a: AccessSpec, h: Header, loc: str) -> None:
    if a.vcpu >= h.vcpus:
        raise ValueError(
            f"{loc}.vcpu: vCPU {a.vcpu} but the scenario has {h.vcpus} (0..{h.vcpus - 1})"
        )
    if a.gpa >= h.window:
        raise ValueError(
            f"{loc}.gpa: {a.gpa:#x} is outside the mapped window [0, {h.window:#x}) "
            f"(window_mib = {h.window_mib}); accesses must stay inside it"
        )
    if a.gpa % a.size:
        raise ValueError(f"{loc}.gpa: {a.gpa:#x} is not aligned to the access size {a.size}")
    if a.value >> (8 * a.size):
        raise ValueError(f"{loc}.value: {a.value:#x} does not fit in {a.size} bytes")


#: The union tags pydantic inserts into locations of ``steps`` (one per op).
_UNION_TAGS = frozenset({"set", "read", "write", "parallel", "dirty_log", "host_write"})


def _describe(err: Any) -> str:
    loc = field_path(err["loc"], skip=_UNION_TAGS)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown field"
    if kind == "union_tag_invalid":
        return f"{loc}: op must be one of set, read, write, parallel, dirty_log, host_write"
    if kind == "union_tag_not_found":
        return f"{loc}: missing op (one of set, read, write, parallel, dirty_log, host_write)"
    msg = str(err["msg"])
    if kind.startswith("value_error"):
        msg = msg.removeprefix("Value error, ")
    return (
        f"{loc}: {msg} (got {err.get('input')!r})"
        if "input" in err and kind != "missing"
        else f"{loc}: {msg}"
    )


def parse_scenario(text: str, path: str = "<text>") -> Scenario:
    """Parse and validate a scenario's TOML text; :class:`ScenarioError` names what is wrong."""
    return validate_scenario(parse_toml(text, path, ScenarioError), path)


def validate_scenario(raw: dict[str, Any], path: str) -> Scenario:
    """Validate a parsed scenario document; :class:`ScenarioError` names what is wrong."""
    raw = take_kind(raw, "steps", path, ScenarioError)
    try:
        scn = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {_describe(exc.errors()[0])}") from None
    try:
        _check(scn)
    except ValueError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return scn


def load_scenario(path: str | Path) -> Scenario:
    """A scenario file by path."""
    raw = read_toml(path, ScenarioError, "scenario")
    return validate_scenario(raw, str(path))


# --- writing (a failing random scenario is saved for replay) -----------------------------------


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return hex(v) if v >= 4096 else str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(scn: Scenario) -> str:
    """The scenario as TOML that :func:`parse_scenario` reads back to an equal scenario."""
    lines = ['kind = "steps"', "", "[scenario]"]
    for k, v in scn.scenario.model_dump().items():
        lines.append(f"{k} = {_toml_value(v)}")
    for m in scn.memory:
        lines += ["", "[[memory]]"] + [f"{k} = {_toml_value(v)}" for k, v in m.model_dump().items()]
    for st in scn.step:
        lines += ["", "[[step]]"]
        for k, v in st.model_dump(exclude_none=True).items():
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


# --- the random generator -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """Shape of random scenarios: how long, how many slots and vCPUs, how wide the gpa range."""

    steps: int = 40
    slot_ids: int = 4
    two_vcpu_fraction: float = 0.3
    #: The gpa range memslots are aimed at (pages); small, so that operations collide.
    gpa_pages: int = 64
    memories: int = 3
    memory_pages: int = 16
    invalid_fraction: float = 0.15
    spin_fraction: float = 0.3


def random_scenario(seed: int, config: GeneratorConfig | None = None) -> Scenario:
    """A valid scenario drawn from ``seed`` (same seed, same scenario, on every machine)."""
    cfg = config or GeneratorConfig()
    rng = random.Random(seed)
    vcpus = 2 if rng.random() < cfg.two_vcpu_fraction else 1
    header = Header(
        name=f"random-{seed}",
        vcpus=vcpus,
        window_mib=2,
        zap_all=rng.random() < 0.7,
        spin=rng.choice([2000, 20000]) if rng.random() < cfg.spin_fraction else 0,
    )
    mems = [MemoryDef(name=chr(ord("a") + i), pages=cfg.memory_pages) for i in range(cfg.memories)]
    # The generator's own idea of which slots exist (a guess: refused requests are not applied
    # here exactly as KVM would; both sides decide for themselves when the scenario runs).
    slots: dict[int, tuple[int, int, int, str, int]] = {}  # id -> flags, gpa, size, mem, offset
    steps: list[Any] = []

    # Recently accessed pages: re-accessing them, and creating slots over them, produces the
    # patterns the MMIO caches are about (MMIO at X, a slot appears at X, X again).
    hot: list[int] = []

    def rand_gpa_in_slots() -> int:
        if hot and rng.random() < 0.35:
            return rng.choice(hot)
        if slots and rng.random() < 0.7:
            _, gpa, size, _, _ = slots[rng.choice(sorted(slots))]
            return gpa + rng.randrange(size // PAGE) * PAGE
        return rng.randrange(cfg.gpa_pages) * PAGE

    def access(vcpu: int, page_gpa: int | None = None) -> AccessSpec:
        size = rng.choice(SIZES)
        base = rand_gpa_in_slots() if page_gpa is None else page_gpa
        gpa = base + rng.randrange(PAGE // size) * size
        hot.append(base)
        del hot[:-4]
        if rng.random() < 0.4:
            return AccessSpec(
                op="write", vcpu=vcpu, gpa=gpa, size=size, value=rng.getrandbits(8 * size)
            )
        return AccessSpec(op="read", vcpu=vcpu, gpa=gpa, size=size)

    def new_slot_request() -> SetStep:
        sid = rng.randrange(cfg.slot_ids)
        npages = rng.choice([1, 1, 2, 4, 8])
        mem = rng.choice(mems)
        offset = rng.randrange(mem.pages - npages + 1) * PAGE
        gpa = rng.randrange(cfg.gpa_pages - npages + 1) * PAGE
        if hot and rng.random() < 0.4:
            gpa = max(0, min(rng.choice(hot), (cfg.gpa_pages - npages) * PAGE))
        flags = rng.choice([0, 0, 0, 1, 2])
        return SetStep(
            op="set",
            slot=sid,
            flags=flags,
            gpa=gpa,
            size=npages * PAGE,
            memory=mem.name,
            offset=offset,
        )

    for _ in range(cfg.steps):
        r = rng.random()
        if r < 0.3 or not slots:
            # create, or (for an existing id) whatever that request means: move/flags/invalid
            req = new_slot_request()
            if req.slot in slots and rng.random() < 0.6:
                flags, gpa, size, mem_name, off = slots[req.slot]
                kind = rng.choice(["move", "flags", "noop", "delete"])
                if kind == "move":
                    req = SetStep(
                        op="set",
                        slot=req.slot,
                        flags=flags,
                        gpa=rng.randrange(cfg.gpa_pages - size // PAGE + 1) * PAGE,
                        size=size,
                        memory=mem_name,
                        offset=off,
                    )
                elif kind == "flags":
                    req = SetStep(
                        op="set",
                        slot=req.slot,
                        flags=flags ^ 1,
                        gpa=gpa,
                        size=size,
                        memory=mem_name,
                        offset=off,
                    )
                elif kind == "noop":
                    req = SetStep(
                        op="set",
                        slot=req.slot,
                        flags=flags,
                        gpa=gpa,
                        size=size,
                        memory=mem_name,
                        offset=off,
                    )
                else:
                    req = SetStep(op="set", slot=req.slot, gpa=gpa, size=0)
            elif rng.random() < cfg.invalid_fraction:
                req = _invalid_variant(rng, req, slots, mems)
            steps.append(req)
            _apply_guess(slots, req)
        elif r < 0.38 and slots:
            sid = rng.choice(sorted(slots))
            steps.append(SetStep(op="set", slot=sid, gpa=0, size=0))
            slots.pop(sid, None)
        elif r < 0.43:
            logged = [i for i, v in slots.items() if v[0] & 1]
            sid = (
                rng.choice(logged) if logged and rng.random() < 0.7 else rng.randrange(cfg.slot_ids)
            )
            steps.append(DirtyLogStep(op="dirty_log", slot=sid))
        elif r < 0.47:
            mem = rng.choice(mems)
            size = rng.choice(SIZES)
            steps.append(
                HostWriteStep(
                    op="host_write",
                    memory=mem.name,
                    offset=rng.randrange(mem.size // size) * size,
                    size=size,
                    value=rng.getrandbits(8 * size),
                )
            )
        elif vcpus == 2 and r < 0.6:
            a = access(0)
            b = access(1)
            if (a.write or b.write) and a.gpa < b.gpa + b.size and b.gpa < a.gpa + a.size:
                b = (
                    AccessSpec(op="read", vcpu=1, gpa=a.gpa, size=a.size)
                    if not a.write
                    else access(1, (a.gpa // PAGE + 1) % cfg.gpa_pages * PAGE)
                )
                if (a.write or b.write) and a.gpa < b.gpa + b.size and b.gpa < a.gpa + a.size:
                    b = AccessSpec(
                        op="read", vcpu=1, gpa=(a.gpa + PAGE) % (cfg.gpa_pages * PAGE), size=8
                    )
            steps.append(ParallelStep(op="parallel", accesses=[a, b]))
        else:
            steps.append(access(rng.randrange(vcpus)))
    scn = Scenario(scenario=header, memory=mems, step=steps)
    _check(scn)
    return scn


def _invalid_variant(
    rng: random.Random,
    req: SetStep,
    slots: dict[int, tuple[int, int, int, str, int]],
    mems: list[MemoryDef],
) -> SetStep:
    """Turn a plausible request into one KVM should refuse (or that collides)."""
    kind = rng.choice(
        [
            "misaligned_gpa",
            "misaligned_offset",
            "unknown_flag",
            "overlap",
            "size_change",
            "readonly_toggle",
            "delete_missing",
        ]
    )
    d = req.model_dump()
    if kind == "misaligned_gpa":
        d["gpa"] += rng.choice([1, 8, 0x800])
    elif kind == "misaligned_offset":
        d["offset"] += 8
        if d["offset"] + d["size"] > PAGE * mems[0].pages:
            d["offset"] -= PAGE
    elif kind == "unknown_flag":
        d["flags"] |= 1 << rng.randrange(2, 32)
    elif kind == "overlap" and slots:
        _, gpa, size, _, _ = slots[rng.choice(sorted(slots))]
        d["gpa"] = gpa
    elif kind in ("size_change", "readonly_toggle") and slots:
        sid = rng.choice(sorted(slots))
        flags, gpa, size, mem_name, off = slots[sid]
        d.update(slot=sid, gpa=gpa, memory=mem_name, offset=off, flags=flags, size=size)
        if kind == "size_change":
            d["size"] = PAGE if size > PAGE else 2 * PAGE
            if off + d["size"] > PAGE * mems[0].pages:
                d["size"] = size  # keep inside the backing: then it is a plain no-op
        else:
            d["flags"] = flags ^ 2
    elif kind == "delete_missing":
        free = [i for i in range(64) if i not in slots]
        return SetStep(op="set", slot=free[0] + 8, gpa=0, size=0)
    return SetStep.model_validate(d)


def _apply_guess(slots: dict[int, tuple[int, int, int, str, int]], req: SetStep) -> None:
    """Track what the request probably did (only to aim later steps)."""
    if req.gpa % PAGE or req.offset % PAGE or req.flags & ~3:
        return
    if req.size == 0:
        slots.pop(req.slot, None)
        return
    old = slots.get(req.slot)
    if old is not None and (
        old[2] != req.size
        or (old[0] ^ req.flags) & 2
        or old[3] != req.memory
        or old[4] != req.offset
    ):
        return
    for sid, (_, gpa, size, _, _) in slots.items():
        if sid != req.slot and gpa < req.gpa + req.size and req.gpa < gpa + size:
            return
    assert req.memory is not None
    slots[req.slot] = (req.flags, req.gpa, req.size, req.memory, req.offset)
