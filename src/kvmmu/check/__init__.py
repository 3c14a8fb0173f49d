"""``kvmmu.check``: explore the interleavings of vCPU accesses and memslot updates for races.

The package drives the model's own protocol generators (``kvmmu.mmu.steps``) under a controlled
scheduler.  :mod:`~kvmmu.check.scenario` says what runs, :mod:`~kvmmu.check.world` builds one run
of it, :mod:`~kvmmu.check.state` defines the key of a state for the visited set and
:mod:`~kvmmu.check.keys` computes it incrementally, :mod:`~kvmmu.check.explore`
searches (exhaustive with preemption bounding and state caching, or PCT random),
:mod:`~kvmmu.check.por` cuts runs by partial-order reduction, :mod:`~kvmmu.check.wrap`
reports each strategy across the generation wrap, :mod:`~kvmmu.check.distributed` runs the
search as prefix tasks on dask, :mod:`~kvmmu.check.minimize` shrinks a failing
schedule, :mod:`~kvmmu.check.explain` tells it in
kernel terms, and :mod:`~kvmmu.check.schedule` replays one.  Re-exports only, and over a
compiled build (``make compiled`` compiles the explorer's hot modules) one repair:
:func:`kvmmu.compiled.repair_pickling` lets their frozen dataclasses be unpickled again.

Prior art, cited where it is used: stateless model checking (VeriSoft), preemption bounding
(CHESS), state caching in place of partial-order reduction (DPOR), PCT random scheduling, delta
debugging and breadth-first trace shortening (TLC, SPIN).
"""

from kvmmu import compiled as _compiled
from kvmmu.check.explain import Counterexample, ExplainedStep, explain
from kvmmu.check.explore import Failure, Result, Stats, explore, explore_random
from kvmmu.check.minimize import Minimised, minimise
from kvmmu.check.scenario import DEFAULT_SCENARIO, Scenario, ScenarioError, load_scenario
from kvmmu.check.schedule import ScheduleError, format_schedule, parse_schedule, run_schedule
from kvmmu.check.world import CheckConfig, ConfigError, Finding, World

_compiled.repair_pickling()  # every explorer module is loaded by now (explore imports the rest)

__all__ = [
    "DEFAULT_SCENARIO",
    "CheckConfig",
    "ConfigError",
    "Counterexample",
    "ExplainedStep",
    "Failure",
    "Finding",
    "Minimised",
    "Result",
    "Scenario",
    "ScenarioError",
    "ScheduleError",
    "Stats",
    "World",
    "explain",
    "explore",
    "explore_random",
    "format_schedule",
    "load_scenario",
    "minimise",
    "parse_schedule",
    "run_schedule",
]
