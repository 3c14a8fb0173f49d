"""Schedules: which thread runs at each step; their text form; running one on a fresh world.

Design. A schedule is the sequence of thread indices the explorer chose, one per step (the
"decision trace" VeriSoft and CHESS record to replay an error).  Its text form is run-length
encoded thread labels, ``0:9,vmm:2,0:13,vmm:4`` (vCPU0 for 9 steps, then the VMM for 2, ...),
short enough for a command line and readable as "who ran when".

:func:`run_schedule` executes a schedule on a fresh :class:`~kvmmu.check.world.World`, checking
after every step, in one of two modes:

* *strict* (``--replay``): every entry must name an enabled thread, else the schedule does not
  fit the configuration and :class:`ScheduleError` says where;
* *lenient* (minimisation, after Zeller and Hildebrandt's delta debugging, TSE 2002): an entry
  naming a thread that cannot run is skipped, so any sub-list of a schedule is still a schedule.

Either way, when the entries run out the run may be *completed* by a fixed policy (the thread that
ran last goes on; otherwise the lowest-numbered enabled thread), so a shortened schedule still
drives every thread to its end or to a finding.  Preemptions are counted as the explorer counts
them: switching away from a thread that could go on, except at its natural yield points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from kvmmu.check.world import CheckConfig, Finding, World
from kvmmu.mmu.steps import Step

#: Pending steps at which a thread yields of its own accord: switching away is not a preemption.
FREE_SWITCH_STEPS: Final = frozenset({Step.RETRY})


class ScheduleError(ValueError):
    """A schedule that does not parse, or does not fit the configuration (one line)."""


def is_preemption(world: World, last: int | None, choice: int) -> bool:
    """Whether running ``choice`` after ``last`` switches away from a thread that could go on."""
    if last is None or choice == last or not world.enabled(last):
        return False
    pending = world.threads[last].pending
    return pending is not None and pending not in FREE_SWITCH_STEPS


def format_schedule(world: World, schedule: Sequence[int]) -> str:
    """``0:9,vmm:2,...``: run-length encoded thread labels (``-`` for the empty schedule)."""
    runs: list[list[int]] = []
    for t in schedule:
        if runs and runs[-1][0] == t:
            runs[-1][1] += 1
        else:
            runs.append([t, 1])
    return ",".join(f"{world.label(t)}:{n}" for t, n in runs) or "-"


def parse_schedule(world: World, text: str) -> tuple[int, ...]:
    """The inverse of :func:`format_schedule` for ``world``'s thread labels."""
    labels = ", ".join(th.label for th in world.threads)
    out: list[int] = []
    text = text.strip()
    if text in ("", "-"):
        return ()
    for run in text.split(","):
        label, sep, count = run.strip().partition(":")
        t = world.index_of(label.strip())
        if t is None:
            raise ScheduleError(f"schedule entry {run!r}: thread must be one of {labels}")
        if not sep:
            n = 1
        elif count.strip().isdigit() and int(count) > 0:
            n = int(count)
        else:
            raise ScheduleError(f"schedule entry {run!r}: the count after ':' must be a positive integer")
        out.extend([t] * n)
    return tuple(out)


class StepObserver(Protocol):
    """Sees each step of :func:`run_schedule` (the counterexample explainer is one)."""

    def before(self, world: World, t: int) -> None: ...

    def after(self, world: World, t: int, findings: Sequence[Finding]) -> None: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a schedule did: the steps actually executed and the first findings (if any)."""

    executed: tuple[int, ...]
    findings: tuple[Finding, ...]
    preemptions: int
    finished: bool  # every thread ran to its end
    world: World


def default_choice(world: World, last: int | None) -> int | None:
    """The completion policy: the thread that ran last goes on, else the lowest enabled one."""
    if last is not None and world.enabled(last):
        return last
    enabled = world.enabled_threads()
    return enabled[0] if enabled else None


def run_schedule(
    config: CheckConfig,
    schedule: Sequence[int],
    *,
    lenient: bool = False,
    complete: bool = True,
    max_depth: int = 2000,
    trace: bool = False,
    observer: StepObserver | None = None,
) -> RunResult:
    """Run ``schedule`` on a fresh world, checking the oracle after every step."""
    world = World(config, trace=trace)
    executed: list[int] = []
    preemptions = 0
    last: int | None = None
    findings: list[Finding] = world.check_state()
    entries = iter(schedule)
    while not findings and not world.all_done() and len(executed) < max_depth:
        choice: int | None = None
        for t in entries:
            if not 0 <= t < len(world.threads):
                raise ScheduleError(f"schedule step {len(executed) + 1}: no thread {t}")
            if world.enabled(t):
                choice = t
                break
            if not lenient:
                th = world.threads[t]
                why = (
                    "has finished"
                    if th.done
                    else f"is blocked at {th.pending.name}"
                    if th.pending is not None
                    else "cannot run"
                )
                raise ScheduleError(
                    f"schedule step {len(executed) + 1}: {th.name} {why}; the "
                    "schedule does not fit this configuration"
                )
        if choice is None:
            if not complete:
                break
            choice = default_choice(world, last)
            if choice is None:
                findings = [world.deadlock()]
                break
        preemptions += is_preemption(world, last, choice)
        if observer is not None:
            observer.before(world, choice)
        try:
            findings = world.step(choice)
        except Exception as exc:  # the model crashing under this interleaving is a finding
            findings = [
                Finding("crash", f"crash: {world.threads[choice].name} raised {type(exc).__name__}: {exc}")
            ]
        executed.append(choice)
        last = choice
        if not findings:
            findings = world.check_state()
        if observer is not None:
            observer.after(world, choice, findings)
    return RunResult(tuple(executed), tuple(findings), preemptions, world.all_done(), world)
