"""The steps of the steppable protocol: every point where shared state is touched.

Design. The kernel's races live between two reads of shared state (the memslots pointer, the
generation, an SPTE word, ``mmu_lock``).  The fault paths and the memslot update are therefore
written as generators that ``yield`` a :class:`Step` *before* each access to shared state.  Three
drivers consume the same generators:

* the plain run exhausts them at once (:func:`run_to_completion`);
* the timed simulation (``kvmmu.sim``) charges each step's cost and interleaves threads by time;
* the interleaving explorer (``kvmmu.check``) chooses at every yield who moves next.

A yielded step is a promise about what the thread will do when resumed, so a driver can decide
whether resuming it is useful: a thread that yields :attr:`Step.MMU_LOCK` while another thread holds
``mmu_lock`` would only spin, one that yields :attr:`Step.SRCU_SYNC` would only wait.  Blocking steps
re-check their condition after every resume and yield again while it is false, so resuming a blocked
thread is always *safe*, merely useless.  ``kvmmu.vm.VM.is_blocked`` answers the question.

Prior art: this is the "yield at every shared access" discipline of model checkers for
concurrent code such as CHESS (Musuvathi and Qadeer, 2007) and of Python's own deterministic
schedulers in trio's test harness, applied to the functions of ``arch/x86/kvm/mmu/mmu.c`` and
``virt/kvm/kvm_main.c``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from enum import IntEnum
from typing import Any, Final, TypeVar


class Step(IntEnum):
    """What a protocol thread is about to do. Names follow the kernel's functions."""

    # --- vCPU side -------------------------------------------------------------------------
    GUEST_ACCESS = 1  # hardware walk of the SPTEs from the vCPU's root (no trap if it hits)
    READ_SPTE_LOCKLESS = 2  # handle_mmio_page_fault(): walk_shadow_page_lockless_begin/end
    READ_GENERATION = 3  # kvm_vcpu_memslots(vcpu)->generation (a re-read of the pointer)
    READ_MEMSLOTS = 4  # srcu_dereference(kvm->memslots): kvm_vcpu_gfn_to_memslot()
    VCPU_CACHE = 5  # vcpu_cache_mmio_info() / vcpu_match_mmio_gpa(): vCPU-local
    MMU_LOCK = 6  # write_lock(&kvm->mmu_lock) (blocking)
    WRITE_SPTE = 7  # mmu_spte_set() / mark_mmio_spte() under mmu_lock
    MMU_UNLOCK = 8  # write_unlock(&kvm->mmu_lock)
    RETRY = 9  # RET_PF_RETRY: the guest re-executes the access
    EXIT_TO_USERSPACE = 10  # KVM_EXIT_MMIO to the VMM
    EMULATE = 11  # the instruction emulator performs the access
    ROOT_RELOAD = 12  # kvm_mmu_reload(): a new root after KVM_REQ_MMU_FREE_OBSOLETE_ROOTS
    MMU_READ_LOCK = 13  # read_lock(&kvm->mmu_lock) (blocking): TDP MMU faults, 5.12+
    MMU_READ_UNLOCK = 14  # read_unlock(&kvm->mmu_lock)
    # --- memslot update side (the VMM thread) ------------------------------------------------
    PUBLISH_MEMSLOTS = 20  # rcu_assign_pointer(kvm->memslots[as_id], slots)
    SRCU_SYNC = 21  # synchronize_srcu_expedited(&kvm->srcu) (blocking)
    WRITE_GENERATION = 22  # slots->generation = gen (after the grace period)
    ZAP_SPTE = 23  # one SPTE cleared while zapping (walk, slot zap, wrap zap)
    WALK_SHADOW_PAGE = 24  # one shadow page visited by a walk under mmu_lock
    FREE_SHADOW_PAGE = 25  # kvm_mmu_commit_zap_page(): one page freed
    BUMP_MMU_VALID_GEN = 26  # kvm_mmu_zap_all_fast(): kvm->arch.mmu_valid_gen++ and reload
    WRITE_PROTECT = 27  # kvm_mmu_slot_remove_write_access(): one SPTE made read-only
    VISIT_SHADOW_PAGE = 28  # one active-list entry visited (3.10's walk, kvm_mmu_zap_all's loop)


# Every member as a module constant, for the hot paths (``faults.py``, ``sync.py``): on Python
# 3.11 ``Step.X`` goes through the enum metaclass and costs about 8x a module global, and the plain
# run evaluates one per yield (a third of its time, measured with benchmarks/bench_model.py).
GUEST_ACCESS: Final = Step.GUEST_ACCESS
READ_SPTE_LOCKLESS: Final = Step.READ_SPTE_LOCKLESS
READ_GENERATION: Final = Step.READ_GENERATION
READ_MEMSLOTS: Final = Step.READ_MEMSLOTS
VCPU_CACHE: Final = Step.VCPU_CACHE
MMU_LOCK: Final = Step.MMU_LOCK
WRITE_SPTE: Final = Step.WRITE_SPTE
MMU_UNLOCK: Final = Step.MMU_UNLOCK
RETRY: Final = Step.RETRY
EXIT_TO_USERSPACE: Final = Step.EXIT_TO_USERSPACE
EMULATE: Final = Step.EMULATE
ROOT_RELOAD: Final = Step.ROOT_RELOAD
MMU_READ_LOCK: Final = Step.MMU_READ_LOCK
MMU_READ_UNLOCK: Final = Step.MMU_READ_UNLOCK
PUBLISH_MEMSLOTS: Final = Step.PUBLISH_MEMSLOTS
SRCU_SYNC: Final = Step.SRCU_SYNC
WRITE_GENERATION: Final = Step.WRITE_GENERATION
ZAP_SPTE: Final = Step.ZAP_SPTE
WALK_SHADOW_PAGE: Final = Step.WALK_SHADOW_PAGE
FREE_SHADOW_PAGE: Final = Step.FREE_SHADOW_PAGE
BUMP_MMU_VALID_GEN: Final = Step.BUMP_MMU_VALID_GEN
WRITE_PROTECT: Final = Step.WRITE_PROTECT
VISIT_SHADOW_PAGE: Final = Step.VISIT_SHADOW_PAGE

#: Steps at which a thread may wait for another: a driver asks the VM whether they can proceed.
BLOCKING_STEPS = frozenset({Step.MMU_LOCK, Step.MMU_READ_LOCK, Step.SRCU_SYNC})

T = TypeVar("T")

#: The type of every protocol generator: yields steps, returns its result.
Steps = Generator[Step, None, T]


def _capture(gen: Generator[Step, None, T], box: list[T]) -> Generator[Step, None, None]:
    box.append((yield from gen))


def run_to_completion(gen: Generator[Step, None, T]) -> T:
    """Drive a protocol generator with no interleaving (the plain run) and return its result.

    The fast loop: a C-level ``for`` over a ``yield from`` delegation, no per-step Python work
    (about 20% faster per step than calling ``next()`` in a ``try`` loop).
    """
    box: list[T] = []
    for _ in _capture(gen, box):
        pass
    return box[0]


def exhaust(gen: Generator[Step, None, Any]) -> None:
    """Run a protocol generator whose result is not needed (``deque(gen, maxlen=0)``)."""
    deque(gen, maxlen=0)
