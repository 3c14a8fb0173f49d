"""``kvmmu check``: explore interleavings of vCPU accesses and memslot updates, report races.

Parsing and formatting only: the search is :func:`kvmmu.check.explore` (exhaustive, preemption
bounded, state cached) or :func:`kvmmu.check.explore_random` (PCT), a failure is shrunk by
:func:`kvmmu.check.minimise` and told in kernel terms by :func:`kvmmu.check.explain`.  Exit
status: 0 no violation, 1 a violation (or a replayed schedule that fails), 2 bad input (one line).
The report follows the error trails of model checkers such as SPIN and CHESS: the search figures,
then the numbered steps of the failing schedule, then the command that replays it (CHESS's
``/detail`` replay of a recorded schedule, here ``--replay``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kvmmu.check import (
    DEFAULT_SCENARIO,
    CheckConfig,
    ConfigError,
    Counterexample,
    Result,
    ScenarioError,
    ScheduleError,
    Stats,
    World,
    explain,
    explore,
    explore_random,
    minimise,
    parse_schedule,
)
from kvmmu.check.explore import DEFAULT_MAX_DEPTH
from kvmmu.check.scenario import Scenario
from kvmmu.check.wrap import WRAP_GEN_BITS, wrap_config, wrap_verdict
from kvmmu.mmu.invalidation import SLOT_ZAPS, STRATEGIES, VARIANTS
from kvmmu.scenarios import ScenarioError as KindError
from kvmmu.scenarios import for_check

DEFAULT_BOUND = 2


class InputError(click.ClickException):
    """Bad input: one line on stderr and exit status 2."""

    exit_code = 2


class _Bound(click.ParamType[int | None, Any]):
    """A preemption bound: a non-negative integer, or ``none`` for unbounded."""

    name = "K|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int | None:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in ("none", "inf", "unbounded"):
            return None
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is not a preemption bound: give an integer >= 0 or 'none'",
                  param, ctx)


def _scenario(path: Path) -> Scenario:
    try:
        return for_check(path)  # any kind: see kvmmu.scenarios
    except (ScenarioError, KindError) as exc:
        raise InputError(str(exc)) from None


def _wrap_command(ctx: click.Context, config: CheckConfig, bound: int | None,
                  time_limit: float | None, as_json: bool) -> None:
    names = list(STRATEGIES)
    if config.strategy not in names:
        names.append(config.strategy)
    out = Console(highlight=False, soft_wrap=True)
    verdicts = []
    for name in names:
        v = wrap_verdict(wrap_config(config, name), bound, time_limit=time_limit)
        verdicts.append(v)
        if not as_json:
            out.print(f"{name:32s} {v.states:>8,} states {v.wrap_runs:>6,} runs wrapped  "
                      f"{v.verdict}")
    failed = [v for v in verdicts if v.violation is not None and not v.expected_violations]
    if as_json:
        click.echo(json.dumps({"config": config.summary(), "gen_bits": config.mmio_gen_bits,
                               "preemption_bound": bound, "strategies":
                               [v.to_json() for v in verdicts],
                               "result": "violation" if failed else "ok"}, indent=1))
    else:
        bound_text = "none" if bound is None else str(bound)
        out.print(f"(generation of {config.mmio_gen_bits} bits, {config.summary()}, "
                  f"preemption bound {bound_text}, DELETE zaps {config.effective_slot_zap})")
    ctx.exit(1 if failed else 0)


def _distributed(config: CheckConfig, bound: int | None, max_depth: int, reduce: bool,
                 symmetry: bool, workers: int, scheduler: str | None, prefix_depth: int | None,
                 checkpoint: Path | None, time_limit: float | None,
                 progress: Callable[[Stats, int, int], None]) -> Result:
    from distributed import Client  # heavy: only for --distributed

    from kvmmu.check.distributed import (
        DEFAULT_PREFIX_DEPTH,
        explore_distributed,
        load_checkpoint,
        local_cluster,
    )
    from kvmmu.report.atomic import OutputError, atomic_write_text, check_output_file

    resume = None
    save = None
    if checkpoint is not None:
        if checkpoint.exists():
            try:
                resume = load_checkpoint(checkpoint.read_text(), config)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(f"--checkpoint {checkpoint}: {exc}") from None
        else:
            try:
                check_output_file(checkpoint, "--checkpoint")
            except OutputError as exc:
                raise InputError(str(exc)) from None

        def save(text: str) -> None:
            atomic_write_text(checkpoint, text)

    depth = DEFAULT_PREFIX_DEPTH if prefix_depth is None else prefix_depth
    try:
        if scheduler is not None:
            client = Client(scheduler, timeout=10)  # type: ignore[no-untyped-call]
            cluster = None
        else:
            cluster = local_cluster(workers)
            client = Client(cluster)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise InputError(f"--scheduler {scheduler}: {exc}") from None
    try:
        return explore_distributed(config, client, preemptions=bound, reduce=reduce,
                                   symmetry=symmetry, max_depth=max_depth, prefix_depth=depth,
                                   resume=resume, save=save, time_limit=time_limit,
                                   progress=progress)
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()


def _config(strategy: str, vcpus: int, updates: int | None, accesses: int | None,
            scenario_path: Path | None, gen_bits: int | None, start_near_wrap: int | None,
            slot_zap: str | None, mmu: str = "shadow") -> CheckConfig:
    scenario = DEFAULT_SCENARIO if scenario_path is None else _scenario(scenario_path)
    if updates is None:
        updates = min(2, len(scenario.updates))
    config = CheckConfig(strategy, scenario, vcpus, accesses, updates, gen_bits, start_near_wrap,
                         slot_zap, str(scenario_path) if scenario_path is not None else None,
                         tdp_mmu=mmu == "tdp")
    try:
        return config.validate()
    except ConfigError as exc:
        text = str(exc)
        if "TDP MMU" in text:
            text = "--mmu tdp: " + text.replace("(tdp_mmu=False)", "(--mmu shadow)")
        raise InputError(text) from None


def _stats_json(stats: Stats) -> dict[str, Any]:
    return {"states": stats.states, "worlds": stats.worlds, "schedules": stats.schedules,
            "completed": stats.completed, "steps": stats.steps, "pruned": stats.pruned,
            "context_pruned": stats.context_pruned, "sleep_pruned": stats.sleep_pruned,
            "cut": stats.cut, "queue": stats.queue, "stopped": stats.stopped,
            "seconds": round(stats.elapsed, 3),
            "states_per_second": round(stats.states_per_second, 1)}


def _mode_text(result: Result) -> str:
    bound = "none" if result.preemptions is None else str(result.preemptions)
    if result.mode == "random":
        return (f"random (PCT), {result.schedules_requested} schedules, seed {result.seed}, "
                f"{result.preemptions} priority changes per schedule, depth cap {result.max_depth}")
    how = "exhaustive, in prefix tasks on dask" if result.mode == "distributed" else "exhaustive"
    return f"{how}, preemption bound {bound}, depth cap {result.max_depth}"


@click.command("check")
@click.option("--strategy", "-s", default="generation", show_default=True, metavar="NAME",
              help=f"Strategy: {', '.join(STRATEGIES)}; append "
                   f"{' or '.join('+' + v for v in VARIANTS)} for a deliberately broken variant.")
@click.option("--vcpus", type=int, default=2, show_default=True,
              help="vCPU threads (vCPU i runs script i mod n of the scenario).")
@click.option("--updates", type=int, default=None,
              help="Memslot updates the VMM thread issues: the scenario's first M (default 2).")
@click.option("--accesses", type=int, default=None,
              help="Accesses per vCPU: the first K of its script (default: all).")
@click.option("--bound", type=_Bound(), default=str(DEFAULT_BOUND), show_default=True,
              help="Preemption bound (CHESS): exhaustive search of every schedule with at most K "
                   "preemptions ('none': every schedule). With --random: PCT change points.")
@click.option("--depth", type=click.IntRange(1), default=None,
              help=f"Bound every schedule to D steps (default: a safety cap of "
                   f"{DEFAULT_MAX_DEPTH}, reported if it ever cuts).")
@click.option("--random", "random_schedules", type=click.IntRange(1), default=None, metavar="R",
              help="Run R seeded random (PCT) schedules instead of the exhaustive search.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random.")
@click.option("--scenario", "scenario_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An interleaving scenario (kind = \"interleaving\": [vm], [[slots]], [[vcpus]] "
                   "accesses = [...], [[updates]]; examples/interleaving.toml), or any other "
                   "kind, converted: a workload file or embedded name (boot, ...) gives its first "
                   "memslot changes on a compacted map, a steps file (kvmmu diff's) its requests "
                   "and each vCPU's accesses. Default: mmio-to-ram (gfn 0x100 MMIO->RAM, delete "
                   "slot 0, dirty-log slot 1).")
@click.option("--gen-bits", type=int, default=None,
              help="Compare only this many MMIO generation bits (2..19), so it wraps in a few "
                   "updates.")
@click.option("--start-near-wrap", type=click.IntRange(1), default=None, metavar="N",
              help="Start the generation N below the wrap.")
@click.option("--slot-zap", type=click.Choice(SLOT_ZAPS), default=None,
              help="What DELETE/MOVE zap: everything (all: KVM's default quirk), only the slot's "
                   "SPTEs (slot), or everything the pre-3.11 way (all-slow).")
@click.option("--mmu", type=click.Choice(["shadow", "tdp"]), default="shadow", show_default=True,
              help="The MMU to explore: shadow (every fault takes mmu_lock for write; the MMU of "
                   "this project's host) or tdp (the strategy's TDP MMU: faults under the read "
                   "lock installing SPTEs with cmpxchg, the 5.13+ teardown of zapped roots under "
                   "the read lock; generation and zap-all-fast).")
@click.option("--replay", "replay", default=None, metavar="SCHEDULE",
              help="Replay a schedule (e.g. 0:11,vmm:2,0:6,vmm:1) and explain every step.")
@click.option("--budget", type=click.FloatRange(0), default=20.0, show_default=True,
              help="Seconds allowed for minimising a counterexample.")
@click.option("--no-reduce", is_flag=True,
              help="Turn the reductions off (sleep sets certified by the state cache, and a "
                   "world explored from one scheduler context standing for the others it "
                   "dominates; they reach the same worlds in fewer runs).")
@click.option("--no-symmetry", is_flag=True,
              help="Tell apart states that differ only by swapping vCPUs running the same "
                   "script (by default one of them stands for all).")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), default=None,
              metavar="SECONDS",
              help="Stop the search after this long; the result says it is incomplete. With "
                   "--distributed the running batches are cancelled and stay in --checkpoint, "
                   "so that running the command again resumes the search.")
@click.option("--distributed", is_flag=True,
              help="Split the exhaustive search into prefix tasks and run them on dask."
                   "distributed (a local cluster of --workers processes, or --scheduler), in "
                   "batches of tasks, a few per worker; each batch starts with the worlds the "
                   "finished ones explored and does not explore them again.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes of the local cluster (--distributed).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A running dask scheduler (tcp://host:8786) instead of a local cluster; "
                   "implies --distributed. Start its workers with KVMMU_INTERPRETED=1 (the "
                   "explorer reads the protocol's frames, which a compiled build has not).")
@click.option("--prefix-depth", type=click.IntRange(1), default=None, metavar="D",
              help="Where the tree is cut into tasks (--distributed; default 12 steps).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file of the distributed search: written after every batch; an "
                   "existing one is resumed (--distributed).")
@click.option("--wrap", "wrap", is_flag=True,
              help="Report, strategy by strategy, whether it is correct across the MMIO "
                   "generation wrap: every strategy (and --strategy, if it is a variant) is "
                   "searched with a narrow generation (--gen-bits, default 2), all the "
                   "scenario's updates and DELETE zapping only its slot (--slot-zap, default "
                   "slot); the bound defaults to 1 here.  Exit status 1 if a strategy that "
                   "should be correct is not.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-trace", is_flag=True, help="Leave the trace lines out of the counterexample.")
@click.pass_context
def command(ctx: click.Context, strategy: str, vcpus: int, updates: int | None,
            accesses: int | None, bound: int | None, depth: int | None,
            random_schedules: int | None, seed: int, scenario_path: Path | None,
            gen_bits: int | None, start_near_wrap: int | None, slot_zap: str | None, mmu: str,
            replay: str | None, budget: float, no_reduce: bool, no_symmetry: bool,
            time_limit: float | None, distributed: bool, workers: int, scheduler: str | None,
            prefix_depth: int | None, checkpoint: Path | None, wrap: bool, as_json: bool,
            no_trace: bool) -> None:
    """Explore interleavings of vCPU accesses and memslot updates, looking for stale MMIO SPTEs.

    N vCPU threads run short access scripts against M KVM_SET_USER_MEMORY_REGION calls from one
    VMM thread; at every step of the model's fault path and memslot update a scheduler chooses
    who runs next. After every step the oracle's invariant is checked: no MMIO SPTE or vCPU MMIO
    cache may still answer for a gfn a memslot backs once the update is complete, and every
    completed access must match the memslots in force. A violation is shown as a minimised,
    numbered counterexample in kernel terms, with its trace lines and a command that replays it.
    Exit status: 0 no violation, 1 violation, 2 bad input.
    """
    if wrap:
        scenario = DEFAULT_SCENARIO if scenario_path is None else _scenario(scenario_path)
        config = _config(strategy, vcpus, len(scenario.updates) if updates is None else updates,
                         accesses, scenario_path, WRAP_GEN_BITS if gen_bits is None else gen_bits,
                         start_near_wrap, "slot" if slot_zap is None else slot_zap, mmu)
        if ctx.get_parameter_source("bound") is click.core.ParameterSource.DEFAULT:
            bound = 1
        _wrap_command(ctx, config, bound, time_limit, as_json)
    config = _config(strategy, vcpus, updates, accesses, scenario_path, gen_bits,
                     start_near_wrap, slot_zap, mmu)
    max_depth = depth if depth is not None else DEFAULT_MAX_DEPTH
    out = Console(highlight=False, soft_wrap=True)
    if replay is not None:
        try:
            schedule = parse_schedule(World(config), replay)
            replayed = explain(config, schedule, max_depth=max_depth)
        except ScheduleError as exc:
            raise InputError(f"--replay: {exc}") from None
        if as_json:
            click.echo(json.dumps({"config": config.summary(), "result":
                                   "violation" if replayed.findings else "ok",
                                   "counterexample": replayed.to_json()}, indent=1))
        else:
            out.print(f"kvmmu check: {config.summary()}; replaying {replay}")
            out.print(replayed.render(trace=not no_trace))
        ctx.exit(1 if replayed.findings else 0)
    err = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[eta]}"), console=err,
                  transient=True, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("exploring" if random_schedules is None else "random schedules",
                            total=random_schedules, info="", eta="")

        def progress(stats: Stats) -> None:
            # ETA: of the schedules asked for (random), or of the time limit; an exhaustive
            # search's size is not known before it ends.
            rate = stats.states_per_second
            if random_schedules and stats.schedules:
                left = stats.elapsed * (random_schedules - stats.schedules) / stats.schedules
            elif time_limit is not None:
                left = time_limit - stats.elapsed
            else:
                left = None
            bar.update(task, completed=stats.schedules if random_schedules else None,
                       info=f"{stats.states:,} states, {rate:,.0f} states/s, "
                            f"{stats.pruned + stats.sleep_pruned:,} pruned, "
                            f"queue {stats.queue:,}",
                       eta="" if left is None else f"ETA {max(left, 0):.0f} s")

        def batches(stats: Stats, done: int, total: int) -> None:
            # The distributed search knows its size: the batches; ETA from their rate.
            left = stats.elapsed * (total - done) / done if done else None
            bar.update(task, completed=done, total=total,
                       info=f"{done}/{total} batches, {stats.states:,} states, "
                            f"{stats.states_per_second:,.0f} states/s, "
                            f"{stats.pruned + stats.sleep_pruned:,} pruned, "
                            f"{stats.queue:,} tasks left",
                       eta="" if left is None else f"ETA {left:.0f} s")

        if distributed or scheduler is not None:
            if random_schedules is not None:
                raise InputError("--distributed: the random mode is not distributed; drop --random")
            result = _distributed(config, bound, max_depth, not no_reduce, not no_symmetry,
                                  workers, scheduler, prefix_depth, checkpoint, time_limit,
                                  batches)
        elif random_schedules is None:
            result = explore(config, preemptions=bound, max_depth=max_depth,
                             depth_is_bound=depth is not None, reduce=not no_reduce,
                             symmetry=not no_symmetry, time_limit=time_limit,
                             progress=progress)
        else:
            result = explore_random(config, schedules=random_schedules, seed=seed,
                                    preemptions=DEFAULT_BOUND if bound is None else bound,
                                    max_depth=max_depth, time_limit=time_limit,
                                    progress=progress)
        found: Counterexample | None = None
        minimised: dict[str, Any] | None = None
        if result.failure is not None:
            bar.update(task, description="minimising the counterexample")
            kind = result.failure.findings[0].kind
            m = minimise(config, result.failure.schedule, kind, budget=budget,
                         max_depth=max_depth)
            found = explain(config, m.run.executed, max_depth=max_depth)
            minimised = {"from_steps": m.original_length, "to_steps": len(m.run.executed),
                         "shortest_proven": m.shortest, "replays": m.replays}
    stats = result.stats
    ce = found
    if as_json:
        doc = {"config": {"strategy": config.strategy, "scenario": config.scenario.name,
                          "vcpus": config.vcpus, "accesses": config.accesses,
                          "updates": len(config.update_list()), "summary": config.summary()},
               "mode": result.mode, "preemption_bound": result.preemptions,
               "max_depth": result.max_depth, "seed": result.seed, "stats": _stats_json(stats),
               "result": "violation" if ce is not None else "ok", "complete": result.complete,
               "minimised": minimised, "counterexample": ce.to_json() if ce else None}
        click.echo(json.dumps(doc, indent=1))
    else:
        out.print(f"kvmmu check: {config.summary()}")
        out.print(f"mode: {_mode_text(result)}")
        out.print(f"states explored: {stats.states} ({stats.worlds} worlds)  schedules run: "
                  f"{stats.schedules}  time: {stats.elapsed:.2f} s"
                  f"{' wall on the cluster' if result.mode == 'distributed' else ''}  "
                  f"({stats.states_per_second:,.0f} states/s)")
        out.print(f"pruned: {stats.pruned} at visited states ({stats.context_pruned} explored "
                  f"from another scheduler context), {stats.sleep_pruned} by the partial-order "
                  f"reduction")
        if stats.stopped is not None:
            out.print(f"stopped by the {stats.stopped}: the search is not exhaustive")
        if ce is None:
            if stats.stopped is not None:
                out.print(f"no violation in the {stats.states} states explored before the "
                          f"{stats.stopped}")
            elif result.mode == "random":
                out.print(f"no violation in {stats.schedules} random schedules")
            elif stats.cut:
                out.print(f"no violation found, but {stats.cut} schedules were cut at the depth "
                          f"cap of {max_depth} steps: not exhaustive (raise --depth)")
            else:
                out.print("no violation within the bound")
        else:
            assert minimised is not None
            out.print(f"VIOLATION: {ce.findings[0] if ce.findings else 'not reproduced'}")
            proven = "shortest" if minimised["shortest_proven"] else "shortest found in budget"
            out.print(f"minimised from {minimised['from_steps']} to {minimised['to_steps']} steps "
                      f"({proven})")
            out.print(ce.render(trace=not no_trace))
    ctx.exit(1 if ce is not None else 0)
