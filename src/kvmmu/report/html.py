"""One HTML page per results directory: what was run, the comparison, the figures, a glossary.

Design. A static page with no script and no external asset (it opens from the filesystem and
survives being attached to a bug report). It must read on a laptop screen, so the comparison
table has the terminal table's shape (:data:`kvmmu.report.tables.ROWS`: one row per measure, one
column per strategy; six strategies fit in 1000 px where twenty-odd measure columns did not), the
run's parameters are written as a sentence instead of a ``key = value`` dump, each figure
carries its caption (what to conclude, from :mod:`kvmmu.report.plots`) as a ``<figcaption>``, and
every measure links to its definition in a glossary (:data:`kvmmu.report.tables.GLOSSARY`) at the
end. Text is escaped with :func:`html.escape`. Prior art: coverage.py's and pytest-html's
self-contained reports; the "figure + caption" convention of papers.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import PurePath

from kvmmu.mmu.invalidation import ALIASES, resolve_strategy
from kvmmu.report.tables import GLOSSARY, ROWS, title
from kvmmu.sim.results import RunResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; padding: 0 1em;
       color: #222; line-height: 1.4; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f4f4f4; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
tr.section td { background: #fafafa; font-style: italic; color: #666; }
td.bad { background: #fdd; font-weight: bold; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #333; max-width: 60em; }
dl.glossary dt { font-weight: bold; margin-top: 0.5em; }
dl.glossary dd { margin-left: 1.5em; }
small, .muted { color: #666; }
"""


def _anchor(key: str) -> str:
    return f"g-{key.replace('_', '-')}"


def _cell(row: dict[str, int | float | str], key: str, fmt: object) -> tuple[str, bool]:
    """A table cell's text, and whether it marks a problem."""
    if key == "refaults_split":
        return f"{int(row['refaults_ram']):,} / {int(row['refaults_mmio']):,}", False
    if key in ("status", "mmu"):
        return str(row[key]), False
    assert callable(fmt)
    text: str = fmt(row[key])
    # A historically buggy kernel (or a broken variant) is expected to fail the oracle: marked as
    # expected, not as a problem of the run.
    expected = row.get("status") in ("historically buggy", "broken variant")
    if key == "oracle_violations" and int(row[key]) > 0 and expected:
        return f"{text} (expected: {row['status']})", False
    return text, key == "oracle_violations" and int(row[key]) > 0


def _strategy_note(name: str) -> str:
    try:
        base, plus, variants = name.partition("+")  # an old name, silently: no rename notice here
        return resolve_strategy(ALIASES.get(base, base) + plus + variants).summary
    except ValueError:
        return ""


def _kernels(name: str) -> str:
    """The kernels a strategy models and its status, for the page's list of strategies."""
    try:
        base, plus, variants = name.partition("+")
        s = resolve_strategy(ALIASES.get(base, base) + plus + variants)
    except ValueError:
        return "unknown"
    return f"kernels {s.kernels}; {s.status}"


def _costs_text(path: str) -> str:
    if path.startswith("<kvmmu>"):
        return "the packaged cost profile (every figure cited in its comments)"
    return f"cost profile {PurePath(path).name}"


def report_html(run: RunResult, figures: Sequence[tuple[str, str]], files: Sequence[str]) -> str:
    """The page's text; ``figures`` are ``(image file, caption)`` and ``files`` data files, all
    relative to the page."""
    e = html.escape
    names = [r.strategy for r in run.strategies]
    rows = [r.summary() for r in run.strategies]
    head = "".join(f"<th>{e(n).replace('-', '-<wbr>').replace('+', '<wbr>+')}</th>" for n in names)
    body = []
    for heading, key, fmt in ROWS:
        if key is None:
            body.append(f'<tr class="section"><td colspan="{len(names) + 1}">{e(heading)}</td></tr>')
            continue
        gkey = "refaults_ram" if key == "refaults_split" else key
        label = f'<a href="#{_anchor(gkey)}">{e(heading.strip())}</a>'
        cells = []
        for row in rows:
            text, bad = _cell(row, key, fmt)
            cells.append(f'<td class="bad">{e(text)}</td>' if bad else f"<td>{e(text)}</td>")
        body.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    strategies = "".join(
        f"<li><b>{e(n)}</b> <span class=\"muted\">({e(_kernels(n))})</span>"
        f"{': ' + e(note) if (note := _strategy_note(n)) else ''}</li>" for n in names
    )
    violations = [
        f"<li><b>{e(r.strategy)}</b>: {e(v)}</li>" for r in run.strategies for v in r.violations[:3]
    ]
    violation_block = (
        f"<h2>Oracle violations</h2><ul>{''.join(violations)}</ul>" if violations else ""
    )
    figs = "\n".join(
        f'<figure><img src="{e(name)}" alt="figure {e(name)}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
        for name, caption in figures
    )
    links = " · ".join(f'<a href="{e(name)}">{e(name)}</a>' for name in files)
    glossary = "".join(
        f'<dt id="{_anchor(key)}">{e(heading)}</dt><dd>{e(text)}</dd>'
        for key, (heading, text) in GLOSSARY.items()
    )
    setting = title(run).removeprefix("kvmmu run: ")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kvmmu run: {e(run.scenario)}</title><style>{_STYLE}</style></head>
<body>
<h1>kvmmu run: {e(run.scenario)}</h1>
<p>{e(run.description)}</p>
<p class="muted">Setting: {e(setting)}; {e(_costs_text(run.costs_path))}. All times are simulated.</p>
<h2>Strategies</h2>
<ul>{strategies}</ul>
<h2>Comparison</h2>
<p class="muted">One column per strategy; each measure links to its definition in the
<a href="#glossary">glossary</a>.</p>
<div class="wide"><table>
<tr><th>measure</th>{head}</tr>
{chr(10).join(body)}
</table></div>
{violation_block}
<h2>Figures</h2>
{figs}
<h2>Data</h2>
<p>{links}
<br><span class="muted">report.json and summary.csv hold every measure in raw nanoseconds;
trace.json opens in Perfetto (ui.perfetto.dev) or chrome://tracing.</span></p>
<h2 id="glossary">Glossary</h2>
<dl class="glossary">{glossary}</dl>
</body></html>
"""


def figures_html(figures: dict[str, str], heading: str = "kvmmu plot: figures") -> str:
    """A page of figures (``{image file: caption}``), for ``kvmmu plot``'s output directory."""
    e = html.escape
    figs = "\n".join(
        f'<figure><img src="{e(name)}" alt="figure {e(name)}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
        for name, caption in figures.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(heading)}</title><style>{_STYLE}</style></head>
<body>
<h1>{e(heading)}</h1>
<p class="muted">Every number is also in <a href="figures.json">figures.json</a>. Measures are
defined in the glossary of any <code>kvmmu run</code> report (index.html).</p>
{figs}
</body></html>
"""
