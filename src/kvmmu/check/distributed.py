"""The exhaustive search split into prefix tasks and run on a dask.distributed cluster.

Design. The search tree is cut at a depth: a local search explores the states above it and stops
every run there, and each stopped run's schedule (with the preemptions it used) becomes a task
that explores the subtree below it with the full bound — the work split of parallel stateless
model checkers (the prefix tasks of parallel DPOR, Simsa, Bryant and Gibson, "Scalable Dynamic
Partial Order Reduction", RV 2012; TLC's distributed workers).  A task needs nothing but the
configuration and its prefix: it replays the prefix on a fresh world (the explorer never copies a
state), so any worker can run any task.  ``dask.distributed`` schedules the tasks: a
``LocalCluster`` of worker processes by default, or a running scheduler by address.

What the tasks reach is merged into a visited set kept in ``shards`` (keys split by their low
bits, so a checkpoint is written and read shard by shard).  Tasks do not consult it while they
run — a state two subtrees share is explored in both — so the union of what they reach is the
set of states the local search reaches, which the tests check; the first counterexample found
stops the search.  Keys are the same in every process (:mod:`kvmmu.check.keys`).

The checkpoint (JSON, written through the caller's atomic writer after every finished task) holds
the configuration's summary, the tasks still to run and the merged keys; a search resumed from it
runs only those tasks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kvmmu.check.explore import DEFAULT_MAX_DEPTH, Failure, Result, Stats, explore
from kvmmu.check.world import CheckConfig, Finding

#: Runs stop at this depth in the local part; the default scenario's runs are 30 to 90 steps.
DEFAULT_PREFIX_DEPTH: Final = 12
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


@dataclass(frozen=True, slots=True)
class TaskResult:
    states: frozenset[int]
    failure: Failure | None
    stats: Stats


def run_task(config: CheckConfig, task: Task, preemptions: int | None, reduce: bool,
             symmetry: bool, max_depth: int) -> TaskResult:
    """One prefix task (a top-level function, so that a worker process can unpickle it)."""
    r = explore(config, preemptions=preemptions, reduce=reduce, symmetry=symmetry,
                max_depth=max_depth, keep_states=True, start=task.prefix,
                start_preemptions=task.preemptions)
    assert r.states is not None
    return TaskResult(r.states, r.failure, r.stats)


@dataclass(slots=True)
class Shards:
    """The merged visited set, split by the keys' low bits."""

    shards: list[set[int]] = field(default_factory=lambda: [set() for _ in range(SHARDS)])

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
                       "shards": [sorted(s) for s in shards.shards]})


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
) -> Result:
    """The exhaustive search as prefix tasks on ``client`` (a ``distributed.Client``).

    ``resume`` (from :func:`load_checkpoint`) skips the local part; ``save`` receives the
    checkpoint text after every finished task.  ``Result.states`` is the merged visited set.
    """
    from distributed import as_completed  # the cluster is only needed here

    stats = Stats()
    if resume is None:
        top = explore(config, preemptions=preemptions, reduce=reduce, symmetry=symmetry,
                      max_depth=max_depth, keep_states=True, frontier_depth=prefix_depth)
        assert top.states is not None
        shards = Shards()
        shards.add(top.states)
        _merge(stats, top.stats)
        stats.elapsed = top.stats.elapsed
        if top.failure is not None:
            return Result("distributed", stats, top.failure, False, preemptions, max_depth,
                          states=shards.all())
        pending = [Task(p, n) for p, n in top.frontier]
    else:
        pending, shards = resume
    futures = {client.submit(run_task, config, t, preemptions, reduce, symmetry, max_depth,
                             pure=False): t for t in pending}
    left = list(pending)
    failure: Failure | None = None
    for future in as_completed(list(futures)):  # type: ignore[no-untyped-call]
        part: TaskResult = future.result()
        left.remove(futures[future])
        shards.add(part.states)
        _merge(stats, part.stats)
        stats.elapsed += part.stats.elapsed
        if save is not None:
            save(_checkpoint_text(config, left, shards))
        if part.failure is not None and failure is None:
            failure = part.failure
            for f in futures:
                f.cancel()
            break
    # The merged visited set holds worlds (orbits without the scheduler context: Result.states),
    # so here states and worlds are the same count.
    stats.states = stats.worlds = len(shards)
    return Result("distributed", stats, failure, failure is None and not left, preemptions,
                  max_depth, states=shards.all())


def finding_kinds(failure: Failure | None) -> set[str]:
    return {f.kind for f in failure.findings} if failure is not None else set()


__all__ = ["Finding", "Shards", "Task", "TaskResult", "explore_distributed", "load_checkpoint",
           "run_task"]
