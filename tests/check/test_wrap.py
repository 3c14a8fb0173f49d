"""Tests of kvmmu.check.wrap: the wrap is inside the search, and each strategy gets a verdict."""

from __future__ import annotations

import json

import pytest

from kvmmu.check.world import CheckConfig
from kvmmu.check.wrap import wrap_report
from kvmmu.cli import main

BASE = CheckConfig(vcpus=1, updates=3, slot_zap="slot")


def test_the_modern_scheme_is_correct_across_the_wrap_and_without_the_zap_it_is_not() -> None:
    good, broken, no_gen = wrap_report(
        BASE, ["generation", "generation+no-wrap-zap", "zap-all-fast"], 1)
    assert good.wrap_runs > 0 and good.violation is None and good.complete
    assert good.verdict == "correct across the wrap"
    assert broken.violation == "stale-mmio-spte" and broken.violation_crosses_wrap
    assert broken.expected_violations and "across the wrap" in broken.verdict
    assert not no_gen.generation_in_sptes and no_gen.wrap_runs == 0
    assert "does not apply" in no_gen.verdict


def test_a_generation_too_wide_to_wrap_is_reported_as_such() -> None:
    (v,) = wrap_report(CheckConfig(vcpus=1, updates=1, mmio_gen_bits=8), ["generation"], 0)
    assert v.wrap_runs == 0 and v.violation is None
    assert "no run crossed a wrap" in v.verdict


def test_the_wrap_command_reports_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "--wrap", "--vcpus", "1", "--strategy", "generation+no-wrap-zap",
              "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = {r["strategy"]: r for r in doc["strategies"]}
    assert rows["generation"]["verdict"] == "correct across the wrap"
    assert rows["generation+no-wrap-zap"]["violation_crosses_wrap"] is True
    # Only expected violations (broken variants, kernels with known bugs): exit status 0.
    assert doc["result"] == "ok" and exc.value.code == 0
    assert doc["gen_bits"] == 2 and doc["preemption_bound"] == 1
