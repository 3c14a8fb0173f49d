"""Tests of kvmmu.sim.results: summaries, percentiles, grouping, sweeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvmmu.sim.results import (
    SUMMARY_COLUMNS,
    Series,
    StrategyResult,
    Sweep,
    SweepPoint,
    ThreadResult,
    UpdateRecord,
    percentile,
)


def result(updates: tuple[UpdateRecord, ...]) -> StrategyResult:
    return StrategyResult(
        strategy="s",
        sim_time_ns=100,
        wall_s=0.0,
        steps=0,
        events=0,
        updates=updates,
        threads=(
            ThreadResult(0, "vCPU 0", "vcpu", 3, 2, 50, 10, 5, 0),
            ThreadResult(1, "VMM", "vmm", 0, 0, 0, 0, 7, 3),
        ),
        stall_samples=(20, 30),
        stall_samples_dropped=0,
        series=Series(1, (0,), (0,), (0,), (0,)),
        spans=(),
        spans_dropped=0,
        refaults_ram=1,
        refaults_mmio=2,
        vmm_errors=1,
        stats={"pf_taken": 4, "mmio_fast_path": 1},
    )


def test_summary_has_every_column_and_totals() -> None:
    r = result(
        (
            UpdateRecord(0, "remap", 2, "delete", 10, action=0),
            UpdateRecord(10, "remap", 2, "create", 30, action=0),
            UpdateRecord(50, "delete", 3, "error", 5, "EINVAL", action=1),
        )
    )
    row = r.summary()
    assert tuple(row) == SUMMARY_COLUMNS
    assert row["updates"] == 2 and row["update_latency_mean_ns"] == 20
    assert row["mmu_lock_hold_ns"] == 12 and row["vcpu_stall_ns"] == 50
    assert row["faults"] == 4 and row["refaults"] == 0 and row["vmm_errors"] == 1
    assert r.action_latencies("remap") == [40]
    assert sorted(r.action_latencies()) == [5, 40]


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_bounded_and_monotone(values: list[int], q: float) -> None:
    p = percentile(values, q)
    assert min(values) <= p <= max(values)
    assert percentile(values, 0) == min(values) and percentile(values, 100) == max(values)
    assert percentile(values, q) <= percentile(values, min(100.0, q + 1))


def test_sweep_series_sorted_per_strategy() -> None:
    sw = Sweep(
        "n", "x", (SweepPoint(4, "a", {"k": 2}), SweepPoint(1, "a", {"k": 1}), SweepPoint(1, "b", {"k": 9}))
    )
    assert sw.series("a", "k") == ([1, 4], [1.0, 2.0])
    assert sw.strategies == ["a", "b"]
