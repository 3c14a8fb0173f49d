"""kvmmu.kvm.scenario: TOML validation (one-line errors), round trip, the seeded generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.kvm.scenario import (
    AccessSpec,
    ParallelStep,
    ScenarioError,
    SetStep,
    load_scenario,
    parse_scenario,
    random_scenario,
    to_toml,
)

GOOD = """
[scenario]
name = "t"
vcpus = 2
window_mib = 4

[[memory]]
name = "a"
pages = 4

[[step]]
op = "set"
slot = 0
gpa = 0x10000
size = 0x4000
memory = "a"

[[step]]
op = "parallel"
accesses = [{op = "read", vcpu = 0, gpa = 0x10000, size = 8},
            {op = "write", vcpu = 1, gpa = 0x11000, size = 4, value = 7}]

[[step]]
op = "dirty_log"
slot = 0
"""


def test_a_good_scenario_parses_and_round_trips() -> None:
    scn = parse_scenario(GOOD, "good.toml")
    assert scn.scenario.vcpus == 2 and scn.scenario.window == 4 << 20
    assert isinstance(scn.step[0], SetStep) and isinstance(scn.step[1], ParallelStep)
    assert parse_scenario(to_toml(scn)) == scn


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[scenario\n", "not valid TOML"),
        ("[scenario]\nvcpus = 0\n", "scenario.vcpus: Input should be greater than or equal to 1"),
        ("[scenario]\ncolour = 1\n", "scenario.colour: unknown field"),
        ('[[step]]\nop = "jump"\n', "step[0]: op must be one of set, read, write"),
        (
            '[[step]]\nop = "read"\ngpa = 0x40000000\n',
            "step[0].gpa: 0x40000000 is outside the mapped window",
        ),
        ('[[step]]\nop = "read"\ngpa = 2\nsize = 4\n', "not aligned to the access size 4"),
        (
            '[[step]]\nop = "read"\ngpa = 0\nsize = 3\n',
            "step[0].size: Input should be 1, 2, 4 or 8",
        ),
        (
            '[[step]]\nop = "read"\nvcpu = 1\ngpa = 0\n',
            "step[0].vcpu: vCPU 1 but the scenario has 1",
        ),
        ('[[step]]\nop = "set"\nslot = 0\ngpa = 0\nsize = 4096\n', "needs a backing memory name"),
        (
            '[[step]]\nop = "set"\nslot = 0\ngpa = 0\nsize = 4096\nmemory = "x"\n',
            "unknown memory 'x'",
        ),
        ('[[step]]\nop = "read"\ngpa = "0"\n', "step[0].gpa: Input should be a valid integer"),
    ],
)
def test_errors_are_one_line_naming_file_and_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "bad.toml")
    msg = str(err.value)
    assert msg.startswith("bad.toml: ") and message in msg and "\n" not in msg


def test_overlapping_parallel_write_is_refused() -> None:
    text = GOOD.replace("gpa = 0x11000, size = 4", "gpa = 0x10004, size = 4")
    with pytest.raises(ScenarioError, match="depend on timing"):
        parse_scenario(text, "p.toml")


def test_load_names_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.toml")
    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    assert load_scenario(p).scenario.name == "t"


def test_generator_is_deterministic_valid_and_varied() -> None:
    assert random_scenario(7) == random_scenario(7)
    assert random_scenario(7) != random_scenario(8)
    kinds: set[str] = set()
    two = 0
    for seed in range(100):
        scn = random_scenario(seed)
        assert parse_scenario(to_toml(scn)) == scn  # valid and writable
        two += scn.scenario.vcpus == 2
        for st in scn.step:
            kinds.add(st.op)
            if isinstance(st, AccessSpec):
                assert st.gpa < scn.scenario.window
    assert kinds == {"set", "read", "write", "parallel", "dirty_log", "host_write"}
    assert 10 < two < 60
