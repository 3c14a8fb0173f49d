"""kvmmu.kvm.diff: the model against the real KVM, scenario by scenario."""

from __future__ import annotations

import pytest

from kvmmu.kvm.diff import host_facts, pattern, run_diff, run_random
from kvmmu.kvm.scenario import ScenarioError, parse_scenario

pytestmark = pytest.mark.kvm

BEHAVIOURS = """
[scenario]
name = "real-kvm-here behaviours"
window_mib = 4

[[memory]]
name = "a"
pages = 2

[[memory]]
name = "b"
pages = 2

[[step]]                  # 0: create, read (live SPTE)
op = "set"
slot = 0
gpa = 0x100000
size = 0x2000
memory = "a"

[[step]]
op = "read"
gpa = 0x100008
size = 8

[[step]]                  # 2: delete with live SPTEs: MMIO, no stale data
op = "set"
slot = 0
gpa = 0x100000
size = 0

[[step]]
op = "read"
gpa = 0x100008
size = 8

[[step]]                  # 4: re-create on other backing: the new contents
op = "set"
slot = 0
gpa = 0x100000
size = 0x2000
memory = "b"

[[step]]
op = "read"
gpa = 0x100008
size = 8

[[step]]                  # 6: move: old gpa MMIO, new gpa RAM
op = "set"
slot = 0
gpa = 0x180000
size = 0x2000
memory = "b"

[[step]]
op = "read"
gpa = 0x100008
size = 8

[[step]]
op = "read"
gpa = 0x180008
size = 8

[[step]]                  # 9: READONLY: reads hit memory, writes exit, memory unchanged
op = "set"
slot = 1
flags = 2
gpa = 0x200000
size = 0x1000
memory = "a"

[[step]]
op = "read"
gpa = 0x200010
size = 4

[[step]]
op = "write"
gpa = 0x200010
size = 4
value = 0x55

[[step]]                  # 12: dirty logging: a written page, then the log is cleared
op = "set"
slot = 2
flags = 1
gpa = 0x300000
size = 0x2000
memory = "b"
offset = 0x0

[[step]]
op = "write"
gpa = 0x301000
size = 8
value = 9

[[step]]
op = "dirty_log"
slot = 2

[[step]]
op = "dirty_log"
slot = 2

[[step]]                  # 16: the errno of section 6
op = "set"
slot = 3
gpa = 0x301000
size = 0x1000
memory = "a"

[[step]]
op = "set"
slot = 1
flags = 0
gpa = 0x200000
size = 0x1000
memory = "a"

[[step]]
op = "dirty_log"
slot = 0
"""


def test_documented_behaviours_on_both_sides(no_fd_leak: None) -> None:
    scn = parse_scenario(BEHAVIOURS, "behaviours.toml")
    res = run_diff(scn)
    assert res.agree, res.report()
    got = [o.result for o in res.real]
    a = int.from_bytes(pattern(1, 8192)[8:16], "little")
    b = int.from_bytes(pattern(2, 8192)[8:16], "little")
    assert got[1] == f"ram read {a:#x}"
    assert got[3] == "mmio read len 8 gpa 0x100008"
    assert got[5] == f"ram read {b:#x}"
    assert got[7] == "mmio read len 8 gpa 0x100008" and got[8] == f"ram read {b:#x}"
    assert got[10] == "ram read 0x10"  # the low 4 bytes of u64 tag<<48 | 0x10
    assert got[11] == "mmio write len 4 gpa 0x200010"
    assert got[14] == "dirty pages [1]" and got[15] == "dirty pages []"
    assert got[16:19] == ["EEXIST", "EINVAL", "ENOENT"]
    # The final memory digests agree too, so the READONLY write left "a" unchanged on both.
    assert [o.label for o in res.real[-2:]] == ["memory a", "memory b"]
    assert res.model == res.real


def test_random_scenarios_agree(no_fd_leak: None) -> None:
    seen: list[int] = []
    summary = run_random(60, 1000, on_result=lambda s, r: seen.append(s))
    assert seen == list(range(1000, 1060))
    assert summary.scenarios == 60 and summary.multi_vcpu >= 10
    assert summary.observations > 60 * 20
    assert not summary.failures, summary.failures[0].report()


def test_a_known_broken_strategy_is_caught() -> None:
    # The per-vCPU MMIO cache without a generation (the 2014 bug): the diff must notice.
    summary = run_random(30, 0, strategy="generation+cache-without-gen")
    assert summary.failures
    report = summary.failures[0].report()
    assert "first divergence" in report and "real KVM: ram read" in report


def test_host_checks_are_one_line() -> None:
    facts = host_facts()
    assert facts.phys_bits == 52  # shadow paging: kvm_mmu_max_gfn() is 52 bits whatever the CPU
    scn = parse_scenario("[scenario]\nvcpus = 8\n", "many.toml")
    with pytest.raises(
        ScenarioError, match=r"^many.toml: scenario.vcpus: 8 vCPUs, but this host allows"
    ):
        run_diff(scn, facts, path="many.toml")
