"""Tests of kvmmu.sim.workloads.schema: units, embedded scenarios, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.sim.workloads.schema import (
    GIB,
    MIB,
    TIB,
    ScenarioError,
    load_scenario,
    parse_scenario,
    scenario_names,
)

REQUIRED = {"boot", "vga-bank-switch", "hotplug", "migration", "rom-loop", "virtio-mem", "random"}
HEAD = 'name = "t"\ndescription = "d"\nduration = "1ms"\n'


def test_all_required_scenarios_are_embedded_and_valid() -> None:
    assert set(scenario_names()) >= REQUIRED
    for name in scenario_names():
        s = load_scenario(name)
        assert s.name == name
        assert s.duration > 0


def test_units_are_parsed() -> None:
    s = parse_scenario(HEAD + '[guest]\nmemory = "1TiB"\npage_size = "2MiB"\nvcpus = 512\n', "x")
    assert s.guest.memory == TIB and s.guest.page_size == 2 * MIB and s.guest.vcpus == 512
    assert s.duration == 1_000_000
    s = parse_scenario(HEAD + '[vcpu]\nthink = "1.5us"\nworking_set = 8192\n', "x")
    assert s.vcpu.think == 1500 and s.vcpu.working_set == 8192


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[guest]\nvcpus = 513\n", "guest.vcpus: Input should be less than or equal to 512"),
        ('[guest]\npage_size = "1MiB"\n', "guest.page_size: Input should be 4096 or 2097152"),
        ('[guest]\nmemory = "2TiB"\n', "guest.memory: must be between 4KiB and 1TiB"),
        ('[[vmm]]\nop = "remove"\nslot = 1\n', "vmm[0].op: Input should be 'create'"),
        ('[[vmm]]\nop = "create"\nslot = 1\n', "vmm[0].gpa: create needs gpa and size"),
        ('[[vmm]]\nop = "delete"\n', "vmm[0].slot: give exactly one of slot or slots"),
        ('[[vmm]]\nop = "delete"\nslot = 1\nrepeat = 3\n', "vmm[0].every: a repeated op"),
        (
            "[[vmm]]\nop = 'delete'\nslot = 1\nbogus = 1\n",
            "vmm[0].bogus: unknown field; allowed: op",
        ),
        ("[vcpu]\nmmio_fraction = 0.5\n", "vcpu.mmio_fraction: > 0 needs [[devices]]"),
        # Explicit requests KVM would refuse every time (issue 11: "only counted" before).
        (
            '[[vmm]]\nop = "create"\nslot = 5\ngpa = 0\nsize = 4096\n',
            "vmm[0].gpa: [0x0, 0x1000) overlaps guest RAM",
        ),
        ('[[vmm]]\nop = "delete"\nslot = 9\n', "vmm[0].slot: slot 9 is neither guest RAM"),
        ('[[vmm]]\nop = "create"\nslot = 5\ngpa = "1GiB"\nsize = 100\n', "vmm[0].size: must be a positive"),
        ('[[vmm]]\nop = "create"\nslot = 5\ngpa = "1GiB"\nsize = 0\n', "vmm[0].size: must be a positive"),
        ('[[vmm]]\nop = "create"\nslot = 5\ngpa = 0x3fffffffff000\nsize = 8192\n', "beyond guest.phys_bits"),
        ('[[vmm]]\nop = "create"\nslot = 1\ngpa = "1GiB"\nsize = 4096\n', "vmm[0].slot: slot 1 is guest RAM"),
        # Semantics, not just types (issue 11): each names the field and what is allowed.
        ("[vcpu]\nworking_set = 0\n", "vcpu.working_set: must be at least one page, guest.page_size = 4096"),
        ('[guest]\npage_size = "2MiB"\n[vcpu]\nworking_set = "1MiB"\n', "(got 1048576)"),
        ("[vcpu]\nactive = 5\n", "vcpu.active: must be between 0 and guest.vcpus = 4 (got 5)"),
        ("[vcpu]\nwrite_fraction = nan\n", "vcpu.write_fraction: Input should be a finite number"),
        (
            "[guest]\n[[devices]]\nname = 'd'\ngpa = '5GiB'\nsize = 4096\n",
            "devices[0].gpa: device d [0x140000000, 0x140001000) overlaps guest RAM",
        ),
        (
            "[[devices]]\nname = 'd'\ngpa = 0xfe000000\nsize = 4096\nweight = inf\n",
            "devices[0].weight: Input should be a finite number",
        ),
        (
            "[random]\nops = 3\nevery = '1us'\nslots = {first = 10, count = 2}\ngpa = '8GiB'\n"
            "size = '2MiB'\nmix = {create = inf}\n",
            "random.mix.create: Input should be a finite number",
        ),
        ("[vcpu]\nwrite_fraction = 2\n", "vcpu.write_fraction: Input should be less than or equal"),
        ('[vcpu]\nthink = "5 fortnights"\n', "vcpu.think: must be a time"),
        ("[[slots]]\nid = 0\ngpa = 0\nsize = 4096\n", "slots: slot 0 overlaps"),
        ("[[slots]]\nid = 1\ngpa = 0\nsize = 4096\n", "slots: slot ids must be unique"),
        ("[[slots]]\nid = 7\ngpa = 1\nsize = 4096\n", "slots[0].gpa: must be 4KiB aligned"),
        ("colour = 1\n", "guest.colour: unknown field; allowed: vcpus, memory, page_size"),
    ],
)
def test_errors_name_file_field_and_allowed(tmp_path: Path, body: str, needle: str) -> None:
    # A low RAM base so that the slots in the cases above collide with RAM where they should.
    base = "" if body.startswith("[guest]") else '[guest]\nram_base = 0\nmemory = "1MiB"\n'
    p = tmp_path / "bad.toml"
    p.write_text(HEAD + base + body)
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    assert str(info.value).startswith(f"{p}: ")
    assert needle in str(info.value)


def test_unknown_scenario_lists_the_embedded_ones() -> None:
    with pytest.raises(ScenarioError, match=r"embedded: .*boot"):
        load_scenario("no-such-scenario")


@given(
    vcpus=st.integers(1, 512),
    memory_mib=st.integers(1, 1 << 20),
    large=st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_any_guest_in_range_validates_and_overrides_revalidate(
    vcpus: int, memory_mib: int, large: bool
) -> None:
    page = "2MiB" if large else "4KiB"
    memory = memory_mib * MIB
    if large:
        memory -= memory % (2 * MIB)
        memory = max(memory, 2 * MIB)
    s = parse_scenario(HEAD + f'[guest]\nvcpus = {vcpus}\nmemory = {memory}\npage_size = "{page}"\n', "x")
    assert (s.guest.vcpus, s.guest.memory) == (vcpus, memory)
    t = s.with_overrides(vcpus=1, memory=2 * GIB)
    assert t.guest.vcpus == 1 and t.guest.memory == 2 * GIB and t.vcpu == s.vcpu
    with pytest.raises(ScenarioError if False else Exception):
        s.with_overrides(vcpus=0)
