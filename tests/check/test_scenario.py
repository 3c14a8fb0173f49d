"""Tests of kvmmu.check.scenario: the default scenario, TOML loading, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmu.check.scenario import (
    DEFAULT_SCENARIO,
    Access,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from kvmmu.vm import VM

GOOD = """
name = "tiny"
[vm]
mmio_gen_bits = 2
slot_zap = "slot"

[[slots]]
slot = 0
gpa = 0x0
size = 0x10000
userspace_addr = 0x7f0000000000

[[vcpus]]
accesses = [{ gpa = 0x100000 }, { gpa = 0x1000, write = true, value = 0x42, size = 1 }]

[[updates]]
slot = 1
gpa = 0x100000
size = 0x1000
userspace_addr = 0x7f0000100000

[[updates]]
slot = 0
gpa = 0
size = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_default_scenario_turns_mmio_into_ram_and_deletes_ram() -> None:
    vm = VM("generation")
    for r in DEFAULT_SCENARIO.slots:
        vm.set_user_memory_region(r.slot, r.flags, r.gpa, r.size, r.userspace_addr)
    vcpu = vm.create_vcpu()
    assert vcpu.access(0x100000).kind.value == "mmio"
    assert vcpu.access(0x1000).kind.value == "ram"
    first, second = DEFAULT_SCENARIO.updates[:2]
    vm.set_user_memory_region(first.slot, first.flags, first.gpa, first.size, first.userspace_addr)
    assert vcpu.access(0x100000).kind.value == "ram"
    vm.set_user_memory_region(second.slot, second.flags, second.gpa, second.size,
                              second.userspace_addr)
    assert vcpu.access(0x1000).kind.value == "mmio"


def test_scripts_are_assigned_round_robin() -> None:
    n = len(DEFAULT_SCENARIO.vcpus)
    assert DEFAULT_SCENARIO.script(n) == DEFAULT_SCENARIO.script(0)
    assert DEFAULT_SCENARIO.script(1) != DEFAULT_SCENARIO.script(0)


def test_load_a_scenario_file(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.name == "tiny"
    assert sc.vm.mmio_gen_bits == 2 and sc.vm.slot_zap == "slot"
    assert sc.script(0)[1] == Access(gpa=0x1000, write=True, value=0x42, size=1)
    assert [u.size for u in sc.updates] == [0x1000, 0]


@pytest.mark.parametrize(("patch", "message"), [
    (("slot_zap = \"slot\"", "slot_zap = \"some\""),
     "vm.slot_zap: input should be 'all', 'slot' or 'all-slow'"),
    (("mmio_gen_bits = 2", "mmio_gen_bits = 1"), "vm.mmio_gen_bits: input should be greater than "
                                                 "or equal to 2"),
    (("name = \"tiny\"", "name = \"tiny\"\ncolour = 3"), "colour: unknown field"),
    (("size = 1 }", "size = 3 }"), "vcpus[0].accesses[1].size: input should be 1, 2, 4 or 8"),
    (("{ gpa = 0x100000 }", "{ gpa = 0x100ffe }"), "vcpus[0].accesses[0].gpa: the access must not "
                                                     "cross a page"),
    (("value = 0x42, size = 1", "value = 0x420, size = 1"), "vcpus[0].accesses[1].value: must fit "
                                                             "in 1 bytes"),
])
def test_errors_name_file_field_and_what_is_allowed(tmp_path: Path, patch: tuple[str, str],
                                                     message: str) -> None:
    p = write(tmp_path, GOOD.replace(*patch, 1))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    text = str(exc.value)
    assert text.startswith(f"{p}: ")
    assert message in text
    assert "\n" not in text


def test_an_update_the_model_refuses_is_named(tmp_path: Path) -> None:
    # the created slot overlaps slot 0: the kernel answers EEXIST
    p = write(tmp_path, GOOD.replace("gpa = 0x100000\nsize = 0x1000", "gpa = 0x8000\nsize = 0x1000"))
    with pytest.raises(ScenarioError, match=r"s\.toml: updates\[0\]: EEXIST"):
        load_scenario(p)


def test_an_access_beyond_the_address_width_is_named() -> None:
    data = {"vcpus": [{"accesses": [{"gpa": 1 << 60}]}]}
    with pytest.raises(ScenarioError, match=r"inline: vcpus\[0\]\.accesses\[0\]: gpa 0x1"):
        parse_scenario(data, "inline")


def test_a_scenario_needs_a_vcpu_script() -> None:
    with pytest.raises(ScenarioError, match="vcpus: at least one"):
        parse_scenario({"name": "x"}, "inline")


def test_missing_file_and_bad_toml_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.toml")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(write(tmp_path, "name = "))
