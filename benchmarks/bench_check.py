"""States per second of ``kvmmu check`` on the configurations its tests and issue 5 name.

For each configuration: the exhaustive search (preemption bound, state caching) runs once and the
line gives states explored, schedules run, wall and CPU time, states per CPU second (the machines
are shared: CPU time is the figure that does not depend on the neighbours) and the verdict.  Races are
expected where the strategy is broken; the ``zap-*`` lines show the model bug reported with the
explorer (a stale per-vCPU MMIO cache after the ioctl returns).  Figures, never assertions.

Run: ``.venv/bin/python benchmarks/bench_check.py [--bounds 1,2] [--quick]``; ``--bounds none``
explores every interleaving (minutes for 2 vCPUs x 2 accesses x 2 updates).
"""

from __future__ import annotations

import argparse
import time

from kvmmu.check.explore import explore
from kvmmu.check.world import CheckConfig

#: (label, config) pairs: the race configurations, then the fixed strategies at 2x2x2.
RACES = [
    ("generation-2013 1x2x1 (2014 race)", CheckConfig("generation-2013", vcpus=1, updates=1)),
    ("generation+cache-without-gen 1x2x1",
     CheckConfig("generation+cache-without-gen", vcpus=1, updates=1)),
    ("generation+no-wrap-zap 1x2x3 gen-bits 2",
     CheckConfig("generation+no-wrap-zap", vcpus=1, updates=3, mmio_gen_bits=2, slot_zap="slot")),
]
FIXED = ["generation", "generation-2014", "zap-walk", "zap-all-fast"]


def row(label: str, config: CheckConfig, bound: int | None) -> None:
    t0 = time.perf_counter()
    c0 = time.process_time()
    r = explore(config, preemptions=bound)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    s = r.stats
    verdict = "ok" if r.failure is None else f"VIOLATION ({r.failure.findings[0].kind})"
    b = "none" if bound is None else str(bound)
    print(f"{label:42s} bound {b:>4s} {s.states:>9,d} states {s.schedules:>8,d} schedules "
          f"{wall:7.2f} s wall {cpu:7.2f} s CPU {s.states / max(cpu, 1e-9):>8,.0f} states/CPU-s  "
          f"{verdict}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bounds", default="1,2", help="preemption bounds, comma-separated ('none')")
    ap.add_argument("--quick", action="store_true", help="bound 1 only")
    args = ap.parse_args()
    bounds = [None if b.strip() == "none" else int(b) for b in
              ("1" if args.quick else args.bounds).split(",")]
    for label, config in RACES:
        row(label, config, None)
    for bound in bounds:
        for name in FIXED:
            row(f"{name} 2x2x2", CheckConfig(name, vcpus=2, updates=2), bound)


if __name__ == "__main__":
    main()
