"""``kvmmu memslot-perf``: the kernel selftest ``memslot_perf_test`` run against the model.

Design. ``tools/testing/selftests/kvm/memslot_perf_test.c`` (Maciej S. Szmigiero, Oracle, 2021;
read here in v6.1) times memslot operations of a one-vCPU VM whose 512 MiB test area is split
over as many slots as ``KVM_CAP_NR_MEMSLOTS`` allows (``-s`` caps it).  Its six tests, numbered as
the selftest numbers them:

0. ``map``: 32 MiB (+1 page) over the slots; the guest writes one half page by page while the
   host ``madvise(MADV_DONTNEED)``\\ s the other half, slot by slot; then the halves swap.
1. ``unmap``: 128 MiB; the guest writes one page per half, the host unmaps the other half one
   page per ``madvise``.
2. ``unmap chunked``: as 1, 2 MiB per ``madvise``.
3. ``move active area`` / 4. ``move inactive area``: the host moves the last slot away and back
   (two ``KVM_MR_MOVE``\\ s per iteration) while the guest keeps writing 50 pages, half of them in
   the moving slot (active) or none (inactive).
5. ``RW``: the guest writes every page and reads what the host wrote; no memslot operation.

Each test first adds the slots ("slot setup") and then loops for ``-l`` seconds; it prints "Test
took ... for slot setup + ... all iterations", "Done N iterations, avg X each" and, per test,
"Best runtime result was ...", and at the end "Best slot setup time for the whole test area
was ..." over the tests that use the whole area (3, 4 and 5), exactly as the selftest does.

Here the same operations go through the model: ``KVM_SET_USER_MEMORY_REGION`` through
``VM.set_user_memory_region_steps`` (the one protocol implementation), guest writes through
``Vcpu.access_steps``, and a host unmap through the MMU's own zap of the gfn range under
``mmu_lock`` (``kvm_mmu_notifier_invalidate_range_start()`` -> ``kvm_unmap_gfn_range()``).  Every
yielded step is charged its cost from the profile (:mod:`kvmmu.sim.costs`), plus what no step
marks: ``memslot_ioctl_ns`` per ioctl, ``vmexit_ns`` / ``slow_path_fault_ns`` per trap and slow
fault, and the era's memslot storage:

* before 5.17 (``Strategy.memslot_array``) each update copies the sorted slot array
  (``memslot_copy_per_slot_ns`` per used slot: ``kvm_dup_memslots()``, v5.12
  ``virt/kvm/kvm_main.c``) and each mmu-notifier call tests every slot of every address space
  (``kvm_handle_hva_range()``, v5.12 ``arch/x86/kvm/mmu/mmu.c``): ``memslot_hva_walk_ns`` each;
* from 5.17 (a54d806688fe and its series) updates swap trees (no per-slot copy) and the notifier
  walks the hva interval tree (``kvm_for_each_memslot_in_hva_range``, v6.1): one
  ``memslot_hva_walk_ns`` per tree level.

The host and the guest run in parallel between the selftest's sync points, so a phase costs the
longer of the two, plus a sync (``lock_handoff_ns``: a cache line crossing CPUs) -- except for the
host's ``madvise`` calls that drop *present* pages.  The selftest's memory is anonymous
(``VM_MEM_SRC_ANONYMOUS``) and every page starts present (``prepare_vm()`` memsets each slot), so
the model tracks which host pages are present: a call that drops present ones costs
``host_unmap_present_ns`` more (the pages freed, the host's TLB shootdown and KVM's remote TLB
flush, both kicking the CPU that runs the vCPU) and the vCPU cannot progress meanwhile -- the
notifier holds ``mmu_lock`` for write (v6.1 ``kvm_mmu_notifier_invalidate_range_start()`` ->
``kvm_unmap_gfn_range()``, ``KVM_MMU_LOCK``) where shadow-MMU faults need it, and a fault that
overlaps an invalidation is retried (``mmu_invalidate_retry_hva()`` in ``direct_page_fault()``)
-- so those calls add to the phase instead of overlapping it; and a guest write to a dropped page
costs ``host_page_alloc_ns`` on top of its fault (``hva_to_pfn()`` -> ``get_user_pages()``
allocates and zeroes a fresh page).  The map test (0) is the test where both happen on every page:
its figures at 10 and 509 slots (Szmigiero's cover letter: 0.0186 s and 0.0223 s per iteration on
5.17's code) are what those two costs were derived from, so that its 8194-slot figure is
predicted.  The published figures agree with the serialization: with 509 slots the host's 257
calls per half take ~2 ms beside the guest's ~9 ms of faults, which would overlap entirely, yet
the iteration is 3.7 ms slower than with 10 slots.  The model is
deterministic: the first ``model_iterations`` iterations are driven through the model (the first
one takes the cold faults), the rest of the test length is filled with copies of the last one, and
``-r`` runs are identical.  A host unmap of ``k`` contiguous ``madvise`` calls is one driven zap
of their gfns (the SPTEs cleared are the same) with the per-call costs charged ``k`` times, so that
32,768 one-page calls do not cost 32,768 scans of the model's page list.

Prior art: the selftest itself (its defaults and printouts are reproduced); gem5's "functional
model driven under a timing model" split, as in :mod:`kvmmu.sim.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final

from kvmmu.mmu.faults import VcpuStats
from kvmmu.mmu.steps import Step
from kvmmu.sim.costs import CostModel
from kvmmu.sim.run import memslot_copy_slots
from kvmmu.vcpu import Vcpu
from kvmmu.vm import VM

PAGE: Final = 4096
#: memslot_perf_test.c (v6.1): ``MEM_SIZE ((512U << 20) + 4096)``, ``MEM_GPA 0x10000000UL``.
MEM_SIZE: Final = (512 << 20) + PAGE
MEM_SIZE_PAGES: Final = MEM_SIZE // PAGE
MEM_GPA: Final = 0x10000000
MEM_TEST_GPA: Final = MEM_GPA + PAGE
MEM_TEST_SIZE: Final = MEM_SIZE - PAGE
#: ``MEM_SIZE_MAP ((32U << 20) + 4096)``: "32 MiB is max size that gets well over 100 iterations
#: on 509 slots".
MEM_SIZE_MAP_PAGES: Final = ((32 << 20) + PAGE) // PAGE
MEM_TEST_MAP_SIZE_PAGES: Final = MEM_SIZE_MAP_PAGES - 1
#: ``MEM_TEST_UNMAP_SIZE (128U << 20)``, ``MEM_TEST_UNMAP_CHUNK_PAGES (2U << (20 - 12))``.
MEM_TEST_UNMAP_SIZE_PAGES: Final = (128 << 20) // PAGE
MEM_TEST_UNMAP_CHUNK_PAGES: Final = 2 << (20 - 12)
#: ``MEM_TEST_MOVE_SIZE_PAGES (50)``, ``MEM_TEST_MOVE_GPA_DEST (MEM_GPA + MEM_SIZE)``.
MEM_TEST_MOVE_SIZE_PAGES: Final = 50
MEM_TEST_MOVE_GPA_DEST: Final = MEM_GPA + MEM_SIZE
#: The host addresses the model gives guest memory (one mapping, gpa-linear).
HVA_BASE: Final = 0x7F00_0000_0000
#: Slot 0 (``__vm_create_with_one_vcpu()``'s default slot: guest code, page tables), at gpa 0.
SLOT0_SIZE: Final = 2 << 20

#: The selftest's ``struct test_data``: name and test area in pages (``mem_size``; 0: the whole).
TESTS: Final[tuple[tuple[str, int], ...]] = (
    ("map", MEM_SIZE_MAP_PAGES),
    ("unmap", MEM_TEST_UNMAP_SIZE_PAGES + 1),
    ("unmap chunked", MEM_TEST_UNMAP_SIZE_PAGES + 1),
    ("move active area", 0),
    ("move inactive area", 0),
    ("RW", 0),
)
NTESTS: Final = len(TESTS)

ProgressFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PerfArgs:
    """The selftest's ``struct test_args`` with its defaults (``main()``, v6.1)."""

    tfirst: int = 0
    tlast: int = NTESTS - 1
    nslots: int = -1  # -s: cap on KVM_CAP_NR_MEMSLOTS, -1 for none
    seconds: int = 5  # -l
    runs: int = 1  # -r
    #: Iterations driven through the model before the rest are extrapolated from the last one.
    model_iterations: int = 2

    def __post_init__(self) -> None:
        # The selftest's parse_args() checks, in its words.
        if self.nslots <= 0 and self.nslots != -1:
            raise ValueError("Slot count cap has to be positive or -1 for no cap")
        if self.nslots == 1:
            raise ValueError("Slot count cap should be greater than 1")
        if self.tfirst < 0:
            raise ValueError("First test to run has to be non-negative")
        if not 0 <= self.tlast < NTESTS:
            raise ValueError(f"Last test to run has to be non-negative and less than {NTESTS}")
        if self.seconds < 0:
            raise ValueError("Test length in seconds has to be non-negative")
        if self.runs <= 0:
            raise ValueError("Runs per test has to be positive")
        if self.tfirst > self.tlast:
            raise ValueError("First test to run cannot be greater than the last test to run")
        if self.model_iterations < 1:
            raise ValueError("model_iterations must be at least 1")


@dataclass(frozen=True, slots=True)
class TestResult:
    """One run of one test: what ``test_loop()`` prints, in ns."""

    index: int
    name: str
    ok: bool
    message: str = ""  # the failure line when not ok
    nslots: int = 0  # slots in the test area (max_mem_slots - 1)
    setup_ns: int = 0
    iterations: int = 0
    total_ns: int = 0  # "all iterations"
    avg_ns: int = 0
    simulated_iterations: int = 0  # driven through the model (the rest extrapolated)
    whole_area: bool = False  # ranked for "Best slot setup time for the whole test area"

    def as_dict(self) -> dict[str, Any]:
        return {
            "test": self.index, "name": self.name, "ok": self.ok, "message": self.message,
            "slots": self.nslots, "setup_s": self.setup_ns / 1e9,
            "iterations": self.iterations, "all_iterations_s": self.total_ns / 1e9,
            "avg_s": self.avg_ns / 1e9, "simulated_iterations": self.simulated_iterations,
        }


@dataclass(frozen=True, slots=True)
class PerfReport:
    strategy: str
    memslot_array: bool
    costs_path: str
    args: PerfArgs
    results: tuple[TestResult, ...]

    def best_runtime(self, index: int) -> TestResult | None:
        runs = [r for r in self.results if r.index == index and r.ok and r.iterations]
        return min(runs, key=lambda r: r.avg_ns) if runs else None

    def best_setup(self) -> TestResult | None:
        runs = [r for r in self.results if r.ok and r.whole_area]
        return min(runs, key=lambda r: r.setup_ns) if runs else None

    def as_dict(self) -> dict[str, Any]:
        best = self.best_setup()
        return {
            "strategy": self.strategy,
            "memslots": "array (before 5.17)" if self.memslot_array else "trees (5.17+)",
            "costs": self.costs_path,
            "args": {"first": self.args.tfirst, "last": self.args.tlast,
                     "slots": self.args.nslots, "seconds": self.args.seconds,
                     "runs": self.args.runs},
            "runs": [r.as_dict() for r in self.results],
            "best_runtime_s": {str(i): b.avg_ns / 1e9 for i in range(NTESTS)
                               if (b := self.best_runtime(i)) is not None},
            "best_slot_setup_s": best.setup_ns / 1e9 if best is not None else None,
        }


def timespec(ns: int) -> str:
    """The selftest's ``%ld.%.9lds``."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}s"


def report_lines(report: PerfReport) -> list[str]:
    """The selftest's output for ``report``, line by line (``pr_info`` in ``main()``)."""
    lines: list[str] = []
    args = report.args
    for index in range(args.tfirst, args.tlast + 1):
        if index > args.tfirst:
            lines.append("")
        lines.append(f"Testing {TESTS[index][0]} performance with {args.runs} runs, "
                     f"{args.seconds} seconds each")
        for r in (r for r in report.results if r.index == index):
            if not r.ok:
                lines.append(r.message)
                break
            lines.append(f"Test took {timespec(r.setup_ns)} for slot setup + "
                         f"{timespec(r.total_ns)} all iterations")
            if not r.iterations:
                lines.append("No full loops done - too short test time or system too loaded?")
                continue
            lines.append(f"Done {r.iterations} iterations, avg {timespec(r.avg_ns)} each")
        best = report.best_runtime(index)
        if best is not None:
            lines.append(f"Best runtime result was {timespec(best.avg_ns)} per iteration "
                         f"(with {best.iterations} iterations)")
    best_setup = report.best_setup()
    if best_setup is not None:
        lines.append("Best slot setup time for the whole test area was "
                     f"{timespec(best_setup.setup_ns)}")
    return lines


class _Meter:
    """Drives protocol generators one at a time and adds up what they cost (no contention)."""

    def __init__(self, vm: VM, costs: CostModel, memslot_array: bool) -> None:
        self.vm = vm
        self.costs = costs
        self.by_step = costs.by_step
        self.c_zap = costs["spte_zapped_ns"]
        self.c_copy = costs["memslot_copy_per_slot_ns"] if memslot_array else 0
        self.memslot_array = memslot_array
        #: gfns whose host page a ``madvise(MADV_DONTNEED)`` dropped (all start present).
        self.dropped: set[int] = set()

    def drive(self, gen: Generator[Step, None, Any], counters: VcpuStats | None = None
              ) -> tuple[Any, int]:
        """Run ``gen`` to completion: its result and its cost in ns."""
        mmu_stats = self.vm.kvm.mmu.stats
        dropped = mmu_stats.sptes_dropped
        if counters is not None:
            exits, pf = counters.exits, counters.pf_taken
        by_step = self.by_step
        cost = 0
        try:
            step = next(gen)
            while True:
                cost += by_step[step]
                step = gen.send(None)
        except StopIteration as stop:
            result = stop.value
        cost += self.c_zap * (mmu_stats.sptes_dropped - dropped)
        if counters is not None:
            cost += self.costs["vmexit_ns"] * (counters.exits - exits)
            cost += self.costs["slow_path_fault_ns"] * (counters.pf_taken - pf)
        return result, cost

    def set_region(self, slot: int, gpa: int, size: int, hva: int) -> int:
        """One ``KVM_SET_USER_MEMORY_REGION`` (CREATE, MOVE or DELETE): its cost."""
        copy = self.c_copy * memslot_copy_slots(self.vm, slot)
        gen = self.vm.set_user_memory_region_steps(slot, 0, gpa, size, hva)
        _, cost = self.drive(gen)
        return self.costs["memslot_ioctl_ns"] + copy + cost

    def guest_write(self, vcpu: Vcpu, gpa: int, value: int) -> int:
        _, cost = self.drive(vcpu.access_steps(gpa, True, 8, value), vcpu.stats)
        gfn = gpa // PAGE
        if gfn in self.dropped:  # the unmap zapped its SPTE too: this write faulted it back in
            self.dropped.discard(gfn)
            cost += self.costs["host_page_alloc_ns"]
        return cost

    def notifier_walk(self) -> int:
        """What one mmu-notifier call pays to find the slots its hva range meets."""
        slots = sum(len(s) for s in self.vm.kvm.memslots.active)
        visited = slots if self.memslot_array else max(1, slots.bit_length())
        return self.costs["memslot_hva_walk_ns"] * visited

    def unmap(self, gpa: int, npages: int, chunk: int) -> tuple[int, int]:
        """``test_memslot_do_unmap()`` called for ``chunk``-page pieces of ``npages`` at ``gpa``:
        ``(cost, the part of it the vCPU waits for)``.

        Each piece is split at slot ends (one ``madvise`` per slot it spans), as the selftest's
        loop over ``vm_gpa2hva(..., &npages)`` does; each ``madvise`` is one notifier call.  A call
        that drops present host pages also costs ``host_unmap_present_ns``, and the vCPU waits
        for the whole call (the module docstring says why); its pages are dropped afterwards.
        """
        vm = self.vm
        active = vm.kvm.memslots.active[0]
        dropped = self.dropped
        calls = 0
        present_calls = 0
        gfn = gpa // PAGE
        end = gfn + npages
        while gfn < end:
            piece_end = min(end, gfn + chunk)
            g = gfn
            while g < piece_end:
                slot = active.lookup(g)
                if slot is None:
                    raise ValueError(f"Empty memory slot at gptr {g * PAGE:#x}")
                call_end = min(piece_end, slot.base_gfn + slot.npages)
                if any(x not in dropped for x in range(g, call_end)):
                    present_calls += 1
                    dropped.update(range(g, call_end))
                g = call_end
                calls += 1
            gfn = piece_end
        # The SPTEs cleared by the calls are those of one zap of the whole range.
        _, zap = self.drive(vm.kvm.mmu.zap_gfn_range(vm.vmm, gpa // PAGE, end, 0))
        lock = self.by_step[Step.MMU_LOCK] + self.by_step[Step.MMU_UNLOCK]
        per_call = self.costs["mmu_notifier_ns"] + self.notifier_walk() + lock
        extra = self.costs["host_unmap_present_ns"]
        total = calls * per_call + zap - lock + present_calls * extra
        # The SPTEs the calls zap belong to present pages (a dropped page's SPTE went with it).
        waited = present_calls * (per_call + extra) + (zap - lock if present_calls else 0)
        return total, waited


@dataclass(slots=True)
class _Vm:
    """One test's VM: the model, its vCPU and the selftest's ``struct vm_data``."""

    vm: VM
    vcpu: Vcpu
    meter: _Meter
    nslots: int
    pages_per_slot: int
    slot_gpas: list[int] = field(default_factory=list)
    slot_pages: list[int] = field(default_factory=list)


def _prepare_vm(strategy: str, costs: CostModel, memslot_array: bool, nslots_cap: int,
                mempages: int, vm_options: dict[str, Any]) -> tuple[_Vm | None, int, int]:
    """``prepare_vm()``: ``(vm, max slots if too many, setup ns)``; adds slots 1..max-1."""
    vm = VM(strategy=strategy, oracle=False, **vm_options)
    max_mem_slots = vm.nr_memslots  # KVM_CAP_NR_MEMSLOTS
    if nslots_cap != -1:
        max_mem_slots = min(max_mem_slots, nslots_cap)
    nslots = max_mem_slots - 1
    pages_per_slot = mempages // nslots
    if not pages_per_slot:
        return None, mempages + 1, 0
    rempages = mempages % nslots
    meter = _Meter(vm, costs, memslot_array)
    vm.set_user_memory_region(0, 0, 0, SLOT0_SIZE, HVA_BASE)  # untimed, as in the selftest
    data = _Vm(vm, vm.create_vcpu(), meter, nslots, pages_per_slot)
    setup = 0
    gpa = MEM_GPA
    for slot in range(1, max_mem_slots):
        npages = pages_per_slot + (rempages if slot == max_mem_slots - 1 else 0)
        setup += meter.set_region(slot, gpa, npages * PAGE, HVA_BASE + gpa)
        data.slot_gpas.append(gpa)
        data.slot_pages.append(npages)
        gpa += npages * PAGE
    return data, 0, setup


def _phase(host: tuple[int, int], guest: int) -> int:
    """Host and guest between two syncs: they overlap, except the host calls the vCPU waits for."""
    total, waited = host
    return max(total - waited, guest) + waited


def _sync(costs: CostModel) -> int:
    """``host_perform_sync()`` meeting ``guest_perform_sync()``: a cache line each way."""
    return 2 * costs["lock_handoff_ns"]


def _iteration(index: int, d: _Vm, costs: CostModel, k: int) -> int:
    """One pass of test ``index``'s loop (host and guest in parallel between syncs), in ns."""
    m = d.meter
    vcpu = d.vcpu
    sync = _sync(costs)
    if index == 0:  # map
        half = MEM_TEST_MAP_SIZE_PAGES // 2
        first, second = MEM_TEST_GPA, MEM_TEST_GPA + half * PAGE
        host = m.unmap(second, half, half)
        guest = sum(m.guest_write(vcpu, first + i * PAGE, 1 + k) for i in range(half))
        t = _phase(host, guest) + sync
        host = m.unmap(first, half, half)
        guest = sum(m.guest_write(vcpu, second + i * PAGE, 2 + k) for i in range(half))
        return t + _phase(host, guest) + sync
    if index in (1, 2):  # unmap, unmap chunked
        chunk = 1 if index == 1 else MEM_TEST_UNMAP_CHUNK_PAGES
        half = MEM_TEST_UNMAP_SIZE_PAGES // 2
        # The guest wrote its page of the first half before the sync the host waits for.
        m.guest_write(vcpu, MEM_TEST_GPA, 1 + k)
        guest = m.guest_write(vcpu, MEM_TEST_GPA + half * PAGE, 2 + k)
        t = sync + _phase(m.unmap(MEM_TEST_GPA, half, chunk), guest)
        guest = m.guest_write(vcpu, MEM_TEST_GPA, 3 + k)
        return t + sync + _phase(m.unmap(MEM_TEST_GPA + half * PAGE, half, chunk), guest)
    if index in (3, 4):  # move active / inactive area: the host's two moves
        src = d.slot_gpas[-1]
        size = d.slot_pages[-1] * PAGE
        base = src - MEM_TEST_MOVE_SIZE_PAGES * PAGE // (2 if index == 3 else 1)
        area = [base + i * PAGE for i in range(MEM_TEST_MOVE_SIZE_PAGES)]
        # The guest keeps writing the area on its own CPU; its time is not the host's.
        for gpa in area:
            m.guest_write(vcpu, gpa, 1 + k)
        # vm_mem_region_move(): the same host memory at another guest address.
        t = m.set_region(d.nslots, MEM_TEST_MOVE_GPA_DEST, size, HVA_BASE + src)
        for gpa in area:
            m.guest_write(vcpu, gpa, 2 + k)
        return t + m.set_region(d.nslots, src, size, HVA_BASE + src)
    # RW: the host writes every page's second half-page word, the guest every first; then
    # each side reads what the other wrote.
    pages = MEM_TEST_SIZE // PAGE
    host_rw = pages * costs["guest_access_ns"]
    guest = sum(m.guest_write(vcpu, MEM_TEST_GPA + i * PAGE, 1 + k) for i in range(pages))
    t = max(host_rw, guest) + sync
    guest = sum(m.guest_write(vcpu, MEM_TEST_GPA + i * PAGE + PAGE // 2, 0) for i in range(pages))
    return t + max(host_rw, guest) + sync


def _run_test(index: int, strategy: str, costs: CostModel, args: PerfArgs, memslot_array: bool,
              vm_options: dict[str, Any]) -> TestResult:
    name, mem_pages = TESTS[index]
    mempages = mem_pages or MEM_SIZE_PAGES
    d, maxslots, setup = _prepare_vm(strategy, costs, memslot_array, args.nslots, mempages,
                                     vm_options)
    if d is not None and index == 3 and d.slot_pages[-1] < MEM_TEST_MOVE_SIZE_PAGES // 2:
        d, maxslots = None, 0  # test_memslot_move_prepare(): the last slot is too small
    if d is None:
        msg = (f"Memslot count too high for this test, decrease the cap (max is {maxslots})"
               if maxslots else
               "Memslot count may be too high for this test, try adjusting the cap")
        return TestResult(index, name, False, msg)
    limit = args.seconds * 1_000_000_000
    elapsed = 0
    done = 0
    last = 0
    # test_execute(): "while (1) { if (elapsed >= maxtime) break; loop(); nloops++; }".
    while elapsed < limit and done < args.model_iterations:
        last = _iteration(index, d, costs, done)
        elapsed += last
        done += 1
    simulated = done
    if elapsed < limit and last > 0:
        more = -(-(limit - elapsed) // last)
        done += more
        elapsed += more * last
    return TestResult(index, name, True, nslots=d.nslots, setup_ns=setup, iterations=done,
                      total_ns=elapsed, avg_ns=elapsed // done if done else 0,
                      simulated_iterations=simulated, whole_area=mem_pages == 0)


def memslot_perf(strategy: str, costs: CostModel, args: PerfArgs | None = None,
                 memslot_array: bool | None = None, vm_options: dict[str, Any] | None = None,
                 progress: ProgressFn | None = None) -> PerfReport:
    """Run the selftest's tests ``args.tfirst .. args.tlast`` against the model.

    ``memslot_array`` overrides the strategy's era (True: the pre-5.17 sorted array, False:
    the 5.17+ trees); ``vm_options`` go to :class:`~kvmmu.vm.VM` (e.g. ``nr_memslots``).
    """
    args = args or PerfArgs()
    vm_options = dict(vm_options or {})
    probe = VM(strategy=strategy, oracle=False, **vm_options)
    array = probe.strategy.memslot_array if memslot_array is None else memslot_array
    results: list[TestResult] = []
    for index in range(args.tfirst, args.tlast + 1):
        if progress is not None:
            progress(TESTS[index][0])
        result = _run_test(index, strategy, costs, args, array, vm_options)
        # The model is deterministic: every run of a test gives the same figures.
        results.extend([result] * (args.runs if result.ok else 1))
    return PerfReport(probe.strategy.name, array, costs.path, args, tuple(results))
