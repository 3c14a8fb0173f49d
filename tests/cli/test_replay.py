"""``kvmmu replay``: every strategy on the committed capture, the verdict, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmmu.cli import main
from kvmmu.mmu.invalidation import STRATEGIES

POST = Path(__file__).parent.parent / "data" / "qemu-q35-post"


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_replay_runs_every_strategy_and_names_the_cheapest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["replay", "--no-plots", "--no-oracle", "--json", "--out", str(tmp_path / "r"), str(POST)]
    assert run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {s["summary"]["strategy"] for s in doc["strategies"]} == set(STRATEGIES)
    # The capture's host ran the shadow MMU (tdp_mmu=N): so does every strategy replaying it.
    assert {s["summary"]["mmu"] for s in doc["strategies"]} == {"shadow"}
    ranking = [r["strategy"] for r in doc["verdict"]["ranking"]]
    assert sorted(ranking) == sorted(STRATEGIES) and doc["verdict"]["cheapest"] in ranking
    assert (tmp_path / "r" / "report.json").is_file() and (tmp_path / "r" / "trace.json").is_file()


def test_replay_prints_the_table_and_the_verdict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        run(
            [
                "replay",
                "--no-plots",
                "-s",
                "generation",
                "-s",
                "zap-all-fast",
                "--out",
                str(tmp_path / "r"),
                str(POST),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "which strategy makes this churn cheapest" in out
    assert "cheapest: generation" in out and "zap-all-fast: +" in out


def test_replay_of_an_unreadable_capture_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "x").write_text("not a capture\n")
    assert run(["replay", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvmmu: error: ") and err.count("\n") == 1
