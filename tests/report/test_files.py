"""Tests of kvmmu.report.files: report.json and summary.csv carry the run's numbers."""

from __future__ import annotations

import csv
import io
import json

from kvmmu.report.files import report_json, summary_csv
from kvmmu.sim.results import SUMMARY_COLUMNS, RunResult


def test_report_json_round_trips_the_summaries(small_run: RunResult) -> None:
    data = json.loads(report_json(small_run))
    assert data["scenario"] == small_run.scenario and data["seed"] == 3
    assert [s["summary"]["strategy"] for s in data["strategies"]] == [
        r.strategy for r in small_run.strategies
    ]
    for got, r in zip(data["strategies"], small_run.strategies, strict=True):
        assert got["summary"]["updates"] == r.summary()["updates"]
        assert len(got["updates"]) == len(r.updates)
        assert got["series"]["bin_ns"] == r.series.bin_ns
        assert got["stall_percentiles_ns"]["p50"] <= got["stall_percentiles_ns"]["p99"]
    assert data["costs"]["ns"]["spte_zapped_ns"] == small_run.costs["spte_zapped_ns"]


def test_summary_csv_has_one_row_per_strategy_in_raw_units(small_run: RunResult) -> None:
    rows = list(csv.DictReader(io.StringIO(summary_csv(small_run))))
    assert len(rows) == len(small_run.strategies)
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    for row, r in zip(rows, small_run.strategies, strict=True):
        assert int(row["mmu_lock_hold_ns"]) == r.summary()["mmu_lock_hold_ns"]
