"""Tests of kvmmu.report.tables: the comparison table shows every strategy and measure."""

from __future__ import annotations

from rich.console import Console

from kvmmu.report.tables import GLOSSARY, ROWS, comparison_table, count, title
from kvmmu.sim.results import SUMMARY_COLUMNS, RunResult


def test_table_has_a_column_per_strategy_and_a_row_per_measure(small_run: RunResult) -> None:
    console = Console(width=200, record=True)
    console.print(comparison_table(small_run))
    text = console.export_text()
    for r in small_run.strategies:
        assert r.strategy in text
    for heading, _, _ in ROWS:
        assert heading in text
    gen = small_run.by_strategy("generation").summary()
    assert f"{int(gen['faults']):,}" in text


def test_glossary_defines_every_summary_column_and_table_row() -> None:
    assert set(GLOSSARY) == set(SUMMARY_COLUMNS) - {"strategy"}
    keys = {k for _, k, _ in ROWS if k is not None and k != "refaults_split"}
    assert keys <= set(GLOSSARY)
    assert all(heading and text.endswith(".") for heading, text in GLOSSARY.values())


def test_counts_agree_in_number(small_run: RunResult) -> None:
    assert count(1, "vCPU") == "1 vCPU" and count(2, "vCPU") == "2 vCPUs" and count(0, "vCPU") == "0 vCPUs"
    assert "2 vCPUs (2 active)" in title(small_run)
