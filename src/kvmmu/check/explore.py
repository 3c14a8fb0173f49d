"""The interleaving explorer: exhaustive (preemption-bounded, state-cached) and seeded random.

Design. *Stateless model checking* (VeriSoft, Godefroid 1997): the program is run from its
initial state under a controlled scheduler and a schedule prefix is re-executed to reach a state
again, because a program state (here: suspended generators) cannot be copied.  The search is a
depth-first walk over schedules: one run executes a prefix, then continues with the first choice
at each step (the thread that ran last, i.e. no context switch) and leaves the other enabled
choices on a stack, each to be a later run's prefix.

* *Preemption bounding* (CHESS, Musuvathi and Qadeer, PLDI 2007): the number of times a thread
  is switched away from while it could have continued is bounded by ``preemptions``; switches at
  a thread's natural yield points (between two operations, at ``RET_PF_RETRY`` where a vCPU
  re-enters the guest, or when it blocks on ``mmu_lock``/SRCU) are free.  Most concurrency bugs
  need very few preemptions, and the number of schedules grows polynomially, not exponentially,
  with the bound.  ``preemptions=None`` explores every interleaving.
* *State caching*: after each step the state key (:mod:`kvmmu.check.state`, computed
  incrementally by :mod:`kvmmu.check.keys`) is looked up; a state
  already reached with no more preemptions used (and, when the depth is a bound, at no greater
  depth) is not explored again.  Under a preemption bound the key also holds the thread that ran
  last when it could go on, since that decides whether the next switch is a preemption.
  Independent steps that commute reach the same state and are cut here, which gives much of
  what partial-order reduction (DPOR, Flanagan and Godefroid, POPL 2005) gives without a
  dependency relation between steps that would have to be kept in sync with the protocol code.
  ``max_depth`` is otherwise a safety cap; schedules it cuts are counted and make the result
  incomplete.  Without a bound, preemptions are not counted at all, so a state is explored once.
* *Domination across scheduler contexts* (with ``reduce``, under a preemption bound and when the
  depth is not a bound): the context only prices the next switch.  A world explored with no
  context (switching is free) and p preemptions used can do everything, within the bound, that
  the same world with thread c as context and p' >= p can do; and with any context c and p, what
  it can do with another context d and p' >= p + 1 (the first switch costs at most one
  preemption more).  So a state is also cut when its world, without the context, was explored
  at such a point: the search reaches the same worlds (the same shared state and threads; the
  checks are functions of the world) in fewer runs.  This is the subsumption of bounded
  searches (a state reached with more budget left covers one reached with less; cf. the
  "(state, budget)" caching of CHESS's preemption-bounded search, Musuvathi and Qadeer, PLDI
  2007, sec. 4) applied to the context, which the budget test depends on only for one step.
  ``Stats.states`` still counts (world, context) pairs explored; ``Stats.worlds`` the worlds.
  A :class:`Memo` carries the worlds earlier searches of the same configuration explored
  completely (the distributed search's batches): they are cut the same way, bound or not
  (without a bound a world explored once covers every later visit).
* *Random mode* follows PCT (Burckhardt et al., ASPLOS 2010): random thread priorities and
  ``preemptions`` priority-change points per schedule, so a bug that needs d ordering constraints
  is hit with probability at least 1/(n k^(d-1)) per schedule rather than by luck.  A vCPU that
  yields ``RETRY`` is waiting for another thread and drops to the lowest priority, as a spinning
  thread must in any priority scheduler that is to terminate.

Checks after each step: the per-access oracle (findings of the step itself) and, at each state not
seen before, ``vm.check_state()`` (a state already seen was checked then: the key covers every
input of the invariant).  The invariant reads shared state only, so it runs once per distinct
shared state, not once per state.  The first finding stops the search with the schedule that led to it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from kvmmu.check.keys import (
    FrameCanon,
    Keyer,
    PageSeeds,
    ThreadHasher,
    symmetric_key,
    symmetry_classes,
    with_context,
)
from kvmmu.check.por import Edges, footprint, independent, reads_of
from kvmmu.check.schedule import FREE_SWITCH_STEPS
from kvmmu.check.world import CheckConfig, Finding, World
from kvmmu.mmu.steps import BLOCKING_STEPS, Step

DEFAULT_MAX_DEPTH: Final = 2000
_NEVER: Final = 1 << 30  # "no such exploration" in a world's front


@dataclass(slots=True)
class Stats:
    """Counters of one exploration (mutable while it runs; the progress callback sees them)."""

    states: int = 0  # distinct states explored (new visited-set entries)
    schedules: int = 0  # runs from a fresh VM
    completed: int = 0  # runs in which every thread finished
    steps: int = 0  # steps executed, replays included
    pruned: int = 0  # runs cut at a state already explored
    context_pruned: int = 0  # of which: the same world explored from a context no worse
    worlds: int = 0  # distinct worlds explored (states without the scheduler context)
    sleep_pruned: int = 0  # transitions not taken: known to lead to a state already explored
    queue: int = 0  # alternatives waiting on the stack
    stopped: str | None = None  # why the search stopped before the end ("time limit")
    wrap_runs: int = 0  # runs in which the MMIO generation wrapped (exhaustive search)
    cut: int = 0  # runs cut at max_depth
    elapsed: float = 0.0

    @property
    def states_per_second(self) -> float:
        return self.states / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Failure:
    """A schedule (thread indices, one per step) whose last step produced ``findings``."""

    schedule: tuple[int, ...]
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """What an exploration found; ``complete`` is true when no schedule was cut by the depth cap."""

    mode: str  # "exhaustive" or "random"
    stats: Stats
    failure: Failure | None
    complete: bool
    preemptions: int | None
    max_depth: int
    seed: int | None = None
    schedules_requested: int | None = None
    #: the visited set's keys (with ``keep_states=True``): what the search reached
    states: frozenset[int] | None = None
    #: with ``frontier_depth``: the schedules (and preemptions used) where runs stopped
    frontier: tuple[tuple[tuple[int, ...], int], ...] = ()


Progress = Callable[[Stats], None]


#: World -> the fewest preemptions it was explored with from no scheduler context, and from any.
Fronts = dict[int, tuple[int, int]]


@dataclass(slots=True)
class Memo:
    """What a search learns that a later search of the *same configuration* may use.

    Facts about the model: the frame canonicaliser's caches (plans per code object), the edge map
    (world and thread -> successor) and the shared states whose invariant held.  And ``fronts``:
    each world explored *completely* (with ``reduce``, when the depth is not a bound: every run
    below it finished) -> the fewest preemptions it was explored with from no scheduler context,
    and from any; a later search cuts the worlds it covers as it cuts its own (module docstring,
    domination across scheduler contexts).  A search stopped early (a finding, the time limit,
    ``frontier_depth``) leaves fronts of worlds it did not finish: its memo is not to be reused.
    """

    canon: FrameCanon = field(default_factory=FrameCanon)
    edges: Edges = field(default_factory=Edges)
    checked: set[int] = field(default_factory=set)
    fronts: Fronts = field(default_factory=dict)


@dataclass(slots=True)
class _Run:
    """One execution of a schedule on a fresh world, with its bookkeeping."""

    world: World
    schedule: list[int] = field(default_factory=list)
    last: int | None = None
    preemptions: int = 0


def _switch_context(world: World, last: int | None) -> int | None:
    """The part of "who ran last" that matters for counting preemptions (None: nothing)."""
    if last is None or not world.enabled(last):
        return None
    pending = world.threads[last].pending
    return None if pending is None or pending in FREE_SWITCH_STEPS else last


def _step(world: World, t: int) -> list[Finding]:
    try:
        return world.step(t)
    except Exception as exc:  # a crash of the model under this interleaving is a finding
        name = world.threads[t].name
        return [Finding("crash", f"crash: {name} raised {type(exc).__name__}: {exc}")]


@dataclass(slots=True)
class _Node:
    """A state where a run left alternatives on the stack: what was explored from it so far.

    ``done`` lists the transitions already taken from it (thread, footprint, world hash after
    it, scheduler context after it); ``sleep`` the sleeping transitions the run had there.
    Alternatives are popped after the subtrees of the transitions taken before them (LIFO), so
    when one starts, ``done`` holds exactly its earlier siblings.
    """

    world_hash: int
    done: list[_Sleeper] = field(default_factory=list)
    sleep: list[_Sleeper] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Seeds:
    """What a replay of a node's alternatives takes from the run that pushed them.

    The node's state is the state the replay reaches before its last step, so the frame hashes
    of every thread (:meth:`ThreadHasher.adopt`), the terms of every page
    (:meth:`SharedHasher.adopt`) and the shared parts are those of the node: the replayed world
    need not hash them again from scratch.
    """

    threads: tuple[ThreadHasher.Seed, ...]
    pages: PageSeeds
    parts: list[int]


#: (thread, parts it read, parts it wrote, world hash after it, its pending step after it)
_Sleeper = tuple[int, int, int, int, "Step | None"]


def _context_after(t: int, pending: Step | None) -> int | bool | None:
    """The scheduler context after thread t's step, from the step it then waits at.

    False when it cannot be known without the world: a blocking step may or may not be blocked.
    """
    if pending is None or pending in FREE_SWITCH_STEPS:
        return None
    if pending in BLOCKING_STEPS:
        return False
    return t


def _verify_cut(config: CheckConfig, canon: FrameCanon, schedule: tuple[int, ...],
                expected: int, source: str) -> None:
    world = World(config)
    for t in schedule:
        world.step(t)
    keyer = Keyer(world, canon)
    got = keyer.world_hash(keyer.shared.components())
    if got != expected:
        raise AssertionError(f"a cut by {source} at {schedule} does not lead where it said")


def explore(
    config: CheckConfig,
    *,
    preemptions: int | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    depth_is_bound: bool = False,
    reduce: bool = True,
    symmetry: bool = True,
    verify_sleep: bool = False,
    keep_states: bool = False,
    time_limit: float | None = None,
    start: tuple[int, ...] = (),
    start_preemptions: int = 0,
    frontier_depth: int | None = None,
    progress: Progress | None = None,
    progress_every: int = 50,
    memo: Memo | None = None,
) -> Result:
    """Exhaustive search up to ``preemptions`` (None: unbounded) and ``max_depth`` steps.

    ``depth_is_bound`` makes ``max_depth`` a bound the state cache respects (a state is explored
    again when reached at a smaller depth); otherwise it is only a safety cap.  ``reduce`` turns
    on the sleep sets (:mod:`kvmmu.check.por`) and the domination across scheduler contexts
    (module docstring); neither changes the set of worlds reached.
    ``verify_sleep`` (for tests) replays every transition a sleep set cut and checks that it
    leads where the sleep set said; ``keep_states`` returns the keys of the worlds reached (states
    without the scheduler context), each as the key of its orbit under vCPU symmetry whether or
    not ``symmetry`` is on (so that any two searches can be compared).  ``start`` (a schedule,
    with the preemptions it used) is where the search begins; ``frontier_depth`` stops every run
    at that depth and returns where it stopped as ``Result.frontier`` (the distributed search's
    prefix tasks).  ``time_limit`` (seconds) stops the search between runs; the result is then
    incomplete.  ``symmetry`` identifies states that differ only by a permutation of vCPUs
    running the same script (:func:`kvmmu.check.keys.symmetric_key`).  ``memo`` carries what
    earlier searches of the same configuration learnt into this one, and what this one learns
    out (:class:`Memo`; the distributed search's batches share one).
    """
    stats = Stats()
    t0 = time.perf_counter()
    bounded = preemptions is not None
    learnt = Memo() if memo is None else memo
    canon = learnt.canon
    # key -> Pareto front of (preemptions used, depth) at which the state was explored.
    visited: dict[int, tuple[tuple[int, int], ...]] = {}
    # Shared states whose invariant held: check_state() reads shared state only.
    checked = learnt.checked
    edges = learnt.edges
    # (schedule prefix, preemptions it used, hashes before its last step, its node)
    stack: list[tuple[tuple[int, ...], int, _Seeds | None, _Node | None]] = [
        (tuple(start), start_preemptions, None, None)]
    frontier: list[tuple[tuple[int, ...], int]] = []
    failure: Failure | None = None
    # Every step is a function of the state key, the VMM's too: the zap loops' iterators are in
    # the key (kvmmu.check.state.hidden_iterators) and so is the order of the active list the
    # loops copy (VM.state_key), so the edge map holds every thread's steps.
    checks: list[tuple[tuple[int, ...], int, str]] = []  # (schedule, world hash, why) of cuts

    classes = symmetry_classes(World(config))
    symmetric = symmetry and any(len(c) > 1 for c in classes)
    # With symmetry the visited set holds orbits; the edge map and the sleep sets speak of
    # concrete worlds (a thread index means a vCPU), so their cuts look up concrete states.
    concrete: dict[int, tuple[tuple[int, int], ...]] = {} if symmetric else visited
    reached: set[int] = set()
    # Domination across scheduler contexts (see the module docstring): world (orbit, without the
    # context) -> the fewest preemptions it was explored with from no context, and from any.
    cross = reduce and not depth_is_bound and (bounded or memo is not None)
    wfront = learnt.fronts if cross else {}
    wconcrete: Fronts = {} if symmetric else wfront
    worlds: set[int] = set()

    def dominated(world_hash: int, after: int | bool | None, point: tuple[int, int]) -> bool:
        """Whether the concrete world reached with context ``after`` (False: not known) and
        ``point`` was explored with no more preemptions (and depth)."""
        if after is not False:
            front = concrete.get(with_context(world_hash, after))
            if front is not None and any(p <= point[0] and d <= point[1] for p, d in front):
                return True
        if cross:
            wf = wconcrete.get(world_hash)
            return wf is not None and (wf[0] <= point[0] or wf[1] < point[0])
        return False

    def cut(known: tuple[int, int | bool | None], p: int, depth: int, source: str,
            schedule: Sequence[int], t: int | None = None) -> bool:
        """Whether a transition known to lead to ``known`` (world hash, context there), taken
        with ``p`` preemptions to ``depth`` steps, reaches a state explored with no more: then it
        is not taken (counted; with ``verify_sleep`` its schedule, ``schedule`` and then ``t``,
        is replayed at the end to check where it leads)."""
        if not dominated(known[0], known[1] if bounded else None,
                         (p, depth if depth_is_bound else 0)):
            return False
        stats.sleep_pruned += 1
        if verify_sleep:
            checks.append(((*schedule, *(() if t is None else (t,))), known[0], source))
        return True

    deadline = None if time_limit is None else t0 + time_limit
    while stack and failure is None:
        if deadline is not None and time.perf_counter() > deadline:
            stats.stopped = "time limit"
            break
        prefix, pre, seeds, node = stack.pop()
        if node is not None:
            # Where this alternative leads may have been learnt since it was pushed (the same
            # world stepped by a later run): cut it now rather than replay its prefix to see.
            known = edges.get_full(node.world_hash, prefix[-1])
            if known is not None and cut(known, pre, len(prefix), "edge", prefix):
                continue
        stats.schedules += 1
        run = _Run(World(config), preemptions=pre)
        world = run.world
        keyer = Keyer(world, canon)
        findings: list[Finding] = []
        before: list[int] | None = None  # shared parts before the last step taken
        reads = 0  # the parts the last step taken may read
        if prefix:
            replay = world.step
            for t in prefix[:-1]:
                if replay(t):
                    raise AssertionError("a replayed prefix failed before its last step")
            t = prefix[-1]
            if seeds is not None:
                keyer.threads.adopt(seeds.threads)
                keyer.shared.adopt(seeds.pages)
                before = seeds.parts
            elif reduce:
                before = keyer.shared.components().parts
            if reduce:
                reads = reads_of(world, t)
            keyer.ran(t)
            findings = _step(world, t)
        stats.steps += len(prefix)
        run.schedule = list(prefix)
        run.last = prefix[-1] if prefix else None
        # The sleeping transitions: each with the world hash it would lead to from here.
        sleep: list[_Sleeper] = []
        came_from = node  # the node of the state before the last step, when it has one
        prev_hash = node.world_hash if node is not None else 0
        while not findings:
            # Key and check the state first: the final state (every thread done) is where a stale
            # SPTE left by the last update shows.
            depth = len(run.schedule)
            components = keyer.shared.components()
            world_hash = keyer.world_hash(components)
            # Switching away from the thread that ran last is a preemption exactly when it is
            # the scheduler context (it could go on, and not at a natural yield point).
            switch = _switch_context(world, run.last)
            context = switch if bounded else None
            key = with_context(world_hash, context)
            world_key = (symmetric_key(keyer, components, None, classes) if symmetric
                         else world_hash)
            if keep_states:  # orbits whether or not symmetry is on: comparable across searches
                reached.add(world_key if symmetric else
                            symmetric_key(keyer, components, None, classes))
            if symmetric:
                point = (run.preemptions, depth if depth_is_bound else 0)
                cfront = concrete.get(key)
                if cfront is None or not any(p <= point[0] and d <= point[1] for p, d in cfront):
                    concrete[key] = (*(q for q in cfront or ()
                                       if not (point[0] <= q[0] and point[1] <= q[1])), point)
                key = symmetric_key(keyer, components, context, classes)
            if reduce and run.last is not None and before is not None:
                # Book the step just taken: its footprint, where it led, and wake the sleepers
                # that depend on it.
                u = run.last
                foot = footprint(before, components.parts)
                edges.add(prev_hash, u, world_hash, switch)
                if came_from is not None:
                    earlier = [*came_from.sleep, *came_from.done]
                    came_from.done.append((u, reads, foot, world_hash, world.threads[u].pending))
                    sleep = earlier
                sleep = [(t, r, w, nxt, c) for t, r, w, h, c in sleep
                         if independent(t, r, w, u, reads, foot)
                         and (nxt := edges.get(h, u)) is not None]
                came_from = None
            before = components.parts
            prev_hash = world_hash
            point = (run.preemptions, depth if depth_is_bound else 0)
            front = visited.get(key)
            if front is not None and any(p <= point[0] and d <= point[1] for p, d in front):
                stats.pruned += 1
                break
            if cross:
                wf = wfront.get(world_key)
                if wf is not None and (wf[0] <= point[0] or wf[1] < point[0]):
                    stats.pruned += 1
                    stats.context_pruned += 1
                    break
                p0 = point[0]
                nf = (p0 if context is None else _NEVER, p0) if wf is None else (
                    min(wf[0], p0) if context is None else wf[0], min(wf[1], p0))
                wfront[world_key] = nf
                if symmetric:
                    cf = wconcrete.get(world_hash)
                    wconcrete[world_hash] = nf if cf is None else (min(cf[0], nf[0]),
                                                                    min(cf[1], nf[1]))
            worlds.add(world_key)
            if front is None:
                visited[key] = (point,)
                stats.states += 1
                shared = components.combined()
                if shared not in checked:
                    findings = world.check_state()
                    if findings:
                        break
                    checked.add(shared)
            else:
                visited[key] = (*(q for q in front if not (point[0] <= q[0] and point[1] <= q[1])),
                                point)
            if world.all_done():
                stats.completed += 1
                break
            enabled = world.enabled_threads()
            if not enabled:
                findings = [world.deadlock()]
                break
            if depth >= max_depth:
                stats.cut += 1
                break
            if frontier_depth is not None and depth >= frontier_depth:
                frontier.append((tuple(run.schedule), run.preemptions))  # a task for later
                break
            order = enabled
            if run.last in enabled:
                order = [run.last, *(t for t in enabled if t != run.last)]
            asleep = {s[0]: s for s in sleep}
            first: tuple[int, int] | None = None
            alternatives: list[tuple[int, int]] = []
            for t in order:
                # Without a bound preemptions are not counted: a state is explored once.
                p = run.preemptions + (bounded and switch is not None and t != switch)
                if preemptions is not None and p > preemptions:
                    continue
                sleeper = asleep.get(t)
                known = edges.get_full(world_hash, t) if reduce else None
                source = "edge"
                if known is None and sleeper is not None:
                    source = "sleep"
                    known = (sleeper[3], _context_after(t, sleeper[4]))
                    edges.add(world_hash, t, *known)
                # Where t leads is known (the same world stepped before, or a sleep set's
                # commuted order): cut it if that state was reached with no more preemptions.
                if known is not None and cut(known, p, depth + 1, source, run.schedule, t):
                    continue
                if first is None:
                    first = (t, p)
                else:
                    alternatives.append((t, p))
            if alternatives:
                seeds = _Seeds(keyer.threads.seeds(), keyer.shared.page_seeds(), components.parts)
                here = _Node(world_hash, sleep=list(sleep)) if reduce else None
                for t, p in alternatives:
                    stack.append(((*run.schedule, t), p, seeds, here))
                came_from = here
            if first is None:
                break
            t, run.preemptions = first
            run.schedule.append(t)
            run.last = t
            stats.steps += 1
            if reduce:
                reads = reads_of(world, t)
            keyer.ran(t)
            findings = _step(world, t)
        if world.vm.kvm.mmu.stats.generation_wraps:
            stats.wrap_runs += 1
        if findings:
            failure = Failure(tuple(run.schedule), tuple(findings))
        if progress is not None and stats.schedules % progress_every == 0:
            stats.elapsed = time.perf_counter() - t0
            stats.queue = len(stack)
            stats.worlds = len(worlds)
            progress(stats)
    for schedule, expected, source in checks:
        _verify_cut(config, canon, schedule, expected, source)
    stats.elapsed = time.perf_counter() - t0
    stats.queue = len(stack)
    stats.worlds = len(worlds)
    if progress is not None:
        progress(stats)
    return Result(
        "exhaustive",
        stats,
        failure,
        complete=stats.cut == 0 and failure is None and not stack and not frontier,
        preemptions=preemptions,
        max_depth=max_depth,
        states=frozenset(reached) if keep_states else None,
        frontier=tuple(frontier),
    )


def explore_random(
    config: CheckConfig,
    *,
    schedules: int,
    seed: int = 0,
    preemptions: int = 2,
    max_depth: int = DEFAULT_MAX_DEPTH,
    time_limit: float | None = None,
    progress: Progress | None = None,
    progress_every: int = 20,
) -> Result:
    """``schedules`` PCT schedules with ``preemptions`` priority-change points each, seeded."""
    rng = random.Random(seed)
    stats = Stats()
    t0 = time.perf_counter()
    seen: set[int] = set()
    canon = FrameCanon()
    failure: Failure | None = None
    length = 0  # the longest schedule so far: PCT's k, where change points are drawn
    deadline = None if time_limit is None else t0 + time_limit
    for _ in range(schedules):
        if deadline is not None and time.perf_counter() > deadline:
            stats.stopped = "time limit"
            break
        stats.schedules += 1
        world = World(config)
        n = len(world.threads)
        priority = list(range(preemptions + 1, preemptions + 1 + n))
        rng.shuffle(priority)
        k = max(length, 8 * n)
        changes = {c: i for i, c in enumerate(rng.sample(range(1, k + 1), min(preemptions, k)))}
        keyer = Keyer(world, canon)
        schedule: list[int] = []
        findings: list[Finding] = []
        while not findings:
            key = keyer.world_hash(keyer.shared.components())
            if key not in seen:
                seen.add(key)
                stats.states += 1
                findings = world.check_state()
                if findings:
                    break
            if world.all_done():
                stats.completed += 1
                break
            enabled = world.enabled_threads()
            if not enabled:
                findings = [world.deadlock()]
                break
            if len(schedule) >= max_depth:
                stats.cut += 1
                break
            t = max(enabled, key=lambda i: priority[i])
            schedule.append(t)
            stats.steps += 1
            keyer.ran(t)
            findings = _step(world, t)
            change = changes.get(len(schedule))
            if change is not None:
                priority[t] = change  # below every initial priority: another thread takes over
            elif world.threads[t].pending in FREE_SWITCH_STEPS:
                # A retrying vCPU waits for another thread: let it go last, or PCT's strict
                # priorities would starve the thread it waits for.
                priority[t] = min(priority) - 1
        if world.all_done():
            length = max(length, len(schedule))
        if findings:
            failure = Failure(tuple(schedule), tuple(findings))
            break
        if progress is not None and stats.schedules % progress_every == 0:
            stats.elapsed = time.perf_counter() - t0
            progress(stats)
    stats.elapsed = time.perf_counter() - t0
    if progress is not None:
        progress(stats)
    return Result(
        "random",
        stats,
        failure,
        complete=False,
        preemptions=preemptions,
        max_depth=max_depth,
        seed=seed,
        schedules_requested=schedules,
    )
