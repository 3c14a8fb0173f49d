"""Print how long replaying and validating the committed QEMU POST capture take.

``kvmmu replay`` of the committed capture (tests/data/qemu-q35-post) under every strategy, with and
without the oracle, then ``kvmmu validate``'s comparison; figures, never assertions. The issue's
goal: every strategy in under 10 s, plots included (the CLI prints its wall time).
"""

from __future__ import annotations

import time
from pathlib import Path

from kvmmu.kvm.capture import load_capture
from kvmmu.kvm.validate import validate
from kvmmu.mmu.invalidation import STRATEGIES
from kvmmu.sim.costs import default_costs
from kvmmu.sim.run import SimOptions, simulate_all
from kvmmu.sim.workloads.replay import replay_workload

POST = Path(__file__).parent.parent / "tests" / "data" / "qemu-q35-post"


def main() -> None:
    t0 = time.perf_counter()
    cap = load_capture(POST)
    sc, wl = replay_workload(cap)
    print(
        f"load + build workload: {time.perf_counter() - t0:.2f} s "
        f"({len(wl.requests)} requests, {wl.n_accesses:,} accesses)"
    )
    for oracle in (True, False):
        opts = SimOptions(oracle=oracle, workload=wl, vm_options={"slot_zap": "all", "start_near_wrap": True})
        t0 = time.perf_counter()
        run = simulate_all(sc, list(STRATEGIES), default_costs(), opts)
        wall = time.perf_counter() - t0
        steps = sum(r.steps for r in run.strategies)
        print(
            f"replay, {len(STRATEGIES)} strategies, oracle {'on ' if oracle else 'off'}: {wall:.2f} s "
            f"({steps / wall:,.0f} steps/s)"
        )
    t0 = time.perf_counter()
    v = validate(cap)
    print(f"validate: {time.perf_counter() - t0:.2f} s ({v.agreed} of {v.compared} comparisons agree)")


if __name__ == "__main__":
    main()
