"""Machine-readable outputs: ``report.json`` and ``summary.csv``.

Design. ``summary.csv`` has one row per strategy with the columns of
:data:`kvmmu.sim.results.SUMMARY_COLUMNS` in raw units (ns, counts), for spreadsheets and for
diffing two runs. ``report.json`` holds the same rows plus everything needed to redraw the plots
without rerunning: every memslot update, per-thread accounting, the time series, stall percentiles,
the cost profile and the scenario parameters. Timeline spans are kept out of it (they go to the
trace file), so it stays small. Prior art: pytest-benchmark's ``--benchmark-json``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from kvmmu.sim.results import SUMMARY_COLUMNS, RunResult, percentile

REPORT_FORMAT = 1


def report_dict(run: RunResult) -> dict[str, Any]:
    """The JSON-ready content of ``report.json``."""
    strategies = []
    for r in run.strategies:
        stalls = list(r.stall_samples)
        strategies.append(
            {
                "summary": r.summary(),
                "stall_percentiles_ns": {f"p{q}": percentile(stalls, q) for q in (50, 90, 99, 99.9)},
                "stall_samples_dropped": r.stall_samples_dropped,
                "steps": r.steps,
                "events": r.events,
                "updates": [asdict(u) for u in r.updates],
                "threads": [asdict(t) for t in r.threads],
                "series": asdict(r.series),
                "stats": dict(r.stats),
                "spans_dropped": r.spans_dropped,
                "oracle_violations": list(r.violations),
            }
        )
    return {
        "format": REPORT_FORMAT,
        "scenario": run.scenario,
        "description": run.description,
        "seed": run.seed,
        "params": dict(run.params),
        "costs": {"path": run.costs_path, "ns": dict(run.costs)},
        "strategies": strategies,
    }


def report_json(run: RunResult) -> str:
    """``report.json``'s text."""
    return json.dumps(report_dict(run), indent=1, sort_keys=False) + "\n"


def summary_csv(run: RunResult) -> str:
    """``summary.csv``'s text."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in run.strategies:
        writer.writerow(r.summary())
    return buf.getvalue()
