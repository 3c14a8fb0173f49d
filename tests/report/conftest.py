"""A small real run shared by the report tests (simulated once per session)."""

from __future__ import annotations

import pytest

from kvmmu.sim.costs import default_costs
from kvmmu.sim.results import RunResult
from kvmmu.sim.run import SimOptions, simulate_all
from kvmmu.sim.workloads.schema import scenario_from_dict


@pytest.fixture(scope="session")
def small_run() -> RunResult:
    sc = scenario_from_dict(
        {
            "name": "small <&> run",  # characters that must be escaped in HTML
            "description": "two vCPUs, a ROM toggled, a device",
            "duration": "600us",
            "guest": {"vcpus": 2, "memory": "32MiB", "ram_base": "4GiB", "prefault": 0.5},
            "vcpu": {"think": "2us", "working_set": "2MiB", "mmio_fraction": 0.2, "rom_fraction": 0.1},
            "slots": [{"id": 2, "gpa": 0xC0000, "size": "64KiB", "role": "rom"}],
            "devices": [{"name": "dev", "gpa": 0xFE000000, "size": "16KiB"}],
            "vmm": [{"op": "remap", "slot": 2, "at": "50us", "repeat": 5, "every": "100us"}],
        }
    )
    names = ["zap-all-3.9", "generation", "zap-all-fast"]
    return simulate_all(sc, names, default_costs(), SimOptions(seed=3))
