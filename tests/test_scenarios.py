"""Tests of kvmmu.scenarios: the three kinds of scenario file, told apart and converted.

The conversions are checked on what must hold for the target command to run them: the result
validates as its kind (the loaders' own checks, the model's feasibility check for the explorer),
memslot sizes stay constant across a move (KVM refuses a move that resizes), accesses stay in
the harness window, and every embedded scenario works with every command that takes its kind or
a conversion of it. Runs on the real KVM are in tests/kvm/test_scenario_kinds.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.check.scenario import DEFAULT_SCENARIO
from kvmmu.check.scenario import ScenarioError as CheckError
from kvmmu.check.scenario import parse_scenario as parse_interleaving
from kvmmu.cli import cli
from kvmmu.kvm.scenario import AccessSpec, ParallelStep, SetStep, random_scenario, validate_scenario
from kvmmu.scenarios import (
    CHECK_DEFAULT_NAME,
    MAX_REPEATS,
    REGION_CAP,
    ScenarioError,
    compact_workload,
    detect_kind,
    embedded_names,
    for_check,
    for_diff,
    for_run,
    interleaving_from_steps,
    load_any,
    steps_from_interleaving,
)
from kvmmu.sim.workloads.schema import load_scenario as load_workload
from kvmmu.sim.workloads.schema import scenario_names

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KINDS = {"workload": "run", "interleaving": "check", "steps": "diff"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_example_declares_its_kind_and_loads_as_it(kind: str) -> None:
    path = EXAMPLES / f"{kind}.toml"
    assert f'kind = "{kind}"' in path.read_text()
    assert load_any(path).kind == kind


def test_every_example_file_loads_and_every_kind_has_one() -> None:
    kinds = {load_any(p).kind for p in EXAMPLES.glob("*.toml")}
    assert kinds == set(KINDS)
    readme = (EXAMPLES / "README.md").read_text()
    assert all(p.name in readme for p in EXAMPLES.glob("*.toml"))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"duration": "1ms", "guest": {}}, "workload"),
        ({"vcpus": [{"accesses": [{"gpa": 0}]}], "slots": []}, "interleaving"),
        ({"scenario": {}, "step": []}, "steps"),
        ({"kind": "steps", "slots": []}, "steps"),
    ],
)
def test_kind_is_read_from_the_key_or_from_the_tables(data: dict[str, object], kind: str) -> None:
    assert detect_kind(data, "f.toml") == kind


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x"}, "cannot tell what kind"),
        ({"guest": {}, "step": []}, "tables of several kinds"),
        ({"kind": "litmus"}, "kind: must be one of workload, interleaving, steps"),
    ],
)
def test_an_unknown_or_mixed_kind_is_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        detect_kind(data, "f.toml")


def test_a_loader_given_another_kind_names_it() -> None:
    with pytest.raises(CheckError, match="kind: 'steps', but 'interleaving' scenarios are needed"):
        parse_interleaving({"kind": "steps", "vcpus": [{"accesses": [{"gpa": 0}]}]}, "f.toml")
    with pytest.raises(ValueError, match="kind: 'workload', but 'steps'"):
        validate_scenario({"kind": "workload"}, "f.toml")


@pytest.mark.parametrize("kind", ["interleaving", "steps"])
def test_run_takes_workloads_only_and_says_so(kind: str) -> None:
    with pytest.raises(ScenarioError, match=f"{kind} scenario; kvmmu run takes a workload scenario"):
        for_run(EXAMPLES / f"{kind}.toml")
    result = CliRunner().invoke(cli, ["run", str(EXAMPLES / f"{kind}.toml")])
    assert result.exit_code == 2 and "takes a workload scenario" in result.output


@pytest.mark.parametrize("name", embedded_names())
def test_every_embedded_scenario_converts_for_check_and_diff(name: str) -> None:
    steps, source = for_diff(name)
    assert (steps.step and name in source) or name == CHECK_DEFAULT_NAME
    program = for_check(name)
    assert program.vcpus and (program.updates or name == CHECK_DEFAULT_NAME)
    window = steps.scenario.window
    for s in steps.step:
        accesses = [s] if isinstance(s, AccessSpec) else []
        if isinstance(s, ParallelStep):
            accesses = list(s.accesses)
        assert all(a.gpa + a.size <= window for a in accesses)


@pytest.mark.parametrize("name", scenario_names())
def test_compaction_keeps_slot_sizes_across_moves_and_refuses_nothing_real(name: str) -> None:
    c = compact_workload(load_workload(name))
    sizes: dict[int, int] = {}
    for r in (*c.initial, *c.requests):
        if r.size:
            assert r.size <= REGION_CAP and r.gpa % 4096 == 0
            assert sizes.setdefault(r.slot, r.size) == r.size, "a move must keep the slot's size"
    assert all(r.accepted for r in c.initial)
    if name != "random":  # the random mix asks for impossible things on purpose
        assert all(r.accepted for r in c.requests)


def test_workload_operations_are_capped_per_operation() -> None:
    sc = load_workload("rom-loop")
    c = compact_workload(sc)
    assert 0 < len(c.requests) <= sum(min(op.repeat, MAX_REPEATS) * 2 for op in sc.vmm)


def test_kvmmu_diff_boot_scenario_keeps_boots_memslot_story() -> None:
    steps, _ = for_diff("boot")
    sets = [s for s in steps.step if isinstance(s, SetStep)]
    deletes = [s for s in sets if s.size == 0]
    assert {s.slot for s in deletes} >= {2, 3, 5}  # the PAM toggles and the BAR sizing
    moved = [s for s in sets if s.slot == 5 and s.size]
    assert len({s.gpa for s in moved}) == 2  # the BAR placed elsewhere and back
    assert steps.scenario.vcpus == 2 and steps.scenario.window_mib <= 512


def test_interleaving_to_steps_runs_every_access_and_update_once() -> None:
    steps = steps_from_interleaving(DEFAULT_SCENARIO)
    sets = [s for s in steps.step if isinstance(s, SetStep)]
    reads = [s for s in steps.step if isinstance(s, AccessSpec)]
    assert len(sets) == len(DEFAULT_SCENARIO.slots) + len(DEFAULT_SCENARIO.updates)
    assert len(reads) == sum(len(v.accesses) for v in DEFAULT_SCENARIO.vcpus)
    back = interleaving_from_steps(steps)
    assert [(r.slot, r.gpa, r.size, r.flags) for r in back.updates] == [
        (r.slot, r.gpa, r.size, r.flags) for r in DEFAULT_SCENARIO.updates
    ]
    assert [[(a.gpa, a.write, a.value) for a in v.accesses] for v in back.vcpus] == [
        [(a.gpa, a.write, a.value) for a in v.accesses] for v in DEFAULT_SCENARIO.vcpus
    ]


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_random_diff_scenarios_become_explorer_programs_or_say_why(seed: int) -> None:
    scn = random_scenario(seed)
    try:
        program = interleaving_from_steps(scn)
    except (ScenarioError, CheckError) as exc:
        # Refused requests have no place in the explorer (its updates must all succeed).
        assert "no guest access" in str(exc) or "updates[" in str(exc) or "slots[" in str(exc)
    else:
        assert len(program.vcpus) >= 1


@pytest.mark.parametrize("command", ["run", "check", "diff"])
def test_help_explains_the_scenario_kinds(command: str) -> None:
    text = CliRunner().invoke(cli, [command, "--help"]).output.replace("\n", " ")
    assert "examples/" in text
    assert "workload" in text and ("interleaving" in text or command == "run")
    assert "steps" in text


@pytest.mark.explorer
def test_check_explores_a_converted_workload() -> None:
    result = CliRunner().invoke(cli, ["check", "--scenario", "boot", "--random", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert '"boot-interleaving"' in result.output


@pytest.mark.explorer
def test_the_examples_run_under_their_native_commands(tmp_path: Path) -> None:
    workload = str(EXAMPLES / "workload.toml")
    run = CliRunner().invoke(
        cli, ["run", workload, "--no-plots", "-s", "generation", "--out", str(tmp_path / "r")]
    )
    assert run.exit_code == 0, run.output
    program = str(EXAMPLES / "interleaving.toml")
    check = CliRunner().invoke(cli, ["check", "--scenario", program, "--random", "5"])
    assert check.exit_code == 0, check.output
    assert "mmio-becomes-ram" in check.output


@pytest.mark.parametrize("name", scenario_names())
def test_embedded_workloads_say_what_they_are(name: str) -> None:
    from importlib import resources

    text = resources.files("kvmmu").joinpath("data", "scenarios", f"{name}.toml").read_text()
    assert text.startswith('kind = "workload"\n')
