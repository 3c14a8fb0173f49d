"""How much memory a simulated run will take, estimated before it starts.

Design. A run's memory grows with the guest pages its vCPUs touch: each one holds an SPTE in a
leaf shadow page, the host-memory words written to it, and the oracle's record; everything else
(interpreter, libraries, the per-strategy results, capped sample and span buffers) is a constant.
So the estimate is ``BASE + PER_PAGE * touched pages (+ PLOTS)``, where the touched pages are
bounded three ways: the guest's RAM, the vCPUs' working-set windows (plus what is prefaulted), and
the number of accesses the run can make in its duration (active vCPUs x duration / think time).
A finished strategy's model is collected before the next one starts (:func:`kvmmu.sim.run.simulate`),
so the peak is that of one model, whatever the number of strategies.

The constants are measured, rounded up (peak RSS with ``/usr/bin/time -f %M``, Python 3.11, after
the collection fix): ``kvmmu run fast-zap-2013`` (524k pages prefaulted, 6 strategies, plots)
277 MB; ``run hotplug --vcpus 512 -s generation --no-plots`` (2.1M pages) 586 MB; ``run boot -s
generation --no-plots`` (40k pages) 72 MB; the smallest scenarios 43-45 MB. Measured per page:
260-680 B; :data:`PER_PAGE` takes 512 B. It is an estimate to refuse runs that cannot fit, not an
accounting: a run within 2x of it is expected. Prior art: the memory estimates that HPC batch
schedulers ask jobs for, and ``fio``'s refusal of a job whose buffers exceed RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmmu.sim.workloads.guest import active_vcpus
from kvmmu.sim.workloads.schema import MIB, Scenario, ScenarioError

#: The process before any page is touched: interpreter, numpy, pydantic, rich, the scenario.
BASE_BYTES = 64 * MIB
#: matplotlib and the figures, when plots are drawn.
PLOT_BYTES = 64 * MIB
#: One touched guest page: SPTE and shadow-page share, host-memory words, oracle record.
PER_PAGE_BYTES = 512
#: The default commands must stay under this (README: "defaults under 1 GB").
DEFAULT_BUDGET = 1 << 30
#: Share of the available memory a run may plan to use (the rest: the OS, other programs).
USABLE_SHARE = 0.8


def touched_pages(sc: Scenario) -> int:
    """An upper bound of the guest pages a run of ``sc`` touches (RAM, windows, accesses)."""
    g, v = sc.guest, sc.vcpu
    total = g.memory // g.page_size
    window = max(1, min(total, v.working_set // g.page_size))
    prefault = g.vcpus * len(range(0, round(window * g.prefault), g.prefault_stride))
    accesses = active_vcpus(sc) * (sc.duration // v.think + 1)
    running = min(active_vcpus(sc) * window, accesses)
    return int(min(total, prefault + running))


def estimate_bytes(sc: Scenario, *, plots: bool = False) -> int:
    """Estimated peak memory (bytes) of ``kvmmu run`` on ``sc`` (see the module notes)."""
    return BASE_BYTES + (PLOT_BYTES if plots else 0) + PER_PAGE_BYTES * touched_pages(sc)


def available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gib(n: int) -> str:
    """Bytes as a short human figure (``1.3 GiB``, ``250 MiB``)."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / MIB:.0f} MiB"


@dataclass(frozen=True, slots=True)
class Smaller:
    """A smaller run that would fit: the option to pass and its value, as the user types it."""

    option: str
    value: str


def smaller_runs(sc: Scenario, limit: int, plots: bool) -> list[Smaller]:
    """The largest ``--vcpus`` and ``--memory`` (halving) under which ``sc`` fits ``limit`` bytes."""
    out: list[Smaller] = []
    make = sc.with_overrides
    v = sc.guest.vcpus // 2
    while v >= 1:
        try:
            if estimate_bytes(make(vcpus=v), plots=plots) <= limit:
                out.append(Smaller("--vcpus", str(v)))
                break
        except ScenarioError:
            pass
        v //= 2
    m = sc.guest.memory // 2
    while m >= max(sc.guest.page_size, 4096):
        try:
            if estimate_bytes(make(memory=m), plots=plots) <= limit:
                out.append(Smaller("--memory", f"{m // MIB}MiB" if m % MIB == 0 else str(m)))
                break
        except ScenarioError:
            pass
        m //= 2
    return out


def check_memory(sc: Scenario, *, plots: bool, available: int | None = None) -> int:
    """The estimate, or ScenarioError naming it, what is available and an option that would fit."""
    need = estimate_bytes(sc, plots=plots)
    avail = available if available is not None else available_bytes()
    if avail is None:
        return need
    limit = int(avail * USABLE_SHARE)
    if need <= limit:
        return need
    hints = smaller_runs(sc, limit, plots)
    hint = " or ".join(f"{f.option} {f.value}" for f in hints) or "a smaller scenario"
    raise ScenarioError(
        f"{sc.name}: this run would need about {gib(need)} of memory "
        f"({touched_pages(sc):,} guest pages touched x {PER_PAGE_BYTES} B), but only "
        f"{gib(avail)} is available ({USABLE_SHARE:.0%} usable); try {hint}"
    )
