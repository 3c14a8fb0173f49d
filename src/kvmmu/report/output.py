"""Write a whole results directory: report.json, summary.csv, trace.json, plots, index.html.

Design. One function, :func:`write_report`, renders every output into a temporary directory beside
the destination and renames it into place (:mod:`kvmmu.report.atomic`), so an interrupted run
leaves the previous report or nothing, never half of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kvmmu.report.atomic import atomic_directory
from kvmmu.report.files import report_json, summary_csv
from kvmmu.report.html import report_html
from kvmmu.report.plots import Plot, plot_run
from kvmmu.report.trace import trace_json
from kvmmu.sim.results import RunResult

DATA_FILES = ("report.json", "summary.csv", "trace.json")
#: A figure drawn beside the run's own (e.g. the seed mail's), with its caption.
ExtraPlot = Callable[[], Plot]


def write_report(run: RunResult, out_dir: Path, *, plots: bool = True,
                 extra_plots: Sequence[ExtraPlot] = ()) -> list[Path]:
    """Write ``run``'s report into ``out_dir`` (replaced atomically); return the final paths."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        (tmp / "report.json").write_text(report_json(run), encoding="utf-8")
        (tmp / "summary.csv").write_text(summary_csv(run), encoding="utf-8")
        (tmp / "trace.json").write_text(trace_json(run), encoding="utf-8")
        drawn = plot_run(run, tmp) if plots else []
        if plots:
            for draw in extra_plots:
                extra = draw()
                extra.save(tmp)
                drawn.append(extra)
        images = [p.name for p in drawn]
        page = report_html(run, [(p.name, p.caption) for p in drawn], DATA_FILES)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        names = [*DATA_FILES, *images, "index.html"]
    return [out_dir / n for n in names]
