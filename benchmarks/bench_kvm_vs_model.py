"""The model's traps per second against the real KVM's first-touch faults per second, one machine.

Workload, the same on both sides: first touch of ``--pages`` fresh 4 KiB guest pages (each a
shadow-MMU page fault), repeated ``--repeat`` times on fresh memory; best run kept.

* model: ``vcpu.access(gpa)`` over the pages of a fresh model VM; every access traps into the
  slow path (``stats.exits`` counts them); rate = traps / CPU time of this process.
* real KVM: the test guest (``kvmmu.kvm.guest``) reads one byte per page in one step with no exit
  in between; the host pages are populated beforehand, so the rate is that of the shadow MMU's
  faults.  Rate = pages / (wall time of the step - the same step on the now-mapped pages).  KVM's
  fault handler prefetches neighbouring PTEs, so it takes fewer faults than pages: ``pf_taken``
  is printed, and the rate is per first-touched page, the unit the model charges.

Run: ``.venv/bin/python benchmarks/bench_kvm_vs_model.py [--pages N] [--repeat R]``.
Needs /dev/kvm; prints the reason and exits 0 without figures where it is missing.
"""

from __future__ import annotations

import argparse
import sys
import time

from kvmmu import VM
from kvmmu.kvm.bindings import kvm_available
from kvmmu.kvm.calibrate import measure_first_touch

PAGE = 4096


def model_traps_per_second(pages: int, repeat: int) -> tuple[float, int]:
    best = 0.0
    traps = 0
    for _ in range(repeat):
        vm = VM(strategy="generation", phys_bits=52, oracle=False)
        vm.set_user_memory_region(0, 0, 0, pages * PAGE, 0x1000_0000_0000)
        vcpu = vm.create_vcpu()
        access = vcpu.access
        t0 = time.process_time()
        for gpa in range(0, pages * PAGE, PAGE):
            access(gpa, size=1)
        dt = time.process_time() - t0
        traps = vcpu.stats.exits
        best = max(best, traps / dt)
    return best, traps


def kvm_faults_per_second(pages: int, repeat: int) -> tuple[float, int]:
    """The calibration's own first-touch measurement; best run, as pages per second."""
    figure, pf = measure_first_touch(pages, repeat)
    return 1e9 / min(figure.samples), pf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=32768)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    reason = kvm_available()
    if reason is not None:
        print(f"bench_kvm_vs_model: skipped, needs a usable /dev/kvm: {reason}")
        return 0
    model_rate, traps = model_traps_per_second(args.pages, args.repeat)
    kvm_rate, pf = kvm_faults_per_second(args.pages, args.repeat)
    print(f"first touch of {args.pages} pages of 4 KiB, best of {args.repeat}")
    print(f"  model    : {model_rate:14,.0f} traps/s  ({traps} traps)")
    print(f"  real KVM : {kvm_rate:14,.0f} first-touch faults/s per page  ({pf} pf_taken)")
    print(f"  ratio    : model / real KVM = {model_rate / kvm_rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
