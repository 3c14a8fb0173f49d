"""Print the timed simulation's speed: wall time, protocol steps and engine events per second.

Runs each embedded scenario (or those named on the command line) under every strategy without
plots, the way ``kvmmu run --no-plots`` does. Figures, never assertions.
"""

from __future__ import annotations

import sys
import time

from kvmmu.mmu.invalidation import STRATEGIES
from kvmmu.sim.costs import default_costs
from kvmmu.sim.run import SimOptions, simulate
from kvmmu.sim.workloads.schema import load_scenario, scenario_names


def main() -> None:
    names = sys.argv[1:] or [n for n in scenario_names() if n != "fast-zap-2013"]
    costs = default_costs()
    opts = SimOptions(vm_options={"slot_zap": "slot", "start_near_wrap": True})
    print(f"{'scenario':16s} {'wall s':>7s} {'steps':>9s} {'steps/s':>9s} {'events/s':>9s}")
    for name in names:
        sc = load_scenario(name)
        t0 = time.perf_counter()
        steps = events = 0
        for strategy in STRATEGIES:
            r = simulate(sc, strategy, costs, opts)
            steps += r.steps
            events += r.events
        wall = time.perf_counter() - t0
        print(f"{name:16s} {wall:7.2f} {steps:9,d} {steps / wall:9,.0f} {events / wall:9,.0f}")


if __name__ == "__main__":
    main()
