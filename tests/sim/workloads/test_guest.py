"""Tests of kvmmu.sim.workloads.guest: lazy, repeatable, in-range access streams."""

from __future__ import annotations

from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.sim.workloads.guest import accesses, active_vcpus, prefault_gpas, window
from kvmmu.sim.workloads.schema import load_scenario, parse_scenario

HEAD = 'name = "t"\ndescription = "d"\nduration = "1ms"\n'


def test_streams_are_repeatable_per_seed_and_differ_between_vcpus() -> None:
    s = load_scenario("boot")
    a = list(islice(accesses(s, 0, seed=1), 500))
    assert a == list(islice(accesses(s, 0, seed=1), 500))
    assert a != list(islice(accesses(s, 1, seed=1), 500))
    assert a != list(islice(accesses(s, 0, seed=2), 500))


def test_every_access_is_inside_ram_a_device_or_a_rom() -> None:
    s = load_scenario("boot")
    g = s.guest
    roms = [(r.gpa, r.gpa + r.size) for r in s.slots if r.role == "rom"]
    devs = [(d.gpa, d.gpa + d.size) for d in s.devices]
    kinds = set()
    for acc in islice(accesses(s, 3, seed=0), 5000):
        kinds.add(acc.kind)
        assert acc.think > 0
        ranges = {"ram": [(g.ram_base, g.ram_base + g.memory)], "rom": roms, "mmio": devs}
        assert any(lo <= acc.gpa < hi for lo, hi in ranges[acc.kind]), acc
        assert not (acc.kind == "rom" and acc.write)
    assert kinds == {"ram", "mmio", "rom"}


def test_sweep_touches_pages_in_order_after_the_prefault() -> None:
    s = parse_scenario(
        HEAD + '[guest]\nmemory = "64MiB"\nprefault = 0.5\n'
        '[vcpu]\npattern = "sweep"\nmmio_fraction = 0.0\nworking_set = "1MiB"\n',
        "x",
    )
    pre = list(prefault_gpas(s, 0))
    assert len(pre) == 128  # half of 256 4-KiB pages
    ram = [a.gpa for a in islice(accesses(s, 0, seed=0), 200)]
    assert ram[:128] == [pre[-1] + 4096 * (i + 1) for i in range(128)]
    assert ram[128] == pre[0]  # the window wraps


def test_idle_vcpus_have_no_stream_but_prefault() -> None:
    s = load_scenario("fast-zap-2013")
    assert active_vcpus(s) == 0
    assert list(accesses(s, 0, seed=0)) == []
    pages = sum(len(list(prefault_gpas(s, i))) for i in range(s.guest.vcpus))
    assert pages == 6 * (341 * 256)


@given(vcpus=st.integers(1, 512), index=st.integers(0, 511))
@settings(max_examples=50, deadline=None)
def test_a_tib_guest_with_large_pages_is_cheap_and_in_range(vcpus: int, index: int) -> None:
    s = parse_scenario(
        HEAD + f'[guest]\nvcpus = {vcpus}\nmemory = "1TiB"\npage_size = "2MiB"\n'
        '[vcpu]\nworking_set = "4GiB"\nmmio_fraction = 0.0\n',
        "x",
    )
    w = window(s, index % vcpus)
    assert w.count == 2048 and w.total == 1 << 19
    for acc in islice(accesses(s, index % vcpus, seed=5), 50):
        assert s.guest.ram_base <= acc.gpa < s.guest.ram_base + s.guest.memory
        assert (acc.gpa - s.guest.ram_base) % (2 << 20) == 0
