"""Tests of kvmmu.sim.memslot_perf: memslot_perf_test's tests, defaults and lines on the model."""

from __future__ import annotations

import re

import pytest

from kvmmu.sim.costs import CostModel, default_costs
from kvmmu.sim.memslot_perf import (
    HVA_BASE,
    MEM_GPA,
    MEM_SIZE_MAP_PAGES,
    NTESTS,
    TESTS,
    PerfArgs,
    _Meter,
    _phase,
    memslot_perf,
    report_lines,
    timespec,
)
from kvmmu.vcpu import Vcpu
from kvmmu.vm import VM


@pytest.fixture(scope="module")
def costs() -> CostModel:
    return default_costs()


def test_args_default_to_the_selftests_main() -> None:
    # memslot_perf_test.c main(): .tfirst = 0, .tlast = NTESTS - 1, .nslots = -1, .seconds = 5,
    # .runs = 1; tests[] lists map, unmap, unmap chunked, move active/inactive area, RW.
    args = PerfArgs()
    assert (args.tfirst, args.tlast, args.nslots, args.seconds, args.runs) == (0, 5, -1, 5, 1)
    assert [name for name, _ in TESTS] == ["map", "unmap", "unmap chunked", "move active area",
                                           "move inactive area", "RW"]
    assert NTESTS == 6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nslots": 0}, "Slot count cap has to be positive or -1 for no cap"),
    ({"tfirst": -1}, "First test to run has to be non-negative"),
    ({"tlast": 6}, "Last test to run has to be non-negative and less than 6"),
    ({"seconds": -1}, "Test length in seconds has to be non-negative"),
    ({"runs": 0}, "Runs per test has to be positive"),
    ({"tfirst": 3, "tlast": 2}, "First test to run cannot be greater than the last test to run"),
])
def test_bad_arguments_are_refused_in_the_selftests_words(kwargs: dict[str, int],
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PerfArgs(**kwargs)


def test_timespec_prints_like_the_selftests_format() -> None:
    assert timespec(35_226_292) == "0.035226292s"
    assert timespec(16_100_000_000) == "16.100000000s"


def test_output_lines_are_the_selftests(costs: CostModel) -> None:
    report = memslot_perf("generation", costs, PerfArgs(tfirst=1, tlast=2, nslots=64, seconds=1,
                                                        runs=2))
    lines = report_lines(report)
    assert lines[0] == "Testing unmap performance with 2 runs, 1 seconds each"
    assert sum(1 for ln in lines if ln.startswith("Test took ")) == 4  # one per run
    done = [ln for ln in lines if ln.startswith("Done ")]
    assert len(done) == 4
    assert all(re.fullmatch(r"Done \d+ iterations, avg \d+\.\d{9}s each", ln) for ln in done)
    best = [ln for ln in lines if ln.startswith("Best runtime result was ")]
    assert len(best) == 2
    assert re.fullmatch(r"Best runtime result was \d+\.\d{9}s per iteration "
                        r"\(with \d+ iterations\)", best[0])
    # Tests 1 and 2 use part of the area: no "Best slot setup time for the whole test area".
    assert not any(ln.startswith("Best slot setup") for ln in lines)
    for r in report.results:  # the loop runs until the length is reached
        assert r.total_ns >= 1_000_000_000 > r.total_ns - r.avg_ns - 1


def test_map_test_refuses_more_slots_than_pages_with_the_selftests_bound(costs: CostModel) -> None:
    # prepare_vm(): pages_per_slot == 0 -> *maxslots = mempages + 1 (8,194 for the map test).
    report = memslot_perf("generation", costs, PerfArgs(tfirst=0, tlast=0))
    assert not report.results[0].ok
    assert report_lines(report)[1] == (
        f"Memslot count too high for this test, decrease the cap (max is {MEM_SIZE_MAP_PAGES + 1})")


def _unmap_avg(costs: CostModel, nslots: int, array: bool) -> int:
    report = memslot_perf("generation", costs, PerfArgs(tfirst=1, tlast=1, nslots=nslots,
                                                        seconds=1, model_iterations=1),
                          memslot_array=array)
    return report.results[0].avg_ns


def test_before_5_17_the_notifier_walks_every_slot_after_it_walks_a_tree(costs: CostModel) -> None:
    # v5.12 kvm_handle_hva_range(): kvm_for_each_memslot per call; v6.1:
    # kvm_for_each_memslot_in_hva_range (interval tree).  An unmap iteration is 32,768 calls.
    small_a, big_a = (_unmap_avg(costs, n, True) for n in (64, 509))
    small_t, big_t = (_unmap_avg(costs, n, False) for n in (64, 509))
    walk = costs["memslot_hva_walk_ns"]
    calls = 128 * 256  # MEM_TEST_UNMAP_SIZE_PAGES one-page madvise calls
    # Each call tests 445 more slots (the slot-0 + test slots of 509 vs 64).
    assert big_a - small_a == calls * walk * (509 - 64)
    assert big_t - small_t < calls * walk * 4  # a few more tree levels at most
    assert big_a > big_t


def test_before_5_17_each_update_copies_the_slot_array(costs: CostModel) -> None:
    def setup(nslots: int, array: bool) -> int:
        report = memslot_perf("generation", costs, PerfArgs(tfirst=4, tlast=4, nslots=nslots,
                                                            seconds=0), memslot_array=array)
        return report.results[0].setup_ns

    copy = costs["memslot_copy_per_slot_ns"]
    for n in (32, 128):
        # Adding slot k (k = 1 .. n-1) copies the k slots already there (slot 0 included).
        assert setup(n, True) - setup(n, False) == copy * sum(range(1, n))


def test_strategies_store_memslots_as_their_era(costs: CostModel) -> None:
    assert memslot_perf("generation", costs, PerfArgs(tfirst=4, tlast=4, nslots=4,
                                                      seconds=0)).memslot_array is False
    assert memslot_perf("generation-4.19", costs, PerfArgs(tfirst=4, tlast=4, nslots=4,
                                                           seconds=0)).memslot_array is True


def test_move_tests_move_the_last_slot_away_and_back(costs: CostModel) -> None:
    report = memslot_perf("generation", costs, PerfArgs(tfirst=3, tlast=4, nslots=16,
                                                        seconds=1, model_iterations=1))
    assert all(r.ok for r in report.results)
    # Two MOVE ioctls per iteration, each at least the ioctl's own cost.
    assert all(r.avg_ns >= 2 * costs["memslot_ioctl_ns"] for r in report.results)
    best = report_lines(report)[-1]
    assert best.startswith("Best slot setup time for the whole test area was ")


def _meter(costs: CostModel) -> tuple[_Meter, Vcpu]:
    vm = VM(strategy="generation", oracle=False)
    vm.set_user_memory_region(1, 0, MEM_GPA, 64 * 4096, HVA_BASE + MEM_GPA)
    return _Meter(vm, costs, memslot_array=False), vm.create_vcpu()


def test_a_guest_write_to_a_page_the_host_dropped_pays_the_host_page_allocation(
        costs: CostModel) -> None:
    # tools/testing/selftests/kvm/memslot_perf_test.c (v6.1) prepare_vm() memsets every slot, and
    # the map test's MADV_DONTNEED drops pages; a write to one faults a fresh host page in
    # (virt/kvm/kvm_main.c hva_to_pfn() -> get_user_pages()).
    m, vcpu = _meter(costs)
    m.guest_write(vcpu, MEM_GPA, 1)  # builds the page tables
    plain = m.guest_write(vcpu, MEM_GPA + 4096, 1)  # present (memset by prepare_vm): a fault
    m.unmap(MEM_GPA, 1, 1)
    again = m.guest_write(vcpu, MEM_GPA, 2)  # its SPTE zapped and its host page gone
    assert again - plain == costs["host_page_alloc_ns"]
    assert m.guest_write(vcpu, MEM_GPA, 3) < plain  # mapped again: no fault, no allocation


def test_an_unmap_of_present_pages_costs_more_and_the_vcpu_waits_for_it(
        costs: CostModel) -> None:
    # v6.1 virt/kvm/kvm_main.c kvm_mmu_notifier_invalidate_range_start() -> kvm_unmap_gfn_range()
    # under KVM_MMU_LOCK (write), and a fault overlapping it retries (direct_page_fault():
    # mmu_invalidate_retry_hva()): the vCPU waits for a call that drops present pages.
    m, vcpu = _meter(costs)
    for i in range(4):
        m.guest_write(vcpu, MEM_GPA + i * 4096, 1)
    present_cost, waited = m.unmap(MEM_GPA, 4, 1)  # four calls, four present pages
    empty_cost, empty_waited = m.unmap(MEM_GPA, 4, 1)  # the same calls, nothing present
    assert waited == present_cost and empty_waited == 0
    # Each present call: the extra cost, and the zap of the page's SPTE.
    assert present_cost - empty_cost == 4 * (costs["host_unmap_present_ns"]
                                             + costs["spte_zapped_ns"])
    # Present calls add to the guest's time; calls over dropped pages overlap it.
    assert _phase((present_cost, waited), 1000) == present_cost + 1000
    assert _phase((empty_cost, 0), empty_cost + 1000) == empty_cost + 1000
