"""The explorer's state key, maintained incrementally: Zobrist-style sums, per-frame reuse.

Design. :mod:`kvmmu.check.state` defines *what* a state is (``VM.state_key()`` plus every
thread's frames and locals); this module computes the same partition of states fast, because the
key is computed once per state and the from-scratch key scanned all 512 entries of every shadow
page (45% of the explorer's time) and canonicalised every local of every thread (22%).

* *Shadow pages* (Zobrist hashing, Zobrist 1970; the incremental state hashes of SPIN and of
  Murphi's hash compaction): each table's hash is the sum of one term per live entry,
  ``hash((index, spte))`` or ``hash((index, -1, child's mmu_valid_gen))`` for a link (a link's
  target is named by the parent, the index and that generation, as ``state_key`` names pages).
  The explorer swaps a page's ``spt`` list for a :class:`TrackedTable` the first time it sees the
  page; the table notes which indices were written (a C-level list for every read, one Python
  call per write, and writes are rare), and the sum is brought up to date from those indices
  only.  The model is not touched: no hook for the model's owner to keep in step, and a write the
  model adds tomorrow is tracked because it is a write to the list.  Pages combine in the active
  list's order (one tuple hash over the page terms, as ``state_key`` lists them in that order):
  the zap walks follow it, so two worlds with the same pages in another order are not the same
  state.
* *Everything else shared* is small and read directly: memslots (a snapshot's slot list is hashed
  once per snapshot object and world), the lock holder, SRCU, ``mmu_valid_gen``, each vCPU's
  root, MMIO cache and SRCU read section, host memory (its canonical ``key()``, the written words).  The
  parts are kept apart (:class:`Components`) so that the partial-order reduction can see which
  parts a step wrote by comparing them before and after it.
* *Threads*: a frame suspended in ``yield from`` whose delegate is still the same generator
  object has not run since it was keyed (it can only resume once that delegate is exhausted), so
  only the frames a step actually ran are canonicalised again; frames holding objects that other
  threads write in place (a ``Memslots`` snapshot's generation) or mutable containers are
  recomputed at every state.

All values hashed are ints and tuples of ints (strings and code objects are mapped to BLAKE2b
numbers, ``None`` to ``()``), so that ``hash()`` gives the same key in every process: the
distributed search compares keys computed by different workers, and CPython randomises ``str``
hashes and (before 3.12) hashes ``None`` by address.  A key is 64 bits: at a million states the
chance of any collision is about n^2 / 2^65, 3e-8.

:func:`scratch_components` and :func:`scratch_thread_hash` compute the same values from scratch
(every entry scanned, every frame canonicalised); the tests hold the incremental key to them on
random runs.
"""

from __future__ import annotations

import dataclasses
import dis
import enum
import hashlib
import operator
from collections.abc import Callable, Hashable
from itertools import compress
from types import CodeType, FrameType, GeneratorType
from typing import TYPE_CHECKING, Any, Final

from kvmmu.check.errors import not_a_generator
from kvmmu.check.state import (
    ABSTRACTIONS,
    DROPPED_TYPES,
    UnknownLocalError,
    frames,
    generators,
    hidden_iterators,
    memslot_key,
)
from kvmmu.check.tables import TrackedTable as TrackedTable
from kvmmu.memslots import Memslot, Memslots, SlotSet
from kvmmu.mmu.faults import VcpuArch
from kvmmu.mmu.pages import ShadowPage
from kvmmu.spte import SPTES_PER_PAGE

if TYPE_CHECKING:
    from kvmmu.check.world import Thread, World

Abstraction = Callable[[Any], Hashable]
MASK64: Final = (1 << 64) - 1
#: ``None`` in a hashed value: an empty tuple hashes alike in every process.
NONE: Final = ()
_DROP: Final = object()
_DATACLASS_PARAMS: Final = "__dataclass_params__"
#: Indices of the global parts in :attr:`Components.parts` (then V_i, R_i for each vCPU i).
S, M, L, Q, H = range(5)
#: How a frame's hash may go stale: never, when its thread runs, or when memslots change too.
NOT_VOLATILE, LOCAL, SHARED = range(3)
_INDICES: Final = range(SPTES_PER_PAGE)
#: Values remembered by :meth:`FrameCanon.value` before the cache starts again.
MAX_IMMUTABLE: Final = 100_000
GLOBAL_PARTS: Final = 5


def stable_id(text: str) -> int:
    """A number for ``text`` that is the same in every process (``hash(str)`` is not)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _entry_term(i: int, spte: int, child: ShadowPage | None) -> int | None:
    if child is not None:
        return hash((i, -1, child.mmu_valid_gen))
    return hash((i, spte)) if spte else None


#: hpa -> (total, terms, page term, what the page term was computed from): :meth:`SharedHasher.adopt`
PageSeeds = dict[int, tuple[int, dict[int, int], int, "tuple[bool, int] | None"]]


def _refresh(table: TrackedTable, sp: ShadowPage) -> None:
    """Bring ``table.total`` up to date with the entries written since the last call."""
    pending = table.pending
    children = sp.children
    if pending is None:
        # A page seen for the first time, or freed: look only at the live entries (C-level
        # scans find them; a fresh page has none).
        terms: dict[int, int] = {}
        total = 0
        live = set(compress(_INDICES, table)) if table.count(0) != SPTES_PER_PAGE else set()
        if children.count(None) != SPTES_PER_PAGE:
            # A child is a ShadowPage (always true: it defines no __bool__/__len__) or None, so
            # compress() finds the links at C speed.
            live.update(compress(_INDICES, children))
        for i in live:
            term = _entry_term(i, table[i], children[i])
            if term is not None:
                terms[i] = term
                total += term
        table.terms = terms
        table.total = total & MASK64
        table.pending = set()
        return
    if not pending:
        return
    terms = table.terms
    total = table.total
    for i in pending:
        total -= terms.pop(i, 0)
        term = _entry_term(i, table[i], children[i])
        if term is not None:
            terms[i] = term
            total += term
    table.total = total & MASK64
    pending.clear()


def _page_term(sp: ShadowPage, total: int) -> int:
    return hash((sp.as_id, sp.level, sp.gfn, sp.mmu_valid_gen, sp.mmio_cached, total))


def _scratch_page_total(sp: ShadowPage) -> int:
    total = 0
    for i, (spte, child) in enumerate(zip(sp.spt, sp.children, strict=True)):
        if spte or child is not None:
            term = _entry_term(i, spte, child)
            if term is not None:
                total += term
    return total & MASK64


def _holder_code(holder: object) -> int:
    if holder is None:
        return 0
    return 1 if isinstance(holder, VcpuArch) else 2


@dataclasses.dataclass(slots=True)
class Components:
    """The shared state's parts, each an int: S, M, L, Q, H, then V_i, R_i for each vCPU."""

    parts: list[int]

    def combined(self) -> int:
        return hash(tuple(self.parts))


class SharedHasher:
    """The shared parts of one world's state, pages hashed incrementally (see the docstring)."""

    __slots__ = ("_slots_cache", "vm")

    def __init__(self, world: World) -> None:
        self.vm = world.vm
        #: id(Memslots) -> (the snapshot, hash of its slot list): snapshots are never mutated
        #: but for ``generation``, which is read at every state.
        self._slots_cache: dict[int, tuple[Memslots, int]] = {}

    def page_seeds(self) -> PageSeeds:
        """Each active page's hashing state, right after :meth:`components` (for :meth:`adopt`)."""
        out: PageSeeds = {}
        for hpa, sp in self.vm.kvm.mmu.active.items():
            table = sp.spt
            if type(table) is TrackedTable and table.pending is not None and not table.pending:
                out[hpa] = (table.total, table.terms.copy(), table.page_term, table.page_term_of)
        return out

    def adopt(self, seeds: PageSeeds) -> None:
        """Take the page terms of another world in the same state (a replay of its prefix).

        Replays are deterministic, so a page is allocated at the same ``hpa`` and holds the same
        entries as in the world the seeds come from; adopting its terms spares scanning the
        512 entries of every page of every replayed world.
        """
        for hpa, sp in self.vm.kvm.mmu.active.items():
            seed = seeds.get(hpa)
            if seed is None or type(sp.spt) is TrackedTable:
                continue
            table = TrackedTable(sp.spt)
            table.total, terms, table.page_term, table.page_term_of = seed
            table.terms = terms.copy()
            table.pending = set()
            sp.spt = table

    def _slots_hash(self, slots: Memslots) -> int:
        hit = self._slots_cache.get(id(slots))
        if hit is not None and hit[0] is slots:
            return hit[1]
        h = hash(tuple(memslot_key(m) for m in slots))
        self._slots_cache[id(slots)] = (slots, h)
        return h

    def components(self) -> Components:
        vm = self.vm
        kvm = vm.kvm
        mmu = kvm.mmu
        pages: list[int] = []  # in the active list's order: the zap walks follow it
        for sp in mmu.active.values():
            table = sp.spt
            if type(table) is not TrackedTable:
                table = TrackedTable(table)
                sp.spt = table
            _refresh(table, sp)
            of = (sp.mmio_cached, table.total)
            if table.page_term_of != of:
                table.page_term = _page_term(sp, table.total)
                table.page_term_of = of
            pages.append(table.page_term)
        return self._assemble(hash(tuple(pages)))

    def _assemble(self, pages: int) -> Components:
        vm = self.vm
        kvm = vm.kvm
        mmu = kvm.mmu
        memslots = kvm.memslots
        s = hash((pages, mmu.mmu_valid_gen))
        m = hash((memslots.updating, *((sl.generation, self._slots_hash(sl))
                                       for sl in memslots.active)))
        lock = mmu.lock.holder
        # Read holders of mmu_lock (the TDP MMU's faults, the 5.13+ root teardown) are part of
        # the lock's state (L): a writer's MMU_LOCK step reads them.
        shared = mmu.lock.readers
        lcode = _holder_code(lock) if not shared else hash((
            _holder_code(lock), *sorted(r.id if type(r) is VcpuArch else -1 for r in shared)))
        srcu = kvm.srcu
        waiting = srcu.waiting_for
        q = -1 if waiting is None else 1
        parts = [s, m, lcode, q, hash(vm.host_memory.key())]
        readers = srcu.readers
        for v in vm.vcpus:
            a = v.arch
            root = a.root
            rname = NONE if root is None else (root.as_id, root.level, root.gfn,
                                               root.mmu_valid_gen, root.invalid)
            parts.append(hash((a.as_id, rname, a.mmio_gfn, a.mmio_gen, lock is a)))
            e = readers.get(a)
            parts.append(0 if e is None else (2 if waiting is not None and e < waiting else 1))
        return Components(parts)

    def scratch(self) -> Components:
        """The same parts computed from scratch (every entry of every page scanned)."""
        pages = [_page_term(sp, _scratch_page_total(sp)) for sp in self.vm.kvm.mmu.active.values()]
        return self._assemble(hash(tuple(pages)))


def scratch_components(world: World) -> Components:
    return SharedHasher(world).scratch()


# --- threads ---------------------------------------------------------------------------------


#: (plan id, picker of the int locals or None, (value position, name, abstraction) of the others,
#: the frame's loops that yield): :meth:`FrameCanon.frame_hash`
_Plan = tuple[int, "Callable[[tuple[Any, ...]], Any] | None",
              tuple[tuple[int, tuple[str, str], "Abstraction | None"], ...],
              tuple[tuple[int, int], ...]]


class FrameCanon:
    """Canonicalises frame locals to deterministic ints and tuples; caches per code object."""

    __slots__ = ("_code", "_ids", "_immutable", "_loops", "_plans", "volatile")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.volatile = NOT_VOLATILE
        #: code -> (its stable id, name -> index in co_varnames, name -> abstraction)
        self._code: dict[CodeType, tuple[int, dict[str, int], dict[str, Abstraction]]] = {}
        #: id -> (value, its canonical form) for values that cannot change (see :meth:`value`)
        self._immutable: dict[int, tuple[Any, Any]] = {}
        #: (code, local names, their types) -> how to hash such a frame (:meth:`frame_hash`)
        self._plans: dict[tuple[CodeType, tuple[str, ...], tuple[type, ...]], _Plan] = {}
        #: code -> the (start, end) offsets of its ``for`` loops whose body yields
        self._loops: dict[CodeType, tuple[tuple[int, int], ...]] = {}

    def str_id(self, text: str) -> int:
        n = self._ids.get(text)
        if n is None:
            n = self._ids[text] = stable_id(text)
        return n

    def code_info(self, code: CodeType) -> tuple[int, dict[str, int], dict[str, Abstraction]]:
        info = self._code.get(code)
        if info is None:
            names = (*code.co_varnames, *code.co_cellvars, *code.co_freevars)
            info = (self.str_id(code.co_qualname), {n: i for i, n in enumerate(names)},
                    {local: f for (fn, local), f in ABSTRACTIONS.items() if fn == code.co_name})
            self._code[code] = info
        return info

    def yielding_loops(self, code: CodeType) -> tuple[tuple[int, int], ...]:
        """The offset ranges of ``code``'s ``for`` loops that contain a yield (or a delegation).

        A ``for`` loop's iterator is the only iterator that lives on a protocol frame's value
        stack across a yield (a local iterator would be refused by :meth:`value`; no expression
        in the protocol holds one across a yield).  In CPython 3.11 ``FOR_ITER``'s argument is
        the loop's exit, so the iterator is on the stack exactly while ``f_lasti`` is inside
        (``FOR_ITER`` offset, exit offset); a frame suspended elsewhere has none, and
        :func:`~kvmmu.check.state.hidden_iterators` (a ``gc.get_referents`` walk, a third of the
        cost of hashing a frame) need not run.
        """
        loops = self._loops.get(code)
        if loops is None:
            instructions = list(dis.get_instructions(code))
            yields = [i.offset for i in instructions if i.opname in ("YIELD_VALUE", "SEND")]
            loops = tuple((i.offset, i.argval) for i in instructions
                          if i.opname == "FOR_ITER" and isinstance(i.argval, int)
                          and any(i.offset < y < i.argval for y in yields))
            self._loops[code] = loops
        return loops

    def value(self, v: Any, where: tuple[str, str]) -> Any:
        """The canonical form of a local's value (ints and tuples of ints).

        A value whose canonical form took no mutable object (no list, dict, unfrozen dataclass,
        shadow page or memslot snapshot: ``volatile`` stayed NOT_VOLATILE) keeps that form for
        its life, so it is remembered by identity (the cache holds the value, so the id is not
        reused): the VMM's frames hold frozen requests and plans, and every frame enums, that
        are otherwise taken apart field by field at every state.
        """
        kind = type(v)
        if kind is int or kind is bool or kind is float:
            return v
        if v is None:
            return NONE
        if kind is ShadowPage:  # role.invalid is set when another thread zaps it
            self.volatile = SHARED
            return (1, v.as_id, v.level, v.gfn, v.mmu_valid_gen, v.invalid)
        hit = self._immutable.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        outer = self.volatile
        self.volatile = NOT_VOLATILE
        c = self._value(v, where)
        inner = self.volatile
        self.volatile = max(outer, inner)
        if inner == NOT_VOLATILE and c is not _DROP:
            if len(self._immutable) >= MAX_IMMUTABLE:
                self._immutable.clear()
            self._immutable[id(v)] = (v, c)
        return c

    def _value(self, v: Any, where: tuple[str, str]) -> Any:
        kind = type(v)
        if kind is str:
            return (7, self.str_id(v))
        if kind is Memslot:
            return (2, *memslot_key(v))
        if kind is Memslots:
            self.volatile = SHARED
            return (3, v.as_id, v.generation, tuple(memslot_key(m) for m in v))
        if kind is SlotSet:  # immutable: the slots an update is about to publish
            return (10, *(memslot_key(m) for m in v.by_gfn.values_in_order()))
        if isinstance(v, enum.Enum):
            val = v.value
            return (4, self.str_id(kind.__qualname__),
                    val if type(val) is int else self.value(val, where))
        if isinstance(v, DROPPED_TYPES):
            return _DROP
        if kind is bytes:
            return (8, stable_id(v.hex()))
        if isinstance(v, tuple):
            return tuple(self.value(x, where) for x in v)
        if isinstance(v, list):
            self.volatile = max(self.volatile, LOCAL)
            return (5, *(self.value(x, where) for x in v))
        if isinstance(v, dict):
            self.volatile = max(self.volatile, LOCAL)
            return (6, *sorted((self.value(k, where), self.value(x, where))
                               for k, x in v.items()))
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            if not getattr(kind, _DATACLASS_PARAMS).frozen:
                self.volatile = max(self.volatile, LOCAL)
            return (9, self.str_id(kind.__qualname__),
                    *(self.value(getattr(v, f.name), where) for f in dataclasses.fields(v)
                      if f.compare))
        raise UnknownLocalError(
            f"cannot key local {'.'.join(where)} of type {kind.__qualname__}; "
            "teach kvmmu.check.state about it"
        )

    def frame_hash(self, gen: Any, *, exact: bool = False) -> tuple[int, int]:
        """The hash of a generator's frame (code, position, locals, loops in progress) and how it
        may go stale.  ``exact`` looks for loop iterators on every frame (the reference), not only
        on frames suspended inside a loop that yields (:meth:`yielding_loops`).

        Most locals are ints.  The frame's locals are taken apart by a *plan* learnt once per
        code object, local names (in the dict's order) and their types: it picks the ints in
        ``co_varnames`` order with one C-level ``itemgetter`` call and lists the other locals
        to canonicalise; handles are skipped.  The frame's f_locals dict is reused between calls
        and a local unbound for a while is re-inserted at its end, so the plan orders by position
        in ``co_varnames``, not by dict order: frames equal local for local hash alike.
        """
        frame: FrameType = gen.gi_frame
        self.volatile = NOT_VOLATILE
        code = frame.f_code
        local_values = frame.f_locals
        values = tuple(local_values.values())
        signature = (code, tuple(local_values), tuple(map(type, values)))
        plan = self._plans.get(signature)
        if plan is None:
            plan = self._plan(*signature)
        plan_id, ints, others, loops = plan
        canonical = self.value
        rest = [canonical(values[i], where) if abstraction is None else abstraction(values[i])
                for i, where, abstraction in others]
        lasti = frame.f_lasti
        inside = exact or (loops and any(a < lasti < b for a, b in loops))
        iterators = hidden_iterators(gen) if inside else ()
        return hash((plan_id, lasti, iterators, ints(values) if ints is not None else (),
                     *rest)), self.volatile

    def _plan(self, code: CodeType, names: tuple[str, ...], kinds: tuple[type, ...]) -> _Plan:
        """How to take apart a frame of ``code`` whose locals are ``names`` of types ``kinds``."""
        code_id, index, abstractions = self.code_info(code)
        ints: list[tuple[int, int]] = []  # (position in co_varnames, position in the values)
        others: list[tuple[int, int, tuple[str, str], Abstraction | None]] = []
        for i, (name, kind) in enumerate(zip(names, kinds, strict=True)):
            if name in abstractions:
                others.append((index[name], i, (code.co_qualname, name), abstractions[name]))
            elif kind is int or kind is bool:
                ints.append((index[name], i))
            elif not issubclass(kind, DROPPED_TYPES):
                others.append((index[name], i, (code.co_qualname, name), None))
        ints.sort()
        others.sort(key=lambda o: o[0])
        picks = [i for _, i in ints]
        getter: Callable[[tuple[Any, ...]], Any] | None = None
        if len(picks) == 1:
            only = picks[0]
            getter = lambda v: (v[only],)  # noqa: E731  # itemgetter of one returns no tuple
        elif picks:
            getter = operator.itemgetter(*picks)
        # Which locals are ints and which are canonicalised, by position: part of the hash, so
        # that the same values under other names never collide.
        plan_id = hash((code_id, tuple(p for p, _ in ints), tuple(o[0] for o in others)))
        loops = self.yielding_loops(code)
        plan = (plan_id, getter, tuple((i, where, f) for _, i, where, f in others), loops)
        self._plans[(code, names, kinds)] = plan
        return plan


class ThreadHasher:
    """Each thread's hash, recomputing only the frames that ran or may have changed.

    A frame is reused when it has not run (see the module docstring) and, if it holds a mutable
    container, its thread has not run (an inner frame may have written it), and, if it holds a
    memslot snapshot or a shadow page, the memslot part ``M`` and the count of pages freed are
    those it was hashed with (snapshots are
    written in place only by an update, which changes ``M``; a shadow page's ``invalid`` flag is
    set only as the page is freed).
    """

    __slots__ = ("_chains", "_hashes", "_ran", "canon", "world")

    def __init__(self, world: World, canon: FrameCanon) -> None:
        self.world = world
        self.canon = canon
        n = len(world.threads)
        #: per thread: [(generator, frame hash, volatility, M when hashed)], outermost first
        self._chains: list[list[tuple[Any, int, int, int]]] = [[] for _ in range(n)]
        self._hashes: list[tuple[int, int, int] | None] = [None] * n  # (hash, volatility, M)
        self._ran = [True] * n

    def ran(self, t: int) -> None:
        self._ran[t] = True

    #: A thread's hash (hash, volatility, M) and its frames' (hash, volatility, M), outermost
    #: first; None: not hashed since it ran.
    Seed = tuple[tuple[int, int, int], tuple[tuple[int, int, int], ...]] | None

    def seeds(self) -> tuple[Seed, ...]:
        """What :meth:`adopt` takes: each thread's hash and frame hashes, to carry into a replay."""
        return tuple(None if self._ran[t] or h is None
                     else (h, tuple((e[1], e[2], e[3]) for e in chain))
                     for t, (h, chain) in enumerate(zip(self._hashes, self._chains, strict=True)))

    def adopt(self, seeds: tuple[Seed, ...]) -> None:
        """Take another world's hashes for this world, which is in the same state.

        A replay re-executes a schedule prefix deterministically, so at the end of it every
        thread is where it was in the world the seeds come from, frame for frame: each seeded
        frame hash is paired with this world's generator at the same depth, and only the frames
        that run afterwards are canonicalised again (a replayed world used to hash every frame of
        the thread taking the new step from scratch).
        """
        for t, s in enumerate(seeds):
            if s is None:
                continue
            frames_of = s[1]
            gens = generators(self.world.threads[t].gen)
            if len(gens) != len(frames_of):
                raise AssertionError("a replay did not reach the state it was seeded with")
            self._chains[t] = [(g, *f) for g, f in zip(gens, frames_of, strict=True)]
            self._hashes[t] = s[0]
            self._ran[t] = False

    def thread_hash(self, t: int, m: int) -> int:
        cached = self._hashes[t]
        ran = self._ran[t]
        if cached is not None and not ran and (cached[1] < SHARED or cached[2] == m):
            return cached[0]
        self._ran[t] = False
        thread = self.world.threads[t]
        if thread.gen is None:
            self._chains[t] = []
            h = hash((thread.op_index,))
            self._hashes[t] = (h, NOT_VOLATILE, m)
            return h
        prev = self._chains[t]
        gen: Any = thread.gen
        gens: list[Any] = []
        while gen is not None:
            if not isinstance(gen, GeneratorType):
                raise not_a_generator(gen)
            if gen.gi_frame is None:
                break
            gens.append(gen)
            gen = gen.gi_yieldfrom
        n = len(gens)
        np = len(prev)
        chain: list[tuple[Any, int, int, int]] = []
        volatility = NOT_VOLATILE
        for d, g in enumerate(gens):
            if d < np:
                e = prev[d]
                # Frame d has not run if it and the generator it delegates to are the same
                # objects (or its thread has not run at all).
                if e[0] is g and (not ran or (d + 1 < n and d + 1 < np
                                              and prev[d + 1][0] is gens[d + 1])):
                    vol = e[2]
                    if vol == NOT_VOLATILE or (not ran and (vol == LOCAL or e[3] == m)):
                        chain.append(e)
                        volatility = max(volatility, vol)
                        continue
            fh, vol = self.canon.frame_hash(g)
            volatility = max(volatility, vol)
            chain.append((g, fh, vol, m))
        self._chains[t] = chain
        h = hash((thread.op_index, *(e[1] for e in chain)))
        self._hashes[t] = (h, volatility, m)
        return h


def scratch_thread_hash(thread: Thread, canon: FrameCanon | None = None) -> int:
    """A thread's hash with every frame canonicalised (the reference for :class:`ThreadHasher`)."""
    if thread.gen is None:
        return hash((thread.op_index,))
    canon = canon or FrameCanon()
    frames(thread.gen)  # checks that every delegate is a generator
    return hash((thread.op_index, *(canon.frame_hash(g, exact=True)[0]
                                    for g in generators(thread.gen))))


class Keyer:
    """The key of a world's state: the shared parts and every thread, as one 64-bit int."""

    __slots__ = ("shared", "threads")

    def __init__(self, world: World, canon: FrameCanon) -> None:
        self.shared = SharedHasher(world)
        self.threads = ThreadHasher(world, canon)

    def ran(self, t: int) -> None:
        self.threads.ran(t)

    def token(self, components: Components) -> int:
        """What the shared objects frames hold may change with: memslot snapshots (M) and pages
        being zapped (``role.invalid``, set as a page is freed, counted by ``mmu_shadow_zapped``,
        or on every root at once by the TDP MMU's ``kvm_mmu_zap_all_fast()``, counted by
        ``zap_all_fast``)."""
        stats = self.shared.vm.kvm.mmu.stats
        return hash((components.parts[M], stats.mmu_shadow_zapped, stats.zap_all_fast))

    def world_hash(self, components: Components) -> int:
        """Shared state and thread states, without the scheduler's context."""
        n = len(self.threads.world.threads)
        m = self.token(components)
        return hash((components.combined(), *(self.threads.thread_hash(t, m) for t in range(n))))


def symmetry_classes(world: World) -> list[list[int]]:
    """vCPUs that run the same script, in groups (a vCPU alone is a group of one)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, th in enumerate(world.threads[: len(world.vcpus)]):
        groups.setdefault(tuple(th.ops), []).append(i)
    return list(groups.values())


def symmetric_key(keyer: Keyer, components: Components, context: int | None,
                  classes: list[list[int]]) -> int:
    """The key of the state's orbit under permutations of interchangeable vCPUs.

    Symmetry reduction (Ip and Dill, "Better verification through symmetry", 1996; Murphi's
    scalarsets): vCPUs running the same script differ only by their index, which neither the
    protocol nor the oracle's judgement depends on.  Each vCPU is described by what is its own —
    its thread's frames, its cache, root and lock hold (V_i), its SRCU read section (R_i), whether
    it ran last — and within a class of interchangeable vCPUs the descriptions are sorted, so
    every permutation of a state gets the same key.
    """
    parts = components.parts
    threads = keyer.threads
    m = keyer.token(components)
    n = len(keyer.shared.vm.vcpus)
    per = [(threads.thread_hash(i, m), parts[GLOBAL_PARTS + 2 * i],
            parts[GLOBAL_PARTS + 2 * i + 1], context == i) for i in range(n)]
    return hash((*parts[:GLOBAL_PARTS], threads.thread_hash(n, m), context == n,
                 *(tuple(sorted(per[i] for i in cls)) for cls in classes)))


def with_context(world_hash: int, context: int | None) -> int:
    """The visited-set key: a world hash and the scheduler context (who ran last, or None)."""
    return hash((world_hash, -1 if context is None else context))

