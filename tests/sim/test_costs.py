"""Tests of kvmmu.sim.costs: the default profile, step mapping, loading and validation errors."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.mmu.steps import Step
from kvmmu.sim.costs import (
    COST_NAMES,
    DRIVER_COSTS,
    SPTES_PER_PAGE,
    STEP_COSTS,
    CostError,
    CostModel,
    default_costs,
    load_costs,
    parse_costs,
)


def test_every_step_maps_to_known_cost_names() -> None:
    assert {s.name for s in Step} <= set(STEP_COSTS)
    used = {name for parts in STEP_COSTS.values() for name, _ in parts}
    assert used <= set(COST_NAMES)
    assert set(DRIVER_COSTS) <= set(COST_NAMES)


def test_default_profile_sets_every_name_and_cites_each_line() -> None:
    text = resources.files("kvmmu").joinpath("data/costs/default.toml").read_text()
    costs = default_costs()
    assert set(costs.costs) == set(COST_NAMES)
    for name in COST_NAMES:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{name} ="))
        assert re.search(r"#.*\[(here|design|split|guess)\]", line), line


def test_step_cost_is_the_sum_of_its_names() -> None:
    costs = default_costs()
    assert costs.step(Step.WALK_SHADOW_PAGE) == SPTES_PER_PAGE * costs["spte_walked_ns"]
    assert costs.step(Step.ZAP_SPTE) == costs["spte_zapped_ns"]
    assert costs.step(Step.EXIT_TO_USERSPACE) == costs["exit_to_userspace_ns"]


def test_partial_profile_keeps_defaults_and_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text('[costs]\nspte_zapped_ns = 7\n\n[source]\nmachine = "test box"\n')
    costs = load_costs(p)
    assert costs["spte_zapped_ns"] == 7
    assert costs["emulate_ns"] == default_costs()["emulate_ns"]
    assert costs.source["machine"] == "test box"
    again = parse_costs(costs.to_toml(), "again.toml")
    assert again.costs == costs.costs and again.source == costs.source


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[costs]\nspte_zaped_ns = 1\n", "costs.spte_zaped_ns: unknown cost name; allowed: "),
        ("[costs]\nemulate_ns = -1\n", "costs.emulate_ns: must be an integer number of ns from 0 to"),
        ("[costs]\nemulate_ns = 100000000000000000000000\n", "one second) (got 100000000000000000000000)"),
        ("[costs]\nemulate_ns = 1000000001\n", "costs.emulate_ns: must be an integer number of ns from 0"),
        ("[costs]\nemulate_ns = inf\n", "costs.emulate_ns: must be an integer"),
        ("[costs]\nemulate_ns = 1.5\n", "costs.emulate_ns: must be an integer"),
        ("[costs]\nemulate_ns = true\n", "costs.emulate_ns: must be an integer"),
        ("[costs]\n[extra]\n", "extra: unknown table; allowed: [costs], [source]"),
        ("[source]\nx = 'y'\n", "costs: missing table"),
        ("[costs\n", "not valid TOML"),
    ],
)
def test_validation_errors_name_file_key_and_allowed(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(CostError) as info:
        load_costs(p)
    assert str(info.value).startswith(f"{p}: ")
    assert needle in str(info.value)


def test_missing_file_is_a_cost_error(tmp_path: Path) -> None:
    with pytest.raises(CostError, match="cannot read"):
        load_costs(tmp_path / "nope.toml")


@given(st.dictionaries(st.sampled_from(COST_NAMES), st.integers(0, 10**9)))
@settings(max_examples=60, deadline=None)
def test_any_valid_partial_profile_loads(values: dict[str, int]) -> None:
    text = "[costs]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
    costs = parse_costs(text, "x.toml")
    for name in COST_NAMES:
        assert costs[name] == values.get(name, default_costs()[name])
    assert isinstance(costs, CostModel)
