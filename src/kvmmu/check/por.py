"""Partial-order reduction for the explorer: sleep sets whose every cut the state cache certifies.

Design. Two steps of different threads that touch disjoint shared state commute: running them in
either order reaches the same state, so a search that has explored one order need not explore
the other (Mazurkiewicz traces; the *sleep sets* of Godefroid, "Partial-Order Methods for the
Verification of Concurrent Systems", LNCS 1032, 1996, ch. 5).  A thread's transition goes to
sleep in the sibling branches explored after it, and wakes when a dependent transition runs.

Dependence comes from footprints.  The shared state is kept in parts
(:class:`kvmmu.check.keys.Components`): S (shadow pages, ``mmu_valid_gen``), M (memslots,
generations, update in progress), L (``mmu_lock`` taken), Q (an SRCU grace period waited for),
H (host memory), and per vCPU i its MMIO cache, root and lock hold (V_i) and its SRCU read
section (R_i).  What a step *writes* is observed: the parts whose hash differs after the step.
What it *reads* is over-approximated: a vCPU may read the global parts its step kind reaches
(:data:`VCPU_STEP_READS`, read off the protocol code) and its own V_i and R_i; the VMM every
global part and every R_i (it waits for SRCU readers).  Two steps are independent when neither
writes what the other reads or writes; so vCPU steps that touch only their own cache and read
section commute with each other, and a vCPU step that reads no memslots and writes only its cache
commutes with a VMM step that writes only memslots.  Thread-local state (the generator frames) is
private by construction.

Sleep sets are unsound when naively combined with state caching (a state first reached with a
large sleep set is then never explored for the sleeping transitions: Godefroid, ch. 6) and with
preemption bounding (the commuted order may need more preemptions: Coons, Musuvathi and
McKinley, "Bounded Partial-Order Reduction", OOPSLA 2013).  Here a sleeping transition is not
simply dropped: it carries the world hash it leads to, known from the order already explored
(an edge map of world hash and thread to successor world hash, filled as steps run), and it is
skipped only if that successor is in the visited set with no more preemptions (and depth) than
taking it now would use — exactly the case in which taking it would be cut by the state cache at
once.  Otherwise it is taken like any other transition.  The same edge map also cuts a transition
from a world reached before with another scheduler context (same world, other "last thread").
Every thread's steps enter the map: a step is a function of the key, the VMM's zap loops too
(their iterators are keyed, and so is the order of the active list they copy; until that order
was keyed only vCPU steps could enter, and VMM alternatives that led to explored states were
replayed to find out).  ``verify_sleep`` replays every cut to check it.  The reduction therefore removes runs,
never states: the reduced search reaches the same set of states as the unreduced one, which the
tests check configuration by configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from kvmmu.check.keys import GLOBAL_PARTS, H, L, M, Q, S
from kvmmu.mmu.steps import Step

if TYPE_CHECKING:
    from kvmmu.check.world import World

GLOBAL_MASK: Final = (1 << GLOBAL_PARTS) - 1
#: Edges kept at most (about 150 bytes each); past it, sleepers whose successor is unknown wake.
MAX_EDGES: Final = 4_000_000


def vcpu_parts(i: int) -> int:
    """The bits of vCPU i's parts, V_i and R_i."""
    return 0b11 << (GLOBAL_PARTS + 2 * i)


_S, _M, _L, _Q, _H = (1 << S), (1 << M), (1 << L), (1 << Q), (1 << H)

#: The global parts a vCPU's step may read, by the step it is about to take (None: it begins an
#: access), up to its next yield — read off ``kvmmu.mmu.faults`` segment by segment:
#: ``access()``'s prologue reads ``stable_epoch`` and the root's generation, and an emulated
#: access enters SRCU (the epoch); the hardware walk reads SPTEs and host memory, takes SRCU on a
#: trap, and a completed access is judged against the memslots; the cache steps compare the
#: memslot generation; the lockless SPTE read and the root checks after a retry or an unlock read
#: pages; the locked walk reads the lock and pages; the emulator's memslot read goes on to host
#: memory and to the oracle.  A step kind not listed (a new one) reads everything.
VCPU_STEP_READS: Final[dict[Step | None, int]] = {
    None: _M | _S | _Q,
    Step.GUEST_ACCESS: _S | _H | _M | _Q,
    Step.VCPU_CACHE: _M,
    Step.READ_GENERATION: _M,
    Step.READ_SPTE_LOCKLESS: _S,
    Step.READ_MEMSLOTS: _M | _H,
    Step.MMU_LOCK: _L | _S,
    Step.WRITE_SPTE: _S,
    Step.ZAP_SPTE: _S,
    Step.MMU_UNLOCK: _L | _S,
    Step.MMU_READ_LOCK: _L | _S,  # the TDP MMU's read side: the same lock word
    Step.MMU_READ_UNLOCK: _L | _S,
    Step.RETRY: _S,
    Step.EMULATE: 0,
    Step.EXIT_TO_USERSPACE: _M,
    Step.ROOT_RELOAD: _S,
}


def reads_of(world: World, t: int) -> int:
    """The parts thread ``t``'s next step may read (see the module docstring)."""
    n = len(world.vcpus)
    if t < n:
        return VCPU_STEP_READS.get(world.threads[t].pending, GLOBAL_MASK) | vcpu_parts(t)
    readers = 0
    for i in range(n):
        readers |= 1 << (GLOBAL_PARTS + 2 * i + 1)
    return GLOBAL_MASK | readers  # the VMM waits for every SRCU reader


def footprint(before: list[int], after: list[int]) -> int:
    """The parts a step wrote: those whose hash differs after it."""
    mask = 0
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if a != b:
            mask |= 1 << i
    return mask


def independent(t: int, rt: int, wt: int, u: int, ru: int, wu: int) -> bool:
    """Whether thread t's step (reading ``rt``, writing ``wt``) and thread u's commute."""
    return t != u and not wt & (ru | wu) and not wu & rt



class Edges:
    """World hash and thread -> the world hash its step leads to, and the scheduler context there.

    Steps are deterministic, so this is a fact about the model, learnt as steps run.  The context
    after thread t's step is ``t`` (switching away from it would be a preemption), ``None`` (it is
    free) or ``False`` (not known: a sleep set's commuted order whose thread waits at a blocking
    step); a step that ran records the context it found, which a blocking step's own code cannot
    tell (blocked or not is a property of the state it reached).
    """

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: dict[int, int] = {}

    def add(self, world_hash: int, thread: int, successor: int,
            context: int | bool | None) -> None:
        if len(self._map) < MAX_EDGES:
            code = 0 if context is None else (2 if context is False else 1)
            self._map[(world_hash << 6) | thread] = (successor << 2) | code

    def get(self, world_hash: int, thread: int) -> int | None:
        """The successor's world hash, if known."""
        v = self._map.get((world_hash << 6) | thread)
        return None if v is None else v >> 2

    def get_full(self, world_hash: int, thread: int) -> tuple[int, int | bool | None] | None:
        """The successor's world hash and the scheduler context there, if known."""
        v = self._map.get((world_hash << 6) | thread)
        if v is None:
            return None
        code = v & 3
        return v >> 2, (None if code == 0 else (thread if code == 1 else False))

    def __len__(self) -> int:
        return len(self._map)
