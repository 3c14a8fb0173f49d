"""One HTML page per results directory: the comparison table, the plots, links to the data.

Design. A static page with no script and no external asset (it opens from the filesystem and
survives being attached to a bug report): the table is the same rows as ``summary.csv`` in the
terminal table's units, the plots are ``<img>`` tags of the PNGs beside it. Text is escaped with
:func:`html.escape`. Prior art: coverage.py's and pytest-html's self-contained reports.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from kvmmu.report.tables import COLUMNS
from kvmmu.sim.results import RunResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.bad { background: #fdd; }
img { max-width: 100%; margin: 1em 0; border: 1px solid #eee; }
"""


def report_html(run: RunResult, images: Sequence[str], files: Sequence[str]) -> str:
    """The page's text; ``images`` and ``files`` are names relative to the page."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h, _, _ in COLUMNS)
    rows = []
    for r in run.strategies:
        row = r.summary()
        cls = ' class="bad"' if int(row["oracle_violations"]) else ""
        cells = "".join(f"<td>{e(fmt(row[key]))}</td>" for _, key, fmt in COLUMNS)
        rows.append(f"<tr{cls}><td>{e(str(row['strategy']))}</td>{cells}</tr>")
    params = ", ".join(f"{e(str(k))} = {e(str(v))}" for k, v in run.params.items())
    imgs = "\n".join(f'<img src="{e(name)}" alt="{e(name)}">' for name in images)
    links = " · ".join(f'<a href="{e(name)}">{e(name)}</a>' for name in files)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>kvmmu run: {e(run.scenario)}</title><style>{_STYLE}</style></head>
<body>
<h1>kvmmu run: {e(run.scenario)}</h1>
<p>{e(run.description)}</p>
<p><small>{params}; seed {run.seed}; costs: {e(run.costs_path)}</small></p>
<table><tr><th>strategy</th>{head}</tr>
{chr(10).join(rows)}
</table>
<p>{links}</p>
{imgs}
</body></html>
"""
