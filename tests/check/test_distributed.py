"""Tests of kvmmu.check.distributed: prefix tasks on a real local dask cluster of 2 workers.

One cluster for the module (starting worker processes costs seconds); small configurations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kvmmu.check.distributed import (
    Shards,
    Task,
    _checkpoint_text,
    explore_distributed,
    load_checkpoint,
    local_cluster,
    run_batch,
)
from kvmmu.check.explore import DEFAULT_MAX_DEPTH, explore
from kvmmu.check.world import CheckConfig

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("config", [
    CheckConfig("generation", vcpus=2, updates=1, accesses=1),
    # DELETE zaps all: the configuration that showed a retry count kept in the emulator's frame
    CheckConfig("generation", vcpus=1, updates=2),
], ids=["2x1x1", "1x2x2-zap-all"])
def test_the_distributed_search_reaches_the_same_states_as_the_local_one(
        client: Any, config: CheckConfig) -> None:
    local = explore(config, preemptions=1, keep_states=True)
    saved: list[str] = []
    dist = explore_distributed(config, client, preemptions=1, prefix_depth=6,
                               save=saved.append)
    assert local.failure is None and dist.failure is None and dist.complete
    assert dist.states == local.states and len(local.states) > 500
    assert dist.stats.schedules > 1 and saved
    # The last checkpoint has nothing left to run and every key; resuming from it is a no-op.
    pending, shards = load_checkpoint(saved[-1], config)
    assert pending == [] and shards.all() == local.states
    assert shards.fronts  # what a resumed search would start with
    again = explore_distributed(config, client, preemptions=1, resume=(pending, shards))
    assert again.states == local.states


def test_a_checkpoint_resumes_the_tasks_left(client: Any) -> None:
    config = CheckConfig("generation", vcpus=1, updates=2, slot_zap="slot")
    local = explore(config, preemptions=1, keep_states=True)
    top = explore(config, preemptions=1, keep_states=True, frontier_depth=8)
    assert top.states is not None and len(top.frontier) > 2
    shards = Shards()
    shards.add(top.states)
    tasks = [Task(p, n) for p, n in top.frontier]
    resumed = explore_distributed(config, client, preemptions=1, resume=(tasks, shards))
    assert resumed.states == local.states


@pytest.mark.parametrize(("strategy", "kind"), [
    ("generation-3.11+tagged-cache", "stale-mmio-spte"),
    ("generation+cache-without-gen", "stale-mmio-cache"),
])
def test_the_distributed_search_finds_the_same_counterexamples(client: Any, strategy: str,
                                                               kind: str) -> None:
    config = CheckConfig(strategy, vcpus=1, updates=1)
    local = explore(config, preemptions=1)
    dist = explore_distributed(config, client, preemptions=1, prefix_depth=6)
    assert local.failure is not None and dist.failure is not None
    assert {f.kind for f in dist.failure.findings} == {f.kind for f in local.failure.findings}
    assert kind in {f.kind for f in dist.failure.findings}


def test_batches_cut_the_worlds_that_finished_batches_explored(client: Any) -> None:
    # Subtrees below different prefixes share worlds; a batch starts with the fronts of those
    # finished, so the cluster runs fewer schedules than the tasks would alone, for the same
    # states.
    config = CheckConfig("generation", vcpus=2, updates=1, accesses=1)
    top = explore(config, preemptions=1, keep_states=True, frontier_depth=6)
    alone = [run_batch(config, [Task(p, n)], {}, 1, True, True, DEFAULT_MAX_DEPTH)
             for p, n in top.frontier]
    t0 = time.perf_counter()
    dist = explore_distributed(config, client, preemptions=1, prefix_depth=6)
    wall = time.perf_counter() - t0
    assert dist.failure is None and dist.complete and len(top.frontier) > 4
    assert 0 < dist.stats.elapsed <= wall  # the search's wall-clock time, not the workers' sum
    assert dist.states == top.states.union(*(a.states for a in alone))
    assert dist.stats.schedules < top.stats.schedules + sum(a.stats.schedules for a in alone)


def test_a_batch_shares_its_fronts_between_its_tasks() -> None:
    config = CheckConfig("generation", vcpus=2, updates=1, accesses=1)
    top = explore(config, preemptions=1, keep_states=True, frontier_depth=6)
    tasks = [Task(p, n) for p, n in top.frontier]
    together = run_batch(config, tasks, {}, 1, True, True, DEFAULT_MAX_DEPTH)
    apart = [run_batch(config, [t], {}, 1, True, True, DEFAULT_MAX_DEPTH) for t in tasks]
    assert together.states == frozenset().union(*(a.states for a in apart))
    assert together.stats.schedules < sum(a.stats.schedules for a in apart)
    # It returns a front for every world it reached (fronts name concrete worlds, states their
    # orbits; no two vCPUs here run the same script, so the counts are equal).
    assert len(together.fronts) == len(together.states)


def test_a_time_limit_stops_the_search_and_its_checkpoint_resumes_it(client: Any) -> None:
    config = CheckConfig("generation", vcpus=2, updates=1, accesses=1)
    local = explore(config, preemptions=1, keep_states=True)
    saved: list[str] = []
    seen: list[tuple[int, int]] = []
    stopped = explore_distributed(config, client, preemptions=1, prefix_depth=6,
                                  time_limit=1e-9, save=saved.append,
                                  progress=lambda s, done, total: seen.append((done, total)))
    assert stopped.stats.stopped == "time limit" and not stopped.complete
    assert saved and stopped.stats.queue > 0
    pending, shards = load_checkpoint(saved[-1], config)
    assert len(pending) == stopped.stats.queue
    resumed = explore_distributed(config, client, preemptions=1, resume=(pending, shards),
                                  progress=lambda s, done, total: seen.append((done, total)))
    assert resumed.complete and resumed.states == local.states
    # Progress after every finished batch, counting up to the total.
    assert seen and seen[-1][0] == seen[-1][1] and all(d <= t for d, t in seen)


def test_without_a_bound_batches_cut_worlds_explored_once(client: Any) -> None:
    # Without a preemption bound a world explored once covers every later visit, so the fronts
    # batches share cut them too; the union is still the local search's.
    config = CheckConfig("generation", vcpus=1, updates=2)
    local = explore(config, preemptions=None, keep_states=True)
    dist = explore_distributed(config, client, preemptions=None, prefix_depth=6)
    assert local.failure is None and dist.failure is None and dist.complete
    assert dist.states == local.states and len(local.states) > 100


def test_a_checkpoint_keeps_the_fronts_a_resumed_search_starts_with() -> None:
    config = CheckConfig("generation", vcpus=1, updates=1)
    shards = Shards()
    shards.add([5, 17, 33])
    shards.fronts = {17: (0, 0), -3: (1 << 30, 2)}
    text = _checkpoint_text(config, [Task((0, 1), 1)], shards)
    pending, loaded = load_checkpoint(text, config)
    assert pending == [Task((0, 1), 1)]
    assert loaded.all() == {5, 17, 33} and loaded.fronts == shards.fronts
