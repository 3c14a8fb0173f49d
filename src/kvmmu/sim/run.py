"""The timed simulation: the model's own protocol generators, charged by cost, interleaved by time.

Design. Each vCPU and the VMM is an engine process (:mod:`kvmmu.sim.engine`). A vCPU process runs
its scenario's access stream (:mod:`kvmmu.sim.workloads.guest`): guest think time, then one access
driven through ``vcpu.access_steps()``; the VMM process issues the scenario's memslot operations
(:mod:`kvmmu.sim.workloads.vmm`) through ``vm.set_user_memory_region_steps()``. Both generators
are the model's one implementation of the protocol (``kvmmu.mmu.faults`` and ``kvmmu.memslots``);
this module never decides what a fault or an update does, it only decides *when* each yielded step
happens and what it costs. That is the architecture note's "one protocol, three drivers".

Timing convention: a generator yields a :class:`~kvmmu.mmu.steps.Step` *before* an access to shared
state. The driver performs the access by resuming the generator at time ``t`` (atomically, up to
the next yield) and then lets the thread spend the step's cost (:mod:`kvmmu.sim.costs`), so the
access happens at the start of its interval. Costs that no step marks are charged from the model's
own counters: ``vmexit_ns`` when ``stats.exits`` grows (the hardware walk trapped),
``slow_path_fault_ns`` when ``stats.pf_taken`` grows, ``memslot_ioctl_ns`` per request, and
``lock_handoff_ns`` when a spinning waiter takes ``mmu_lock``.

Blocking, as in KVM: ``mmu_lock`` is a spinlock, so a thread whose pending step is
:attr:`Step.MMU_LOCK` while ``vm.is_blocked(step)`` spins, and the spin is charged as lock wait and
vCPU stall; waiters are served first-come first-served (queued rwlocks are fair). The VMM's
:attr:`Step.SRCU_SYNC` waits until the vCPUs that entered their SRCU read side before the grace
period have left it. After every step any thread performs, the head waiter of each queue is
re-checked with ``vm.is_blocked`` (the model, not this module, knows who holds what); a woken thread
re-checks on resumption and queues again at the head if it lost a race. Lock acquisition and release
are read off the step stream itself: a resumed :attr:`Step.MMU_LOCK` followed by any step but
another :attr:`Step.MMU_LOCK` acquired the lock; a resumed :attr:`Step.MMU_UNLOCK` released it.
The fast MMIO path takes no lock, so it never waits.

Host CPUs are assumed plentiful (each vCPU and the VMM thread on a CPU of its own), as on the
hosts where the published figures were taken; the spin is time a vCPU did not run its guest.

Prior art: SimPy's resource model (``simpy/resources/resource.py``: FIFO queues of waiting
processes, granted on release) with the grant condition delegated to the model; gem5's split between
a timing model and a functional model that does the actual work.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvmmu.devices import RegisterBank
from kvmmu.errors import KvmError
from kvmmu.mmu.faults import VcpuStats
from kvmmu.mmu.invalidation import resolve_strategy
from kvmmu.mmu.steps import Step
from kvmmu.sim.costs import CostModel
from kvmmu.sim.engine import ChoosingRule, Engine, Event, OrderingRule, SimulationError
from kvmmu.sim.results import (
    RunResult,
    Series,
    Span,
    StrategyResult,
    ThreadResult,
    UpdateRecord,
)
from kvmmu.sim.workloads.guest import (
    accesses,
    active_vcpus,
    prefault_device_gpas,
    prefault_gpas,
)
from kvmmu.sim.workloads.replay import RecordedWorkload
from kvmmu.sim.workloads.schema import Scenario
from kvmmu.sim.workloads.vmm import Region, VmmState, schedule
from kvmmu.vcpu import Vcpu
from kvmmu.vm import VM

#: Bins of the time series (lock hold, faults over time).
SERIES_BINS = 100
#: Caps that keep a long run's report bounded (the counts of what was dropped are reported).
MAX_SPANS = 60_000
MAX_STALL_SAMPLES = 500_000
MAX_VIOLATIONS = 20

ProgressFn = Callable[[float], None]
_MMU_LOCK = Step.MMU_LOCK
_MMU_UNLOCK = Step.MMU_UNLOCK
_MMU_READ_LOCK = Step.MMU_READ_LOCK
_MMU_READ_UNLOCK = Step.MMU_READ_UNLOCK
_SRCU_SYNC = Step.SRCU_SYNC
_BLOCKING = (Step.MMU_LOCK, Step.MMU_READ_LOCK, Step.SRCU_SYNC)
_LOCK_STEPS = (Step.MMU_LOCK, Step.MMU_READ_LOCK)
_FREE_PAGE = Step.FREE_SHADOW_PAGE


@dataclass(slots=True)
class SimOptions:
    """Knobs of one run that are not part of the scenario."""

    seed: int = 0
    oracle: bool = True
    trace: bool = True
    rule: OrderingRule | ChoosingRule | None = None
    #: VM keyword arguments (e.g. ``slot_zap="slot"``), passed through to :class:`kvmmu.vm.VM`.
    vm_options: dict[str, Any] = field(default_factory=dict)
    #: A recorded run (``kvmmu replay``): its requests and accesses replace the scenario's
    #: sampled streams; the scenario still names the run and sizes the guest.
    workload: RecordedWorkload | None = None
    #: The memslot storage to charge: the pre-5.17 sorted array (True), the 5.17+ trees (False),
    #: or the strategy's own era (None; ``Strategy.memslot_array``).
    memslot_array: bool | None = None
    #: ``shadow`` or ``tdp`` (the TDP MMU); None: the scenario's ``guest.mmu``, whose ``auto`` is
    #: what the strategy's kernel uses on an EPT host (``Strategy.tdp_mmu_default``).
    mmu: str | None = None


@dataclass(slots=True)
class _Thread:
    """A simulated thread's accounting (the protocol state lives in its generator)."""

    tid: int
    name: str
    kind: str
    accesses: int = 0
    trapped: int = 0
    stall_ns: int = 0
    lock_wait_ns: int = 0
    lock_hold_ns: int = 0
    srcu_wait_ns: int = 0
    lock_read_hold_ns: int = 0
    hold_since: int = -1
    read_hold_since: int = -1
    wake: Event | None = None
    #: The blocking step this thread waits at (while it is in a queue).
    waiting_step: Step | None = None


class _Sim:
    """One strategy's run of one scenario."""

    def __init__(self, scenario: Scenario, strategy: str, costs: CostModel, opts: SimOptions) -> None:
        self.scenario = scenario
        self.strategy = strategy
        self.costs = costs
        self.opts = opts
        g = scenario.guest
        vm_kwargs: dict[str, Any] = {
            "address_spaces": g.address_spaces,
            "oracle": opts.oracle,
            "phys_bits": g.phys_bits,
            "large_pages": g.page_size > 4096,
        }
        vm_kwargs.update(opts.vm_options)
        self.mmu = resolve_mmu(strategy, opts.mmu or scenario.guest.mmu)
        vm_kwargs.setdefault("tdp_mmu", self.mmu == "tdp")
        self.vm = VM(strategy=strategy, **vm_kwargs)
        # This driver knows who spins on mmu_lock: lock breaks happen only on contention.
        self.lock = self.vm.kvm.mmu.lock
        self.lock.contention_tracked = True
        self.engine = Engine(opts.rule)
        self.duration = scenario.duration
        self.by_step = costs.by_step
        self.c_vmexit = costs["vmexit_ns"]
        self.c_slow = costs["slow_path_fault_ns"]
        self.c_handoff = costs["lock_handoff_ns"]
        self.c_ioctl = costs["memslot_ioctl_ns"]
        array = self.vm.strategy.memslot_array if opts.memslot_array is None else opts.memslot_array
        #: Before 5.17 each update copies the address space's sorted slot array (O(n)).
        self.c_copy_slot = costs["memslot_copy_per_slot_ns"] if array else 0
        self.c_guest = costs["guest_access_ns"]
        self.threads: list[_Thread] = []
        # One FIFO for mmu_lock, readers and writers alike (a queued rwlock), one for SRCU.
        self.lock_queue: deque[_Thread] = deque()
        self.srcu_queue: deque[_Thread] = deque()
        self.waiters: dict[Step, deque[_Thread]] = {
            _MMU_LOCK: self.lock_queue, _MMU_READ_LOCK: self.lock_queue,
            _SRCU_SYNC: self.srcu_queue}
        self.n_waiting = 0
        self.steps = 0
        self.bin_ns = max(1, -(-self.duration // SERIES_BINS))
        self.s_hold = [0] * SERIES_BINS
        self.s_faults = [0] * SERIES_BINS
        self.s_refaults = [0] * SERIES_BINS
        self.s_updates = [0] * SERIES_BINS
        self.spans: list[Span] = []
        self.spans_dropped = 0
        self.stalls: list[int] = []
        self.stalls_dropped = 0
        self.updates: list[UpdateRecord] = []
        self.refaults_ram = 0
        self.refaults_mmio = 0
        self.vmm_errors = 0
        self.trace = opts.trace
        self._last_error = ""
        self.c_zap = costs["spte_zapped_ns"]
        self._dropped_seen = 0  # vm.kvm.mmu.stats.sptes_dropped already charged

    # --- setup (untimed, plain run) -------------------------------------------------------
    def setup(self) -> tuple[list[Vcpu], VmmState]:
        vm, sc = self.vm, self.scenario
        state = VmmState()
        wl = self.opts.workload
        for region in state.initial(sc) if wl is None else wl.initial():
            vm.set_user_memory_region(
                region.slot, region.flags, region.guest_phys_addr, region.memory_size, region.userspace_addr
            )
            state.accepted(region)
        for d in sc.devices:
            if d.in_kernel:
                vm.register_device(d.gpa, d.size, RegisterBank(d.name))
        vcpus = [vm.create_vcpu() for _ in range(sc.guest.vcpus)]
        for i, vcpu in enumerate(vcpus):
            for gpa in prefault_gpas(sc, i):
                vcpu.access(gpa, write=True, size=8, value=i)
        for gpa in prefault_device_gpas(sc):
            vcpus[0].access(gpa, write=False, size=4)
        return vcpus, state

    # --- the stepping core ----------------------------------------------------------------
    def _span(self, th: _Thread, name: str, cat: str, start: int, dur: int) -> None:
        if len(self.spans) < MAX_SPANS:
            self.spans.append(Span(th.tid, name, cat, start, dur))
        else:
            self.spans_dropped += 1

    def _add_hold(self, start: int, end: int) -> None:
        # The series covers [0, duration); holds after it (the drain) are in the totals only.
        b = self.bin_ns
        hold = self.s_hold
        end = min(end, b * SERIES_BINS)
        while start < end:
            i = start // b
            stop = min(end, (i + 1) * b)
            hold[i] += stop - start
            start = stop

    def _poll(self) -> None:
        """Wake the head waiter of each queue whose condition the model says now holds."""
        for queue in (self.lock_queue, self.srcu_queue):
            if queue:
                head = queue[0]
                wake = head.wake
                if (wake is not None and not wake.triggered and head.waiting_step is not None
                        and not self.vm.is_blocked(head.waiting_step)):
                    wake.succeed()

    def _writer_at_head(self) -> None:
        # qrwlock: a writer at the head of the wait queue sets _QW_WAITING, which stops new
        # readers (queued_read_lock()) and makes a reader's cond_resched_rwlock_read() yield.
        q = self.lock_queue
        self.lock.writer_waiting = bool(q) and q[0].waiting_step is _MMU_LOCK

    def drive(
        self, th: _Thread, gen: Generator[Step, None, Any], counters: VcpuStats | None = None
    ) -> Generator[Any, Any, Any]:
        """Run one protocol generator to completion in simulated time; return its result."""
        engine = self.engine
        by_step = self.by_step
        vm = self.vm
        mmu_stats = vm.kvm.mmu.stats
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        while True:
            handoff = 0
            if step in _BLOCKING and vm.is_blocked(step):
                t0 = engine.now
                queue = self.waiters[step]
                queue.append(th)
                th.waiting_step = step
                self.n_waiting += 1
                is_lock = step in _LOCK_STEPS
                if is_lock:
                    self.lock.spinning += 1
                    self._writer_at_head()
                while True:
                    th.wake = engine.event()
                    yield th.wake
                    th.wake = None
                    if not vm.is_blocked(step):
                        break
                    # Lost the race to a thread that ran first at this instant: stay at the head.
                queue.remove(th)
                th.waiting_step = None
                self.n_waiting -= 1
                if is_lock:
                    self.lock.spinning -= 1
                    self._writer_at_head()
                waited = engine.now - t0
                if is_lock:
                    th.lock_wait_ns += waited
                    handoff = self.c_handoff
                    if self.trace:
                        self._span(th, "spin on mmu_lock" if step is _MMU_LOCK
                                   else "spin on mmu_lock (read)", "lock-wait", t0, waited)
                else:
                    th.srcu_wait_ns += waited
                    if self.trace:
                        self._span(th, "wait for SRCU readers", "srcu-wait", t0, waited)
            # Perform the step: resume the generator up to its next yield.
            if counters is not None:
                exits, pf, refaults = counters.exits, counters.pf_taken, counters.refaults
            done = False
            result: Any = None
            try:
                nxt = gen.send(None)
            except StopIteration as stop:
                done = True
                result = stop.value
                nxt = step
            self.steps += 1
            now = engine.now
            cost = by_step[step] + handoff
            if step is _FREE_PAGE:
                # Freeing a page costs per live entry it held (mmu_page_zap_pte for each).
                dropped = mmu_stats.sptes_dropped
                cost += self.c_zap * (dropped - self._dropped_seen)
                self._dropped_seen = dropped
            if step is _MMU_LOCK:
                if done or nxt is not _MMU_LOCK:
                    th.hold_since = now
            elif step is _MMU_UNLOCK and th.hold_since >= 0:
                th.lock_hold_ns += now - th.hold_since
                self._add_hold(th.hold_since, now)
                if self.trace:
                    self._span(th, "mmu_lock held", "mmu_lock", th.hold_since, now - th.hold_since)
                th.hold_since = -1
            elif step is _MMU_READ_LOCK:
                if done or nxt is not _MMU_READ_LOCK:
                    th.read_hold_since = now
            elif step is _MMU_READ_UNLOCK and th.read_hold_since >= 0:
                th.lock_read_hold_ns += now - th.read_hold_since
                if self.trace:
                    self._span(th, "mmu_lock held for read", "mmu_lock-read", th.read_hold_since,
                               now - th.read_hold_since)
                th.read_hold_since = -1
            if counters is not None:
                if counters.exits != exits:
                    cost += self.c_vmexit
                if counters.pf_taken != pf:
                    cost += self.c_slow
                    if now < self.duration:
                        self.s_faults[now // self.bin_ns] += 1
                if counters.refaults != refaults and now < self.duration:
                    self.s_refaults[now // self.bin_ns] += 1
            if self.n_waiting:
                self._poll()
            if cost:
                yield cost
            if done:
                return result
            step = nxt

    # --- threads --------------------------------------------------------------------------
    def vcpu_proc(self, th: _Thread, vcpu: Vcpu, index: int) -> Generator[Any, Any, None]:
        engine = self.engine
        duration = self.duration
        stats = vcpu.stats
        c_guest = self.c_guest
        trace = self.trace
        stalls = self.stalls
        wl = self.opts.workload
        stream = (
            accesses(self.scenario, index, self.opts.seed)
            if wl is None
            else wl.access_stream(index, lambda: engine.now)
        )
        for k, acc in enumerate(stream):
            yield acc.think
            if engine.now >= duration:
                return
            t0 = engine.now
            refaults = stats.refaults
            value = (k * 2654435761) & ((1 << (8 * acc.size)) - 1)
            gen = vcpu.access_steps(acc.gpa, acc.write, acc.size, value)
            out = yield from self.drive(th, gen, stats)
            th.accesses += 1
            stall = engine.now - t0 - c_guest
            if stall > 0:
                th.trapped += 1
                th.stall_ns += stall
                if len(stalls) < MAX_STALL_SAMPLES:
                    stalls.append(stall)
                else:
                    self.stalls_dropped += 1
                if trace:
                    self._span(th, f"{out.path} {out.kind}", "fault", t0, stall)
            if stats.refaults != refaults:
                if out.kind == "mmio":
                    self.refaults_mmio += 1
                else:
                    self.refaults_ram += 1

    def _plan(self, state: VmmState) -> Iterator[tuple[int, str, list[Region]]]:
        """``(time, op, requests)`` for the VMM: the scenario's schedule, or a recorded run's.

        A scenario's requests depend on what the model accepted so far, so each list is made
        only when it is due (the generator is resumed after the previous one was carried out).
        """
        wl = self.opts.workload
        if wl is not None:
            yield from wl.plan()
            return
        for action in schedule(self.scenario, self.opts.seed):
            yield action.time, action.op, state.requests(action)

    def vmm_proc(self, th: _Thread, state: VmmState) -> Generator[Any, Any, None]:
        engine = self.engine
        for n, (due, op, requests) in enumerate(self._plan(state)):
            if due >= self.duration:
                return
            if engine.now < due:
                yield due - engine.now
            for region in requests:
                t0 = engine.now
                change = yield from self._update(th, region)
                latency = engine.now - t0
                if change is None:
                    self.updates.append(
                        UpdateRecord(t0, op, region.slot, "error", latency, self._last_error, n)
                    )
                    continue
                state.accepted(region)
                self.updates.append(UpdateRecord(t0, op, region.slot, change, latency, action=n))
                if t0 < self.duration:
                    self.s_updates[t0 // self.bin_ns] += 1
                if self.trace:
                    kind = "delete" if region.is_delete else change
                    self._span(th, f"{op}: {kind} slot {region.slot}", "memslot", t0, latency)

    def _update(self, th: _Thread, region: Region) -> Generator[Any, Any, str | None]:
        yield self.c_ioctl + self.c_copy_slot * memslot_copy_slots(self.vm, region.slot)
        gen = self.vm.set_user_memory_region_steps(
            region.slot, region.flags, region.guest_phys_addr, region.memory_size, region.userspace_addr
        )
        try:
            change = yield from self.drive(th, gen)
        except KvmError as exc:
            self.vmm_errors += 1
            self._last_error = str(exc)
            return None
        return str(getattr(change, "value", change))

    # --- the run ----------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None) -> StrategyResult:
        wall0 = time.perf_counter()
        vcpus, state = self.setup()
        engine = self.engine
        for i, vcpu in enumerate(vcpus):
            th = _Thread(i, f"vCPU {i}", "vcpu")
            self.threads.append(th)
            if i < active_vcpus(self.scenario):
                engine.process(self.vcpu_proc(th, vcpu, i), label=th.name)
        vmm = _Thread(len(vcpus), "VMM", "vmm")
        self.threads.append(vmm)
        engine.process(self.vmm_proc(vmm, state), label="VMM")
        slices = 50
        for k in range(1, slices + 1):
            engine.run(until=self.duration * k // slices)
            if progress is not None:
                progress(k / (slices + 1))
        engine.run()  # drain: in-flight accesses and the update in progress finish
        if self.n_waiting:
            stuck = [t.name for q in self.waiters.values() for t in q]
            raise SimulationError(f"{self.strategy}: threads still waiting at the end: {stuck}")
        if progress is not None:
            progress(1.0)
        return StrategyResult(
            strategy=self.strategy,
            sim_time_ns=engine.now,
            wall_s=time.perf_counter() - wall0,
            steps=self.steps,
            events=engine.events_processed,
            updates=tuple(self.updates),
            threads=tuple(
                ThreadResult(
                    t.tid,
                    t.name,
                    t.kind,
                    t.accesses,
                    t.trapped,
                    t.stall_ns,
                    t.lock_wait_ns,
                    t.lock_hold_ns,
                    t.srcu_wait_ns,
                    t.lock_read_hold_ns,
                )
                for t in self.threads
            ),
            stall_samples=tuple(self.stalls),
            stall_samples_dropped=self.stalls_dropped,
            series=Series(
                self.bin_ns,
                tuple(self.s_hold),
                tuple(self.s_faults),
                tuple(self.s_refaults),
                tuple(self.s_updates),
            ),
            spans=tuple(self.spans),
            spans_dropped=self.spans_dropped,
            refaults_ram=self.refaults_ram,
            refaults_mmio=self.refaults_mmio,
            vmm_errors=self.vmm_errors,
            stats=dict(self.vm.stats),
            violations=tuple(str(v) for v in oracle.violations[:MAX_VIOLATIONS])
            if (oracle := self.vm.oracle) is not None
            else (),
            mmu=self.mmu,
        )


MMU_CHOICES = ("auto", "shadow", "tdp")


def resolve_mmu(strategy: str, mmu: str) -> str:
    """``shadow`` or ``tdp`` for a run of ``strategy``: ``auto`` is the kernel's own choice on an
    EPT/NPT host (the TDP MMU from 5.15, 71ba3f3189c7; the shadow MMU before); ``tdp`` asked of a
    kernel without one runs the shadow MMU, as that kernel did (the result's ``mmu`` says so).
    Raises ``ValueError`` for a name not in :data:`MMU_CHOICES`."""
    if mmu not in MMU_CHOICES:
        raise ValueError(f"mmu must be one of {', '.join(MMU_CHOICES)}, not {mmu!r}")
    profile = resolve_strategy(strategy)
    if mmu == "auto":
        return "tdp" if profile.tdp_mmu_default else "shadow"
    return mmu if profile.tdp_mmu else "shadow"


def memslot_copy_slots(vm: VM, slot: int) -> int:
    """How many slots an update of ``slot`` copies before 5.17: its address space's used slots.

    v5.12 virt/kvm/kvm_main.c ``kvm_set_memslot()`` calls ``kvm_dup_memslots()`` once per update
    (``memcpy`` of ``used_slots`` entries; a DELETE or MOVE publishes that copy marked invalid and
    re-uses the old array it gets back for the final one), and ``update_memslots()`` shifts
    entries to keep the array sorted.  The model charges one pass over the used slots per update.
    """
    as_id = (slot >> 16) & 0xFFFF
    active = vm.kvm.memslots.active
    return len(active[as_id]) if as_id < len(active) else 0


def simulate(
    scenario: Scenario,
    strategy: str,
    costs: CostModel,
    opts: SimOptions | None = None,
    progress: ProgressFn | None = None,
) -> StrategyResult:
    """Run ``scenario`` under ``strategy`` in simulated time."""
    # A finished run's model is a web of reference cycles (VM <-> Kvm <-> vCPUs) that only a full
    # collection frees; collected here, before building the next one, the peak is one model, not
    # one per run (kvmmu run fast-zap-2013, six strategies: 751 -> 277 MB peak RSS).
    gc.collect()
    return _Sim(scenario, strategy, costs, opts or SimOptions()).run(progress)


def simulate_all(
    scenario: Scenario,
    strategies: Sequence[str],
    costs: CostModel,
    opts: SimOptions | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> RunResult:
    """Run ``scenario`` under each strategy (same seed, same workload) and gather the results."""
    opts = opts or SimOptions()
    results = []
    for name in strategies:

        def step(fraction: float, name: str = name) -> None:
            if progress is not None:
                progress(name, fraction)

        results.append(simulate(scenario, name, costs, opts, step))
    g = scenario.guest
    return RunResult(
        scenario=scenario.name,
        description=scenario.description,
        seed=opts.seed,
        costs_path=costs.path,
        costs=dict(costs.costs),
        params={
            "vcpus": g.vcpus,
            "memory": g.memory,
            "page_size": g.page_size,
            "duration_ns": scenario.duration,
            "active_vcpus": active_vcpus(scenario),
            "slot_zap": str(opts.vm_options.get("slot_zap") or "kernel"),
        },
        strategies=tuple(results),
    )
