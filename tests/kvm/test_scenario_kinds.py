"""kvmmu.scenarios on the real KVM: every embedded scenario and every example runs under diff.

``kvmmu diff boot`` failed before the scenario kinds existed (issue 11); now each workload's
memslot history, compacted, and each interleaving, run round by round, must give the same answers
on the model and on /dev/kvm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmmu.cli import cli
from kvmmu.kvm.diff import HostFacts, host_facts, run_diff
from kvmmu.scenarios import embedded_names, for_diff

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def facts() -> HostFacts:
    return host_facts()


@pytest.mark.kvm
@pytest.mark.parametrize("name", embedded_names())
def test_every_embedded_scenario_agrees_with_the_real_kvm(name: str, facts: HostFacts) -> None:
    steps, source = for_diff(name)
    result = run_diff(steps, facts, path=source)
    assert result.agree, result.report()
    assert len(result.real) >= len(steps.step) // 2


@pytest.mark.kvm
@pytest.mark.parametrize("kind", ["workload", "interleaving", "steps"])
def test_every_example_runs_under_kvmmu_diff(kind: str) -> None:
    result = CliRunner().invoke(cli, ["diff", str(EXAMPLES / f"{kind}.toml")])
    assert result.exit_code == 0, result.output
    assert "agree" in result.output


@pytest.mark.kvm
def test_kvmmu_diff_boot_runs_boot_on_the_real_kvm() -> None:
    result = CliRunner().invoke(cli, ["diff", "boot", "--json"])
    assert result.exit_code == 0, result.output
    assert '"scenario": "boot-steps"' in result.output and '"agree": true' in result.output
