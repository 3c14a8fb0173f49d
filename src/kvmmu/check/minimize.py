"""Counterexample minimisation: the fewest steps (then preemptions) that still fail.

Design, in two stages.

1. *Delta debugging* (Zeller and Hildebrandt, "Simplifying and isolating failure-inducing input",
   TSE 2002) over the schedule's thread choices, as Choi and Zeller applied it to thread switches
   (ISSTA 2002): ``ddmin`` drops chunks of choices, halving the chunk size when none can go, until
   every remaining choice is needed.  Choices are replayed *leniently* (one naming a thread that
   cannot run is skipped; the completion policy of :mod:`kvmmu.check.schedule` runs the rest), so
   every sub-list is a schedule.  Cheap, and it gives an upper bound L on the length.
2. *Shortest counterexample search*: delta debugging only keeps sub-sequences, but the shortest
   failure is often another instance of the same race (vCPU0's first access rather than vCPU1's
   second).  So a breadth-first search over states, ordered by (steps, preemptions) and cut at L,
   with no more preemptions than the delta-debugged one, looks for a shorter failing schedule,
   as explicit-state model checkers do to shorten traces
   (TLC's breadth-first search, SPIN's iterative shortening ``-i``).  The first failing state
   found is the shortest failure within that preemption bound (ties: fewest preemptions), unless
   the wall-clock budget runs out first, which the result says.

"Still fails" means findings of the same class as the original: any oracle violation for an oracle
violation (the same stale SPTE shows as ``stale-mmio-spte`` after the update or as ``stale-mmio``
when another vCPU trips over it first), otherwise the same kind (``deadlock``, ``crash``).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from kvmmu.check.schedule import RunResult, is_preemption, run_schedule
from kvmmu.check.state import KeyCache, world_key
from kvmmu.check.world import CheckConfig, Finding, World
from kvmmu.mmu.steps import Step

T = TypeVar("T")
_NON_ORACLE = frozenset({"deadlock", "crash"})


def finding_class(kind: str) -> str:
    return kind if kind in _NON_ORACLE else "oracle"


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """A 1-minimal sub-list of ``items`` for which ``fails`` holds (``fails(items)`` must hold)."""
    current = list(items)
    if fails([]):
        return []
    n = 2
    while len(current) >= 2:
        size = -(-len(current) // n)  # ceil
        chunks = [current[i:i + size] for i in range(0, len(current), size)]
        for i in range(len(chunks)):
            complement = [x for j, c in enumerate(chunks) if j != i for x in c]
            if fails(complement):
                current, n = complement, max(n - 1, 2)
                break
        else:
            for chunk in chunks:
                if len(chunk) < len(current) and fails(chunk):
                    current, n = chunk, 2
                    break
            else:
                if n >= len(current):
                    break
                n = min(2 * n, len(current))
    return current


@dataclass(frozen=True, slots=True)
class Minimised:
    """The minimised run, and whether the shortest-search proved it shortest within its budget."""

    run: RunResult
    original_length: int
    shortest: bool
    replays: int


def _fails(findings: Sequence[Finding], cls: str) -> bool:
    return any(finding_class(f.kind) == cls for f in findings)


def _step_safely(world: World, t: int) -> list[Finding]:
    try:
        return world.step(t)
    except Exception as exc:  # a crash under this interleaving is a finding
        return [Finding("crash", f"crash: {world.threads[t].name} raised {type(exc).__name__}: "
                                 f"{exc}")]


def _switch_context(world: World, last: int | None) -> int | None:
    if last is None or not world.enabled(last):
        return None
    pending = world.threads[last].pending
    return None if pending is None or pending is Step.RETRY else last


def shortest_failure(config: CheckConfig, cls: str, below: int, preemptions: int, deadline: float
                     ) -> tuple[tuple[int, ...] | None, bool, int]:
    """Breadth-first search for a failing schedule shorter than ``below`` steps.

    Only schedules with at most ``preemptions`` preemptions are searched (the count of the
    schedule being shortened): few preemptions is what makes a counterexample readable, and the
    bound keeps the search small.
    Returns (schedule or None, whether the search finished, replays).  Nodes are parent pointers
    ``(parent, choice)``; a node's world is rebuilt by replaying its path from a fresh VM.
    """
    parents: list[tuple[int, int]] = [(-1, -1)]  # node 0: the initial state
    best: dict[bytes, tuple[int, int]] = {}
    heap: list[tuple[int, int, int]] = [(0, 0, 0)]  # (depth, preemptions, node)
    replays = 0

    def path(node: int) -> list[int]:
        out: list[int] = []
        while node > 0:
            node, choice = parents[node]
            out.append(choice)
        out.reverse()
        return out

    def replay(schedule: Sequence[int]) -> World:
        nonlocal replays
        replays += 1
        world = World(config)
        for t in schedule:
            world.step(t)
        return world

    while heap:
        if time.perf_counter() > deadline:
            return None, False, replays
        depth, pre, node = heapq.heappop(heap)
        if depth + 1 >= below:
            continue
        prefix = path(node)
        world = replay(prefix)
        last = prefix[-1] if prefix else None
        dirty = False  # the world has moved past the node: replay before the next child
        for t in world.enabled_threads():
            if dirty:
                world = replay(prefix)
            p = pre + is_preemption(world, last, t)
            if p > preemptions:
                continue
            dirty = True
            findings = _step_safely(world, t)
            if not findings:
                findings = world.check_state()
            if not findings and not world.all_done() and not world.enabled_threads():
                findings = [world.deadlock()]
            if _fails(findings, cls):
                # Children of one depth are generated in (preemptions, order): this one is
                # the shortest failure; among equals the heap order gave the fewest preemptions.
                return (*prefix, t), True, replays
            if findings or world.all_done():
                continue
            key = world_key(world, _switch_context(world, t), KeyCache(len(world.threads)))
            point = (depth + 1, p)
            if key in best and best[key] <= point:
                continue
            best[key] = point
            parents.append((node, t))
            heapq.heappush(heap, (depth + 1, p, len(parents) - 1))
    return None, True, replays


def minimise(config: CheckConfig, schedule: Sequence[int], kind: str, *,
             budget: float = 20.0, max_depth: int = 2000) -> Minimised:
    """The shortest failing run found from ``schedule`` (whose run ends in a ``kind`` finding)."""
    deadline = time.perf_counter() + budget
    cls = finding_class(kind)
    cache: dict[tuple[int, ...], RunResult | None] = {}

    def attempt(choices: Sequence[int]) -> RunResult | None:
        key = tuple(choices)
        if key not in cache:
            if time.perf_counter() > deadline:
                return None  # out of budget: "does not fail", keeping what we have
            r = run_schedule(config, key, lenient=True, max_depth=max_depth)
            cache[key] = r if _fails(r.findings, cls) else None
        return cache[key]

    best = attempt(schedule)
    if best is None:
        best = run_schedule(config, schedule, max_depth=max_depth)
        if not _fails(best.findings, cls):
            raise AssertionError("the failing schedule does not reproduce")
        return Minimised(best, len(schedule), False, len(cache) + 1)
    choices = ddmin(schedule, lambda c: attempt(c) is not None)
    found = attempt(choices)
    if found is not None and (len(found.executed), found.preemptions) < (
            len(best.executed), best.preemptions):
        best = found
    shorter, finished, replays = shortest_failure(config, cls, len(best.executed), best.preemptions,
                                                 deadline)
    if shorter is not None:
        run = run_schedule(config, shorter, max_depth=max_depth)
        if _fails(run.findings, cls):
            best = run
    return Minimised(best, len(schedule), finished, len(cache) + replays)
