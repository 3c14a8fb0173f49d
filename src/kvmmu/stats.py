"""Measures of work derived from KVM-named counters, defined once for every report.

Design. The counters themselves are KVM's (``kvm_vm_stat``/``kvm_vcpu_stat`` names, kept by the
MMU and the vCPUs and merged by :attr:`kvmmu.vm.VM.stats`).  Comparing invalidation schemes needs
a few sums over them — how many shadow pages an invalidation touched, how much work was done while
holding ``mmu_lock`` — and every table, CSV and plot must add them up the same way, so the sums
live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping


def shadow_pages_walked(stats: Mapping[str, int]) -> int:
    """Pages an invalidation visited: walked looking for MMIO SPTEs, or zapped."""
    return stats.get("invalidation_pages_walked", 0) + stats.get("mmu_shadow_zapped", 0)


def lock_work(stats: Mapping[str, int]) -> int:
    """Units of work done under ``mmu_lock``: acquisitions (for write or, TDP MMU, for read), plus
    pages and SPTEs zapped, walked or write-protected."""
    return (stats.get("mmu_lock_acquisitions", 0) + stats.get("mmu_lock_read_acquisitions", 0)
            + stats.get("sptes_zapped", 0)
            + stats.get("mmu_shadow_zapped", 0) + stats.get("invalidation_pages_walked", 0)
            + stats.get("sptes_write_protected", 0))
