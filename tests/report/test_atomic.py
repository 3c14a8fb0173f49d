"""Tests of kvmmu.report.atomic: a results directory appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.report.atomic import atomic_directory


def test_new_directory_appears_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out" / "boot"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not final.exists() and tmp.parent == final.parent
    assert (final / "a.txt").read_text() == "1"
    assert sorted(p.name for p in final.parent.iterdir()) == ["boot"]


def test_failure_keeps_the_previous_report_and_leaves_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "boot"
    with atomic_directory(final) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["boot"]


def test_success_replaces_the_previous_report(tmp_path: Path) -> None:
    final = tmp_path / "boot"
    for content in ("one", "two"):
        with atomic_directory(final) as tmp:
            (tmp / content).write_text(content)
    assert [p.name for p in final.iterdir()] == ["two"]
    assert [p.name for p in tmp_path.iterdir()] == ["boot"]
