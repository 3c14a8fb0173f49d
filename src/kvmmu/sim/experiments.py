"""The issue's figures as experiments: built scenarios, sweeps, and the numbers they show.

Design. Each experiment builds small scenarios in code (validated like files, through
:func:`~kvmmu.sim.workloads.schema.scenario_from_dict`), runs them through :func:`simulate` under
each strategy and returns plain values (:class:`~kvmmu.sim.results.Sweep` or a dict) that the
CLI prints and plots and the tests assert the *shapes* of. Nothing is tuned to a published figure:
the published numbers are carried alongside for comparison only.  They run the shadow MMU
(``SimOptions.mmu="shadow"``): the arguments they reproduce were made about it, the only MMU until
5.10; ``kvmmu run --mmu tdp`` shows what the TDP MMU changes.

* :func:`shadow_page_sweep`: memslot CREATE latency and ``mmu_lock`` hold per update against the
  number of shadow pages (zap-all-3.9 and zap-mmio-3.10 linear, the generation flat).
* :func:`seed_argument`: the whole of the 2013 seed mail in one experiment: the walks' CREATE
  cost growing with shadow pages, the generation's flat, and what the rejected alternative
  (zap-all-fast) costs the vCPUs instead: every warm page refaults.
* :func:`refault_after_create`: after one CREATE, how many RAM and MMIO accesses refault, per
  strategy (zap-all-fast: the whole working set on every vCPU; generation: MMIO SPTEs only).
* :func:`fast_zap_2013`: the published "fast zap all shadow pages" setting, 46.1 ms -> 21.6 ms.
* :func:`vcpu_sweep`: vCPU stall time against vCPU count.

Sweeps run their points serially by default; ``workers > 1`` spreads them over a dask
``LocalCluster`` of processes started here (each point is an independent simulation). On this
project's 2-core machines it does not pay: ``kvmmu plot vcpus`` took 44.9 s serially and 46.1 s
with 2 workers (the scheduler and result transfer eat the second core), so it stays opt-in for
hosts with more cores.

Prior art: the parameter sweeps of gem5's and SST's experiment scripts (one simulation per point,
results gathered as rows), and the figures of the 2013 patch series they reproduce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kvmmu.sim.costs import CostModel
from kvmmu.sim.results import StrategyResult, Sweep, SweepPoint, percentile
from kvmmu.sim.run import SimOptions, simulate
from kvmmu.sim.workloads.schema import GIB, MIB, Scenario, load_scenario, scenario_from_dict

ProgressFn = Callable[[str], None]


def isolating_options() -> SimOptions:
    """Options of the sweeps: DELETE/MOVE zap only their slot (quirk off), as ``kvmmu run``'s
    default, so that differences come from MMIO invalidation alone; no timeline spans."""
    return SimOptions(trace=False, vm_options={"slot_zap": "slot", "start_near_wrap": True},
                      mmu="shadow")


#: The published figure (design note section 3): delete+add of a memslot, 6 vCPUs, 2 GiB, idle.
PUBLISHED_FAST_ZAP_MS = {"before": 46.1, "after": 21.6}


def _points(
    jobs: Sequence[tuple[int, Scenario, str]],
    costs: CostModel,
    opts: SimOptions,
    workers: int,
    progress: ProgressFn | None,
) -> list[tuple[int, str, StrategyResult]]:
    """Run ``(x, scenario, strategy)`` jobs, serially or on a dask LocalCluster."""
    if workers <= 1:
        out = []
        for x, sc, strategy in jobs:
            if progress is not None:
                progress(f"{strategy} @ {x}")
            out.append((x, strategy, simulate(sc, strategy, costs, opts)))
        return out
    from dask.distributed import Client, LocalCluster, as_completed  # only when asked for

    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            # No dashboard: nobody asked for one, and port 8787 may belong to another program.
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        futures = {
            client.submit(simulate, sc, strategy, costs, opts, pure=False): (x, strategy)
            for x, sc, strategy in jobs
        }
        results: dict[tuple[int, str], StrategyResult] = {}
        for fut in as_completed(futures):  # type: ignore[no-untyped-call]
            x, strategy = futures[fut]
            results[(x, strategy)] = fut.result()
            if progress is not None:
                progress(f"{strategy} @ {x}")
    return [(x, s, results[(x, s)]) for x, _, s in jobs]


def _row(r: StrategyResult, extra: dict[str, float]) -> dict[str, int | float | str]:
    row = r.summary()
    row.update(extra)
    return row


# --- 1. update latency and lock hold vs shadow pages ------------------------------------------


def shadow_page_scenario(leaf_pages: int) -> Scenario:
    """``leaf_pages`` sparse RAM pages and 512 MMIO SPTEs over 16 tables mapped; one CREATE.

    One vCPU keeps touching RAM and devices; the VMM creates one slot at 50 µs. The MMIO SPTEs
    (every 16th page of a 32 MiB BAR, as a guest that has used many device registers) make the
    pages that ``zap-mmio-3.10`` frees (after visiting every page) and ``zap-all-3.9`` frees with
    all the others.
    """
    return scenario_from_dict(
        {
            "name": f"shadow-pages-{leaf_pages}",
            "description": "one memslot CREATE while many shadow pages are live",
            "duration": "400us",
            "guest": {
                "vcpus": 1,
                "memory": leaf_pages * 2 * MIB,
                "ram_base": "4GiB",
                "prefault": 1.0,
                "prefault_stride": 512,  # one 4 KiB page per leaf table: one shadow page each
                "prefault_devices": 16,
            },
            "vcpu": {
                "think": "5us",
                "working_set": leaf_pages * 2 * MIB,
                "mmio_fraction": 0.2,
            },
            "devices": [{"name": "bars", "gpa": 0xE0000000, "size": "32MiB"}],
            "vmm": [{"op": "create", "slot": 10, "gpa": "1TiB", "size": "2MiB", "at": "50us"}],
        }
    )


def shadow_page_sweep(
    leaf_pages: Sequence[int],
    strategies: Sequence[str],
    costs: CostModel,
    opts: SimOptions | None = None,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> Sweep:
    """CREATE latency and ``mmu_lock`` hold per update against the number of shadow pages."""
    opts = opts or isolating_options()
    jobs = [(n, shadow_page_scenario(n), s) for n in leaf_pages for s in strategies]
    points = []
    for n, strategy, r in _points(jobs, costs, opts, workers, progress):
        vmm = next(t for t in r.threads if t.kind == "vmm")
        lat = r.latencies
        points.append(
            SweepPoint(
                n,
                strategy,
                _row(
                    r,
                    {
                        "shadow_pages": r.stats.get("shadow_pages", 0),
                        "vmm_lock_hold_per_update_ns": vmm.lock_hold_ns / max(1, len(lat)),
                    },
                ),
            )
        )
    return Sweep("memslot CREATE vs live shadow pages", "leaf shadow pages mapped", tuple(points))


# --- 2. refaults after a CREATE ---------------------------------------------------------------


def refault_scenario(vcpus: int, pages: int) -> Scenario:
    """``vcpus`` vCPUs, each sweeping its own ``pages`` prefaulted pages; one CREATE at 20 µs."""
    think_ns = 500
    return scenario_from_dict(
        {
            "name": "refault-after-create",
            "description": "one memslot CREATE while every vCPU sweeps a warm working set",
            # A sweep of the whole window after the CREATE, with room for the refaults.
            "duration": 20_000 + pages * (think_ns + 6_000),
            "guest": {
                "vcpus": vcpus,
                "memory": max(vcpus * pages * 4096, 2 * MIB),
                "ram_base": "4GiB",
                "prefault": 1.0,
            },
            "vcpu": {
                "think": think_ns,
                "working_set": pages * 4096,
                "pattern": "sweep",
                "mmio_fraction": 0.05,
            },
            "devices": [{"name": "doorbells", "gpa": 0xFE000000, "size": "16KiB"}],
            "vmm": [{"op": "create", "slot": 10, "gpa": "1TiB", "size": "2MiB", "at": "20us"}],
        }
    )


def refault_after_create(
    strategies: Sequence[str],
    costs: CostModel,
    vcpus: int = 4,
    pages: int = 512,
    opts: SimOptions | None = None,
) -> dict[str, dict[str, int]]:
    """Per strategy: RAM and MMIO refaults after one CREATE, and the working set size."""
    opts = opts or isolating_options()
    sc = refault_scenario(vcpus, pages)
    out = {}
    for s in strategies:
        r = simulate(sc, s, costs, opts)
        out[s] = {
            "refaults_ram": r.refaults_ram,
            "refaults_mmio": r.refaults_mmio,
            "working_set_pages": vcpus * pages,
            "mmio_sptes_created": int(r.stats.get("pf_mmio_spte_created", 0)),
        }
    return out


# --- 3. the published fast-zap figure ---------------------------------------------------------


def _delete_add(sc: Scenario, strategy: str, costs: CostModel, opts: SimOptions) -> dict[str, float]:
    r = simulate(sc, strategy, costs, opts)
    pairs = r.action_latencies("remap")
    vmm = next(t for t in r.threads if t.kind == "vmm")
    return {
        "delete_add_mean_ms": sum(pairs) / len(pairs) / 1e6 if pairs else 0.0,
        "delete_add_p99_ms": percentile(pairs, 99) / 1e6,
        "lock_hold_per_op_ms": vmm.lock_hold_ns / max(1, len(pairs)) / 1e6,
        "shadow_pages_zapped": float(r.stats.get("mmu_shadow_zapped", 0)),
        "operations": float(len(pairs)),
    }


def fast_zap_2013(
    strategies: Sequence[str],
    costs: CostModel,
    opts: SimOptions | None = None,
    scenario: Scenario | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, dict[str, float]]:
    """Delete+add latency (ms) per strategy in the published setting (``fast-zap-2013``).

    DELETE zaps everything (the zap-all quirk, as memslot deletion did in 2013).
    """
    opts = opts or SimOptions(trace=False, oracle=False, vm_options={"slot_zap": "all"},
                              mmu="shadow")
    sc = scenario or load_scenario("fast-zap-2013")
    out = {}
    for s in strategies:
        if progress is not None:
            progress(s)
        out[s] = _delete_add(sc, s, costs, opts)
    return out


#: The kernels on either side of the published figure, as model configurations: 3.10 deleted with
#: ``kvm_mmu_zap_all()`` and walked ``mmio_cached`` pages on the add; 3.11 deleted with the fast
#: zap-all and bumped the generation on the add.
FAST_ZAP_ERAS: dict[str, tuple[str, str]] = {
    "before": ("zap-mmio-3.10", "all-slow"),
    "after": ("generation-3.11", "all"),
}


def fast_zap_eras(
    costs: CostModel, scenario: Scenario | None = None, progress: ProgressFn | None = None
) -> dict[str, dict[str, float]]:
    """The model's two figures for the published before/after (``FAST_ZAP_ERAS``)."""
    sc = scenario or load_scenario("fast-zap-2013")
    out = {}
    for era, (strategy, slot_zap) in FAST_ZAP_ERAS.items():
        if progress is not None:
            progress(f"{era} ({strategy}, slot_zap={slot_zap})")
        opts = SimOptions(trace=False, oracle=False, vm_options={"slot_zap": slot_zap},
                          mmu="shadow")
        out[era] = _delete_add(sc, strategy, costs, opts)
    return out


# --- 4. stall time vs vCPU count --------------------------------------------------------------


def vcpu_scenario(base: Scenario, vcpus: int, memory: int | None = None) -> Scenario:
    """``base`` with ``vcpus`` vCPUs (RAM grown to keep each vCPU's window its own, to 1 TiB)."""
    need = vcpus * base.vcpu.working_set
    mem = memory or min(max(base.guest.memory, need), 1 << 40)
    mem -= mem % base.guest.page_size
    return base.with_overrides(vcpus=vcpus, memory=mem)


def vcpu_sweep(
    counts: Sequence[int],
    strategies: Sequence[str],
    costs: CostModel,
    base: Scenario | None = None,
    opts: SimOptions | None = None,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> Sweep:
    """vCPU stall (total and per vCPU) and lock wait against the number of vCPUs."""
    opts = opts or isolating_options()
    base = base or vcpu_sweep_base()
    jobs = [(n, vcpu_scenario(base, n), s) for n in counts for s in strategies]
    points = []
    for n, strategy, r in _points(jobs, costs, opts, workers, progress):
        row = r.summary()
        points.append(
            SweepPoint(
                n,
                strategy,
                _row(
                    r,
                    {
                        "stall_per_vcpu_ns": float(row["vcpu_stall_ns"]) / n,
                        "lock_wait_per_vcpu_ns": float(row["mmu_lock_wait_ns"]) / n,
                    },
                ),
            )
        )
    return Sweep(f"{base.name}: vCPU stall vs vCPU count", "vCPUs", tuple(points))


def vcpu_sweep_base() -> Scenario:
    """The default base of the vCPU sweep: boot's memslot churn on a warm guest.

    Each vCPU keeps re-touching its own 2 MiB of prefaulted RAM and pokes devices and ROM, while
    the VMM toggles the option ROM (PAM) and resizes a BAR, so faults come from invalidation.
    """
    boot = load_scenario("boot")
    data: dict[str, Any] = {
        "name": "boot-scaled",
        "description": boot.description,
        "duration": "2ms",
        "guest": {
            "vcpus": 1,
            "memory": 4 * GIB,
            "ram_base": "4GiB",
            "ram_slot": 1,
            "prefault": 1.0,  # a warm guest: faults come from invalidation, not first touch
        },
        "vcpu": {
            "think": "10us",
            "working_set": "2MiB",
            "pattern": "random",
            "write_fraction": 0.6,
            "mmio_fraction": 0.03,
            "rom_fraction": 0.05,
        },
        "slots": [
            {"id": s.id, "gpa": s.gpa, "size": s.size, "role": s.role, "flags": list(s.flags)}
            for s in boot.slots
        ],
        "devices": [
            {
                "name": d.name,
                "gpa": d.gpa,
                "size": d.size,
                "weight": d.weight,
                "write_fraction": d.write_fraction,
                "in_kernel": d.in_kernel,
            }
            for d in boot.devices
        ],
        "vmm": [
            {"op": "remap", "slot": 2, "at": "100us", "repeat": 9, "every": "200us"},
            {"op": "remap", "slot": 5, "at": "500us", "repeat": 2, "every": "1ms"},
        ],
    }
    return scenario_from_dict(data, "<boot-scaled>")


# --- 5. the seed mail in one figure -------------------------------------------------------------

#: The strategies of the seed mail's argument: the two walks it replaced, the generation (two
#: eras; every generation-* strategy costs the same here), and the alternative it rejected.
SEED_WALKS = ("zap-all-3.9", "zap-mmio-3.10", "generation-3.11", "generation")
SEED_REFAULTS = ("zap-all-fast", "generation")


def seed_argument(
    costs: CostModel,
    leaf_pages: Sequence[int] = (100, 1_000, 10_000, 100_000),
    warm_pages: Sequence[int] = (100, 1_000, 10_000),
    vcpus: int = 2,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """CREATE latency vs shadow pages (walks vs generation) and, beside it, the vCPU time that
    zap-all-fast's CREATE costs in refaults vs warm pages per vCPU (Xiao's reply to Marcelo:
    "all vCPUs fault on all memory").  Oracle off: these are cost figures."""
    opts = SimOptions(trace=False, oracle=False, vm_options={"slot_zap": "slot"},
                      mmu="shadow")
    sweep = shadow_page_sweep(leaf_pages, SEED_WALKS, costs, opts, progress=progress)
    refaults: dict[str, list[dict[str, float]]] = {s: [] for s in SEED_REFAULTS}
    for n in warm_pages:
        sc = refault_scenario(vcpus, n)
        for s in SEED_REFAULTS:
            if progress is not None:
                progress(f"refaults {s} @ {n}")
            r = simulate(sc, s, costs, opts)
            row = r.summary()
            refaults[s].append({"warm_pages": float(n), "refaults_ram": float(r.refaults_ram),
                                "vcpu_stall_ns": float(row["vcpu_stall_ns"])})
    # The refault cost is the stall zap-all-fast adds over the generation in the same run.
    base = {p["warm_pages"]: p["vcpu_stall_ns"] for p in refaults["generation"]}
    for p in refaults["zap-all-fast"]:
        p["extra_stall_ns"] = p["vcpu_stall_ns"] - base[p["warm_pages"]]
    return {"sweep": sweep, "refaults": refaults, "vcpus": vcpus}


# --- 6. who waits for a memslot delete: the shadow MMU vs the TDP MMU ---------------------------

#: A warm guest whose vCPUs keep touching their memory while the VMM deletes a slot (the zap-all
#: quirk: ``kvm_mmu_zap_all_fast``): the setting of the ChromeOS reports and of issue 10's
#: "a memslot delete stalls 6 vCPUs for 21 ms".
DELETE_WHILE_RUNNING: dict[str, Any] = {
    "name": "delete-while-running",
    "description": "a memslot delete (zap-all quirk) while every vCPU touches its warm memory",
    "duration": "3ms",
    "guest": {"vcpus": 1, "memory": "1GiB", "ram_base": "4GiB", "ram_slot": 1, "prefault": 1.0},
    "vcpu": {"think": "2us", "working_set": "32MiB", "pattern": "random", "mmio_fraction": 0.0,
             "rom_fraction": 0.0},
    "slots": [{"id": 2, "gpa": 0xFD000000, "size": "16MiB"}],
    "vmm": [{"op": "delete", "slot": 2, "at": "500us"}],
}


def mmu_sweep(
    counts: Sequence[int],
    costs: CostModel,
    strategy: str = "generation",
    progress: ProgressFn | None = None,
) -> Sweep:
    """The delete's latency and the vCPUs' stall and spin against the vCPU count, once with the
    shadow MMU (every fault and the zap hold ``mmu_lock`` for write) and once with the 5.13+ TDP
    MMU (faults and the teardown of the zapped roots hold it for read).  Series are named
    ``STRATEGY (shadow MMU)`` and ``STRATEGY (TDP MMU)``."""
    base = scenario_from_dict(DELETE_WHILE_RUNNING, "<delete-while-running>")
    runs = {f"{strategy} ({label} MMU)": SimOptions(trace=False, oracle=False,
                                                   vm_options={"slot_zap": "all"}, mmu=mmu)
            for mmu, label in (("shadow", "shadow"), ("tdp", "TDP"))}
    points = []
    for n in counts:
        sc = vcpu_scenario(base, n)
        for label, opts in runs.items():
            if progress is not None:
                progress(f"{label} @ {n}")
            r = simulate(sc, strategy, costs, opts)
            deletes = [u.latency_ns for u in r.updates if u.change == "delete"]
            vcpus = [t for t in r.threads if t.kind == "vcpu"]
            points.append(SweepPoint(n, label, _row(r, {
                "delete_latency_ns": float(deletes[0]) if deletes else float("nan"),
                "vcpu_lock_wait_ns": float(sum(t.lock_wait_ns for t in vcpus)),
                "stall_per_vcpu_ns": float(sum(t.stall_ns for t in vcpus)) / n,
            })))
    return Sweep(f"{base.name}: who waits for a memslot delete", "vCPUs", tuple(points))
