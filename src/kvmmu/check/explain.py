"""Counterexamples in kernel terms: numbered steps, the trace lines they emitted, a replay command.

Design. A schedule of thread indices is proof, not explanation.  The explainer replays it on a VM
with tracing on and, around each step, reads what the step did from the thread's innermost
generator frame — the one that yielded the step and performs it when resumed.  The frame object
is held across the resume, so its locals stay readable even when the generator returns in that
step (CPython keeps a frame's locals alive while a reference to the frame object exists).  Locals
such as ``slot`` after ``READ_MEMSLOTS``, ``gen`` after ``READ_GENERATION`` or ``spte`` after
``READ_SPTE_LOCKLESS`` say in the kernel's words what happened: "vCPU0 looks gfn 0x100 up in
memslots gen 0x7ff6b: not found", "VMM publishes memslots gen 0x7ff6c", "vCPU0 writes MMIO SPTE
gfn 0x100 gen 0x7ff6c".  Reading is all it does: nothing in the model is changed or re-implemented,
and a step it does not recognise is still printed with its ``Step`` name.

Each explained step also carries structured fields (``event``, ``gfn``, ``gen``, ``found``) so that
tests and the JSON output can check a counterexample's shape without parsing prose.  Prior art:
CHESS and SPIN print an error trail as numbered thread steps; the kernel's own race fix
descriptions ("fix potentially corrupt mmio cache") tell the race in exactly these steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from kvmmu.check.scenario import Access, Region
from kvmmu.check.schedule import RunResult, format_schedule, run_schedule
from kvmmu.check.state import frames
from kvmmu.check.world import CheckConfig, Finding, World
from kvmmu.memslots import KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS, Change, Memslot, Memslots
from kvmmu.mmu.faults import Outcome, match_mmio_gpa
from kvmmu.mmu.pages import ShadowPage
from kvmmu.mmu.steps import Step
from kvmmu.spte import PAGE_SHIFT


def fmt_gen(gen: int) -> str:
    """A memslot generation as the model holds it (bit 63: update in progress)."""
    if gen & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        return f"{gen & ~KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:#x}|UPDATE_IN_PROGRESS"
    return f"{gen:#x}"


def _sp(sp: Any) -> str:
    if isinstance(sp, ShadowPage):
        return f"l{sp.level} shadow page gfn {sp.gfn:#x} (mmu_valid_gen {sp.mmu_valid_gen})"
    return "a shadow page"


def _slot(m: Memslot) -> str:
    size = m.npages << PAGE_SHIFT
    return f"slot {m.id} (gpa {m.base_gfn << PAGE_SHIFT:#x}+{size:#x})"


@dataclass(frozen=True, slots=True)
class ExplainedStep:
    """One step of a counterexample, in words and as data."""

    number: int
    thread: str
    step: str  # the Step's name, or BEGIN for the start of an operation
    event: str  # a short tag: memslot-lookup, publish, read-generation, mark-mmio-spte, ...
    action: str  # what the thread did ("looks gfn 0x100 up in memslots gen 0x4: not found")
    trace: tuple[str, ...] = ()
    gfn: int | None = None
    gen: int | None = None
    found: bool | None = None

    @property
    def text(self) -> str:
        return f"{self.thread} {self.action}"

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "thread": self.thread, "step": self.step,
                "event": self.event, "text": self.text, "trace": list(self.trace),
                "gfn": self.gfn, "gen": self.gen, "found": self.found}


@dataclass(slots=True)
class _Describe:
    """Event, words and fields of the step being explained."""

    event: str
    action: str  # what the thread did, without its name
    gfn: int | None = None
    gen: int | None = None
    found: bool | None = None


@dataclass(slots=True)
class _Explainer:
    """A :class:`~kvmmu.check.schedule.StepObserver` that records an explained step per step."""

    steps: list[ExplainedStep] = field(default_factory=list)
    frame: FrameType | None = None
    seen: dict[str, Any] = field(default_factory=dict)  # the frame's locals before the step
    pending: Step | None = None
    op_index: int = 0
    trace_mark: int = 0
    gens: list[int] = field(default_factory=list)
    active: list[Memslots] = field(default_factory=list)
    cache: tuple[int, int] = (0, 0)
    cache_match: bool = False

    def before(self, world: World, t: int) -> None:
        th = world.threads[t]
        chain = frames(th.gen) if th.gen is not None else []
        self.frame = chain[-1] if chain else None
        self.seen = dict(self.frame.f_locals) if self.frame is not None else {}
        self.pending = th.pending
        self.op_index = th.op_index
        kvm = world.vm.kvm
        self.active = list(kvm.memslots.active)
        self.gens = [s.generation for s in self.active]
        trace = kvm.trace
        self.trace_mark = len(trace.records) if trace is not None else 0
        if t < len(world.vcpus):
            arch = world.vcpus[t].arch
            self.cache = (arch.mmio_gfn, arch.mmio_gen)
            gfn = self.seen.get("gfn")
            self.cache_match = isinstance(gfn, int) and match_mmio_gpa(kvm, arch, gfn)

    def after(self, world: World, t: int, findings: Sequence[Finding]) -> None:
        th = world.threads[t]
        after = dict(self.frame.f_locals) if self.frame is not None else {}
        d = self._describe(world, t, after)
        finished = th.op_index != self.op_index
        if finished:
            d.action += "; " + _result(th.ops[self.op_index], th.results[-1])
        trace = world.vm.kvm.trace
        lines = tuple(r.ftrace_line() for r in trace.records[self.trace_mark:]) if trace else ()
        step = self.pending.name if self.pending is not None else "BEGIN"
        self.steps.append(ExplainedStep(len(self.steps) + 1, th.name, step, d.event, d.action,
                                        lines, d.gfn, d.gen, d.found))

    # --- the words --------------------------------------------------------------------------
    def _describe(self, world: World, t: int, after: dict[str, Any]) -> _Describe:
        th = world.threads[t]
        step = self.pending
        b = self.seen
        func = self.frame.f_code.co_name if self.frame is not None else ""
        kvm = world.vm.kvm
        codec = kvm.mmu.codec
        as_id = world.vcpus[t].arch.as_id if t < len(world.vcpus) else 0
        gfn = b.get("gfn") if isinstance(b.get("gfn"), int) else None
        if step is None:
            op = th.ops[self.op_index]
            if isinstance(op, Access):
                where = ("starts an instruction KVM emulates" if op.emulated
                         else "enters the guest")
                return _Describe("begin", f"{where}: {op.describe()}", op.gpa >> PAGE_SHIFT)
            plan = _outer_local(th, "plan")
            change = f" ({plan.change.name})" if plan is not None else ""
            return _Describe("begin", f"calls KVM_SET_USER_MEMORY_REGION: "
                                      f"{op.describe()}{change}")
        if step is Step.MMU_LOCK:
            if kvm.mmu.lock.holder is None or th.pending is Step.MMU_LOCK:
                return _Describe("lock", "spins on mmu_lock")
            return _Describe("lock", "takes mmu_lock")
        if step is Step.MMU_UNLOCK:
            return _Describe("unlock", "releases mmu_lock")
        if step is Step.ROOT_RELOAD:
            root = world.vcpus[t].arch.root
            how = "a new" if after.get("created") else "the existing"
            return _Describe("root", f"loads {how} root: {_sp(root)} (kvm_mmu_reload)")
        if step is Step.GUEST_ACCESS:
            return self._guest_access(world, t, gfn)
        if step is Step.VCPU_CACHE:
            return self._vcpu_cache(world, t, func, gfn)
        if step is Step.READ_SPTE_LOCKLESS:
            spte = after.get("spte", 0)
            if codec.is_mmio(spte):
                return _Describe("read-spte", f"reads the SPTE of gfn {gfn:#x} locklessly: "
                                 f"MMIO SPTE {spte:#x} with gen {codec.generation(spte):#x}",
                                 gfn, codec.generation(spte))
            return _Describe("read-spte", f"reads the SPTE of gfn {gfn:#x} locklessly: "
                             f"not an MMIO SPTE any more ({spte:#x}): RET_PF_RETRY", gfn)
        if step is Step.READ_GENERATION:
            if func == "_handle_mmio_page_fault":
                cur, sgen, valid = after.get("current", 0), after.get("spte_gen", 0), after.get("valid")
                verdict = "valid: emulate as MMIO" if valid else "stale: take the slow path"
                return _Describe("check-generation", f"checks the MMIO SPTE's gen "
                                 f"{sgen:#x} against memslots gen {fmt_gen(cur)} "
                                 f"(check_mmio_spte): {verdict}", gfn, cur)
            gen = after.get("gen", self.gens[as_id])
            return _Describe("read-generation", f"reads memslots gen {fmt_gen(gen)} to tag "
                             f"the MMIO SPTE of gfn {gfn:#x} with", gfn, gen)
        if step is Step.READ_MEMSLOTS:
            return self._read_memslots(func, as_id, gfn, after)
        if step is Step.WRITE_SPTE:
            return self._write_spte(gfn, after)
        if step is Step.ZAP_SPTE:
            sp = b.get("sp")
            i = b.get("i", b.get("idx"))
            if isinstance(sp, ShadowPage) and isinstance(i, int):
                g = sp.gfn_of(i)
                old = b.get("spte", 0)
                what = "MMIO" if old and codec.is_mmio(old) else "RAM"
                if func == "_page_fault":
                    return _Describe("zap-spte", f"drops the 2 MiB SPTE at gfn {g:#x} to "
                                     "link a table", g)
                return _Describe("zap-spte", f"zaps the {what} SPTE of gfn {g:#x}", g)
            return _Describe("zap-spte", "zaps an SPTE")
        if step is Step.WALK_SHADOW_PAGE:
            return _Describe("walk-page", f"walks {_sp(b.get('sp'))} looking for MMIO SPTEs")
        if step is Step.FREE_SHADOW_PAGE:
            return _Describe("free-page", f"frees {_sp(b.get('page', b.get('_page')))}")
        if step is Step.BUMP_MMU_VALID_GEN:
            return _Describe("zap-all-fast", f"bumps mmu_valid_gen to "
                             f"{kvm.mmu.mmu_valid_gen} (kvm_mmu_zap_all_fast): every shadow page "
                             "is obsolete, vCPUs reload their roots")
        if step is Step.PUBLISH_MEMSLOTS:
            return self._publish(b)
        if step is Step.SRCU_SYNC:
            if th.pending is Step.SRCU_SYNC and th.op_index == self.op_index:
                return _Describe("srcu-sync", "waits in synchronize_srcu for vCPUs "
                                 "still reading the old memslots")
            return _Describe("srcu-sync", "returns from synchronize_srcu: no vCPU reads the "
                             "old memslots any more")
        if step is Step.WRITE_GENERATION:
            slots = b.get("new")
            gen = slots.generation if isinstance(slots, Memslots) else kvm.memslots.active[0].generation
            return _Describe("write-generation", f"sets memslots gen to {fmt_gen(gen)} "
                             "(update complete)", None, gen)
        if step is Step.WRITE_PROTECT:
            sp, i = b.get("sp"), b.get("i")
            if isinstance(sp, ShadowPage) and isinstance(i, int):
                return _Describe("write-protect", f"write-protects the SPTE of gfn "
                                 f"{sp.gfn_of(i):#x} (dirty logging)", sp.gfn_of(i))
            return _Describe("write-protect", "write-protects an SPTE")
        if step is Step.RETRY:
            return _Describe("retry", "re-enters the guest to retry the access "
                             "(RET_PF_RETRY)", gfn)
        if step is Step.EMULATE:
            return _Describe("emulate", "emulates the instruction "
                             "(x86_emulate_instruction)", gfn)
        if step is Step.EXIT_TO_USERSPACE:
            return _Describe("exit", "exits to userspace (KVM_EXIT_MMIO)", gfn)
        return _Describe(step.name.lower(), f"{step.name}")

    def _guest_access(self, world: World, t: int, gfn: int | None) -> _Describe:
        th = world.threads[t]
        g = gfn if gfn is not None else 0
        if th.op_index != self.op_index:
            return _Describe("guest-access", f"accesses gfn {g:#x}: the hardware walk finds a "
                             "present SPTE, no exit", gfn)
        inner = frames(th.gen)[-1].f_code.co_name if th.gen is not None else ""
        if inner == "_handle_mmio_page_fault":
            return _Describe("guest-access", f"faults on the MMIO SPTE of gfn {g:#x} (EPT "
                             "misconfig): handle_mmio_page_fault", gfn)
        return _Describe("guest-access", f"page-faults on gfn {g:#x} (no usable SPTE): "
                         "the slow path", gfn)

    def _vcpu_cache(self, world: World, t: int, func: str, gfn: int | None) -> _Describe:
        arch = world.vcpus[t].arch
        g = gfn if gfn is not None else 0
        lookup = func == "_emulate" or (func == "_handle_mmio_page_fault"
                                        and "spte" not in self.seen)
        if lookup:
            if self.cache_match:
                return _Describe("cache-lookup", f"checks its MMIO cache for gfn {g:#x}: hit (gen "
                                 f"{fmt_gen(self.cache[1])}): MMIO", gfn, self.cache[1], True)
            return _Describe("cache-lookup", f"checks its MMIO cache for gfn {g:#x}: no current "
                             "entry", gfn, None, False)
        if (arch.mmio_gfn, arch.mmio_gen) != self.cache or arch.mmio_gfn == g:
            return _Describe("cache-fill", f"caches gfn {g:#x} as MMIO with gen "
                             f"{fmt_gen(arch.mmio_gen)} (vcpu_cache_mmio_info)", gfn, arch.mmio_gen)
        return _Describe("cache-fill", f"does not cache gfn {g:#x}: an update is in "
                         "progress", gfn)

    def _read_memslots(self, func: str, as_id: int, gfn: int | None,
                       after: dict[str, Any]) -> _Describe:
        gen = self.gens[as_id]
        g = gfn if gfn is not None else 0
        slot = after.get("slot")
        who = "(emulator) " if func == "_emulate" else ""
        head = f"{who}looks gfn {g:#x} up in memslots gen {fmt_gen(gen)}"
        event = "emulator-lookup" if func == "_emulate" else "memslot-lookup"
        if not isinstance(slot, Memslot):
            return _Describe(event, f"{head}: not found (MMIO)", gfn, gen, False)
        if slot.invalid:
            return _Describe(event, f"{head}: {_slot(slot)} is being deleted or moved: "
                             "RET_PF_RETRY", gfn, gen, True)
        return _Describe(event, f"{head}: {_slot(slot)} (RAM)", gfn, gen, True)

    def _write_spte(self, gfn: int | None, after: dict[str, Any]) -> _Describe:
        b = self.seen
        sp, idx = b.get("sp"), b.get("idx")
        g = gfn if gfn is not None else 0
        if "old" not in b or not isinstance(sp, ShadowPage) or not isinstance(idx, int):
            level = b.get("level", 0)
            return _Describe("link-page", f"links a new l{level - 1} shadow page for gfn "
                             f"{g:#x} (direct_map)", gfn)
        spte = sp.spt[idx]
        if "gen" in after and after.get("slot") is None:
            gen = after["gen"]
            return _Describe("mark-mmio-spte", f"writes MMIO SPTE gfn {g:#x} gen "
                             f"{fmt_gen(gen)} (mark_mmio_spte)", gfn, gen)
        return _Describe("map-ram", f"maps gfn {g:#x} to RAM: SPTE {spte:#x}", gfn)

    def _publish(self, b: dict[str, Any]) -> _Describe:
        new = b.get("new")
        if not isinstance(new, Memslots):
            return _Describe("publish", "publishes new memslots")
        old = self.active[new.as_id]
        changes = []
        for sid in sorted(set(old.by_id) | set(new.by_id)):
            o, n = old.by_id.get(sid), new.by_id.get(sid)
            if o == n:
                continue
            if o is None and n is not None:
                changes.append(f"{_slot(n)} created")
            elif n is None and o is not None:
                changes.append(f"slot {sid} removed")
            elif n is not None and n.invalid:
                changes.append(f"slot {sid} marked invalid")
            elif n is not None and o is not None and n.base_gfn != o.base_gfn:
                changes.append(f"slot {sid} moved to gpa {n.base_gfn << PAGE_SHIFT:#x}")
            elif n is not None:
                changes.append(f"slot {sid} flags {n.flags:#x}")
        what = ", ".join(changes) or "no slot changed"
        return _Describe("publish", f"publishes memslots gen {fmt_gen(new.generation)} "
                         f"({what})", None, new.generation)


def _outer_local(th: Any, name: str) -> Any:
    chain = frames(th.gen) if th.gen is not None else []
    for f in chain:
        if name in f.f_locals:
            return f.f_locals[name]
    return None


def _result(op: Access | Region, result: Any) -> str:
    if isinstance(op, Region):
        return (f"the ioctl returns ({result.name})" if isinstance(result, Change)
                else "the ioctl returns")
    if isinstance(result, Outcome):
        what = "write" if result.write else "read"
        if result.kind.value == "ram":
            value = f" value {result.value:#x}" if result.value is not None else ""
            return f"the {what} reached RAM at hva {result.hva:#x}{value}"
        exit_ = " (exit to userspace)" if result.exit_to_userspace else ""
        return f"the {what} was handled as MMIO{exit_} via the {result.path.value} path"
    return "the access completes"


@dataclass(frozen=True, slots=True)
class Counterexample:
    """An explained failing schedule and the command that replays it."""

    config: CheckConfig
    schedule: tuple[int, ...]
    schedule_text: str
    steps: tuple[ExplainedStep, ...]
    findings: tuple[Finding, ...]
    preemptions: int

    @property
    def replay_command(self) -> str:
        return " ".join(["kvmmu", "check", *self.config.command_args(), "--replay",
                         self.schedule_text])

    def render(self, *, trace: bool = True) -> str:
        width = max((len(s.thread) for s in self.steps), default=5)
        lines = [f"Counterexample: {len(self.steps)} steps, {self.preemptions} preemption"
                 f"{'s' if self.preemptions != 1 else ''}"]
        for s in self.steps:
            lines.append(f"{s.number:4d}. {s.thread:<{width}}  {s.action}")
            if trace:
                lines.extend(f"{'':{8 + width}}{line.strip()}" for line in s.trace)
        if self.findings:
            lines.append(f"Violation after step {len(self.steps)}:")
            lines.extend(f"  {f}" for f in self.findings)
        else:
            lines.append("No violation: every thread ran to its end.")
        lines.append(f"Replay: {self.replay_command}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule_text, "preemptions": self.preemptions,
                "replay": self.replay_command,
                "findings": [{"kind": f.kind, "text": f.text} for f in self.findings],
                "steps": [s.to_json() for s in self.steps]}


def explain(config: CheckConfig, schedule: Sequence[int], *, max_depth: int = 2000
            ) -> Counterexample:
    """Replay ``schedule`` strictly (then complete it) with tracing on, explaining every step."""
    observer = _Explainer()
    run: RunResult = run_schedule(config, schedule, trace=True, max_depth=max_depth,
                                  observer=observer)
    return Counterexample(config, run.executed, format_schedule(run.world, run.executed),
                          tuple(observer.steps), run.findings, run.preemptions)
