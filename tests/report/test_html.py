"""Tests of kvmmu.report.html: one self-contained page, escaped."""

from __future__ import annotations

from kvmmu.report.html import report_html
from kvmmu.sim.results import RunResult


def test_page_escapes_and_links_everything(small_run: RunResult) -> None:
    page = report_html(small_run, ["a.png"], ["report.json"])
    assert "small &lt;&amp;&gt; run" in page and "small <&> run" not in page
    assert '<img src="a.png"' in page and '<a href="report.json">' in page
    assert page.count("<tr>") >= len(small_run.strategies)
    assert "<script" not in page
