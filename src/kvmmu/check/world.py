"""One run of a check configuration: a fresh VM, its vCPU threads and the VMM thread.

Design. Stateless model checking (VeriSoft, Godefroid 1997) never copies a program state: it
re-executes a schedule prefix from the initial state.  A :class:`World` is that initial state,
built from a :class:`CheckConfig`: a new :class:`~kvmmu.vm.VM` with the scenario's memslots, one
thread per vCPU running its access script, and one VMM thread issuing the memslot updates.  The
threads are the model's own protocol generators (``Vcpu.access_steps``,
``VM.set_user_memory_region_steps``); the world only resumes them, so the explorer checks the very
code the plain run and the timed simulation execute.

A thread's *pending* step is the :class:`~kvmmu.mmu.steps.Step` it yielded last, i.e. what it will
do when resumed.  ``None`` means it is between operations: resuming it *begins* the next one, which
runs the operation's prologue up to its first yield.  That prologue reads shared state (the
memslots a request is planned against, ``mmu_valid_gen`` at guest entry) and sets
``memslots.updating``, so beginning an operation is a scheduling point like any step.  A thread is
*enabled* unless it is finished or :meth:`VM.is_blocked` says its pending step would only spin.

Checks: every completed access is judged by the oracle as it returns (``VM(oracle=True,
strict=False)``; new entries of ``vm.oracle.violations`` after a step are that step's findings) and
the state invariant is ``vm.check_state()``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Final

from kvmmu.check.scenario import DEFAULT_SCENARIO, Access, Region, Scenario
from kvmmu.mmu.invalidation import SLOT_ZAPS, resolve_strategy
from kvmmu.mmu.steps import Step
from kvmmu.oracle import Violation
from kvmmu.vm import VM, VmSpec

VMM_LABEL: Final = "vmm"
MAX_VCPUS: Final = 8


class ConfigError(ValueError):
    """A configuration the explorer cannot run; the message is one line naming what is allowed."""


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """What to explore: a strategy, a scenario and how much of it (vCPUs, accesses, updates).

    ``accesses`` and ``updates`` take the first K accesses of each vCPU script and the first M
    updates (None: all).  ``mmio_gen_bits``, ``start_near_wrap`` and ``slot_zap`` override the
    scenario's ``[vm]`` table.  ``scenario_path`` is only remembered for the replay command.
    ``tdp_mmu`` explores the strategy's TDP MMU (faults under ``mmu_lock`` held for read, SPTEs
    installed with cmpxchg) instead of the shadow MMU.
    """

    strategy: str = "generation"
    scenario: Scenario = DEFAULT_SCENARIO
    vcpus: int = 2
    accesses: int | None = None
    updates: int | None = None
    mmio_gen_bits: int | None = None
    start_near_wrap: int | None = None
    slot_zap: str | None = None
    scenario_path: str | None = None
    tdp_mmu: bool = False
    #: The checked VM arguments every world of this configuration is built from, made by the
    #: first :meth:`make_vm` (:class:`~kvmmu.vm.VmSpec`): derived, not part of the value.
    _vm_spec: VmSpec | None = field(default=None, init=False, repr=False, compare=False,
                                    hash=False)

    def validate(self) -> CheckConfig:
        """Raise :class:`ConfigError` (one line) unless a VM and every thread can be built."""
        try:
            resolve_strategy(self.strategy)
        except ValueError as exc:
            raise ConfigError(
                f"--strategy: {exc} (each optionally with +no-wrap-zap or +cache-without-gen)"
            ) from None
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError(f"--vcpus must be 1..{MAX_VCPUS}, not {self.vcpus}")
        longest = max(len(s.accesses) for s in self.scenario.vcpus)
        if self.accesses is not None and not 1 <= self.accesses <= longest:
            raise ConfigError(
                f"--accesses must be 1..{longest} (the longest script of scenario "
                f"{self.scenario.name!r}), not {self.accesses}"
            )
        n = len(self.scenario.updates)
        if self.updates is not None and not 0 <= self.updates <= n:
            raise ConfigError(
                f"--updates must be 0..{n} (scenario {self.scenario.name!r} has {n}), not {self.updates}"
            )
        if self.slot_zap is not None and self.slot_zap not in SLOT_ZAPS:
            raise ConfigError(f"--slot-zap must be one of {', '.join(SLOT_ZAPS)}, "
                              f"not {self.slot_zap!r}")
        try:
            self.make_vm(trace=False)
        except ValueError as exc:
            option = "--gen-bits: " if "mmio_gen_bits" in str(exc) else ""
            raise ConfigError(f"{option}{exc}") from None
        return self

    @property
    def effective_slot_zap(self) -> str:
        return self.slot_zap or self.scenario.vm.slot_zap

    def make_vm(self, *, trace: bool) -> VM:
        spec = self._vm_spec
        if spec is None:
            vm_settings = self.scenario.vm
            bits = self.mmio_gen_bits if self.mmio_gen_bits is not None else vm_settings.mmio_gen_bits
            near = self.start_near_wrap if self.start_near_wrap is not None else vm_settings.start_near_wrap
            spec = VmSpec.of(
                self.strategy,
                oracle=True,
                strict=False,
                slot_zap=self.effective_slot_zap,
                mmio_gen_bits=bits,
                start_near_wrap=near,
                tdp_mmu=self.tdp_mmu,
            )
            # Frozen, but the spec is a cache: the explorer builds a VM per schedule it replays.
            object.__setattr__(self, "_vm_spec", spec)
        return VM.from_spec(spec, trace=trace)

    def script(self, vcpu: int) -> tuple[Access, ...]:
        accesses = self.scenario.script(vcpu)
        return accesses if self.accesses is None else accesses[: self.accesses]

    def update_list(self) -> tuple[Region, ...]:
        ups = self.scenario.updates
        return ups if self.updates is None else ups[: self.updates]

    def command_args(self) -> list[str]:
        """The ``kvmmu check`` options that rebuild this configuration."""
        args = ["--strategy", self.strategy, "--vcpus", str(self.vcpus)]
        if self.scenario_path is not None:
            args += ["--scenario", self.scenario_path]
        if self.accesses is not None:
            args += ["--accesses", str(self.accesses)]
        args += ["--updates", str(len(self.update_list()))]
        if self.mmio_gen_bits is not None:
            args += ["--gen-bits", str(self.mmio_gen_bits)]
        if self.start_near_wrap is not None:
            args += ["--start-near-wrap", str(self.start_near_wrap)]
        if self.slot_zap is not None:
            args += ["--slot-zap", self.slot_zap]
        if self.tdp_mmu:
            args += ["--mmu", "tdp"]
        return args

    def summary(self) -> str:
        per = {len(self.script(i)) for i in range(self.vcpus)}
        acc = "/".join(str(n) for n in sorted(per))
        ups = len(self.update_list())
        return (
            f"strategy {self.strategy}, scenario {self.scenario.name}, {self.vcpus} vCPU"
            f"{'s' if self.vcpus != 1 else ''} x {acc} access{'es' if per != {1} else ''}, "
            f"{ups} update{'s' if ups != 1 else ''}" + (", TDP MMU" if self.tdp_mmu else "")
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """Something the checks reject: an oracle violation, a deadlock, or the model crashing."""

    kind: str
    text: str

    @classmethod
    def from_violation(cls, v: Violation) -> Finding:
        return cls(v.kind, str(v))

    def __str__(self) -> str:
        return self.text if self.text.startswith(self.kind) else f"{self.kind}: {self.text}"


Op = Access | Region


@dataclass(slots=True, eq=False)
class Thread:
    """A vCPU running its script, or the VMM running its updates: one generator at a time."""

    index: int
    label: str  # in schedules: "0", "1", ... for vCPUs, "vmm"
    name: str  # in reports: "vCPU0", "VMM"
    ops: tuple[Op, ...]
    op_index: int = 0
    gen: Generator[Step, None, Any] | None = None
    #: the step the thread will perform when resumed; None: it begins its next operation.
    pending: Step | None = None
    results: list[Any] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.op_index >= len(self.ops)

    @property
    def op(self) -> Op:
        return self.ops[self.op_index]


class World:
    """A fresh VM and its threads for one schedule (see the module docstring)."""

    __slots__ = ("config", "oracle", "threads", "vcpus", "vm")

    def __init__(self, config: CheckConfig, *, trace: bool = False) -> None:
        self.config = config
        vm = config.make_vm(trace=trace)
        for r in config.scenario.slots:  # the VM as the VMM set it up before the guest ran
            vm.set_user_memory_region(r.slot, r.flags, r.gpa, r.size, r.userspace_addr)
        self.vm = vm
        assert vm.oracle is not None  # make_vm(): every world checks each access
        self.oracle = vm.oracle
        self.vcpus = [vm.create_vcpu() for _ in range(config.vcpus)]
        self.threads = [Thread(i, str(i), f"vCPU{i}", config.script(i)) for i in range(config.vcpus)]
        self.threads.append(Thread(config.vcpus, VMM_LABEL, "VMM", config.update_list()))

    def enabled(self, t: int) -> bool:
        th = self.threads[t]
        if th.op_index >= len(th.ops):  # th.done, without the property call (a hot path)
            return False
        return th.pending is None or not self.vm.is_blocked(th.pending)

    def enabled_threads(self) -> list[int]:
        is_blocked = self.vm.is_blocked
        return [t for t, th in enumerate(self.threads)
                if th.op_index < len(th.ops)
                and (th.pending is None or not is_blocked(th.pending))]

    def all_done(self) -> bool:
        return all(th.op_index >= len(th.ops) for th in self.threads)

    def step(self, t: int) -> list[Finding]:
        """Resume thread ``t`` once; return what the per-access oracle found in that step."""
        th = self.threads[t]
        oracle = self.oracle
        before = oracle.count
        gen = th.gen
        if gen is None:
            op = th.ops[th.op_index]
            if isinstance(op, Access):
                gen = self.vcpus[t].access_steps(op.gpa, op.write, op.size, op.value, op.emulated)
            else:
                gen = self.vm.set_user_memory_region_steps(
                    op.slot, op.flags, op.gpa, op.size, op.userspace_addr
                )
            th.gen = gen
        try:
            th.pending = next(gen)
        except StopIteration as stop:
            th.results.append(stop.value)
            th.gen = None
            th.pending = None
            th.op_index += 1
        if oracle.count == before:
            return []
        return [Finding.from_violation(v) for v in oracle.violations[before:]]

    def check_state(self) -> list[Finding]:
        """The oracle's state invariant (``vm.check_state()``)."""
        return [Finding.from_violation(v) for v in self.vm.check_state()]

    def deadlock(self) -> Finding:
        waits = ", ".join(
            f"{th.name} waits at {th.pending.name if th.pending else 'start'}"
            for th in self.threads
            if not th.done
        )
        return Finding("deadlock", f"deadlock: no thread can proceed ({waits})")

    def label(self, t: int) -> str:
        return self.threads[t].label

    def index_of(self, label: str) -> int | None:
        for th in self.threads:
            if th.label == label:
                return th.index
        return None
