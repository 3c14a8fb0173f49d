"""Issue 12's figures in one run: first-touch rates against the real KVM, memory, memslots, scale.

Prints, each part measured in a child process of its own (so that its peak RSS is its own):

* first touch of ``--pages`` fresh 4 KiB pages, reads and writes: the model's traps per second of
  CPU time (``vcpu.access`` on a fresh VM, oracle off; every access traps into the slow path) and
  the real KVM's first-touch faults per second (``kvmmu.kvm.calibrate.measure_first_touch``: the
  test guest touches one byte per page in one step, populated host memory), best of ``--repeat``,
  and their ratio (model / real; the goal is >= 1.0);
* guest RAM: peak RSS of a model that wrote one word into each page of 1 GiB, and KiB per page;
* memslots: time to add 32,764 one-page slots (``KVM_USER_MEM_SLOTS``), then to delete them;
* the large scenario: ``boot`` with 1 TiB of RAM in 2 MiB pages, 512 vCPUs, ``--large-ms`` of
  simulated time under ``generation`` (oracle and trace on, as ``kvmmu run``): CPU and wall
  seconds, peak RSS;
* the event engine: events per second of CPU time (``bench_engine``'s process load, FIFO ties).

Rates use ``time.process_time`` (CPU time of the process) because the machine is shared; wall
times are printed next to them where they matter.  Figures, never assertions.

Run: ``.venv/bin/python benchmarks/bench_perf.py [--pages N] [--repeat R] [--large-ms MS]``.
The real-KVM rows print the reason and are skipped where /dev/kvm is unusable.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

PAGE = 4096
HVA = 0x1000_0000_0000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def part_model(pages: int, repeat: int) -> dict[str, Any]:
    from kvmmu import VM

    out: dict[str, Any] = {}
    for write in (False, True):
        best = 0.0
        for _ in range(repeat):
            vm = VM(strategy="generation", phys_bits=52, oracle=False)
            vm.set_user_memory_region(0, 0, 0, pages * PAGE, HVA)
            vcpu = vm.create_vcpu()
            access = vcpu.access
            t0 = time.process_time()
            for gpa in range(0, pages * PAGE, PAGE):
                access(gpa, write, 1, (gpa >> 12) & 0xFF)
            best = max(best, vcpu.stats.exits / (time.process_time() - t0))
        out["write" if write else "read"] = best
    return out


def part_kvm(pages: int, repeat: int) -> dict[str, Any]:
    from kvmmu.kvm.bindings import kvm_available

    reason = kvm_available()
    if reason is not None:
        return {"skipped": reason}
    from kvmmu.kvm.calibrate import measure_first_touch

    out: dict[str, Any] = {}
    for write in (False, True):
        figure, pf = measure_first_touch(pages, repeat, write=write)
        out["write" if write else "read"] = 1e9 / min(figure.samples)
        out["pf_write" if write else "pf_read"] = pf
    return out


def part_ram() -> dict[str, Any]:
    from kvmmu import VM

    pages = (1 << 30) // PAGE
    before = peak_rss_mb()
    vm = VM(strategy="generation", oracle=False)
    vm.set_user_memory_region(0, 0, 0, 1 << 30, HVA)
    access = vm.create_vcpu().access
    for gpa in range(0, 1 << 30, PAGE):
        access(gpa, True, 8, gpa | 1)
    rss = peak_rss_mb()
    return {"rss_mb": rss, "kib_per_page": (rss - before) * 1024 / pages,
            "words": vm.host_memory.words_stored()}


def part_slots() -> dict[str, Any]:
    from kvmmu import VM
    from kvmmu.memslots import KVM_USER_MEM_SLOTS

    n = KVM_USER_MEM_SLOTS
    vm = VM("generation", oracle=False)
    t0 = time.process_time()
    for i in range(n):
        vm.set_user_memory_region(i, 0, i << 13, PAGE, HVA + (i << 12))
    t1 = time.process_time()
    for i in range(n):
        vm.set_user_memory_region(i, 0, i << 13, 0, HVA + (i << 12))
    t2 = time.process_time()
    return {"slots": n, "add_s": t1 - t0, "delete_s": t2 - t1, "rss_mb": peak_rss_mb()}


def part_large(ms: int) -> dict[str, Any]:
    from pydantic import TypeAdapter

    from kvmmu.sim.costs import default_costs
    from kvmmu.sim.run import SimOptions, simulate
    from kvmmu.sim.workloads.schema import Scenario, load_scenario

    adapter = TypeAdapter(Scenario)
    data = adapter.dump_python(load_scenario("boot"))
    data["name"] = "boot-1tib-512"
    data["duration"] = ms * 1_000_000
    data["guest"].update(vcpus=512, memory=1 << 40, page_size=2 << 20, ram_base=4 << 30)
    scenario = adapter.validate_python(data)
    w0, c0 = time.perf_counter(), time.process_time()
    r = simulate(scenario, "generation", default_costs(), SimOptions())
    return {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
            "events": r.events, "steps": r.steps, "rss_mb": peak_rss_mb()}


def part_engine() -> dict[str, Any]:
    from kvmmu.sim.engine import Engine

    def sleeper(delay: int, n: int) -> Generator[int, None, None]:
        for _ in range(n):
            yield delay

    engine = Engine()
    for i in range(512):
        engine.process(sleeper(1 + i % 7, 4000))
    t0 = time.process_time()
    n = engine.run()
    return {"events": n, "events_per_s": n / (time.process_time() - t0)}


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "model": lambda a: part_model(a.pages, a.repeat),
    "kvm": lambda a: part_kvm(a.pages, a.repeat),
    "ram": lambda a: part_ram(),
    "slots": lambda a: part_slots(),
    "large": lambda a: part_large(a.large_ms),
    "engine": lambda a: part_engine(),
}


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--part", name, "--pages", str(args.pages),
           "--repeat", str(args.repeat), "--large-ms", str(args.large_ms)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=32768)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--large-ms", type=int, default=100)
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args)))
        return 0
    r = {name: child(name, args) for name in PARTS}
    model, kvm = r["model"], r["kvm"]
    print(f"first touch of {args.pages} pages of 4 KiB, best of {args.repeat} (per CPU second)")
    for kind in ("read", "write"):
        line = f"  {kind:5s}  model {model.get(kind, 0):12,.0f} traps/s"
        if kind in kvm and kind in model:
            line += (f"   real KVM {kvm[kind]:12,.0f} faults/s   "
                     f"ratio {model[kind] / kvm[kind]:.2f}")
        else:
            line += f"   real KVM: {kvm.get('skipped') or kvm.get('error')}"
        print(line)
    ram = r["ram"]
    if "error" not in ram:
        print(f"guest RAM: 1 GiB written (one word per page): peak RSS {ram['rss_mb']:.0f} MB, "
              f"{ram['kib_per_page']:.2f} KiB per page, {ram['words']:,} words stored")
    s = r["slots"]
    if "error" not in s:
        print(f"memslots: add {s['slots']:,} slots {s['add_s']:.2f} s, delete them "
              f"{s['delete_s']:.2f} s (CPU), peak RSS {s['rss_mb']:.0f} MB")
    big = r["large"]
    if "error" not in big:
        print(f"large scenario (1 TiB, 2 MiB pages, 512 vCPUs, {args.large_ms} ms simulated): "
              f"{big['cpu_s']:.2f} s CPU, {big['wall_s']:.2f} s wall, peak RSS "
              f"{big['rss_mb']:.0f} MB, {big['events']:,} events")
    e = r["engine"]
    if "error" not in e:
        print(f"engine: {e['events_per_s']:,.0f} events/s (CPU), {e['events']:,} events")
    for name, res in r.items():
        if "error" in res:
            print(f"{name}: failed: {res['error']}")
    print(f"peak RSS of this driver: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
