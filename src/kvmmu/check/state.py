"""The visited-set key: all shared state plus every thread's local state, as one digest.

Design. A stateless explorer with a visited set (stateful search over re-executed prefixes, as in
VeriSoft's successors and CHESS's state caching) may cut a schedule when it reaches a state seen
before — but only if "state" includes everything that decides the future.  Shared state comes from
``VM.state_key()`` (pages, their ``mmio_cached`` flags, memslots, caches, lock, SRCU).  Thread-local state
lives in the generator frames: for each thread, the chain ``gen -> gen.gi_yieldfrom -> ...`` gives
each frame's code and ``f_lasti`` (where it is suspended) and its locals (what it holds, e.g. a
generation read before another thread's update).  Without the locals, two schedules that differ
only in the generation a vCPU has already read would be merged and the 2014 race missed.

Locals are canonicalised by type: numbers, strings and enums as they are; memslot snapshots by
(as_id, generation, slots); a memslot by its fields; a shadow page by (as_id, level, gfn,
mmu_valid_gen), as ``state_key`` names pages; containers element-wise; the handles every frame
carries (VM, ``struct kvm``, vCPU, MMU, codec, locks, statistics, tracer) are dropped because they
are the same objects in every schedule and their contents are shared state already keyed.  An
unknown type is an error, not silently dropped: a new local in the core must be looked at.

Two abstractions, argued.  First, ``access()``'s ``traps`` counts the traps taken by the
current access and only feeds ``Outcome.traps`` and the ``traps == 0`` test (was the answer a
hardware hit), neither of which the oracle judges; it is keyed as ``min(traps, 1)``, in
``access()`` and in ``_emulate()``, which receives it to build the outcome (found by comparing the
distributed search's states with the local one's: the count made successors of equal states
differ).  Without this a vCPU that retries while an update is in flight would reach a new state
per retry and the search would only stop at
the depth cap; with it the retry loop closes on a visited state.  Second, the vCPU's
paging-structure cache (``vcpu.psc_page``, a hint that never changes an answer, and not part of
``state_key``) is copied into the locals ``psc`` and ``shifts`` of the walk in progress; they are
dead once the walk has ended, and keying them made two equal states step to different keys (the
partial-order reduction's edge map, which relies on a step being a function of the key, found it),
so they are keyed as a constant.  Likewise the zaps' ``live`` (entries a freed page held, for
``sptes_dropped`` only) and ``_page`` come from a list ``unlink()`` built earlier and iterated on
the value stack, invisible to the key; they feed statistics only.

Temporaries on the frames' value stacks (a ``for`` loop's iterator over a list snapshot taken
under ``mmu_lock``) are invisible from Python; in the protocol code such a loop runs under the lock
over pages whose remaining effect is decided by shared state, so the loop variable names the
position.  The key is a 128-bit BLAKE2b digest of the pickled tuple (collisions are negligible
at any state count this explorer can reach, and a digest keeps the visited set small).
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import hashlib
import operator
import pickle
from collections.abc import Callable, Hashable
from types import CodeType, FrameType, FunctionType, GeneratorType
from typing import TYPE_CHECKING, Any, Final

from kvmmu.check.errors import UnknownLocalError as UnknownLocalError
from kvmmu.check.errors import not_a_generator
from kvmmu.hostmem import HostMemory
from kvmmu.memslots import Memslot, Memslots, MemslotState, SlotSet
from kvmmu.mmu.context import Kvm
from kvmmu.mmu.faults import VcpuArch, VcpuStats
from kvmmu.mmu.invalidation import Strategy, X86Arch
from kvmmu.mmu.pages import Mmu, MmuStats, ShadowPage
from kvmmu.spte import GenerationLayout, MmioMask, MmioSpteCodec
from kvmmu.sync import MmuLock, Srcu
from kvmmu.trace import Tracer
from kvmmu.vcpu import Vcpu
from kvmmu.vm import VM, VMM

if TYPE_CHECKING:
    from kvmmu.check.world import Thread, World

#: Objects that are the same in every schedule (handles to shared state keyed elsewhere).
DROPPED_TYPES: Final[tuple[type, ...]] = (
    VM,
    Kvm,
    Vcpu,
    VcpuArch,
    VcpuStats,
    Mmu,
    MmuStats,
    MmioSpteCodec,
    MmioMask,
    GenerationLayout,
    MmuLock,
    Srcu,
    MemslotState,
    X86Arch,
    Strategy,
    Tracer,
    VMM,
    HostMemory,
)
_DROP: Final = object()

#: Per-(function, local) abstractions; each must be argued in the module docstring.
ABSTRACTIONS: Final[dict[tuple[str, str], Callable[[Any], Hashable]]] = {
    ("access", "traps"): lambda v: min(v, 1),
    ("_emulate", "traps"): lambda v: min(v, 1),  # the same count, handed to the emulator
    ("access", "psc"): lambda v: 0,
    ("access", "shifts"): lambda v: 0,
    ("_page_fault", "psc"): lambda v: 0,
    **{(zap, local): (lambda v: 0) for zap in ("zap_all_fast", "zap_all_slow", "zap_mmio_sptes",
                                                "_zap_invalidated_roots")
       for local in ("live", "_page")},
}


def page_name(sp: ShadowPage) -> tuple[int, int, int, int]:
    return (sp.as_id, sp.level, sp.gfn, sp.mmu_valid_gen)


def memslot_key(m: Memslot) -> tuple[Any, ...]:
    return (m.id, m.as_id, m.base_gfn, m.npages, m.flags, m.userspace_addr, m.invalid)


class _Canon:
    """Canonicalises the locals of one thread; notes whether any is mutable shared state.

    A thread's locals change only when the thread runs, except for objects other threads may
    write in place: a ``Memslots`` snapshot (its ``generation`` is written after the grace
    period).  A key holding one is *volatile* and is recomputed at every state; others are cached.
    """

    __slots__ = ("volatile",)

    def __init__(self) -> None:
        self.volatile = False

    def __call__(self, value: Any, where: str) -> Any:
        kind = type(value)
        if kind in _PLAIN:
            return value
        if kind is ShadowPage:  # role.invalid is set when another thread zaps it
            self.volatile = True
            return ("sp", value.as_id, value.level, value.gfn, value.mmu_valid_gen, value.invalid)
        if kind is Memslot:
            return ("slot", *memslot_key(value))
        if kind is Memslots:
            self.volatile = True
            return ("slots", value.as_id, value.generation, tuple(memslot_key(m) for m in value))
        if kind is SlotSet:  # immutable: the slots an update is about to publish
            return ("slotset", tuple(memslot_key(m) for m in value.by_gfn.values_in_order()))
        if isinstance(value, enum.Enum):
            return (kind.__name__, value.value)
        if isinstance(value, DROPPED_TYPES):
            return _DROP
        if isinstance(value, tuple | list):
            return tuple(self(v, where) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((self(k, where), self(v, where)) for k, v in value.items()))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return (
                kind.__name__,
                *(self(getattr(value, f.name), where) for f in dataclasses.fields(value) if f.compare),
            )
        raise UnknownLocalError(
            f"cannot key local {where} of type {kind.__qualname__}; teach kvmmu.check.state about it"
        )


_PLAIN: Final = frozenset({type(None), bool, int, str, bytes, float})


def canonical(value: Any, where: str = "value") -> Any:
    """A hashable, schedule-independent stand-in for ``value`` (a marker object for handles)."""
    return _Canon()(value, where)


def dropped(value: Any) -> bool:
    return canonical(value) is _DROP


def frame_key(frame: FrameType, canon: _Canon | None = None) -> tuple[Any, ...]:
    """Where a suspended frame is and what it holds."""
    canon = canon or _Canon()
    code = frame.f_code
    name = code.co_name
    items: list[tuple[str, Any]] = []
    for local, value in frame.f_locals.items():
        abstraction = ABSTRACTIONS.get((name, local))
        c = abstraction(value) if abstraction is not None else canon(value, f"{code.co_qualname}.{local}")
        if c is not _DROP:
            items.append((local, c))
    items.sort()
    return (code.co_qualname, frame.f_lasti, tuple(items))


#: Types met on protocol frames, sorted once: what a loop iterates with, and what it never is.
_ITERATOR_SAMPLES: Final[tuple[Any, ...]] = (
    iter([]), iter(()), iter({}.values()), iter({}), iter({}.items()), iter(range(0)),
    enumerate(()), iter(set()))
_ITERATORS: Final = frozenset(type(it) for it in _ITERATOR_SAMPLES)
_SEQUENCE_ITERATORS: Final[frozenset[type]] = frozenset({type(iter([])), type(iter(()))})
_NOT_ITERATORS: Final = frozenset({int, bool, str, bytes, float, tuple, list, dict, set,
                                   type(None), CodeType, FunctionType, ShadowPage, Memslot})


def _item(value: Any) -> Any:
    """A loop item as the key sees it: pages by name, tuples element-wise, numbers as they are."""
    kind = type(value)
    if kind is int or kind is bool:
        return value
    if kind is ShadowPage:
        return (value.as_id, value.level, value.gfn, value.mmu_valid_gen, value.invalid)
    if kind is tuple:
        return tuple(_item(v) for v in value)
    return -1  # anything else: its position in the sequence is what is kept


def hidden_iterators(gen: Any) -> tuple[Any, ...]:
    """What each loop the generator's frame is inside has still to go through.

    A ``for`` loop's iterator lives on the frame's value stack, not in a local; the garbage
    collector's traversal of a generator visits that stack (CPython 3.11 ``gen_traverse`` ->
    ``_PyFrame_Traverse``), so ``gc.get_referents`` finds it, its length hint says how many items
    are left (an ``enumerate`` by its underlying iterator's) and, for a list or tuple, the
    sequence it walks says which.  The zap loops iterate lists built before they yield (a copy
    of the active list, or the pages one unlink freed): without this, two VMMs with equal keys
    could have different pages still to free, and the state cache would cut one of them.  With
    the active list's order in ``state_key`` too, the pages a loop has still to visit, and in
    which order, are a function of the key.
    """
    out: list[Any] = []
    for r in gc.get_referents(gen):
        kind = type(r)
        if kind in _NOT_ITERATORS or kind is GeneratorType or (
                kind not in _ITERATORS and not hasattr(kind, "__next__")):
            continue
        if kind is enumerate:
            inner = [x for x in gc.get_referents(r) if hasattr(type(x), "__next__")]
            out.append(operator.length_hint(inner[0], -1) if inner else -1)
            continue
        left = operator.length_hint(r, -1)
        if kind in _SEQUENCE_ITERATORS and left > 0:
            seq = gc.get_referents(r)
            if len(seq) == 1 and type(seq[0]) in (list, tuple):
                out.append(tuple(_item(v) for v in seq[0][len(seq[0]) - left:]))
                continue
        out.append(left)
    return tuple(out)


def frames(gen: Any) -> list[FrameType]:
    """The frames of a suspended generator and of every generator it delegates to."""
    out: list[FrameType] = []
    while gen is not None:
        if not isinstance(gen, GeneratorType):
            raise not_a_generator(gen)
        frame = gen.gi_frame
        if frame is None:
            break
        out.append(frame)
        gen = gen.gi_yieldfrom
    return out


def thread_key(thread: Thread) -> tuple[Any, ...]:
    """The thread's operation index, and each frame's position and locals."""
    key, _ = _thread_key(thread)
    return key


def generators(gen: Any) -> list[Any]:
    """The suspended generator and every generator it delegates to, outermost first."""
    out: list[Any] = []
    while gen is not None and gen.gi_frame is not None:
        out.append(gen)
        gen = gen.gi_yieldfrom
    return out


def _thread_key(thread: Thread) -> tuple[tuple[Any, ...], bool]:
    if thread.gen is None:
        return (thread.op_index,), False
    canon = _Canon()
    frames(thread.gen)  # checks that every delegate is a generator
    key = (thread.op_index, tuple((*frame_key(g.gi_frame, canon), hidden_iterators(g))
                                  for g in generators(thread.gen)))
    return key, canon.volatile


class KeyCache:
    """Thread keys of one world, recomputed only for threads that ran (or are volatile)."""

    __slots__ = ("keys",)

    def __init__(self, n: int) -> None:
        self.keys: list[tuple[Any, ...] | None] = [None] * n

    def ran(self, t: int) -> None:
        self.keys[t] = None

    def thread_keys(self, world: World) -> tuple[tuple[Any, ...], ...]:
        out = []
        for t, thread in enumerate(world.threads):
            key = self.keys[t]
            if key is None:
                key, volatile = _thread_key(thread)
                if not volatile:
                    self.keys[t] = key
            out.append(key)
        return tuple(out)


def shared_key(world: World) -> tuple[Any, ...]:
    """The shared state: ``vm.state_key()``, and whether each vCPU's root was zapped.

    ``state_key`` names a vCPU's root by (as, level, gfn, ``mmu_valid_gen``); with a one-bit
    ``mmu_valid_gen`` (5.4+) a root freed two zaps ago has the name of a live one, and guest entry
    tests ``root.invalid`` (``is_obsolete_sp()``), so the flag is part of the state.
    """
    return (world.vm.state_key(),
            tuple(v.arch.root is not None and v.arch.root.invalid for v in world.vm.vcpus))


def world_key(world: World, extra: Hashable = None, cache: KeyCache | None = None) -> bytes:
    """The digest of shared state, each thread's local state, and ``extra`` (e.g. who ran last)."""
    threads = cache.thread_keys(world) if cache is not None else tuple(thread_key(t) for t in world.threads)
    data = (shared_key(world), threads, extra)
    return hashlib.blake2b(pickle.dumps(data, protocol=5), digest_size=16).digest()
