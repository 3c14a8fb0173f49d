"""Every thread's timeline as a Chrome trace-event JSON file (opens in Perfetto, chrome://tracing).

Design. The trace-event format's "complete" events (``"ph": "X"``, ``ts`` and ``dur`` in µs) are
enough: each strategy is a process (``pid``), each vCPU and the VMM a thread (``tid``), named with
metadata events (``"ph": "M"``), and each span carries its category (fault, lock-wait, mmu_lock,
srcu-wait, memslot) so that Perfetto can filter them. Times are integer ns in the simulation and
fractional µs here, which the format allows. Prior art: the Trace Event Format document (Google,
"Trace Event Format", 2016) and Perfetto's JSON importer.
"""

from __future__ import annotations

import json
from typing import Any

from kvmmu.sim.results import RunResult


def trace_events(run: RunResult) -> dict[str, Any]:
    """The trace as a JSON-ready object (``{"traceEvents": [...], ...}``)."""
    events: list[dict[str, Any]] = []
    for pid, r in enumerate(run.strategies, start=1):
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"{r.strategy}"}})
        events.append({"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}})
        for t in r.threads:
            events.append(
                {"ph": "M", "pid": pid, "tid": t.tid, "name": "thread_name", "args": {"name": t.name}}
            )
        for s in r.spans:
            events.append(
                {
                    "ph": "X",
                    "pid": pid,
                    "tid": s.tid,
                    "name": s.name,
                    "cat": s.cat,
                    "ts": s.start_ns / 1000.0,
                    "dur": s.dur_ns / 1000.0,
                }
            )
    dropped = {r.strategy: r.spans_dropped for r in run.strategies if r.spans_dropped}
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"scenario": run.scenario, "seed": run.seed, "spans_dropped": dropped},
    }


def trace_json(run: RunResult) -> str:
    """The trace file's text (compact: it can be large)."""
    return json.dumps(trace_events(run), separators=(",", ":")) + "\n"
