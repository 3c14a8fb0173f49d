"""The exhaustive search split into prefix tasks and run on a dask.distributed cluster.

Design. The search tree is cut at a depth: a local search explores the states above it and stops
every run there, and each stopped run's schedule (with the preemptions it used) becomes a task
that explores the subtree below it with the full bound — the work split of parallel stateless
model checkers (the prefix tasks of parallel DPOR, Simsa, Bryant and Gibson, "Scalable Dynamic
Partial Order Reduction", RV 2012; TLC's distributed workers).  A task needs nothing but the
configuration and its prefix: it replays the prefix on a fresh world (the explorer never copies a
state), so any worker can run any task.  ``dask.distributed`` schedules the tasks: a
``LocalCluster`` of worker processes by default, or a running scheduler by address.

Tasks run in *batches*, a few per worker (TLC's and Spin's swarm runs likewise hand each worker
long jobs rather than one per state): a batch explores its prefixes one after the other in one
:class:`~kvmmu.check.explore.Memo` (each cutting the worlds the earlier ones explored, all sharing
the edge map and the canonicaliser's caches), and starts with what every batch finished so far
explored (``fronts``: world -> the fewest preemptions it was explored with, as the local search
keeps it; a world explored completely within the bound from no more preemptions covers the
same world reached again, so the cut is the local search's own, :mod:`kvmmu.check.explore`).
Batches are handed out as workers free up, so each starts with the latest fronts.  Without this,
subtrees that share states (two orders of commuting steps reach the same world from different
prefixes) explored them each: 2 vCPUs x 2 accesses x 2 updates at bound 2 ran 3.5 times the
local search's runs.  What the tasks reach is merged into a visited set kept in ``shards`` (keys
split by their low bits, so a checkpoint is written and read shard by shard); the union of what
they reach is the set of states the local search reaches, which the tests check; the first
counterexample found stops the search.  Keys are the same in every process
(:mod:`kvmmu.check.keys`).

The checkpoint (JSON, written through the caller's atomic writer after every finished batch) holds
the configuration's summary, the tasks still to run and the merged keys; a search resumed from it
runs only those tasks, starting with the fronts merged so far (kept in the checkpoint too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kvmmu.check.explore import DEFAULT_MAX_DEPTH, Failure, Fronts, Memo, Result, Stats, explore
from kvmmu.check.world import CheckConfig, Finding

#: Runs stop at this depth in the local part; the default scenario's runs are 30 to 90 steps.
DEFAULT_PREFIX_DEPTH: Final = 12
#: Batches per worker: enough for the last ones to even out the workers' loads, few enough that
#: most tasks start with what most others explored.
BATCHES_PER_WORKER: Final = 4
SHARDS: Final = 16
#: Worker processes load kvmmu from source: the explorer reads the protocol generators' frames,
#: which the compiled build's modules do not have (``kvmmu.compiled``).
WORKER_ENV: Final = (("KVMMU_INTERPRETED", "1"),)
#: 2: the shards hold worlds (states without the scheduler context), not (world, context) keys;
#: 3: a world's key keeps the order of the active list of shadow pages (``VM.state_key``).
CHECKPOINT_VERSION: Final = 3


@dataclass(frozen=True, slots=True)
class Task:
    """Explore below ``prefix`` (a schedule that used ``preemptions``)."""

    prefix: tuple[int, ...]
    preemptions: int


#: (statistics so far, batches finished, batches in all)
BatchProgress = Callable[[Stats, int, int], None]


def local_cluster(workers: int) -> Any:
    """A dask ``LocalCluster`` of ``workers`` single-threaded worker processes that load the
    protocol from source (:data:`WORKER_ENV`), with no dashboard (nobody asked for one, and
    port 8787 may belong to another program).  A context manager; ``distributed.Client(it)``."""
    from distributed import LocalCluster  # heavy: only for a distributed search

    return LocalCluster(n_workers=workers, threads_per_worker=1,  # type: ignore[no-untyped-call]
                        processes=True, dashboard_address=None, env=dict(WORKER_ENV))


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a batch reached, what it found, and the fronts it added or lowered."""

    states: frozenset[int]
    failure: Failure | None
    stats: Stats
    fronts: Fronts = field(default_factory=dict)


def run_batch(config: CheckConfig, tasks: Sequence[Task], fronts: Fronts,
              preemptions: int | None, reduce: bool, symmetry: bool,
              max_depth: int) -> TaskResult:
    """Prefix tasks one after the other, sharing one :class:`~kvmmu.check.explore.Memo` that
    starts with ``fronts`` (a top-level function, so that a worker process can unpickle it).
    Stops at the first counterexample."""
    start = dict(fronts)
    memo = Memo(fronts=fronts)
    states: set[int] = set()
    stats = Stats()
    failure: Failure | None = None
    for task in tasks:
        r = explore(config, preemptions=preemptions, reduce=reduce, symmetry=symmetry,
                    max_depth=max_depth, keep_states=True, start=task.prefix,
                    start_preemptions=task.preemptions, memo=memo)
        assert r.states is not None
        states |= r.states
        _merge(stats, r.stats)
        stats.elapsed += r.stats.elapsed
        if r.failure is not None:
            failure = r.failure
            break
    changed = {k: v for k, v in fronts.items() if start.get(k) != v}
    return TaskResult(frozenset(states), failure, stats, changed)


def _batches(tasks: Sequence[Task], n: int) -> list[tuple[Task, ...]]:
    """``tasks`` in ``n`` contiguous groups (neighbours in the search order share the most)."""
    n = max(1, min(n, len(tasks)))
    size, extra = divmod(len(tasks), n)
    out, i = [], 0
    for b in range(n):
        j = i + size + (b < extra)
        out.append(tuple(tasks[i:j]))
        i = j
    return out


def _merge_fronts(into: Fronts, part: Fronts) -> None:
    for k, (none, any_) in part.items():
        old = into.get(k)
        into[k] = (none, any_) if old is None else (min(old[0], none), min(old[1], any_))


@dataclass(slots=True)
class Shards:
    """The merged visited set, split by the keys' low bits, and the merged fronts of the worlds
    finished batches explored completely (what the next batches start with)."""

    shards: list[set[int]] = field(default_factory=lambda: [set() for _ in range(SHARDS)])
    fronts: Fronts = field(default_factory=dict)

    def add(self, keys: frozenset[int] | Sequence[int]) -> None:
        for k in keys:
            self.shards[k % SHARDS].add(k)

    def all(self) -> frozenset[int]:
        return frozenset().union(*self.shards)

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)


def _merge(total: Stats, part: Stats) -> None:
    for name in ("schedules", "completed", "steps", "pruned", "context_pruned", "sleep_pruned",
                 "cut", "wrap_runs"):
        setattr(total, name, getattr(total, name) + getattr(part, name))


def _checkpoint_text(config: CheckConfig, pending: Sequence[Task], shards: Shards) -> str:
    return json.dumps({"version": CHECKPOINT_VERSION, "config": config.summary(),
                       "pending": [[list(t.prefix), t.preemptions] for t in pending],
                       "shards": [sorted(s) for s in shards.shards],
                       "fronts": [[k, a, b] for k, (a, b) in sorted(shards.fronts.items())]})


def load_checkpoint(text: str, config: CheckConfig) -> tuple[list[Task], Shards]:
    """The tasks still to run and the keys merged so far; ValueError if it is not ours."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"not a kvmmu check checkpoint (version {CHECKPOINT_VERSION})")
    if doc.get("config") != config.summary():
        raise ValueError(f"the checkpoint is of another configuration ({doc.get('config')})")
    shards = Shards()
    for s in doc["shards"]:
        shards.add(s)
    shards.fronts = {int(k): (int(a), int(b)) for k, a, b in doc.get("fronts", ())}
    return [Task(tuple(p), int(n)) for p, n in doc["pending"]], shards


def explore_distributed(
    config: CheckConfig,
    client: Any,
    *,
    preemptions: int | None = None,
    reduce: bool = True,
    symmetry: bool = True,
    max_depth: int = DEFAULT_MAX_DEPTH,
    prefix_depth: int = DEFAULT_PREFIX_DEPTH,
    resume: tuple[list[Task], Shards] | None = None,
    save: Callable[[str], None] | None = None,
    time_limit: float | None = None,
    progress: BatchProgress | None = None,
) -> Result:
    """The exhaustive search as prefix tasks on ``client`` (a ``distributed.Client``).

    ``resume`` (from :func:`load_checkpoint`) skips the local part; ``save`` receives the
    checkpoint text after every finished batch.  ``Result.states`` is the merged visited set;
    ``stats.elapsed`` the wall-clock time of the search (the cluster's throughput, not the sum of
    the workers' times).  ``time_limit`` (seconds) stops the search: the batches still running
    are cancelled and their tasks stay in the checkpoint, so that a resumed search runs them.
    ``progress`` is called after every finished batch with the statistics so far, the batches
    finished and their total.
    """
    from distributed import TimeoutError as DaskTimeout  # the cluster is only needed here
    from distributed import wait

    stats = Stats()
    t0 = time.perf_counter()
    if resume is None:
        top = explore(config, preemptions=preemptions, reduce=reduce, symmetry=symmetry,
                      max_depth=max_depth, keep_states=True, frontier_depth=prefix_depth)
        assert top.states is not None
        shards = Shards()
        shards.add(top.states)
        _merge(stats, top.stats)
        if top.failure is not None:
            stats.elapsed = time.perf_counter() - t0
            return Result("distributed", stats, top.failure, False, preemptions, max_depth,
                          states=shards.all())
        pending = [Task(p, n) for p, n in top.frontier]
    else:
        pending, shards = resume
    workers = max(1, sum(client.nthreads().values()))
    queue = _batches(pending, BATCHES_PER_WORKER * workers)
    queue.reverse()  # popped from the end: in search order
    fronts = shards.fronts
    futures: dict[Any, tuple[Task, ...]] = {}

    def submit() -> Any:
        batch = queue.pop()
        future = client.submit(run_batch, config, batch, dict(fronts), preemptions, reduce,
                               symmetry, max_depth, pure=False)
        futures[future] = batch
        return future

    total = len(queue)
    for _ in range(min(workers, len(queue))):
        submit()
    deadline = None if time_limit is None else t0 + time_limit
    left = list(pending)
    failure: Failure | None = None
    while futures and failure is None:
        remaining = None if deadline is None else deadline - time.perf_counter()
        try:
            if remaining is not None and remaining <= 0:
                raise DaskTimeout
            done, _ = wait(list(futures), timeout=remaining,  # type: ignore[no-untyped-call]
                           return_when="FIRST_COMPLETED")
        except DaskTimeout:
            stats.stopped = "time limit"
            break
        for future in done:
            part: TaskResult = future.result()
            for task in futures.pop(future):
                left.remove(task)
            shards.add(part.states)
            _merge(stats, part.stats)
            _merge_fronts(fronts, part.fronts)
            if save is not None:
                save(_checkpoint_text(config, left, shards))
            if part.failure is not None and failure is None:
                failure = part.failure
            elif queue and failure is None:
                submit()
        if progress is not None:
            stats.states = stats.worlds = len(shards)
            stats.elapsed = time.perf_counter() - t0
            stats.queue = len(left)
            progress(stats, total - len(queue) - len(futures), total)
    for f in futures:
        f.cancel()
    if save is not None and stats.stopped is not None:
        save(_checkpoint_text(config, left, shards))  # the cancelled batches' tasks are left
    # The merged visited set holds worlds (orbits without the scheduler context: Result.states),
    # so here states and worlds are the same count.
    stats.states = stats.worlds = len(shards)
    stats.elapsed = time.perf_counter() - t0
    stats.queue = len(left)
    return Result("distributed", stats, failure, failure is None and not left, preemptions,
                  max_depth, states=shards.all())


def finding_kinds(failure: Failure | None) -> set[str]:
    return {f.kind for f in failure.findings} if failure is not None else set()


__all__ = ["Finding", "Shards", "Task", "TaskResult", "explore_distributed", "load_checkpoint",
           "run_batch"]
