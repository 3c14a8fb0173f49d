"""Scenario kinds: which command takes which file, and how one kind becomes another.

Design. The three commands that take a scenario need three different things, so there are three
*kinds* of scenario file, each named by an optional top-level key ``kind`` and recognised by its
tables when the key is absent (examples of each in ``examples/``):

``workload`` (``kvmmu run``; :mod:`kvmmu.sim.workloads.schema`)
    What a guest does over simulated time, *sampled*: ``[guest]``, ``[vcpu]``, ``[[slots]]``,
    ``[[devices]]``, ``[[vmm]]`` operations with a start, repeat count and interval, ``[random]``.
    Sizes in GiB and durations in ms are a few numbers; nothing is enumerated.
``interleaving`` (``kvmmu check``; :mod:`kvmmu.check.scenario`)
    A tiny closed program for the explorer: ``[vm]``, initial ``[[slots]]``, one access script
    per vCPU in ``[[vcpus]]``, and the VMM's ``[[updates]]``, whose steps it interleaves in every
    order. Litmus-test sized: a handful of accesses.
``steps`` (``kvmmu diff``; :mod:`kvmmu.kvm.scenario`)
    One exact sequence, run on the model and on ``/dev/kvm`` side by side: ``[scenario]``,
    ``[[memory]]`` host buffers, ``[[step]]`` memslot requests and accesses in order.

Every command also takes the other kinds where that makes sense, converted here (never by a
second copy of anyone's semantics: the VMM's operations come from the simulation's own
:func:`~kvmmu.sim.workloads.vmm.schedule` and :class:`~kvmmu.sim.workloads.vmm.VmmState`, and
which requests succeed is decided by the model's own ``set_user_memory_region``):

* a workload becomes ``steps`` (``kvmmu diff boot``) and ``interleaving`` (``kvmmu check
  --scenario boot``): its memslot requests in time order, each operation repeated at most
  :data:`MAX_REPEATS` times, with the guest-physical map *compacted* (each region keeps its order
  but at most :data:`REGION_CAP` of its size, with a guard page between regions) so that it fits
  the real-KVM harness's window; the vCPUs' sampled streams become probes that observe what each
  request changed: reads of the region it created, moved or deleted (old and new place), a device
  page, a RAM write read back after the next change;
* an ``interleaving`` becomes ``steps`` (``kvmmu diff``): the initial slots, then round by round
  each vCPU's next access and the next update;
* a ``steps`` sequence becomes an ``interleaving`` (``kvmmu check``): the requests before the
  first access are the initial slots, the later ones the updates, each vCPU's accesses its script
  (the explorer then tries every order, not only the written one);
* ``kvmmu run`` takes workloads only: a litmus program has no time, rates or sizes to simulate.

The embedded scenarios are workloads (``kvmmu/data/scenarios``) plus the explorer's default,
``mmio-to-ram`` (an interleaving). Prior art: the fio job file / litmus test / syzkaller program
split, here bridged by conversions instead of one format that would fit none of the three jobs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from kvmmu.tomlfile import SCENARIO_KINDS, read_toml

if TYPE_CHECKING:
    from kvmmu.check.scenario import Scenario as Interleaving
    from kvmmu.kvm.scenario import Scenario as Steps
    from kvmmu.sim.workloads.schema import Scenario as Workload

Kind = Literal["workload", "interleaving", "steps"]

#: Which kind each command takes natively.
NATIVE: Final[dict[str, Kind]] = {"run": "workload", "check": "interleaving", "diff": "steps"}
#: One line per kind, for ``--help`` texts and error messages.
KIND_LINES: Final[dict[Kind, str]] = {
    "workload": "workload (kvmmu run): a guest over simulated time, sampled; [guest], [vcpu], "
    "[[slots]], [[devices]], [[vmm]]",
    "interleaving": "interleaving (kvmmu check): a tiny program for the explorer; [vm], [[slots]], "
    "[[vcpus]] accesses, [[updates]]",
    "steps": "steps (kvmmu diff): one exact sequence for the model and /dev/kvm; [scenario], "
    "[[memory]], [[step]]",
}
#: Top-level keys that only one kind has (``slots``, ``name``, ``description`` are shared).
_MARKS: Final[dict[Kind, frozenset[str]]] = {
    "workload": frozenset({"duration", "guest", "vcpu", "devices", "vmm", "random"}),
    "interleaving": frozenset({"vm", "vcpus", "updates"}),
    "steps": frozenset({"scenario", "memory", "step"}),
}
#: The explorer's default scenario, embedded under this name.
CHECK_DEFAULT_NAME: Final = "mmio-to-ram"

PAGE: Final = 4096
#: A compacted region keeps at most this much of its size (16 pages: room for every probe).
REGION_CAP: Final = 16 * PAGE
#: Each VMM operation of a workload is repeated at most this many times once converted.
MAX_REPEATS: Final = 3
#: vCPUs of a converted ``steps`` scenario (KVM_CAP_NR_VCPUS on this project's hosts is 2).
STEPS_VCPUS: Final = 2
#: Requests turned into explorer updates (its search grows with every one; the CLI takes 2).
CHECK_UPDATES: Final = 4
_CHECK_HVA: Final = 0x7F00_0000_0000
_LARGE_PAGE: Final = 2 << 20
_MAX_WINDOW: Final = 512 << 20  # kvmmu.kvm.guest.MAX_WINDOW, not imported: ctypes-free here
_HARNESS_SLOT: Final = 32763  # kvmmu.kvm.guest.HARNESS_SLOT


class ScenarioError(ValueError):
    """A scenario that cannot be used by the command asked; one line naming the file and why."""


def _loader_errors() -> tuple[type[Exception], ...]:
    from kvmmu.check.scenario import ScenarioError as CheckError
    from kvmmu.kvm.scenario import ScenarioError as StepsError
    from kvmmu.sim.workloads.schema import ScenarioError as WorkloadError

    return (WorkloadError, CheckError, StepsError)


def detect_kind(data: dict[str, Any], source: str) -> Kind:
    """The kind a parsed scenario file declares (``kind = ...``) or, failing that, has the tables of."""
    given = data.get("kind")
    if given is not None:
        if given not in SCENARIO_KINDS:
            raise ScenarioError(f"{source}: kind: must be one of {', '.join(SCENARIO_KINDS)} (got {given!r})")
        return given  # type: ignore[no-any-return]
    found = [k for k, marks in _MARKS.items() if marks & data.keys()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ScenarioError(
            f"{source}: cannot tell what kind of scenario this is: add kind = \"workload\", "
            "\"interleaving\" or \"steps\" (see examples/)"
        )
    raise ScenarioError(
        f"{source}: has tables of several kinds ({', '.join(found)}); one file is one kind: "
        "add kind = ... and keep its tables only"
    )


def embedded_names() -> tuple[str, ...]:
    """Every embedded scenario name: the workloads, then the explorer's default."""
    from kvmmu.sim.workloads.schema import scenario_names

    return (*scenario_names(), CHECK_DEFAULT_NAME)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A scenario as given: its kind, the validated object of that kind, where it came from."""

    kind: Kind
    scenario: Any
    source: str


def load_any(name_or_path: str | Path) -> Loaded:
    """A scenario file (any kind) by path, or an embedded scenario by name, validated as its kind."""
    from kvmmu.check import scenario as check_scenario
    from kvmmu.kvm import scenario as steps_scenario
    from kvmmu.sim.workloads import schema

    p = Path(name_or_path)
    try:
        if p.suffix != ".toml" and not p.exists():
            name = str(name_or_path)
            if name == CHECK_DEFAULT_NAME:
                return Loaded("interleaving", check_scenario.DEFAULT_SCENARIO, f"<kvmmu>/{name}")
            if name not in schema.scenario_names():
                raise ScenarioError(
                    f"{name}: no such scenario file or embedded scenario; embedded: "
                    f"{', '.join(embedded_names())}"
                )
            sc = schema.load_scenario(name)
            return Loaded("workload", sc, f"<kvmmu>/data/scenarios/{name}.toml")
        source = str(p)
        data = read_toml(p, ScenarioError, "scenario")
        kind = detect_kind(data, source)
        if kind == "workload":
            return Loaded(kind, schema.scenario_from_dict(data, source), source)
        if kind == "interleaving":
            return Loaded(kind, check_scenario.parse_scenario(data, source), source)
        return Loaded(kind, steps_scenario.validate_scenario(data, source), source)
    except _loader_errors() as exc:
        raise ScenarioError(str(exc)) from None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _refuse(loaded: Loaded, command: str) -> ScenarioError:
    return ScenarioError(
        f"{loaded.source}: {_a(loaded.kind)} scenario; kvmmu {command} takes "
        f"{_a(NATIVE[command])} scenario (see `kvmmu {command} --help` and examples/)"
    )


def for_run(name_or_path: str | Path) -> Workload:
    """The workload ``kvmmu run`` simulates: only a workload will do."""
    loaded = load_any(name_or_path)
    if loaded.kind != "workload":
        raise _refuse(loaded, "run")
    sc: Workload = loaded.scenario
    return sc


def for_check(name_or_path: str | Path) -> Interleaving:
    """The interleaving ``kvmmu check`` explores: given, or converted from a workload or steps."""
    loaded = load_any(name_or_path)
    try:
        if loaded.kind == "workload":
            return interleaving_from_workload(loaded.scenario, loaded.source)
        if loaded.kind == "steps":
            return interleaving_from_steps(loaded.scenario, loaded.source)
    except _loader_errors() as exc:
        raise ScenarioError(str(exc)) from None
    sc: Interleaving = loaded.scenario
    return sc


def for_diff(name_or_path: str | Path) -> tuple[Steps, str]:
    """The steps ``kvmmu diff`` runs, and their source: given, or converted from the other kinds."""
    loaded = load_any(name_or_path)
    try:
        if loaded.kind == "workload":
            return steps_from_workload(loaded.scenario, loaded.source), loaded.source
        if loaded.kind == "interleaving":
            return steps_from_interleaving(loaded.scenario, loaded.source), loaded.source
    except _loader_errors() as exc:
        raise ScenarioError(str(exc)) from None
    return loaded.scenario, loaded.source


# --- workload -> a compact sequence of memslot requests ---------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A compacted ``KVM_SET_USER_MEMORY_REGION``: backing buffer by name, offset 0."""

    slot: int
    flags: int
    gpa: int
    size: int
    memory: str | None
    accepted: bool


@dataclass(frozen=True, slots=True)
class Compacted:
    """A workload's memslot history on a compacted guest-physical map."""

    initial: tuple[Request, ...]
    requests: tuple[Request, ...]
    memories: dict[str, int]  # name -> bytes
    devices: tuple[int, ...]  # compacted gpa of each device's first page
    ram_gpa: int
    rom_gpas: tuple[int, ...]
    window: int


def _pages(size: int) -> int:
    return -(-size // PAGE)


def compact_workload(sc: Workload, *, max_repeats: int = MAX_REPEATS, seed: int = 0) -> Compacted:
    """The workload's initial memslots and its first operations' requests on a compact map.

    Operations due within the scenario's duration are taken in time order, each at most
    ``max_repeats`` times (a random mix: ``4 * max_repeats`` operations). The VMM's view is the
    simulation's :class:`VmmState`; whether a request succeeds is the model's answer on the
    compacted map, which is the one that will run.
    """
    from kvmmu.errors import KvmError
    from kvmmu.memslots import KVM_MEM_READONLY
    from kvmmu.sim.workloads.vmm import VmmState, schedule
    from kvmmu.vm import VM

    ops = tuple(dataclasses.replace(op, repeat=min(op.repeat, max_repeats)) for op in sc.vmm)
    rnd = sc.random
    if rnd is not None:
        rnd = dataclasses.replace(rnd, ops=min(rnd.ops, 4 * max_repeats))
    short = dataclasses.replace(sc, vmm=ops, random=rnd)
    state = VmmState()
    initial = state.initial(short)
    for r in initial:
        state.accepted(r)
    # Plan every request first (on the VMM's own view, assuming success) to learn the map.
    planned = []
    for action in schedule(short, seed):
        if action.time >= sc.duration:
            break
        for r in state.requests(action):
            planned.append(r)
            state.accepted(r)
    starts: dict[int, int] = {}  # original gpa -> pages its compacted footprint needs

    def mark(gpa: int, size: int) -> None:
        base = gpa - gpa % PAGE
        need = min(_pages(gpa % PAGE + size), REGION_CAP // PAGE)
        starts[base] = max(starts.get(base, 0), need)

    for r in (*initial, *planned):
        if r.memory_size:
            mark(r.guest_phys_addr, r.memory_size)
    for d in sc.devices:
        mark(d.gpa, d.size)
    mapped: dict[int, int] = {}
    at = 0
    for g in sorted(starts):
        mapped[g] = at
        at += (starts[g] + 1) * PAGE  # a guard page after each region: an unbacked gap
    window = max(_LARGE_PAGE, -(-at // _LARGE_PAGE) * _LARGE_PAGE)
    if window > _MAX_WINDOW:
        raise ScenarioError(
            f"{sc.name}: too many distinct regions to compact into the real-KVM harness's 512 MiB"
        )

    def size_of(size: int) -> int:
        return min(_pages(size), REGION_CAP // PAGE) * PAGE

    memories: dict[str, int] = {}
    names: dict[int, str] = {}
    bases: dict[str, int] = {}  # a host address per buffer, for the model's own check

    def memory_for(r: Any) -> str | None:
        if not r.memory_size:
            return None
        name = names.get(r.userspace_addr)
        if name is None:
            name = f"slot{r.slot}-{sum(1 for n in names.values() if n.startswith(f'slot{r.slot}-'))}"
            names[r.userspace_addr] = name
            memories[name] = size_of(r.memory_size)
            bases[name] = _CHECK_HVA + (len(bases) << 32)
        return name

    vm = VM("generation", oracle=False)

    def apply(r: Any) -> Request:
        if r.slot == _HARNESS_SLOT:
            raise ScenarioError(
                f"{sc.name}: slot {_HARNESS_SLOT} is the real-KVM harness's own memslot; "
                "use another slot id to run it with kvmmu diff or check"
            )
        gpa = mapped.get(r.guest_phys_addr - r.guest_phys_addr % PAGE, 0) + r.guest_phys_addr % PAGE
        size = size_of(r.memory_size) if r.memory_size else 0
        mem = memory_for(r)
        ok = True
        try:
            vm.set_user_memory_region(r.slot, r.flags, gpa, size, bases[mem] if mem else 0)
        except KvmError:
            ok = False
        return Request(r.slot, r.flags, gpa, size, mem, ok)

    first = tuple(apply(r) for r in initial)
    later = tuple(apply(r) for r in planned)
    return Compacted(
        first,
        later,
        memories,
        tuple(mapped[d.gpa - d.gpa % PAGE] + d.gpa % PAGE for d in sc.devices),
        mapped[sc.guest.ram_base],
        tuple(r.gpa for r in first if r.flags & KVM_MEM_READONLY and r.size and r.accepted),
        window,
    )


def _aligned(gpa: int, size: int = 8) -> int:
    return gpa - gpa % size


def steps_from_workload(sc: Workload, source: str = "<workload>", *, vcpus: int = STEPS_VCPUS) -> Steps:
    """The workload's memslot history as ``steps`` for ``kvmmu diff``, probed by the vCPUs."""
    from kvmmu.kvm.scenario import validate_scenario

    c = compact_workload(sc)
    n = max(1, min(vcpus, sc.guest.vcpus))
    steps: list[dict[str, Any]] = []

    def read(vcpu: int, gpa: int) -> dict[str, Any]:
        return {"op": "read", "vcpu": vcpu % n, "gpa": _aligned(gpa), "size": 8}

    def set_step(r: Request) -> dict[str, Any]:
        d: dict[str, Any] = {"op": "set", "slot": r.slot, "flags": r.flags, "gpa": r.gpa, "size": r.size}
        if r.memory is not None:
            d["memory"] = r.memory
        return d

    for r in c.initial:
        steps.append(set_step(r))
    # Warm-up: every region and device read once, as a guest that has been running.
    probes = [r.gpa for r in c.initial if r.size] + list(c.devices)
    for i, gpa in enumerate(probes):
        steps.append(read(i, gpa))
    steps.append({"op": "write", "vcpu": 0, "gpa": c.ram_gpa + 8, "size": 8, "value": 0x5A5A_0000})
    for rom in c.rom_gpas[:1]:  # a write to ROM exits to the VMM on both sides, or neither
        steps.append({"op": "write", "vcpu": n - 1, "gpa": rom, "size": 4, "value": 0xA5})
    where: dict[int, Request] = {r.slot: r for r in c.initial if r.accepted and r.size}
    for k, r in enumerate(c.requests):
        old = where.get(r.slot)
        steps.append(set_step(r))
        if r.accepted:
            if r.size:
                where[r.slot] = r
            else:
                where.pop(r.slot, None)
        targets = [g for g in (r.gpa if r.size else None, old.gpa if old else None) if g is not None]
        targets = list(dict.fromkeys(targets))
        if c.devices:
            targets.append(c.devices[k % len(c.devices)])
        if n > 1 and len(targets) >= 2:
            steps.append({"op": "parallel", "accesses": [read(0, targets[0]), read(1, targets[1])]})
            targets = targets[2:]
        for j, g in enumerate(targets):
            steps.append(read(k + j, g))
        if k % 3 == 2:  # RAM keeps what was written across memslot changes elsewhere
            steps.append(read(k, c.ram_gpa + 8))
    raw = {
        "scenario": {"name": f"{sc.name}-steps", "vcpus": n, "window_mib": c.window >> 20},
        "memory": [{"name": m, "pages": size // PAGE} for m, size in c.memories.items()],
        "step": steps,
    }
    return validate_scenario(raw, f"{source} (as steps)")


def interleaving_from_workload(sc: Workload, source: str = "<workload>") -> Interleaving:
    """The workload's first memslot changes as a litmus program for ``kvmmu check``.

    Initial slots as the workload starts; updates: its first :data:`CHECK_UPDATES` accepted
    requests; vCPU 0 reads where the first two updates act (new place, then old), vCPU 1 reads a
    device page then where the first update acts. Two accesses each: the explorer's search grows
    exponentially with every step, and these are the ones that can observe a stale MMIO SPTE.
    """
    from kvmmu.check.scenario import parse_scenario

    c = compact_workload(sc)
    hva = {name: _CHECK_HVA + (i << 32) for i, name in enumerate(sorted(c.memories))}

    def region(r: Request) -> dict[str, Any]:
        return {"slot": r.slot, "gpa": r.gpa, "size": r.size, "flags": r.flags,
                "userspace_addr": hva[r.memory] if r.memory else 0}

    updates = [r for r in c.requests if r.accepted][:CHECK_UPDATES]
    if not updates:
        raise ScenarioError(f"{source}: no memslot change within its duration: nothing to explore")
    where = {r.slot: r.gpa for r in c.initial if r.accepted and r.size}
    places: list[int] = []
    for r in updates:
        for g in (r.gpa if r.size else None, where.get(r.slot)):
            if g is not None and g not in places:
                places.append(g)
        if r.size:
            where[r.slot] = r.gpa
        else:
            where.pop(r.slot, None)
    mmio = c.devices[0] if c.devices else c.window - PAGE  # the top of the window is unbacked
    script0 = [{"gpa": _aligned(g, 4)} for g in places[:2]] or [{"gpa": _aligned(mmio, 4)}]
    script1 = [{"gpa": _aligned(mmio, 4)}, {"gpa": _aligned(places[0], 4)}]
    data = {
        "name": f"{sc.name}-interleaving",
        "description": f"the first memslot changes of {sc.name}, compacted (kvmmu.scenarios)",
        "slots": [region(r) for r in c.initial if r.accepted],
        "vcpus": [{"accesses": script0}, {"accesses": script1}],
        "updates": [region(r) for r in updates],
    }
    return parse_scenario(data, f"{source} (as interleaving)")


# --- between the explorer's programs and diff's sequences -------------------------------------


def steps_from_interleaving(sc: Interleaving, source: str = "<interleaving>") -> Steps:
    """An explorer program as one sequence: initial slots, then round by round each vCPU's next
    access and the VMM's next update (the order a scheduler with no preemption would run)."""
    from kvmmu.kvm.scenario import MAX_MEMORY_PAGES, validate_scenario

    regions = [*sc.slots, *sc.updates]
    sizes: dict[int, int] = {}
    for r in regions:
        if r.size:
            sizes[r.userspace_addr] = max(sizes.get(r.userspace_addr, 0), r.size)
    names = {hva: f"m{i}" for i, hva in enumerate(sorted(sizes))}
    for hva, size in sizes.items():
        if size % PAGE or size // PAGE > MAX_MEMORY_PAGES:
            raise ScenarioError(
                f"{source}: a slot of {size:#x} bytes at userspace {hva:#x} cannot be backed on the "
                f"real KVM (whole pages, at most {MAX_MEMORY_PAGES} of them)"
            )

    def set_step(r: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"op": "set", "slot": r.slot, "flags": r.flags, "gpa": r.gpa, "size": r.size}
        if r.size:
            d["memory"] = names[r.userspace_addr]
        return d

    vcpus = len(sc.vcpus)
    top = 0
    steps: list[dict[str, Any]] = [set_step(r) for r in sc.slots]
    rounds = max([len(sc.updates)] + [len(s.accesses) for s in sc.vcpus])
    for k in range(rounds):
        for v, script in enumerate(sc.vcpus):
            if k < len(script.accesses):
                a = script.accesses[k]
                top = max(top, a.gpa + a.size)
                steps.append({"op": "write" if a.write else "read", "vcpu": v, "gpa": a.gpa,
                              "size": a.size, "value": a.value if a.write else 0})
        if k < len(sc.updates):
            steps.append(set_step(sc.updates[k]))
    window = max(_LARGE_PAGE, -(-top // _LARGE_PAGE) * _LARGE_PAGE)
    raw = {
        "scenario": {"name": f"{sc.name}-steps", "vcpus": vcpus, "window_mib": window >> 20,
                     "zap_all": sc.vm.slot_zap != "slot"},
        "memory": [{"name": names[h], "pages": sizes[h] // PAGE} for h in sorted(sizes)],
        "step": steps,
    }
    return validate_scenario(raw, f"{source} (as steps)")


def interleaving_from_steps(sc: Steps, source: str = "<steps>") -> Interleaving:
    """A diff sequence as an explorer program: requests before the first access are the initial
    slots, later ones the updates, each vCPU's accesses (in order) its script. Dirty-log reads
    and host writes have no place in the explorer and are left out."""
    from kvmmu.check.scenario import parse_scenario
    from kvmmu.kvm.scenario import AccessSpec, ParallelStep, SetStep

    base = {m.name: _CHECK_HVA + (i << 32) for i, m in enumerate(sc.memory)}
    slots: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    scripts: dict[int, list[dict[str, Any]]] = {}
    for st in sc.step:
        if isinstance(st, SetStep):
            hva = base[st.memory] + st.offset if st.memory is not None else 0
            r = {"slot": st.slot, "gpa": st.gpa, "size": st.size, "flags": st.flags, "userspace_addr": hva}
            (updates if scripts else slots).append(r)
        elif isinstance(st, AccessSpec | ParallelStep):
            accesses: Iterable[AccessSpec] = [st] if isinstance(st, AccessSpec) else st.accesses
            for a in accesses:
                scripts.setdefault(a.vcpu, []).append(
                    {"gpa": a.gpa, "write": a.write, "size": a.size, "value": a.value}
                )
    if not scripts:
        raise ScenarioError(f"{source}: no guest access: the explorer has nothing to interleave")
    data = {
        "name": f"{sc.scenario.name}-interleaving",
        "description": f"{sc.scenario.name}'s requests and accesses, in every order",
        "vm": {"slot_zap": "all" if sc.scenario.zap_all else "slot"},
        "slots": slots,
        "vcpus": [{"accesses": scripts[v]} for v in sorted(scripts)],
        "updates": updates,
    }
    return parse_scenario(data, f"{source} (as interleaving)")
