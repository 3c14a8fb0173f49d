"""Print the event engine's throughput in events per second (target: at least 2,000,000 on a core).

Three loads, each on a fresh engine: processes that sleep (the inlined int-yield path), processes
that sleep under the seeded-random tie rule, and plain callbacks. Rates are per second of this
process's CPU time (``time.process_time``), so that other work on a shared machine disturbs them
less. Figures, never assertions.
"""

from __future__ import annotations

import time
from collections.abc import Generator

from kvmmu.sim.engine import Engine, SeededRandom


def sleeper(delay: int, n: int) -> Generator[int, None, None]:
    for _ in range(n):
        yield delay


def bench_processes(engine: Engine, procs: int, steps: int) -> tuple[int, float]:
    for i in range(procs):
        engine.process(sleeper(1 + i % 7, steps), label=f"p{i}")
    t0 = time.process_time()
    n = engine.run()
    return n, time.process_time() - t0


def bench_callbacks(total: int) -> tuple[int, float]:
    engine = Engine()
    remaining = [total]

    def tick() -> None:
        remaining[0] -= 1
        if remaining[0] > 0:
            engine.call_later(3, tick)

    for _ in range(64):
        engine.call_later(0, tick)
    t0 = time.process_time()
    n = engine.run()
    return n, time.process_time() - t0


def main() -> None:
    rows = [
        ("processes, FIFO ties", *bench_processes(Engine(), 512, 4000)),
        ("processes, seeded-random ties", *bench_processes(Engine(SeededRandom(1)), 512, 4000)),
        ("callbacks, FIFO ties", *bench_callbacks(2_000_000)),
    ]
    for name, n, secs in rows:
        print(f"{name:32s} {n:>10,d} events in {secs:6.3f} s = {n / secs:>12,.0f} events/s")


if __name__ == "__main__":
    main()
