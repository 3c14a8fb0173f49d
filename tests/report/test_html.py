"""Tests of kvmmu.report.html: one self-contained page that reads on a laptop screen."""

from __future__ import annotations

import re

from kvmmu.report.html import figures_html, report_html
from kvmmu.report.tables import GLOSSARY, ROWS
from kvmmu.sim.results import RunResult


def test_page_escapes_and_links_everything(small_run: RunResult) -> None:
    page = report_html(small_run, [("a.png", "caption <b>")], ["report.json"])
    assert "small &lt;&amp;&gt; run" in page and "small <&> run" not in page
    assert '<img src="a.png"' in page and '<a href="report.json">' in page
    assert "<figcaption>caption &lt;b&gt;</figcaption>" in page
    assert "<script" not in page


def test_table_has_a_column_per_strategy_and_a_row_per_measure(small_run: RunResult) -> None:
    page = report_html(small_run, [], [])
    header = re.search(r"<tr><th>measure</th>(.*?)</tr>", page)
    assert header is not None
    assert header.group(1).count("<th>") == len(small_run.strategies)
    measures = [h for h, key, _ in ROWS if key is not None]
    assert page.count("<tr><td><a href=\"#g-") == len(measures)


def test_parameters_are_a_sentence_not_a_dump(small_run: RunResult) -> None:
    page = report_html(small_run, [], [])
    assert "duration_ns" not in page and "page_size = " not in page
    assert "2 vCPUs" in page and "MiB RAM" in page


def test_every_measure_links_to_a_glossary_entry(small_run: RunResult) -> None:
    page = report_html(small_run, [], [])
    anchors = set(re.findall(r'<dt id="([^"]+)">', page))
    links = set(re.findall(r'<a href="#(g-[^"]+)">', page))
    assert links and links <= anchors
    assert len(anchors) == len(GLOSSARY)


def test_page_fits_a_laptop_screen(small_run: RunResult) -> None:
    page = report_html(small_run, [], [])
    assert "max-width: 1100px" in page and 'name="viewport"' in page
    assert 'class="wide"' in page  # the table scrolls inside the page if ever too wide


def test_violations_are_listed(small_run: RunResult) -> None:
    page = report_html(small_run, [], [])
    has = any(r.violations for r in small_run.strategies)
    assert ("Oracle violations" in page) == has


def test_figures_page_shows_each_figure_with_its_caption() -> None:
    page = figures_html({"a.png": "A rises.", "b.png": "B is flat."})
    assert page.count("<figure>") == 2 and "<figcaption>B is flat.</figcaption>" in page
