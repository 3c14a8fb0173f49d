"""States per second of ``kvmmu check`` on the configurations its tests and issue 5 name.

For each configuration: the exhaustive search (preemption bound, state caching) runs once and the
line gives states explored, worlds explored, schedules run, wall and CPU time, states per CPU
second (the machines are shared: CPU time is the figure that does not depend on the neighbours)
and the verdict.

What is counted.  A *state* is what the visited set holds: the world (shared state and every
thread's frames) and, under a preemption bound, the scheduler context (the thread that ran last,
when switching away from it would be a preemption) -- the figure this benchmark has always
printed.  A *world* is the state without the context.  The reduced search cuts a state whose world
was explored from a context no worse (:mod:`kvmmu.check.explore`), so it explores fewer states
than before for the same worlds: compare ``--full``'s states (every (world, context) pair the
bounded search can reach) with the reduced line's, and the worlds of both (equal).  Races are
expected where the strategy is broken; the ``zap-*`` lines show the model bug reported with the
explorer (a stale per-vCPU MMIO cache after the ioctl returns).  Figures, never assertions.

Run: ``.venv/bin/python benchmarks/bench_check.py [--bounds 1,2] [--quick] [--full]
[--three SECONDS] [--distributed WORKERS]``; ``--bounds none`` explores every interleaving
(minutes for 2 vCPUs x 2 accesses x 2 updates); ``--full`` adds the unreduced search; ``--three``
the 3-vCPU configuration; ``--distributed`` the 2x2x2 search at the largest bound on a local dask
cluster of that many worker processes (wall-clock time, the cluster started beforehand; its
worlds are the local search's, its runs more: batches running at once do not share).
"""

from __future__ import annotations

import argparse
import os
import time

# As under `kvmmu check`: the protocol interpreted (the explorer reads its frames), the explorer's
# own modules compiled when `make compiled` built them (kvmmu.compiled). Before kvmmu is imported.
os.environ.setdefault("KVMMU_INTERPRETED", "1")

from kvmmu.check.explore import explore
from kvmmu.check.world import CheckConfig

#: (label, config) pairs: the race configurations, then the fixed strategies at 2x2x2.
RACES = [
    ("generation-3.11+tagged-cache 1x2x1 (2014 race)",
     CheckConfig("generation-3.11+tagged-cache", vcpus=1, updates=1)),
    ("generation-3.11 2x2x2 (stale cache)", CheckConfig("generation-3.11", vcpus=2, updates=2)),
    ("generation+cache-without-gen 1x2x1",
     CheckConfig("generation+cache-without-gen", vcpus=1, updates=1)),
    ("generation+no-wrap-zap 1x2x3 gen-bits 2",
     CheckConfig("generation+no-wrap-zap", vcpus=1, updates=3, mmio_gen_bits=2, slot_zap="slot")),
]
FIXED = ["generation", "generation-3.18", "zap-all-fast"]


def row(label: str, config: CheckConfig, bound: int | None, *, reduce: bool = True,
        time_limit: float | None = None) -> None:
    t0 = time.perf_counter()
    c0 = time.process_time()
    r = explore(config, preemptions=bound, reduce=reduce, symmetry=reduce, time_limit=time_limit)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    s = r.stats
    verdict = "ok" if r.failure is None else f"VIOLATION ({r.failure.findings[0].kind})"
    if s.stopped:
        verdict += f", stopped by the {s.stopped} with {s.queue:,} runs queued"
    b = "none" if bound is None else str(bound)
    print(f"{label:46s} bound {b:>4s} {'reduced' if reduce else 'full':7s} {s.states:>9,d} "
          f"states {s.worlds:>9,d} worlds {s.schedules:>8,d} schedules {s.sleep_pruned:>8,d} cut "
          f"{wall:7.2f} s wall {cpu:7.2f} s CPU {s.states / max(cpu, 1e-9):>8,.0f} states/CPU-s  "
          f"{verdict}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bounds", default="1,2", help="preemption bounds, comma-separated ('none')")
    ap.add_argument("--quick", action="store_true", help="bound 1 only")
    ap.add_argument("--full", action="store_true",
                    help="also the unreduced search (no sleep sets, no symmetry) at 2x2x2")
    ap.add_argument("--three", type=float, default=None, metavar="SECONDS",
                    help="also 3 vCPUs x 2 accesses x 2 updates at bound 2, with this time limit")
    ap.add_argument("--distributed", type=int, default=None, metavar="WORKERS",
                    help="also the 2x2x2 search on a local dask cluster of WORKERS processes")
    args = ap.parse_args()
    bounds = [None if b.strip() == "none" else int(b) for b in
              ("1" if args.quick else args.bounds).split(",")]
    for label, config in RACES:
        row(label, config, None)
    for bound in bounds:
        for name in FIXED:
            row(f"{name} 2x2x2", CheckConfig(name, vcpus=2, updates=2), bound)
            if args.full:
                row(f"{name} 2x2x2", CheckConfig(name, vcpus=2, updates=2), bound, reduce=False)
    if args.three is not None:
        row("generation 3x2x2", CheckConfig("generation", vcpus=3, updates=2), 2,
            time_limit=args.three)
    if args.distributed is not None:
        distributed_row(CheckConfig("generation", vcpus=2, updates=2), max(
            (b for b in bounds if b is not None), default=None), args.distributed)


def distributed_row(config: CheckConfig, bound: int | None, workers: int) -> None:
    from distributed import Client

    from kvmmu.check.distributed import explore_distributed, local_cluster

    with local_cluster(workers) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        r = explore_distributed(config, client, preemptions=bound)
    s = r.stats
    verdict = "ok" if r.failure is None else f"VIOLATION ({r.failure.findings[0].kind})"
    b = "none" if bound is None else str(bound)
    print(f"{'generation 2x2x2 on ' + str(workers) + ' workers':46s} bound {b:>4s} distrib "
          f"{s.worlds:>9,d} worlds {s.schedules:>8,d} schedules {s.elapsed:7.2f} s wall "
          f"{s.worlds / max(s.elapsed, 1e-9):>8,.0f} worlds/s  {verdict}", flush=True)


if __name__ == "__main__":
    main()
