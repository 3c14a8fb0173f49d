"""Simulated traps per second of the plain run (issue 2's benchmark).

Workload: first touch of 1 GiB of guest RAM in 4 KiB pages (every access is a slow-path page fault,
then a hardware-walk hit after the fix), then an MMIO loop: a guest polling one device register
(answered by the per-vCPU MMIO cache) and one cycling over four device pages (each access misses
the one-entry cache and takes the lockless SPTE fast path).  Every access in these phases traps.

Figures are CPU time of this process (``time.process_time``), best of ``--repeat`` runs, so that
other work on the machine disturbs them less.  Run: ``.venv/bin/python benchmarks/bench_model.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from kvmmu import VM

GIB = 1 << 30
MMIO_BASE = 0xFEE0_0000


def first_touch(vm: VM, size: int) -> Callable[[], int]:
    vcpu = vm.create_vcpu()

    def run() -> int:
        access = vcpu.access
        for gpa in range(0, size, 4096):
            access(gpa)
        return size // 4096

    return run


def mmio_loop(vm: VM, n: int, pages: int) -> Callable[[], int]:
    vcpu = vm.create_vcpu()

    def run() -> int:
        access = vcpu.access
        for i in range(n):
            access(MMIO_BASE + ((i % pages) << 12), write=True, value=i)
        return n

    return run


def measure(oracle: bool, size: int, n_mmio: int, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(repeat):
        vm = VM("generation", oracle=oracle)
        vm.set_user_memory_region(0, 0, 0, size, userspace_addr=0x7F00_0000_0000)
        phases = {
            "first_touch": first_touch(vm, size),
            "mmio_cache": mmio_loop(vm, n_mmio, 1),
            "mmio_fast_path": mmio_loop(vm, n_mmio, 4),
        }
        for name, run in phases.items():
            t0 = time.process_time()
            traps = run()
            dt = time.process_time() - t0
            best[name] = max(best.get(name, 0.0), traps / dt)
        stats = vm.stats
        assert stats["exits"] >= size // 4096 + 2 * n_mmio, "every access of the workload traps"
        assert stats["oracle_violations"] == 0
    total_traps = size // 4096 + 2 * n_mmio
    total_time = (size // 4096) / best["first_touch"] + n_mmio / best["mmio_cache"] \
        + n_mmio / best["mmio_fast_path"]
    best["total"] = total_traps / total_time
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=GIB, help="bytes of RAM to first-touch")
    ap.add_argument("--mmio", type=int, default=200_000, help="accesses per MMIO loop")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = {f"oracle_{'on' if o else 'off'}": measure(o, args.size, args.mmio, args.repeat)
               for o in (False, True)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"plain run, strategy 'generation', first touch of {args.size >> 20} MiB + "
          f"2 x {args.mmio} MMIO accesses (traps/s, CPU time, best of {args.repeat})")
    print(f"{'':12} {'first touch':>12} {'mmio cache':>12} {'mmio fast':>12} {'total':>12}")
    for name, r in results.items():
        print(f"{name:12} {r['first_touch']:12,.0f} {r['mmio_cache']:12,.0f} "
              f"{r['mmio_fast_path']:12,.0f} {r['total']:12,.0f}")


if __name__ == "__main__":
    main()
