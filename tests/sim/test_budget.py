"""Tests of kvmmu.sim.budget: the memory estimate, its bounds and the smaller run it suggests."""

from __future__ import annotations

import pytest

from kvmmu.sim import budget
from kvmmu.sim.workloads.schema import GIB, MIB, ScenarioError, load_scenario, scenario_names


def test_every_embedded_scenario_is_estimated_under_the_default_budget() -> None:
    for name in scenario_names():
        assert budget.estimate_bytes(load_scenario(name), plots=True) < budget.DEFAULT_BUDGET, name


def test_touched_pages_are_bounded_by_ram_windows_and_accesses() -> None:
    sc = load_scenario("fast-zap-2013")  # idle vCPUs, everything prefaulted
    assert budget.touched_pages(sc) <= sc.guest.memory // sc.guest.page_size
    assert budget.touched_pages(sc) >= 0.99 * sc.guest.memory // sc.guest.page_size
    boot = load_scenario("boot")
    accesses = boot.guest.vcpus * (boot.duration // boot.vcpu.think + 1)
    assert budget.touched_pages(boot) <= accesses
    more = boot.with_overrides(vcpus=boot.guest.vcpus * 2)
    assert budget.touched_pages(more) > budget.touched_pages(boot)


def test_a_run_over_the_available_memory_is_refused_naming_options_that_fit() -> None:
    sc = load_scenario("hotplug").with_overrides(vcpus=512, memory=64 * GIB)
    need = budget.estimate_bytes(sc, plots=False)
    with pytest.raises(ScenarioError) as info:
        budget.check_memory(sc, plots=False, available=need // 2)
    msg = str(info.value)
    assert "would need about" in msg and "try --vcpus" in msg and "--memory" in msg
    for hint in budget.smaller_runs(sc, int(need // 2 * budget.USABLE_SHARE), plots=False):
        if hint.option == "--vcpus":
            smaller = sc.with_overrides(vcpus=int(hint.value))
        else:
            smaller = sc.with_overrides(memory=int(hint.value.removesuffix("MiB")) * MIB)
        assert budget.estimate_bytes(smaller, plots=False) <= need // 2 * budget.USABLE_SHARE
    assert budget.check_memory(sc, plots=False, available=4 * need) == need


def test_available_memory_is_read_from_meminfo() -> None:
    avail = budget.available_bytes()
    assert avail is None or avail > 0
