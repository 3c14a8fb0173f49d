"""Tests of kvmmu.report.trace: a valid Chrome trace of every thread's timeline."""

from __future__ import annotations

import json

from kvmmu.report.trace import trace_json
from kvmmu.sim.results import RunResult


def test_trace_events_are_complete_events_named_per_process_and_thread(
    small_run: RunResult,
) -> None:
    data = json.loads(trace_json(small_run))
    events = data["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == sum(len(r.spans) for r in small_run.strategies) > 0
    assert all(e["dur"] >= 0 and e["ts"] >= 0 and {"pid", "tid", "name", "cat"} <= set(e) for e in spans)
    names = {(e["pid"], e["args"]["name"]) for e in events if e.get("name") == "process_name"}
    assert {n for _, n in names} == {r.strategy for r in small_run.strategies}
    threads = {(e["pid"], e["tid"]) for e in events if e.get("name") == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in spans} <= threads
    assert {e["cat"] for e in spans} >= {"fault", "mmu_lock", "memslot"}
