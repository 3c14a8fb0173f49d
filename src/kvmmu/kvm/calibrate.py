"""Measure on the real KVM what the cost model needs, and predict the same with the model.

Design. Each measurement isolates one cost by difference, on the test guest of :mod:`.guest`:

* **first-touch fault**: the guest reads one byte in each of N fresh 4 KiB pages in one step
  (``Op.TOUCH``, no exit in between); the same step on the now-mapped pages is the baseline;
  (fresh - mapped) / N is one shadow-MMU fault.  The host pages are populated beforehand, so the
  host's own page-fault and zeroing cost is not counted; ``pf_taken`` confirms N faults.
* **MMIO exit round trip**: the guest reads an unbacked gpa K times in one step; every read exits
  to the Python VMM and re-enters; (step - empty step) / K.
* **exit to userspace**: ``KVM_RUN`` with ``immediate_exit`` set: the ioctl round trip from Python
  with no guest entry, the floor under any exit.
* **host pages** (what ``memslot_perf_test``'s map test does to every page): N one-page
  ``madvise(MADV_DONTNEED)`` calls on pages that are present and mapped by the guest, the same
  calls again on the now empty pages, and a guest write to each dropped page: (present - empty)
  per call is ``host_unmap_present_ns``, the empty call less a null ctypes call is
  ``mmu_notifier_ns`` (syscall, ``invalidate_range_start/end``), and (first touch of the dropped
  pages - first touch of populated ones) / N is ``host_page_alloc_ns`` (``get_user_pages()``
  faulting a zeroed page in).  The vCPU waits in userspace meanwhile, so no TLB-shootdown IPI
  finds it in guest mode as the selftest's would.
* **memslot create / move / delete** of a small slot while N shadow PTEs are live (N pages touched
  in another slot, counted by the VM's ``pages_4k`` stat), with ``KVM_X86_QUIRK_SLOT_ZAP_ALL`` on
  (every DELETE/MOVE zaps all shadow pages) and off (only the slot's own).  A move or delete with
  the quirk on destroys the N live PTEs, so the pages are re-touched before each timed operation.

Every figure is taken ``runs`` times and reported as a median with its spread, the median absolute
deviation (MAD: robust to the one run a loaded host disturbs).  A shared host also disturbs whole
stretches of seconds (another agent's build on the other core slows every SRCU grace period of a
round alike, which no within-round statistic sees: on this project's 2-core machine, memslot
create at 0 live PTEs measured 12.6 us in one round and 56 us in the next, each with a MAD under
10 %), so :func:`calibrate_rounds` repeats the whole calibration ``rounds`` times on fresh VMs and
:func:`fit_rounds` fits the *quietest* round -- the one closest to the best round on every direct
timing -- and reports every estimate's range over the rounds as its between-round spread.  Taking
the least disturbed of repeated runs is the benchmarking practice for additive, one-sided timing
noise (Chen and Revels, "Robust benchmarking in noisy environments", arXiv:1608.04295, 2016, the
estimator of Julia's BenchmarkTools; hyperfine and pyperf also report min..max over runs); the
round is chosen whole so that the differences and slopes fitted from it (delete - create, the
per-PTE zap slope) come from one state of the host.  :func:`fit_costs` turns the
medians into the simulation's named costs and checks every raw estimate, *before* any clamping,
against :data:`BOUNDS` (plausible ranges stated below with their grounds), and every figure it
uses against :data:`MAX_RELATIVE_SPREAD`; a negative fit (delete faster than create, a falling zap
slope) or one outside its bounds is a *problem*, and the command refuses to write a profile with
problems unless forced.  The caller supplies the default profile (this package must not import
``kvmmu.sim``), and names that nothing here measures keep their default value.
:func:`predict_memslot_op` drives the model's own memslot-update generator over a model VM with
the same number of live SPTEs and charges each yielded step with the caller's cost function: the
model's prediction, to print next to the measured curve.

Prior art: the kernel selftest ``memslot_perf_test`` (timed memslot operations with vCPUs mapped
in) and ``demand_paging_test`` (per-page first-touch latency); the design note's
``real-kvm-here.md`` tables, which these measurements re-take.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kvmmu import VM, Step
from kvmmu.kvm.bindings import Kvm, _libc
from kvmmu.kvm.guest import GuestLayout
from kvmmu.kvm.harness import RealMachine

PAGE = 4096
MADV_POPULATE_WRITE = 23
MADV_DONTNEED = 4
#: Live-PTE counts of the memslot sweep.
FULL_PTES: tuple[int, ...] = (0, 1024, 2048, 8192, 16384, 32768)
QUICK_PTES: tuple[int, ...] = (0, 2048, 8192, 32768)
OPS: tuple[str, ...] = ("create", "move", "delete")
#: Where the timed small slot lives (above the touched region, inside the mapped window).
_SMALL_GPA = 200 << 20
_SMALL_MOVED_GPA = 210 << 20

Progress = Callable[[str, int], None]  # (label, units of work done since the last call)


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity: every run's value (ns) and their median."""

    name: str
    samples: tuple[float, ...]
    unit: str = "ns"

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def spread(self) -> float:
        return mad(self.samples)


def mad(samples: Sequence[float]) -> float:
    """Median absolute deviation: the spread of ``samples`` that one outlier cannot inflate."""
    m = statistics.median(samples)
    return float(statistics.median(abs(x - m) for x in samples))


@dataclass(frozen=True, slots=True)
class MemslotPoint:
    """One memslot operation timed at one number of live shadow PTEs."""

    op: str
    zap_all: bool
    live_ptes: int  # pages touched before the operation
    pages_4k: int  # the VM's pages_4k stat just before (KVM's own count of 4 KiB SPTEs)
    samples: tuple[float, ...]
    zapped: int = 0  # mmu_shadow_zapped during the operation (last run): shadow pages zapped

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def spread(self) -> float:
        return mad(self.samples)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything one ``kvmmu calibrate`` run measured."""

    first_touch: Figure
    first_touch_pf_taken: int
    mmio_round_trip: Figure
    exit_to_userspace: Figure
    memslot: tuple[MemslotPoint, ...]
    runs: int
    kernel: str
    notes: dict[str, str] = field(default_factory=dict)
    #: Host-page figures (:func:`measure_host_pages`); None in calibrations made without them.
    host_page_alloc: Figure | None = None
    madvise_present: Figure | None = None
    madvise_empty: Figure | None = None
    null_call: Figure | None = None

    def point(self, op: str, zap_all: bool, live: int) -> MemslotPoint:
        return next(
            p for p in self.memslot if p.op == op and p.zap_all == zap_all and p.live_ptes == live
        )


def _populate(addr: int, size: int) -> None:
    # Host pages present beforehand: the host kernel's page allocation is not the shadow MMU's.
    _libc.madvise(ctypes.c_void_p(addr), size, MADV_POPULATE_WRITE)


def measure_first_touch(
    pages: int, runs: int, progress: Progress | None = None, write: bool = False
) -> tuple[Figure, int]:
    """ns per first-touch fault (reads, or writes with ``write``), and the last run's
    ``pf_taken`` delta."""
    samples: list[float] = []
    pf = 0
    layout = GuestLayout(window=max(64 << 20, 2 * pages * PAGE + (2 << 20)))
    with RealMachine(layout) as m:
        mem = m.allocate(pages * PAGE)
        _populate(mem.addr, mem.size)
        stats = m.vcpus[0].stats()
        for _ in range(runs):
            m.set_user_memory_region(0, 0, 0, mem.size, mem.addr)
            before = stats.get("pf_taken")
            cold = m.touch(0, 0, pages, write=write)
            pf = stats.get("pf_taken") - before
            warm = m.touch(0, 0, pages, write=write)
            samples.append((cold.elapsed_ns - warm.elapsed_ns) / pages)
            m.set_user_memory_region(0, 0, 0, 0, 0)  # delete: the next run faults afresh
            if progress:
                progress("first-touch fault", 1)
    return Figure("first_touch_fault", tuple(samples)), pf


def measure_mmio_round_trip(exits: int, runs: int, progress: Progress | None = None) -> Figure:
    """ns per MMIO exit handled by the Python VMM (exit, decode, re-enter)."""
    samples: list[float] = []
    with RealMachine(GuestLayout(window=4 << 20)) as m:
        for _ in range(runs):
            empty = m.touch(0, 2 << 20, 0, 0)
            loop = m.touch(0, 2 << 20, exits, 0)
            assert len(loop.mmio) == exits
            samples.append((loop.elapsed_ns - empty.elapsed_ns) / exits)
            if progress:
                progress("MMIO exit round trip", 1)
    return Figure("mmio_exit_round_trip", tuple(samples))


def measure_exit_to_userspace(
    iterations: int, runs: int, progress: Progress | None = None
) -> Figure:
    """ns per ``KVM_RUN`` that returns at once (``immediate_exit``): the userspace round trip."""
    samples: list[float] = []
    with Kvm() as kvm, kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        run = vcpu.run_struct
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            for _ in range(iterations):
                run.immediate_exit = 1
                vcpu.run()
            samples.append((time.perf_counter_ns() - t0) / iterations)
            if progress:
                progress("exit to userspace", 1)
    return Figure("exit_to_userspace", tuple(samples))


def _ns_per_call(call: Callable[[int], object], n: int) -> float:
    """Mean ns of ``call(i)`` for i in 0..n-1, timed as one loop."""
    t0 = time.perf_counter_ns()
    for i in range(n):
        call(i)
    return (time.perf_counter_ns() - t0) / n


def measure_host_pages(
    pages: int, runs: int, progress: Progress | None = None
) -> tuple[Figure, Figure, Figure, Figure]:
    """ns per: host page faulted in by a guest write (beyond the fault), one-page madvise of a
    present guest-mapped page, the same of an empty page, and a null ctypes call."""
    alloc: list[float] = []
    present: list[float] = []
    empty: list[float] = []
    null: list[float] = []
    madvise = _libc.madvise
    getppid = _libc.getppid
    layout = GuestLayout(window=max(64 << 20, 2 * pages * PAGE + (2 << 20)))
    with RealMachine(layout) as m:
        mem = m.allocate(pages * PAGE)
        m.set_user_memory_region(0, 0, 0, mem.size, mem.addr)
        for _ in range(runs):
            # Populated host pages, a fresh slot (no shadow PTEs): the plain first touch.
            m.set_user_memory_region(0, 0, 0, 0, 0)
            _populate(mem.addr, mem.size)
            m.set_user_memory_region(0, 0, 0, mem.size, mem.addr)
            cold = m.touch(0, 0, pages, write=True)
            warm = m.touch(0, 0, pages, write=True)
            plain = (cold.elapsed_ns - warm.elapsed_ns) / pages
            def drop(i: int) -> None:
                madvise(ctypes.c_void_p(mem.addr + i * PAGE), PAGE, MADV_DONTNEED)

            present.append(_ns_per_call(drop, pages))  # the pages are present: freed
            empty.append(_ns_per_call(drop, pages))  # the same calls, nothing left to free
            null.append(_ns_per_call(lambda _i: getppid(), pages))
            cold = m.touch(0, 0, pages, write=True)
            warm = m.touch(0, 0, pages, write=True)
            alloc.append((cold.elapsed_ns - warm.elapsed_ns) / pages - plain)
            if progress:
                progress("host pages", 1)
    return (
        Figure("host_page_alloc", tuple(alloc)),
        Figure("madvise_present", tuple(present)),
        Figure("madvise_empty", tuple(empty)),
        Figure("null_call", tuple(null)),
    )


def measure_memslot_ops(
    live_ptes: Sequence[int], zap_all: bool, runs: int, progress: Progress | None = None
) -> list[MemslotPoint]:
    """Create / move / delete of a 4 KiB slot with each number of live shadow PTEs."""
    top = max(live_ptes)
    layout = GuestLayout(window=256 << 20)
    points: list[MemslotPoint] = []
    with RealMachine(layout, zap_all_quirk=zap_all) as m:
        big = m.allocate(max(top, 1) * PAGE)
        _populate(big.addr, big.size)
        small = m.allocate(PAGE)
        m.set_user_memory_region(0, 0, 0, big.size, big.addr)
        vmstats = m.vm_stats()
        # One untimed cycle first: the first memslot change of a VM allocates its arrays.
        m.set_user_memory_region(1, 0, _SMALL_GPA, PAGE, small.addr)
        m.set_user_memory_region(1, 0, _SMALL_MOVED_GPA, PAGE, small.addr)
        m.set_user_memory_region(1, 0, _SMALL_MOVED_GPA, 0, 0)
        for n in live_ptes:
            times: dict[str, list[float]] = {op: [] for op in OPS}
            pages: dict[str, int] = {}
            zapped: dict[str, int] = {}
            for _ in range(runs):
                for op in OPS:
                    if n:
                        m.touch(0, 0, n)  # (re)populate: a zap-all destroyed them
                    pages[op] = vmstats.get("pages_4k")
                    if op == "create":
                        args = (1, 0, _SMALL_GPA, PAGE, small.addr)
                    elif op == "move":
                        args = (1, 0, _SMALL_MOVED_GPA, PAGE, small.addr)
                    else:
                        args = (1, 0, _SMALL_MOVED_GPA, 0, 0)
                    z0 = vmstats.get("mmu_shadow_zapped")
                    t0 = time.perf_counter_ns()
                    m.set_user_memory_region(*args)
                    times[op].append(float(time.perf_counter_ns() - t0))
                    zapped[op] = vmstats.get("mmu_shadow_zapped") - z0
                if progress:
                    progress("memslot operations", 1)
            for op in OPS:
                points.append(MemslotPoint(op, zap_all, n, pages[op], tuple(times[op]), zapped[op]))
    return points


def calibrate(
    *, quick: bool = False, runs: int | None = None, progress: Progress | None = None
) -> Calibration:
    """Take every measurement (``quick``: fewer points and runs)."""
    import platform

    runs = runs or (3 if quick else 7)
    ptes = QUICK_PTES if quick else FULL_PTES
    first, pf = measure_first_touch(2048 if quick else 8192, runs, progress)
    mmio = measure_mmio_round_trip(200 if quick else 1000, runs, progress)
    exit_us = measure_exit_to_userspace(2000 if quick else 10000, runs, progress)
    alloc, present, empty, null = measure_host_pages(1024 if quick else 4096, runs, progress)
    points: list[MemslotPoint] = []
    for zap_all in (True, False):
        points += measure_memslot_ops(ptes, zap_all, runs, progress)
    return Calibration(
        first, pf, mmio, exit_us, tuple(points), runs, platform.release(),
        host_page_alloc=alloc, madvise_present=present, madvise_empty=empty, null_call=null,
    )


def work_units(quick: bool, runs: int | None = None, rounds: int = 1) -> int:
    """How many progress units :func:`calibrate_rounds` reports (for a progress bar's total)."""
    r = runs or (3 if quick else 7)
    n = len(QUICK_PTES if quick else FULL_PTES)
    return rounds * (4 * r + 2 * n * r)


# --- from measurements to the simulation's named costs -----------------------------------------

#: The first-touch fault's parts in the cost model (what the timed run charges for one).
FAULT_PARTS: tuple[str, ...] = (
    "guest_access_ns",
    "vmexit_ns",
    "slow_path_fault_ns",
    "memslot_lookup_ns",
    "mmu_lock_ns",
    "spte_write_ns",
    "mmu_unlock_ns",
)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def zap_slope(cal: Calibration, op: str = "delete") -> float:
    """Least-squares ns per live PTE of ``op`` with the zap-all quirk on (over the medians)."""
    pts = [p for p in cal.memslot if p.op == op and p.zap_all]
    return _slope([float(p.live_ptes) for p in pts], [p.median for p in pts])


def zap_slope_spread(cal: Calibration, op: str = "delete") -> float:
    """The MAD of the slopes fitted to each run separately: how far the slope is to be trusted."""
    pts = [p for p in cal.memslot if p.op == op and p.zap_all]
    if not pts:
        return 0.0
    xs = [float(p.live_ptes) for p in pts]
    runs = min(len(p.samples) for p in pts)
    return mad([_slope(xs, [p.samples[r] for p in pts]) for r in range(runs)])


#: Plausible range (inclusive, ns) of each raw estimate, before any clamping, and why. Measured
#: here (/work/shared/design/real-kvm-here.md, kvm_pvm shadow MMU on 2 cores): a first-touch fault
#: ~0.7-0.9 us, an MMIO round trip to Python ~36 us, a null ioctl from Python 1.4 us, memslot
#: create ~14 us, delete - create ~5 us, ~46 ns per live PTE zapped. The bounds sit one to two
#: orders of magnitude around those, so that another host passes and a disturbed fit does not:
#: the issue's loaded host gave a negative per-PTE slope and a 3.2 ms "grace period".
BOUNDS: dict[str, tuple[float, float, str]] = {
    "first_touch_fault": (100, 50_000, "a shadow-MMU fault: a VM exit plus a walk, ~0.8 us here"),
    "mmio_exit_round_trip": (1_000, 1_000_000, "exit, Python VMM, re-entry: ~36 us here"),
    "exit_to_userspace": (100, 100_000, "a KVM_RUN ioctl that returns at once: ~1.4 us here"),
    "memslot_create": (1_000, 1_000_000, "KVM_SET_USER_MEMORY_REGION create, no live PTEs: ~14 us here"),
    "publish_and_grace": (0, 100_000, "delete - create: one publish + SRCU grace period, ~5 us here"),
    "zap_slope": (1, 1_000, "delete with the zap-all quirk, per live PTE: ~46 ns here"),
    "host_page_alloc": (100, 100_000, "a host page faulted in by a guest write: ~15 us here"),
    "madvise_empty": (100, 100_000, "a one-page madvise(MADV_DONTNEED) of nothing: ~1.5 us here"),
    "madvise_present_extra": (0, 100_000, "the same of a present, guest-mapped page, more: "
                              "~2 us here"),
}
#: A figure whose MAD exceeds this share of its median is too noisy to fit a cost from.
MAX_RELATIVE_SPREAD = 0.5


@dataclass(frozen=True, slots=True)
class Fit:
    """Named costs fitted from a calibration, the raw estimates they came from, and problems."""

    costs: dict[str, int]
    how: dict[str, str]
    raw: dict[str, float]  # BOUNDS' names -> estimate (ns), before clamping
    spread: dict[str, float]  # BOUNDS' names -> MAD (ns)
    problems: tuple[str, ...]  # empty: every estimate plausible, every figure steady enough


def derive_costs(
    cal: Calibration, defaults: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, str]]:
    """The measured costs by name (a subset of ``defaults``' names) and how each was derived."""
    fit = fit_costs(cal, defaults)
    return fit.costs, fit.how


def fit_costs(cal: Calibration, defaults: Mapping[str, int]) -> Fit:
    """The named costs, with every raw estimate checked against :data:`BOUNDS` and its spread."""
    create = cal.point("create", True, 0)
    delete = cal.point("delete", True, 0)
    raw = {
        "first_touch_fault": cal.first_touch.median,
        "mmio_exit_round_trip": cal.mmio_round_trip.median,
        "exit_to_userspace": cal.exit_to_userspace.median,
        "memslot_create": create.median,
        "publish_and_grace": delete.median - create.median,
        "zap_slope": zap_slope(cal),
    }
    spread = {
        "first_touch_fault": cal.first_touch.spread,
        "mmio_exit_round_trip": cal.mmio_round_trip.spread,
        "exit_to_userspace": cal.exit_to_userspace.spread,
        "memslot_create": create.spread,
        "publish_and_grace": create.spread + delete.spread,
        "zap_slope": zap_slope_spread(cal),
    }
    hp = _host_page_figures(cal)
    if hp is not None:
        alloc, present, empty, null = hp
        raw["host_page_alloc"] = alloc.median
        raw["madvise_empty"] = empty.median - null.median
        raw["madvise_present_extra"] = present.median - empty.median
        spread["host_page_alloc"] = alloc.spread
        spread["madvise_empty"] = empty.spread + null.spread
        spread["madvise_present_extra"] = present.spread + empty.spread
    problems: list[str] = []
    for name, value in raw.items():
        lo, hi, why = BOUNDS[name]
        if not lo <= value <= hi:
            problems.append(
                f"{name} = {value:,.1f} ns is outside the plausible {lo:,.0f}..{hi:,.0f} ns ({why})"
            )
    checked = [cal.first_touch, cal.mmio_round_trip, cal.exit_to_userspace]
    if hp is not None:
        checked += [hp[0], hp[2]]
    for fig in checked:
        if fig.median > 0 and fig.spread > MAX_RELATIVE_SPREAD * fig.median:
            problems.append(
                f"{fig.name}: spread {fig.spread:,.0f} ns is over {MAX_RELATIVE_SPREAD:.0%} of the "
                f"median {fig.median:,.0f} ns (a loaded host? more --runs?)"
            )
    costs, how = _costs_from(cal, defaults)
    return Fit(costs, how, raw, spread, tuple(problems))


#: Rounds whose estimate differs from the chosen round's by more than this share are reported as a
#: noisy host (a warning: the quietest round is still the best estimate this host can give).
MAX_BETWEEN_SPREAD = 0.5


def direct_timings(cal: Calibration) -> dict[str, float]:
    """The timings of one round that rank rounds by disturbance (medians over its runs, ns)."""
    top = max(p.live_ptes for p in cal.memslot)
    return {
        "first_touch_fault": cal.first_touch.median,
        "mmio_exit_round_trip": cal.mmio_round_trip.median,
        "exit_to_userspace": cal.exit_to_userspace.median,
        "memslot_create": cal.point("create", True, 0).median,
        "memslot_delete": cal.point("delete", True, 0).median,
        "memslot_delete_live": cal.point("delete", True, top).median,
    }


def quietest_round(cals: Sequence[Calibration]) -> tuple[int, tuple[float, ...]]:
    """The least disturbed round and every round's score.

    A round's score is the mean over :func:`direct_timings` of its value divided by the best
    (smallest) value any round gave: 1.0 is a round that was the fastest on every timing.  Noise
    on a shared host only ever adds time, so the round closest to the best everywhere is the one
    the host disturbed least.
    """
    if not cals:
        raise ValueError("no calibration rounds")
    timings = [direct_timings(c) for c in cals]
    best = {k: min(t[k] for t in timings) for k in timings[0]}
    scores = tuple(
        statistics.fmean(t[k] / best[k] if best[k] > 0 else 1.0 for k in best) for t in timings
    )
    return min(range(len(cals)), key=lambda i: scores[i]), scores


@dataclass(frozen=True, slots=True)
class RoundsFit:
    """Every round's fit, the quietest one chosen, and how far the rounds disagree."""

    rounds: tuple[Calibration, ...]
    fits: tuple[Fit, ...]
    chosen: int
    scores: tuple[float, ...]

    @property
    def cal(self) -> Calibration:
        return self.rounds[self.chosen]

    @property
    def fit(self) -> Fit:
        return self.fits[self.chosen]

    def between(self) -> dict[str, tuple[float, float]]:
        """Each raw estimate's (min, max) over the rounds."""
        return {
            k: (min(f.raw[k] for f in self.fits), max(f.raw[k] for f in self.fits))
            for k in self.fit.raw
        }

    def between_spread(self) -> dict[str, float]:
        """Each raw estimate's range over the rounds as a share of the chosen round's value."""
        chosen = self.fit.raw
        return {
            k: (hi - lo) / abs(chosen[k]) if chosen[k] else 0.0
            for k, (lo, hi) in self.between().items()
        }

    def warnings(self) -> tuple[str, ...]:
        """Estimates whose rounds disagree by more than :data:`MAX_BETWEEN_SPREAD`."""
        if len(self.rounds) < 2:
            return ()
        out = []
        between = self.between()
        for k, share in self.between_spread().items():
            if share > MAX_BETWEEN_SPREAD:
                lo, hi = between[k]
                out.append(
                    f"{k}: rounds ranged {lo:,.1f}..{hi:,.1f} ns ({share:.0%} of the chosen "
                    f"round's {self.fit.raw[k]:,.1f}): the host was busy during some rounds"
                )
        return tuple(out)


def calibrate_rounds(
    rounds: int, *, quick: bool = False, runs: int | None = None, progress: Progress | None = None
) -> tuple[Calibration, ...]:
    """:func:`calibrate` ``rounds`` times, each on fresh VMs."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    return tuple(calibrate(quick=quick, runs=runs, progress=progress) for _ in range(rounds))


def fit_rounds(cals: Sequence[Calibration], defaults: Mapping[str, int]) -> RoundsFit:
    """Fit every round and choose the quietest (:func:`quietest_round`)."""
    chosen, scores = quietest_round(cals)
    return RoundsFit(tuple(cals), tuple(fit_costs(c, defaults) for c in cals), chosen, scores)


def profile_source(rf: RoundsFit, what: str) -> dict[str, str]:
    """The ``[source]`` table of a profile fitted from ``rf``: how, when, and the spread."""
    import platform

    ranges = "; ".join(
        f"{k} {lo:,.0f}..{hi:,.0f}" for k, (lo, hi) in rf.between().items()
    )
    source = {
        "profile": f"{what} on {platform.node()}",
        "kernel": rf.cal.kernel,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": str(rf.cal.runs),
        "rounds": f"{len(rf.rounds)}, fitted from round {rf.chosen + 1} (the quietest; scores "
        + ", ".join(f"{s:.2f}" for s in rf.scores)
        + ")",
        "between_rounds_ns": ranges,
        "unmeasured": "names not listed in [costs] keep kvmmu's default profile",
        **rf.fit.how,
    }
    if rf.fit.problems:
        source["forced"] = "written with --force despite: " + "; ".join(rf.fit.problems)
    return source


def cpu_model() -> str:
    """This machine's CPU model name (``/proc/cpuinfo``) and how many CPUs it has."""
    import os

    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def _host_page_figures(cal: Calibration) -> tuple[Figure, Figure, Figure, Figure] | None:
    if (
        cal.host_page_alloc is None
        or cal.madvise_present is None
        or cal.madvise_empty is None
        or cal.null_call is None
    ):
        return None
    return cal.host_page_alloc, cal.madvise_present, cal.madvise_empty, cal.null_call


def _costs_from(
    cal: Calibration, defaults: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, str]]:
    costs: dict[str, int] = {}
    how: dict[str, str] = {}
    hp = _host_page_figures(cal)
    if hp is not None:
        alloc, present, empty, null = hp
        costs["host_page_alloc_ns"] = max(0, round(alloc.median))
        costs["mmu_notifier_ns"] = max(1, round(empty.median - null.median))
        costs["host_unmap_present_ns"] = max(0, round(present.median - empty.median))
        how["host_pages"] = (
            f"guest write to a dropped page {alloc.median:.0f} ns more than to a populated one; "
            f"one-page madvise(MADV_DONTNEED) {empty.median:.0f} ns empty (less a "
            f"{null.median:.0f} ns null ctypes call), {present.median:.0f} ns present and "
            "guest-mapped, the vCPU waiting in userspace (no shootdown IPI into guest mode)"
        )
    f = cal.first_touch.median
    base = sum(defaults[n] for n in FAULT_PARTS)
    for n in FAULT_PARTS:
        costs[n] = max(1, round(defaults[n] * f / base))
    how["fault_parts"] = (
        f"first-touch fault median {f:.0f} ns split over {', '.join(FAULT_PARTS)} "
        "in the default profile's proportions"
    )
    costs["guest_retry_ns"] = costs["vmexit_ns"]
    costs["exit_to_userspace_ns"] = round(cal.mmio_round_trip.median)
    how["exit_to_userspace_ns"] = "MMIO exit round trip to the Python VMM, native CPL3 guest"
    create0 = cal.point("create", True, 0).median
    delete0 = cal.point("delete", True, 0).median
    publish_and_grace = max(0.0, delete0 - create0)  # a delete publishes twice, a create once
    share = defaults["memslot_publish_ns"] / (
        defaults["memslot_publish_ns"] + defaults["srcu_grace_period_ns"]
    )
    costs["memslot_publish_ns"] = round(publish_and_grace * share)
    costs["srcu_grace_period_ns"] = round(publish_and_grace * (1 - share))
    costs["memslot_ioctl_ns"] = max(0, round(create0 - publish_and_grace))
    how["memslot"] = (
        f"create {create0:.0f} ns, delete {delete0:.0f} ns with no live PTEs: one publish + grace "
        f"period = delete - create; the rest of a create is ioctl overhead"
    )
    slope = zap_slope(cal)
    freed = defaults["shadow_page_freed_ns"]
    costs["spte_zapped_ns"] = max(1, round(slope - freed / 512))
    how["spte_zapped_ns"] = (
        f"delete with the zap-all quirk: {slope:.1f} ns per live PTE (least squares), less "
        f"shadow_page_freed_ns/512"
    )
    return costs, how


#: The first line of every profile :func:`profile_toml` writes: how ``--out`` recognises its own.
PROFILE_HEADER = "# Written by `kvmmu calibrate`"


def profile_toml(costs: Mapping[str, int], source: Mapping[str, str]) -> str:
    """A flat ``[costs]`` table of ``<name>_ns = int`` and a ``[source]`` table of strings."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'

    lines = [
        f"{PROFILE_HEADER} from measurements on this machine's /dev/kvm.",
        "[costs]",
    ]
    lines += [f"{k} = {int(v)}" for k, v in costs.items()]
    lines += ["", "[source]"] + [f"{k} = {q(v)}" for k, v in source.items()]
    return "\n".join(lines) + "\n"


# --- the model's prediction --------------------------------------------------------------------


def predict_memslot_op(
    op: str,
    live_ptes: int,
    zap_all: bool,
    step_cost: Callable[[Step], int],
    ioctl_ns: int,
    spte_zapped_ns: int = 0,
) -> int:
    """ns the model charges for ``op`` on a 4 KiB slot with ``live_ptes`` live SPTEs.

    Builds a model VM like the measured one (a RAM slot with ``live_ptes`` pages touched), then
    drives ``set_user_memory_region_steps`` and sums ``step_cost`` of every yielded step plus
    ``ioctl_ns`` per request.  Freeing a shadow page also costs ``spte_zapped_ns`` per live entry
    it held, as the model counts them (``sptes_dropped``) and the timed simulation charges them.
    """
    vm = VM(
        strategy="generation", phys_bits=52, slot_zap="all" if zap_all else "slot", oracle=False
    )
    hva = 0x1000_0000_0000
    vm.set_user_memory_region(0, 0, 0, max(live_ptes, 1) * PAGE, hva)
    vcpu = vm.create_vcpu()
    for i in range(live_ptes):
        vcpu.access(i * PAGE, size=1)
    if op in ("move", "delete"):
        vm.set_user_memory_region(1, 0, _SMALL_GPA, PAGE, hva + (1 << 32))
    if op == "create":
        gen = vm.set_user_memory_region_steps(1, 0, _SMALL_GPA, PAGE, hva + (1 << 32))
    elif op == "move":
        gen = vm.set_user_memory_region_steps(1, 0, _SMALL_MOVED_GPA, PAGE, hva + (1 << 32))
    else:
        gen = vm.set_user_memory_region_steps(1, 0, _SMALL_GPA, 0, 0)
    total = ioctl_ns
    dropped_before = vm.kvm.mmu.stats.sptes_dropped
    for step in gen:
        total += step_cost(step)
    return total + spte_zapped_ns * (vm.kvm.mmu.stats.sptes_dropped - dropped_before)
