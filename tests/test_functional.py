"""The functional comparison: every correct strategy is clean; the work differs as it should."""

from __future__ import annotations

import pytest

from kvmmu import STRATEGIES
from kvmmu.functional import COLUMNS, ScenarioParams, StrategyResult, compare, run_scenario

SMALL = ScenarioParams(vcpus=3, rounds=170)  # still crosses the wrap (150 publishes)


@pytest.fixture(scope="module")
def results() -> dict[str, StrategyResult]:
    return {r.strategy: r for r in compare(STRATEGIES, SMALL)}


def test_every_strategy_runs_the_scenario_without_an_oracle_violation(
        results: dict[str, StrategyResult]) -> None:
    for r in results.values():
        assert r.counters["oracle_violations"] == 0, r.strategy
        assert set(r.counters) == {k for k, _ in COLUMNS}


def test_the_guest_observes_the_same_mmio_under_every_strategy(
        results: dict[str, StrategyResult]) -> None:
    assert len({r.counters["mmio_exits"] for r in results.values()}) == 1


def test_generation_strategies_cross_the_wrap_and_walk_no_spte(
        results: dict[str, StrategyResult]) -> None:
    for name in ("generation-2013", "generation-2014", "generation"):
        assert results[name].counters["wraps"] == 1
        assert results[name].counters["sptes_walked"] == 0
    assert results["zap-walk"].counters["sptes_walked"] > 100_000


def test_zap_all_fast_refaults_most_and_generation_least(
        results: dict[str, StrategyResult]) -> None:
    refaults = {n: r.counters["refaults"] for n, r in results.items()}
    assert refaults["zap-all-fast"] == max(refaults.values())
    assert refaults["zap-all-fast"] > 5 * refaults["generation"]
    assert refaults["zap-mmio-cached"] > refaults["zap-walk"]  # whole pages, RAM included


def test_the_broken_cache_variant_shows_a_violation_in_the_same_scenario() -> None:
    # The ROM comes back while a vCPU's cache still names one of its pages as MMIO.
    r = run_scenario("generation+cache-without-gen", SMALL)
    assert r.strategy == "generation+cache-without-gen"
    assert r.counters["oracle_violations"] >= 1
