"""Invalidation strategies: each one a named kernel, as a value the protocol code reads.

Design. "A kernel is a value" (``architecture.md``): a :class:`Strategy` is a frozen profile of
one kernel range — its SPTE layout, how its memslot generation steps and where it wraps, whether
its per-vCPU MMIO cache carries a generation, what CREATE / DELETE / MOVE zap, how a fault on a
slot being deleted ends, how many slots and address spaces it has — plus the sources it rests on.
:class:`X86Arch` implements the memslot update's architecture hooks (``kvm_arch_*`` of
``arch/x86/kvm/x86.c``) by reading those fields; code never asks for a kernel by name.  A broken
variant is the same value with one safeguard turned off, so the explorer and the oracle test the
very code the correct strategies run.  Historically buggy kernels are modelled *with* their bugs
and say so in ``known_bugs``; the report marks them instead of hiding them.

The table, :data:`STRATEGIES`, is what ``kvmmu strategies`` prints.  Sources are cited per field
in each entry (kernel version, file, function, commit); the design note's sections 1-4 summarise
them.  Prior art for "kernel as a table of behaviours": the kernel's own ``kvm_x86_ops`` /
quirk bits, and QEMU's per-machine-version compat properties.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from kvmmu.memslots import (
    ADDS_BACKING,
    DELETE,
    FLAGS_ONLY,
    KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS,
    Change,
    Memslot,
    MemslotPlan,
)
from kvmmu.mmu.pages import BATCH_ZAP_PAGES
from kvmmu.mmu.steps import FREE_SHADOW_PAGE, VISIT_SHADOW_PAGE, Steps

if TYPE_CHECKING:
    from kvmmu.mmu.context import Kvm

#: What a CREATE or MOVE commit zaps (``kvm_arch_commit_memory_region``): nothing, every page
#: the slow way (``kvm_mmu_zap_all``, <= 3.9), the 3.10 walk of the active list for pages
#: flagged ``mmio_cached``, or every page the fast way (the hypothetical zap-all-fast).
CREATE_ZAPS: Final = (None, "all-slow", "mmio-cached", "all-fast")
#: What ``kvm_arch_flush_shadow_memslot`` does for DELETE and MOVE: everything fast (3.11+; since
#: 6.x the default ``KVM_X86_QUIRK_SLOT_ZAP_ALL``), only the slot's SPTEs (5.1-5.2, or the quirk
#: disabled), or everything the slow way (<= 3.10, ``kvm_mmu_zap_all``).
SLOT_ZAPS: Final = ("all", "slot", "all-slow")
#: Where the MMIO generation wrap is tested: ``kvm_arch_commit_memory_region`` (3.11) or
#: ``kvm_arch_memslots_updated`` (3.12+).
WRAP_CHECKS: Final = ("commit", "memslots-updated")
#: How a fault on a ``KVM_MEMSLOT_INVALID`` slot ends: as MMIO (before 5.13: the pfn lookup
#: fails, ``KVM_PFN_NOSLOT``, an MMIO SPTE is installed) or retried (e0c378684b65, 5.13).
INVALID_SLOT_FAULTS: Final = ("mmio", "retry")
#: Which TDP MMU a kernel has (``Strategy.tdp_mmu``).
TDP_MMUS: Final = ("", "5.12", "5.13")


@dataclass(frozen=True, slots=True)
class Strategy:
    """One kernel's way of keeping stale MMIO SPTEs from matching: a profile, read by the code."""

    name: str
    summary: str
    kernels: str  # the kernel versions this profile models, e.g. "3.11" or "5.13 - 6.12"
    era: str  # how the memslot generation steps: "2013", "2014", "2015", "modern" (memslots.py)
    layout: str  # SPTE layout (spte.LAYOUTS)
    mmio_generation: bool  # MMIO SPTEs carry and check the generation
    create_zap: str | None  # CREATE_ZAPS: what a CREATE or MOVE commit zaps
    slot_zap: str  # SLOT_ZAPS: what DELETE / MOVE flush (a VM may override: the quirk)
    wrap_check: str = "memslots-updated"  # WRAP_CHECKS
    wrap_zap: bool = True  # zap everything when the MMIO generation wraps
    cache_generation: bool = True  # the per-vCPU MMIO cache carries and checks a generation
    invalid_slot_fault: str = "retry"  # INVALID_SLOT_FAULTS
    #: ``RET_MMIO_PF_BUG``: on a direct MMU, an MMIO fault whose lockless walk finds a present
    #: non-MMIO SPTE ends in the "EPT: Misconfiguration" dump and ``KVM_EXIT_UNKNOWN``.
    mmio_pf_bug: bool = False
    #: ``mmu_valid_gen`` is one bit that toggles (ca333add6933, 5.4) instead of a counter.
    valid_gen_toggles: bool = True
    #: Turning dirty logging off zaps collapsible 4 KiB SPTEs so huge pages come back
    #: (``kvm_mmu_zap_collapsible_sptes``, 3ea3b7fa9af0, 4.1).
    zap_collapsible: bool = True
    default_address_spaces: int = 2  # x86 with SMM (KVM_ADDRESS_SPACE_NUM 2 since 4.2)
    max_address_spaces: int = 2
    nr_memslots: int = 32764  # KVM_USER_MEM_SLOTS
    #: The overlap check sees private slots (the APIC access page's at 0xFEE00000: EEXIST); 3.x
    #: and 4.2-era kernels skipped ``id >= KVM_USER_MEM_SLOTS`` (v4.4.121 no longer does).
    private_slot_overlap: bool = True
    #: What the wrap zaps: everything fast, or 5.1's ``__kvm_mmu_zap_all(kvm, true)`` (the
    #: mmio_cached walk with lock breaks).
    wrap_zap_kind: str = "all-fast"
    #: 3.9 had no change type at commit: it zapped when ``npages && old.base_gfn != new base``
    #: (so a CREATE at gpa 0 zapped nothing); 3.10 tested ``change == CREATE || MOVE``.
    create_zap_by_base: bool = False
    #: When the CREATE/MOVE zap runs: at commit, after the final generation (3.9, 3.10), or in
    #: ``kvm_arch_memslots_updated`` while the generation still says "in progress" (the modern
    #: hook the hypothetical zap-all-fast is built on: a vCPU that read a not-yet-zapped SPTE
    #: cannot cache it under the final generation -- a window ``kvmmu check`` found).
    create_zap_at: str = "commit"
    #: What ``mark_mmio_spte``'s access field shows: ``access & (ACC_WRITE_MASK | ACC_USER_MASK)``
    #: (3.x to 5.1) or ``access & shadow_mmio_access_mask`` (later; 0 under EPT).
    trace_access_write_user: bool = False
    #: ``kvm_mmu_max_gfn()`` bounds new slots (EINVAL) in ``kvm_arch_prepare_memory_region``.
    max_gfn_check: bool = True
    #: Memslots kept in one sorted array, copied whole by every update (``kvm_dup_memslots()``
    #: and ``update_memslots()``, v5.12 virt/kvm/kvm_main.c) and searched linearly by the mmu
    #: notifier (``kvm_handle_hva_range()``): O(n) per update, as every kernel before 5.17.  From
    #: 5.17 (a54d806688fe and its series, Maciej S. Szmigiero) two sets of interval tree, rbtree
    #: and hash are swapped: O(log n).  The timed model charges ``memslot_copy_per_slot_ns``.
    memslot_array: bool = True
    #: Obsolete pages ``kvm_zap_obsolete_pages()`` zaps before it tests for a lock break:
    #: ``BATCH_ZAP_PAGES`` (10) in 3.11 - 5.0 (5304b8d37c2a) and again from 5.4 (the 5.3 revival,
    #: 002c5f73c508, tested ``need_resched() || spin_needbreak()`` at every page, i.e. 0).  The
    #: break itself happens only on contention (``MmuLock.needbreak``).
    zap_break_batch: int = BATCH_ZAP_PAGES
    #: This kernel's TDP MMU (``arch/x86/kvm/mmu/tdp_mmu.c``, ``kvm.tdp_mmu``), one of TDP_MMUS:
    #: ``""`` none modelled (it came in 5.10, faulting under the write lock until 5.11);
    #: ``"5.12"``: faults take ``mmu_lock`` for read and install SPTEs with cmpxchg (a2855afc7ee8),
    #: ``kvm_mmu_zap_all_fast()`` zaps the TDP MMU under the write lock (v5.12.9 ``mmu.c``:
    #: ``kvm_tdp_mmu_zap_all()`` before ``write_unlock``); ``"5.13"``: the roots are only marked
    #: invalid under the write lock and torn down after it is dropped, under the read lock
    #: (b7cccd397f31; v6.1.20 and v6.8 ``kvm_mmu_zap_all_fast()`` ->
    #: ``kvm_tdp_mmu_zap_invalidated_roots()``).
    tdp_mmu: str = ""
    #: The TDP MMU is on by default on an EPT/NPT host (5.15, 71ba3f3189c7).
    tdp_mmu_default: bool = False
    commits: tuple[str, ...] = ()  # the commits that define this behaviour
    sources: tuple[str, ...] = ()  # version, file, function: where each field was read
    #: Bugs the modelled kernel really had (one line each, with the fixing commit); non-empty marks
    #: a historically buggy strategy whose oracle violations are expected, not a failed run.
    known_bugs: tuple[str, ...] = ()
    hypothetical: bool = False  # no kernel ran it: a proposal, modelled for comparison
    broken: bool = False  # a deliberately broken variant (NAME+VARIANT): no kernel ran it

    def __post_init__(self) -> None:
        if self.create_zap not in CREATE_ZAPS:
            raise ValueError(f"create_zap must be one of {CREATE_ZAPS}")
        if self.slot_zap not in SLOT_ZAPS:
            raise ValueError(f"slot_zap must be one of {SLOT_ZAPS}")
        if self.wrap_check not in WRAP_CHECKS:
            raise ValueError(f"wrap_check must be one of {WRAP_CHECKS}")
        if self.invalid_slot_fault not in INVALID_SLOT_FAULTS:
            raise ValueError(f"invalid_slot_fault must be one of {INVALID_SLOT_FAULTS}")
        if self.tdp_mmu not in TDP_MMUS:
            raise ValueError(f"tdp_mmu must be one of {TDP_MMUS}")
        if self.wrap_zap_kind not in ("all-fast", "mmio-cached"):
            raise ValueError("wrap_zap_kind must be all-fast or mmio-cached")

    @property
    def expected_violations(self) -> bool:
        """Whether the oracle may catch this strategy: a broken variant or a buggy kernel."""
        return self.broken or bool(self.known_bugs)

    @property
    def status(self) -> str:
        """``correct``, ``historically buggy``, ``hypothetical`` or ``broken variant``."""
        if self.broken:
            return "broken variant"
        if self.known_bugs:
            return "historically buggy"
        if self.hypothetical:
            return "hypothetical"
        return "correct"

    @property
    def label(self) -> str:
        """The name with its status, as reports print it."""
        if self.broken:
            return f"{self.name} (broken variant)"
        if self.hypothetical:
            return f"{self.name} (hypothetical)"
        if self.known_bugs:
            return f"{self.name} (historically buggy)"
        return self.name


# The kernels.  Shared citations, written once:
_V39_COMMIT = ("v3.9 arch/x86/kvm/x86.c kvm_arch_commit_memory_region(): CREATE and MOVE call "
               "kvm_mmu_zap_all() and kvm_reload_remote_mmus()")
_V39_FLUSH = ("v3.9/v3.10 arch/x86/kvm/x86.c kvm_arch_flush_shadow_memslot() -> "
              "kvm_arch_flush_shadow_all() -> kvm_mmu_zap_all() (DELETE and MOVE)")
_CACHE_UNTAGGED = ("v3.9-v3.17 arch/x86/kvm/x86.h vcpu_cache_mmio_info() / vcpu_match_mmio_gpa(): "
                   "no generation; mmu.c handle_mmio_page_fault_common() starts with "
                   "quickly_check_mmio_pf()")
_PF_BUG = ("v3.11 arch/x86/kvm/mmu.c handle_mmio_page_fault_common(): direct && "
           "!check_direct_spte_mmio_pf(spte) -> RET_MMIO_PF_BUG; vmx.c handle_ept_misconfig() "
           "dumps the SPTE and exits with KVM_EXIT_UNKNOWN")
_NOSLOT = ("before e0c378684b65 (5.13) a fault on a KVM_MEMSLOT_INVALID slot gets "
           "KVM_PFN_NOSLOT (__gfn_to_hva_many() refuses invalid slots) and installs an MMIO SPTE")
_BUG_CACHE = ("stale per-vCPU MMIO cache: quickly_check_mmio_pf() answers MMIO for a gfn a new "
              "slot backs (fixed by 56f17dd3fbc4, 3.18)")
_BUG_RACE = ("update race: a vCPU looks the gfn up in the old memslots and tags its MMIO SPTE with "
             "the new generation, which then matches (fixed by ee3d1570b584, 3.18)")
_BUG_PF = ("RET_MMIO_PF_BUG: an MMIO fault that finds the SPTE already replaced by a RAM SPTE "
           "ends in KVM_EXIT_UNKNOWN")
_BUG_WRAP_ONE_AS = ("the wrap test looks for a generation of exactly 0, which only one of the two "
                    "address spaces ever holds: the other wraps without a zap (fixed by 'KVM: "
                    "x86/mmu: Detect MMIO generation wrap in any address space', 5.1)")
_BUG_WRAP_LATE = ("wrap zap after the generation is final: in that window a vCPU can cache an MMIO "
                  "SPTE of the previous cycle under the wrapped generation (fixed by 152482580a1b, 5.1)")

STRATEGIES: Final[dict[str, Strategy]] = {s.name: s for s in (
    Strategy(
        "zap-all-3.9", "CREATE/MOVE and DELETE free every shadow page under mmu_lock",
        trace_access_write_user=True,
        kernels="<= 3.9", era="2013", layout="2013", mmio_generation=False,
        create_zap="all-slow", create_zap_by_base=True, slot_zap="all-slow",
        cache_generation=False, invalid_slot_fault="mmio", mmio_pf_bug=True,
        valid_gen_toggles=False, zap_collapsible=False, default_address_spaces=1,
        max_address_spaces=1, nr_memslots=125, private_slot_overlap=False, max_gfn_check=False,
        commits=("'KVM: MMU: mmio page fault support' (Xiao Guangrong, 3.1: MMIO SPTEs)",),
        sources=(_V39_COMMIT, _V39_FLUSH, _CACHE_UNTAGGED, _PF_BUG, _NOSLOT,
                 "v3.9 arch/x86/include/asm/kvm_host.h KVM_USER_MEM_SLOTS 125"),
        known_bugs=(_BUG_CACHE, _BUG_PF)),
    Strategy(
        "zap-mmio-3.10", "CREATE/MOVE walk the whole active list, zapping pages flagged mmio_cached",
        trace_access_write_user=True,
        kernels="3.10", era="2013", layout="2013", mmio_generation=False,
        create_zap="mmio-cached", slot_zap="all-slow", cache_generation=False,
        invalid_slot_fault="mmio", mmio_pf_bug=True, valid_gen_toggles=False,
        zap_collapsible=False, default_address_spaces=1, max_address_spaces=1, nr_memslots=125,
        private_slot_overlap=False, max_gfn_check=False,
        commits=("982b3394dd23 (3.10: kvm_mmu_zap_mmio_sptes(), Takuya Yoshikawa)",),
        sources=("v3.10 arch/x86/kvm/mmu.c kvm_mmu_zap_mmio_sptes(): list_for_each_entry_safe over "
                 "active_mmu_pages, 'if (!sp->mmio_cached) continue; if "
                 "(kvm_mmu_prepare_zap_page(...)) goto restart;' under mmu_lock, no lock break",
                 "v3.10 arch/x86/kvm/x86.c kvm_arch_commit_memory_region(): CREATE and MOVE only",
                 _V39_FLUSH, _CACHE_UNTAGGED, _PF_BUG, _NOSLOT),
        known_bugs=(_BUG_CACHE, _BUG_PF)),
    Strategy(
        "generation-3.11", "the seed: generation in the MMIO SPTE, one bump per publish",
        trace_access_write_user=True,
        kernels="3.11", era="2013", layout="2013", mmio_generation=True, create_zap=None,
        slot_zap="all", wrap_check="commit", cache_generation=False, invalid_slot_fault="mmio",
        mmio_pf_bug=True, valid_gen_toggles=False, zap_collapsible=False,
        default_address_spaces=1, max_address_spaces=1, nr_memslots=125,
        private_slot_overlap=False, max_gfn_check=False,
        commits=("f8f559422b6c 'KVM: MMU: fast invalidate all mmio sptes'",
                 "5304b8d37c2a (fast invalidate all pages: the wrap and slot-flush zap)",
                 "a8eca9dcc656 'KVM: MMU: drop kvm_mmu_zap_mmio_sptes'"),
        sources=("v3.11 arch/x86/kvm/mmu.c kvm_current_mmio_generation(): (memslots->generation + "
                 "MMIO_MAX_GEN - 150) & MMIO_GEN_MASK, MMIO_MAX_GEN = MMIO_GEN_MASK = 0x7FFFF",
                 "v3.11 arch/x86/kvm/mmu.c kvm_mmu_invalidate_mmio_sptes(): zap all (fast) when "
                 "kvm_current_mmio_generation() >= MMIO_MAX_GEN - 1; called from "
                 "kvm_arch_commit_memory_region() only, for every change",
                 "v3.11 virt/kvm/kvm_main.c install_new_memslots(): generation + 1 per publish",
                 _CACHE_UNTAGGED, _PF_BUG, _NOSLOT),
        known_bugs=(_BUG_CACHE, _BUG_RACE, _BUG_PF)),
    Strategy(
        "generation-3.18", "the 2014 fixes: odd generation while in progress, tagged vCPU cache",
        trace_access_write_user=True,
        kernels="3.18 - 4.1", era="2014", layout="2014", mmio_generation=True, create_zap=None,
        slot_zap="all", cache_generation=True, invalid_slot_fault="mmio",
        valid_gen_toggles=False, zap_collapsible=False, default_address_spaces=1,
        max_address_spaces=1, nr_memslots=125, private_slot_overlap=False, max_gfn_check=False,
        commits=("56f17dd3fbc4 'kvm: x86: fix stale mmio cache bug'",
                 "ee3d1570b584 'kvm: fix potentially corrupt mmio cache'"),
        sources=("v3.18 virt/kvm/kvm_main.c install_new_memslots(): generation + 1 (odd) before "
                 "rcu_assign_pointer, ++ after synchronize_srcu_expedited, then "
                 "kvm_arch_memslots_updated(); kvm_create_vm(): generation = -150",
                 "v3.18 arch/x86/kvm/mmu.c: MMIO_GEN_SHIFT 20, MMIO_SPTE_GEN_LOW_SHIFT 2, "
                 "MMIO_GEN_LOW_MASK (1 << 10) - 2 (bit 0 never stored); wrap when "
                 "kvm_current_mmio_generation(kvm) == 0; check_direct_spte_mmio_pf() gone "
                 "(present in 3.17)",
                 "v3.18 arch/x86/kvm/x86.h vcpu_match_mmio_gen(): vcpu->arch.mmio_gen == "
                 "kvm_memslots(kvm)->generation", _NOSLOT),
        known_bugs=(_BUG_WRAP_LATE,)),
    Strategy(
        "generation-4.2", "two address spaces (SMM), each at -150 and +2 per update",
        trace_access_write_user=True,
        kernels="4.2 - 4.4", era="2014", layout="2014", mmio_generation=True, create_zap=None,
        slot_zap="all", cache_generation=True, invalid_slot_fault="mmio", valid_gen_toggles=False,
        nr_memslots=509, max_gfn_check=False,
        commits=("f481b069e674 'KVM: implement multiple address spaces'",),
        sources=("v4.4.121 virt/kvm/kvm_main.c: every address space starts at -150 and steps "
                 "+1, ++ (net +2), so the two can hold the same generation",
                 "v4.4.121 __kvm_set_memory_region(): the overlap check includes private slots "
                 "(4.2-era copies still skipped id >= KVM_USER_MEM_SLOTS); KVM_USER_MEM_SLOTS 509",
                 "v4.4 arch/x86/kvm/x86.h vcpu_cache_mmio_info(): kvm_memslots(vcpu->kvm) "
                 "(address space 0)", _NOSLOT),
        known_bugs=(_BUG_WRAP_LATE,)),
    Strategy(
        "generation-4.19", "address spaces split the generation space (0, 4, 8 / 2, 6, 10)",
        trace_access_write_user=True,
        kernels="4bd518f1598d (after 4.4) - 5.0", era="2015", layout="2014",
        mmio_generation=True, create_zap=None, slot_zap="all", cache_generation=True,
        invalid_slot_fault="mmio", valid_gen_toggles=False, nr_memslots=509, max_gfn_check=False,
        commits=("4bd518f1598d 'KVM: use separate generations for each address space' (between "
                 "v4.4 and v4.19; release not pinned)",),
        sources=("v4.19 virt/kvm/kvm_main.c kvm_create_vm(): slots->generation = i * 2 - 150; "
                 "install_new_memslots(): + 1 (odd), then += KVM_ADDRESS_SPACE_NUM * 2 - 1",
                 "v4.19 arch/x86/kvm/mmu.c kvm_mmu_invalidate_mmio_sptes(): zap when "
                 "(slots->generation & MMIO_GEN_MASK) == 0", _NOSLOT),
        known_bugs=(_BUG_WRAP_LATE, _BUG_WRAP_ONE_AS)),
    Strategy(
        "generation-5.1", "KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS flag, step by address spaces",
        trace_access_write_user=True,
        kernels="5.1 - 5.2", era="modern", layout="2013", mmio_generation=True,
        create_zap=None, slot_zap="slot", wrap_zap_kind="mmio-cached", invalid_slot_fault="mmio",
        nr_memslots=509, max_gfn_check=False,
        commits=("164bf7e56c5a 'KVM: Explicitly define the \"memslot update in-progress\" bit'",
                 "152482580a1b 'KVM: Call kvm_arch_memslots_updated() before updating memslots'",
                 "'KVM: x86/mmu: Zap only the relevant pages when removing a memslot' (5.1; "
                 "reverted in 5.3 by d012a06ab1d2, which restored zap-all)",
                 "92f58b5c0181 (5.3/5.4: the wrap zaps with kvm_mmu_zap_all_fast)"),
        sources=("v5.1 virt/kvm/kvm_main.c install_new_memslots(): generation | "
                 "KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS before publishing; after the grace period "
                 "kvm_arch_memslots_updated(kvm, gen + KVM_ADDRESS_SPACE_NUM), then the write",
                 "v5.1 arch/x86/kvm/mmu.c kvm_mmu_invalidate_mmio_sptes(): gen &= "
                 "~((u64)KVM_ADDRESS_SPACE_NUM - 1); if (gen == 0) __kvm_mmu_zap_all(kvm, true): "
                 "the mmio_cached walk with cond_resched_lock",
                 "v5.1-v5.10 SPTE: generation at bits 3..11 and 52..61 (the 2013 layout; the high "
                 "half's missing shift, cae7ed3c2cb0 to 34c0f6f2695a, is not modelled)",
                 _NOSLOT)),
    Strategy(
        "generation", "modern: in-progress flag, retried invalid-slot faults (current kernels)",
        kernels="5.13 - 6.x", era="modern", layout="modern", mmio_generation=True,
        create_zap=None, slot_zap="all", memslot_array=False, tdp_mmu="5.13",
        tdp_mmu_default=True,
        commits=("164bf7e56c5a (in-progress bit)", "edea7c4fc215 (5.13: bit 11 = "
                 "SPTE_MMU_PRESENT, generation at 3..10 and 52..62)",
                 "e0c378684b65 'KVM: x86/mmu: Retry page faults that hit an invalid memslot'"),
        sources=("arch/x86/kvm/mmu/mmu.c kvm_mmu_invalidate_mmio_sptes(), "
                 "kvm_handle_noslot_fault(), handle_mmio_page_fault(), kvm_mmu_zap_all_fast()",
                 "arch/x86/kvm/mmu/spte.h MMIO_SPTE_GEN_LOW_START 3 .. HIGH_END 62",
                 "arch/x86/kvm/x86.c kvm_arch_flush_shadow_memslot(): kvm_mmu_zap_all_fast() "
                 "under KVM_X86_QUIRK_SLOT_ZAP_ALL (default), else the slot's SPTEs only",
                 "virt/kvm/kvm_main.c kvm_swap_active_memslots()",
                 "TDP MMU (default on EPT/NPT hosts from 5.15, 71ba3f3189c7): faults under "
                 "read_lock(&kvm->mmu_lock) (a2855afc7ee8, 5.12); invalidated roots torn down "
                 "after write_unlock (b7cccd397f31, 5.13; v6.8 "
                 "kvm_tdp_mmu_zap_invalidated_roots())")),
    Strategy(
        "zap-all-fast", "HYPOTHETICAL: bump mmu_valid_gen on CREATE/MOVE; every vCPU refaults all",
        kernels="never merged (Marcelo Tosatti's question, rejected in the seed mail)",
        era="modern", layout="modern", mmio_generation=False, create_zap="all-fast",
        create_zap_at="memslots-updated", slot_zap="all", hypothetical=True, memslot_array=False,
        tdp_mmu="5.13", tdp_mmu_default=True,
        sources=("Xiao Guangrong, '[PATCH 0/6] KVM: MMU: fast invalid all mmio sptes', kvm list, "
                 "March 2013: bumping the shadow-page generation on every SLOT_CREATE would make "
                 "all vCPUs fault on all memory",)),
)}

#: The names used before strategies were named by kernel (one release of grace).
ALIASES: Final[dict[str, str]] = {
    "zap-walk": "zap-all-3.9",
    "zap-mmio-cached": "zap-mmio-3.10",
    "generation-2013": "generation-3.11",
    "generation-2014": "generation-3.18",
}

#: Broken variants: ``NAME+VARIANT`` turns one safeguard (a boolean field of Strategy) off.
VARIANTS: Final[dict[str, str]] = {
    "no-wrap-zap": "wrap_zap",
    "cache-without-gen": "cache_generation",
}
#: Backports: ``NAME+BACKPORT`` applies one later fix to an older kernel, as git history had it
#: between two commits.  ``tagged-cache`` is 56f17dd3fbc4 ("kvm: x86: fix stale mmio cache bug")
#: on 3.11 -- the tree just before ee3d1570b584, where the 2014 update race stands alone.
BACKPORTS: Final[dict[str, str]] = {
    "tagged-cache": _BUG_CACHE,
}


def resolve_strategy(spec: str | Strategy) -> Strategy:
    """``"generation"`` or ``"generation-3.11+no-wrap-zap"`` -> a :class:`Strategy`.

    An old name (:data:`ALIASES`) still works and says on stderr which name replaced it.
    """
    if isinstance(spec, Strategy):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"strategy must be a name (str) or a Strategy, not {type(spec).__name__}")
    base, *variants = spec.split("+")
    if base in ALIASES:
        print(f"kvmmu: strategy {base!r} is now called {ALIASES[base]!r}; the old name will be "
              "removed in the next release", file=sys.stderr)
        base = ALIASES[base]
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {base!r}; choose from {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[base]
    for v in variants:
        if v in BACKPORTS:
            fixed = BACKPORTS[v]
            if fixed not in strategy.known_bugs:
                raise ValueError(f"{v!r} fixes a bug {strategy.name} does not have")
            strategy = replace(strategy, name=f"{strategy.name}+{v}", cache_generation=True,
                               known_bugs=tuple(b for b in strategy.known_bugs if b != fixed))
            continue
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from "
                             f"{', '.join([*VARIANTS, *BACKPORTS])}")
        if VARIANTS[v] == "wrap_zap":
            strategy = replace(strategy, wrap_zap=False)
        else:
            strategy = replace(strategy, cache_generation=False)
        strategy = replace(strategy, name=f"{strategy.name}+{v}", broken=True)
    return strategy


def strategy_choices() -> list[str]:
    """Every accepted name: the strategies, each with each variant, and the backports."""
    return [*STRATEGIES, *(f"{s}+{v}" for s in STRATEGIES for v in VARIANTS),
            *(f"{name}+{b}" for name, s in STRATEGIES.items() for b, bug in BACKPORTS.items()
              if bug in s.known_bugs)]


def mmio_generation_valid(kvm: Kvm, current: int, spte_gen: int) -> bool:
    """``check_mmio_spte()``: does an SPTE tagged ``spte_gen`` match the current generation?"""
    if not kvm.strategy.mmio_generation:
        return True
    if current & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS:
        return False
    return (current & kvm.gen_mask) == (spte_gen & kvm.gen_mask)


def generation_wrapped(kvm: Kvm, gen: int) -> bool:
    """The wrap test of ``kvm_mmu_invalidate_mmio_sptes()`` in the strategy's era."""
    mask = kvm.gen_mask
    era = kvm.strategy.era
    if era == "2013":
        return (gen & mask) >= mask - 1  # 3.11: kvm_current_mmio_generation() >= MMIO_MAX_GEN - 1
    if era in ("2014", "2015"):
        return (gen & mask) == 0
    return (gen & mask & ~(kvm.memslots.nr_as - 1)) == 0


class X86Arch:
    """The ``kvm_arch_*`` memslot hooks of ``arch/x86/kvm/x86.c`` for one VM and strategy."""

    def __init__(self, kvm: Kvm, slot_zap: str | None, who: object) -> None:
        slot_zap = kvm.strategy.slot_zap if slot_zap is None else slot_zap
        if slot_zap not in SLOT_ZAPS:
            raise ValueError(f"slot_zap must be one of {', '.join(SLOT_ZAPS)}, not {slot_zap!r}")
        self.kvm = kvm
        self.slot_zap = slot_zap
        self.who = who  # the lock owner: the VMM thread

    def flush_shadow_memslot(self, old: Memslot) -> Steps[None]:
        """``kvm_arch_flush_shadow_memslot()`` (DELETE, MOVE), with the old slot published invalid."""
        kvm = self.kvm
        if self.slot_zap == "all":
            yield from self.zap_all_fast()
        elif self.slot_zap == "all-slow":
            yield from kvm.mmu.zap_all_slow(self.who)
        else:
            yield from kvm.mmu.zap_gfn_range(self.who, old.base_gfn, old.end_gfn, old.as_id)

    def memslots_updated(self, as_id: int, gen: int, change: Change) -> Steps[None]:
        """``kvm_arch_memslots_updated()``: after the grace period; in the modern era before the
        final generation is written (152482580a1b), in 2014/2015 right after it.

        Kernels from 3.12 test the MMIO generation wrap here (``kvm_mmu_invalidate_mmio_sptes``);
        3.11 did it at commit.
        """
        kvm = self.kvm
        strategy = kvm.strategy
        if strategy.wrap_check == "memslots-updated":
            yield from self._wrap_check(gen)
        # Only a CREATE or MOVE can make an MMIO SPTE wrong, and only at the publish that adds
        # the backing (the invalid copy a MOVE publishes first backs nothing new).
        if (strategy.create_zap_at == "memslots-updated" and strategy.create_zap is not None
                and change in ADDS_BACKING
                and not any(s.invalid for s in kvm.memslots.active[as_id])):
            yield from self._create_zap()

    def commit_memory_region(self, plan: MemslotPlan) -> Steps[None]:
        """``kvm_arch_commit_memory_region()``: runs last, after the final publish."""
        kvm = self.kvm
        strategy = kvm.strategy
        new, old = plan.new, plan.old
        if (new is not None and new.dirty_logging and plan.change is not DELETE
                and not (old is not None and old.dirty_logging and plan.change is FLAGS_ONLY)):
            # kvm_mmu_slot_apply_flags(): logging just enabled (or a new/moved logged slot).
            yield from kvm.mmu.write_protect_range(self.who, new.base_gfn, new.end_gfn, new.as_id,
                                                   shared=kvm.mmu.tdp_read_slot_ops)
        elif (strategy.zap_collapsible and plan.change is FLAGS_ONLY and new is not None
              and old is not None and old.dirty_logging and not new.dirty_logging):
            # kvm_mmu_zap_collapsible_sptes(): 4 KiB leaves where a 2 MiB one may now go.
            yield from kvm.mmu.zap_collapsible(self.who, new, shared=kvm.mmu.tdp_read_slot_ops)
        if strategy.create_zap_by_base:
            # v3.9: "if (npages && old.base_gfn != mem->guest_phys_addr >> PAGE_SHIFT)"; an
            # empty old slot has base_gfn 0.
            old_base = old.base_gfn if old is not None else 0
            create_zap = new is not None and new.base_gfn != old_base
        else:
            create_zap = plan.change in ADDS_BACKING
        if create_zap and strategy.create_zap is not None and strategy.create_zap_at == "commit":
            # <= 3.10: "If memory slot is created, or moved, we need to clear all mmio sptes."
            yield from self._create_zap()
        if strategy.wrap_check == "commit":
            # 3.11: kvm_mmu_invalidate_mmio_sptes() at the end of every commit, once per ioctl.
            yield from self._wrap_check(kvm.memslots.active[plan.as_id].generation)

    def _create_zap(self) -> Steps[None]:
        zap = self.kvm.strategy.create_zap
        if zap == "all-slow":
            yield from self.kvm.mmu.zap_all_slow(self.who)
        elif zap == "mmio-cached":
            yield from self.zap_mmio_sptes()
        else:
            yield from self.zap_all_fast()

    def _wrap_check(self, gen: int) -> Steps[None]:
        kvm = self.kvm
        if kvm.strategy.mmio_generation and generation_wrapped(kvm, gen):
            kvm.mmu.stats.generation_wraps += 1
            if not kvm.strategy.wrap_zap:
                return
            if kvm.strategy.wrap_zap_kind == "mmio-cached":
                yield from self.zap_mmio_sptes(lock_break=True)
            else:
                yield from self.zap_all_fast()

    def zap_all_fast(self) -> Steps[int]:
        """``kvm_mmu_zap_all_fast()`` by the VMM thread: the MMU's generator itself, not one
        delegating to it (a frame fewer for every step of the zap to resume and be keyed by)."""
        return self.kvm.mmu.zap_all_fast(self.who)

    def zap_mmio_sptes(self, *, lock_break: bool = False) -> Steps[None]:
        """3.10's ``kvm_mmu_zap_mmio_sptes()``: walk the whole active list under ``mmu_lock``.

        The walk starts at the list head, i.e. at the newest page (``kvm_mmu_alloc_page()`` does
        ``list_add(&sp->link, &kvm->arch.active_mmu_pages)``; ``list_for_each_entry_safe``).
        Every page is visited (``WALK_SHADOW_PAGE``); a page flagged ``mmio_cached`` is zapped
        whole, RAM SPTEs too, and the walk restarts from the head of the list (``goto restart``
        after ``kvm_mmu_prepare_zap_page()`` returned non-zero), so the pages before it are
        visited again.  No lock break in 3.10: every faulting vCPU waits for the whole walk.  5.1's
        wrap zap, ``__kvm_mmu_zap_all(kvm, true)``, is the same walk with ``cond_resched_lock``
        (``lock_break``): the model yields the lock every ``BATCH_ZAP_PAGES`` visits.
        """
        mmu = self.kvm.mmu
        stats = mmu.stats
        yield from mmu.lock.acquire(self.who)
        restart = True
        while restart:
            restart = False
            for sp in reversed(list(mmu.active.values())):
                if sp.hpa not in mmu.active:
                    continue
                yield VISIT_SHADOW_PAGE
                stats.invalidation_pages_walked += 1
                if lock_break and (mmu.lock.needbreak() if mmu.lock.contention_tracked
                                   else stats.invalidation_pages_walked % BATCH_ZAP_PAGES == 0):
                    # v5.1 __kvm_mmu_zap_all(): "if (cond_resched_lock(&kvm->mmu_lock)) goto
                    # restart;" at every page, i.e. on contention.  Untracked (a plain run, the
                    # explorer) the model keeps a fixed subset of those points, every
                    # BATCH_ZAP_PAGES visits.  It goes on from here; the kernel restarts from the
                    # head, re-visiting pages it already found clean.
                    yield from mmu.lock.lock_break(self.who)
                if not sp.mmio_cached:
                    continue
                for _page, live in mmu.unlink(sp):
                    yield FREE_SHADOW_PAGE
                    mmu.drop_entries(live)
                restart = True
                break
        yield from mmu.lock.release(self.who)
