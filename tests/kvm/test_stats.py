"""kvmmu.kvm.stats: the binary stats format parsed from real VM and vCPU stats fds."""

from __future__ import annotations

import pytest

from kvmmu.kvm.guest import GuestLayout
from kvmmu.kvm.harness import Access, RealMachine

pytestmark = pytest.mark.kvm


def test_descriptors_carry_kvm_names_and_counters_move(no_fd_leak: None) -> None:
    with RealMachine(GuestLayout(window=4 << 20)) as m:
        vcpu_stats = m.vcpus[0].stats()
        vm_stats = m.vm_stats()
        assert vcpu_stats.id.endswith("/vcpu-0") and vm_stats.id.startswith("kvm-")
        for name in ("exits", "mmio_exits", "pf_taken", "insn_emulation", "pf_emulate"):
            assert name in vcpu_stats.descriptors
        for name in ("mmu_shadow_zapped", "pages_4k", "mmu_cache_miss"):
            assert name in vm_stats.descriptors
        mem = m.allocate(0x10000)
        m.set_user_memory_region(0, 0, 0x100000, 0x10000, mem.addr)
        before = vcpu_stats.read()
        m.access(Access(0, 0x100000, size=8))  # RAM: a shadow page fault
        out = m.access(Access(0, 0x300000, size=8))  # no slot: an MMIO exit
        after = vcpu_stats.read()
        assert len(out.mmio) == 1
        assert after["pf_taken"] > before["pf_taken"]
        # At least: "done" of step 1, the unbacked read, "done" of step 2 (the "idle" exits
        # race with this read of the counters).
        assert after["mmio_exits"] - before["mmio_exits"] >= 3
        # A single-counter read agrees with the bulk read, give or take the idle exits the
        # running vCPU thread may take in between: counters only grow.
        assert vcpu_stats.get("exits") >= after["exits"] > before["exits"]
        pages = vm_stats.get("pages_4k")
        assert pages >= 1
        m.set_user_memory_region(0, 0, 0x100000, 0, 0)  # delete: zap-all quirk zaps everything
        assert vm_stats.get("mmu_shadow_zapped") > 0
