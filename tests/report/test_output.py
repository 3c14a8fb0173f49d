"""Tests of kvmmu.report.output: the whole results directory."""

from __future__ import annotations

import json
from pathlib import Path

from kvmmu.report.output import write_report
from kvmmu.sim.results import RunResult


def test_write_report_writes_every_file(small_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "kvmmu-out" / "small"
    files = write_report(small_run, out)
    assert {f.name for f in files} == {
        "report.json",
        "summary.csv",
        "trace.json",
        "update_latency.png",
        "lock_and_faults.png",
        "stall_cdf.png",
        "index.html",
    }
    assert all(f.exists() and f.stat().st_size > 0 for f in files)
    assert json.loads((out / "report.json").read_text())["scenario"] == small_run.scenario
    again = write_report(small_run, out, plots=False)
    assert {f.name for f in again} == {"report.json", "summary.csv", "trace.json", "index.html"}
    assert sorted(p.name for p in out.iterdir()) == sorted([".kvmmu-output", *(f.name for f in again)])
