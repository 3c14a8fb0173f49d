"""The functional (untimed) comparison: one embedded scenario under every strategy.

Design. Before any timing, the first question is *what work* each invalidation scheme does for the
same guest: how many faults, how many of them refaults, how many shadow pages and SPTEs walked under
``mmu_lock``, how many MMIO accesses answered without the slow path, and whether the oracle saw
anything wrong.  The scenario is deterministic (a seeded RNG), runs through the plain protocol
(``Vcpu.access``, ``VM.set_user_memory_region``) and crosses a generation wrap: every VM starts 150
generations below it, as the 2013 series did to exercise the wrap code early.

The scenario, a small firmware-and-devices boot (design note section 7):

* RAM at 1 MiB..33 MiB, first-touched by all vCPUs in turn over the run, and a hot working set
  (the first ``hot_pages`` pages: kernel text and stacks) that every vCPU re-reads each round;
* an option ROM at 0xC0000 that firmware deletes and re-adds (PAM toggling), READONLY when present;
* a PCI BAR backed by memory that moves between two addresses (BAR reprogramming);
* dirty logging on the RAM slot toggled (migration);
* an in-kernel device (doorbell registers) and a userspace device (exits), polled by every vCPU.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kvmmu.devices import RegisterBank
from kvmmu.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from kvmmu.mmu.invalidation import resolve_strategy
from kvmmu.vm import VM

MIB = 1 << 20
RAM_SLOT, ROM_SLOT, BAR_SLOT = 0, 1, 2
RAM_GPA, RAM_SIZE = 1 * MIB, 32 * MIB
ROM_GPA, ROM_SIZE = 0xC0000, 128 * 1024
BAR_GPAS, BAR_SIZE = (0xE000_0000, 0xE100_0000), 1 * MIB
DOORBELL_GPA, DOORBELL_SIZE = 0xFEB0_0000, 4 * 4096
USER_DEVICE_GPA = 0xFED0_0000  # no device claims it: accesses exit to userspace
HVA_RAM, HVA_ROM, HVA_BAR = 0x7F00_0000_0000, 0x7F10_0000_0000, 0x7F20_0000_0000


@dataclass(frozen=True, slots=True)
class ScenarioParams:
    """Knobs of the embedded scenario (defaults: a run of about a second per strategy)."""

    vcpus: int = 4
    rounds: int = 200
    touches_per_round: int = 32  # RAM pages first-touched per round (all vCPUs together)
    hot_pages: int = 64  # the working set every vCPU re-reads each round
    mmio_per_round: int = 24  # device and ROM/BAR accesses per round
    seed: int = 0
    #: "slot": DELETE/MOVE zap only the slot's SPTEs (quirk SLOT_ZAP_ALL off), so that the columns
    #: show MMIO invalidation alone; "all" is KVM's default, which zaps everything on each.
    slot_zap: str = "slot"


#: The columns of the comparison, in order: (key, heading).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pf_taken", "faults"),
    ("refaults", "refaults"),
    ("fast_path", "fast-path hits"),
    ("mmio_exits", "MMIO exits"),
    ("pages_walked", "shadow pages walked"),
    ("sptes_walked", "SPTEs walked"),
    ("lock_work", "work under mmu_lock"),
    ("mmio_sptes_zapped", "MMIO SPTEs zapped"),
    ("wraps", "wraps"),
    ("oracle_violations", "oracle violations"),
)


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """One row: a strategy's counters after the scenario."""

    strategy: str
    summary: str
    counters: dict[str, int]
    stats: dict[str, int]


def run_scenario(strategy: str, params: ScenarioParams = ScenarioParams()) -> StrategyResult:
    """Run the embedded scenario under ``strategy`` with the oracle on; return its counters."""
    strat = resolve_strategy(strategy)
    vm = VM(strat, oracle=True, start_near_wrap=True, slot_zap=params.slot_zap)
    rng = random.Random(params.seed)
    vm.register_device(DOORBELL_GPA, DOORBELL_SIZE, RegisterBank("doorbell"))
    vm.set_user_memory_region(RAM_SLOT, 0, RAM_GPA, RAM_SIZE, HVA_RAM)
    vm.set_user_memory_region(ROM_SLOT, KVM_MEM_READONLY, ROM_GPA, ROM_SIZE, HVA_ROM)
    vm.set_user_memory_region(BAR_SLOT, 0, BAR_GPAS[0], BAR_SIZE, HVA_BAR)
    vcpus = [vm.create_vcpu() for _ in range(params.vcpus)]
    state = {"rom": True, "bar": 0, "dirty": False}

    def churn(i: int) -> None:
        op = i % 4
        if op in (0, 2):  # PAM: the ROM disappears, then comes back
            if state["rom"]:
                vm.set_user_memory_region(ROM_SLOT, KVM_MEM_READONLY, ROM_GPA, 0, HVA_ROM)
            else:
                vm.set_user_memory_region(ROM_SLOT, KVM_MEM_READONLY, ROM_GPA, ROM_SIZE, HVA_ROM)
            state["rom"] = not state["rom"]
        elif op == 1:  # BAR reprogramming: MOVE
            state["bar"] ^= 1
            vm.set_user_memory_region(BAR_SLOT, 0, BAR_GPAS[state["bar"]], BAR_SIZE, HVA_BAR)
        else:  # migration: dirty logging on / off (FLAGS_ONLY)
            state["dirty"] = not state["dirty"]
            flags = KVM_MEM_LOG_DIRTY_PAGES if state["dirty"] else 0
            vm.set_user_memory_region(RAM_SLOT, flags, RAM_GPA, RAM_SIZE, HVA_RAM)

    ram_pages = RAM_SIZE // 4096
    touched = params.hot_pages
    for rnd in range(params.rounds):
        for k in range(params.touches_per_round):
            vcpu = vcpus[k % len(vcpus)]
            page = touched % ram_pages
            touched += 1
            vcpu.access(RAM_GPA + page * 4096, write=bool(page & 1), size=8, value=page)
        for vcpu in vcpus:
            for page in range(params.hot_pages):
                vcpu.access(RAM_GPA + page * 4096, size=8)
        for k in range(params.mmio_per_round):
            vcpu = vcpus[rng.randrange(len(vcpus))]
            pick = k % 4
            if pick == 0:
                vcpu.access(DOORBELL_GPA + 4096 * rng.randrange(4), write=True, value=k)
            elif pick == 1:
                vcpu.access(USER_DEVICE_GPA + 8 * rng.randrange(4), size=4)
            elif pick == 2:
                vcpu.access(ROM_GPA + 4096 * rng.randrange(4), size=4)
            else:
                gpa = BAR_GPAS[rng.randrange(2)] + 4096 * rng.randrange(4)
                vcpu.access(gpa, write=rng.random() < 0.5, size=4, value=k)
        churn(rnd)
    s = vm.stats
    counters = {
        "pf_taken": s["pf_taken"],
        "refaults": s["refaults"],
        "fast_path": s["mmio_fast_path"] + s["mmio_cache_hits"],
        "mmio_exits": s["mmio_exits"],
        "pages_walked": s["invalidation_pages_walked"] + s["mmu_shadow_zapped"],
        "sptes_walked": s["invalidation_sptes_walked"],
        "lock_work": s["mmu_lock_acquisitions"] + s["sptes_zapped"] + s["mmu_shadow_zapped"]
        + s["invalidation_pages_walked"] + s["sptes_write_protected"],
        "mmio_sptes_zapped": s["mmio_sptes_zapped"],
        "wraps": s["generation_wraps"],
        "oracle_violations": s["oracle_violations"],
    }
    return StrategyResult(strat.name, strat.summary, counters, s)


def compare(strategies: Iterable[str], params: ScenarioParams = ScenarioParams(),
            progress: Callable[[str], None] | None = None) -> list[StrategyResult]:
    """Run the scenario under each strategy, in order."""
    out = []
    for name in strategies:
        if progress is not None:
            progress(name)
        out.append(run_scenario(name, params))
    return out
