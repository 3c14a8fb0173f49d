"""``kvmmu run``: a scenario under every strategy, in simulated time, compared and reported.

Parsing and formatting only: the simulation is :mod:`kvmmu.sim.run` (the model's own protocol
generators, charged by :mod:`kvmmu.sim.costs`), the outputs are :mod:`kvmmu.report`. Under the
timed measures the table shows the work counted (faults, refaults, fast-path hits, walks, work under
``mmu_lock`` as :mod:`kvmmu.stats` sums it, wraps, oracle violations). Bad input is one line on stderr
and exit status 2 (click's usage errors, or :class:`InputError`).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from kvmmu.cli.progress import progress_bar
from kvmmu.cli.strategies import StrategyParam
from kvmmu.mmu.invalidation import STRATEGIES, resolve_strategy
from kvmmu.report.atomic import OutputError, check_output_dir
from kvmmu.report.files import report_dict
from kvmmu.report.output import write_report
from kvmmu.report.seed import seed_figure
from kvmmu.report.tables import comparison_table
from kvmmu.scenarios import ScenarioError as KindError
from kvmmu.scenarios import for_run
from kvmmu.sim import experiments as ex
from kvmmu.sim.budget import check_memory
from kvmmu.sim.costs import CostError, load_costs
from kvmmu.sim.results import RunResult
from kvmmu.sim.run import MMU_CHOICES, SimOptions, resolve_mmu, simulate_all
from kvmmu.sim.workloads.schema import (
    MAX_MEMORY,
    MAX_VCPUS,
    ScenarioError,
    parse_size,
    scenario_names,
)

DEFAULT_SCENARIO = "boot"
#: Exit statuses besides 0 and 2 (bad input); documented in the command's --help.
EXIT_VIOLATIONS = 1
EXIT_TIME_LIMIT = 3
DEFAULT_OUT = Path("kvmmu-out")


class InputError(click.ClickException):
    """Bad input: one line (``Error: ...``) on stderr and exit status 2."""

    exit_code = 2


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    parsed = parse_size(value.strip()) if not value.strip().isdigit() else int(value)
    if not isinstance(parsed, int):  # pragma: no cover - parse_size returns int or raises
        raise InputError(f"--memory: not a size: {value!r}")
    return parsed


def _mmus(names: list[str], requested: str, err: Console) -> dict[str, str]:
    """The MMU each strategy runs: ``requested`` where its kernel has it, else the shadow MMU."""
    out = {name: resolve_mmu(name, requested) for name in names}
    fallback = [n for n in names if requested == "tdp" and out[n] == "shadow"]
    if fallback and len(fallback) == len(names):
        raise InputError(f"--mmu tdp: {', '.join(names)} had no TDP MMU (it came with 5.10; "
                         "`kvmmu strategies --json` shows tdp_mmu); use --mmu shadow or auto")
    if fallback:
        err.print(f"note: no TDP MMU in {', '.join(fallback)}: they run the shadow MMU")
    return out


@click.command("run")
@click.argument("scenario", required=False, default=DEFAULT_SCENARIO, metavar="[SCENARIO]")
@click.option(
    "-s",
    "--strategy",
    "strategies",
    multiple=True,
    type=StrategyParam(),
    metavar="NAME",
    help="Strategy to simulate (repeatable). Default: all of "
    f"{', '.join(STRATEGIES)}. Append +no-wrap-zap or +cache-without-gen for a deliberately "
    "broken variant.",
)
@click.option(
    "--costs",
    "costs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cost profile (TOML, a [costs] table of <name>_ns = int, as `kvmmu calibrate` "
    "writes). Default: the packaged profile, whose comments cite every figure.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workload.")
@click.option(
    "--out",
    "out_dir",
    help="Results folder: a new or empty folder, or one kvmmu wrote before (replaced atomically; "
    "a folder holding other files is refused, never emptied). Default: kvmmu-out/<scenario>.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print report.json on stdout instead of the table (the directory is still written).",
)
@click.option(
    "--vcpus",
    type=click.IntRange(1, MAX_VCPUS),
    help=f"Override the scenario's vCPU count (1..{MAX_VCPUS}).",
)
@click.option(
    "--memory",
    help="Override the scenario's RAM size, e.g. 64GiB (at most 1TiB; a multiple of the "
    "scenario's page size).",
)
@click.option(
    "--slot-zap",
    type=click.Choice(["kernel", "slot", "all"]),
    default="kernel",
    show_default=True,
    help="What DELETE/MOVE zap: what each strategy's kernel did (`kvmmu strategies`), only the "
    "slot's SPTEs (so that the table shows MMIO invalidation alone), or everything fast "
    "(KVM_X86_QUIRK_SLOT_ZAP_ALL, the modern default).",
)
@click.option(
    "--mmu",
    type=click.Choice(MMU_CHOICES),
    default=None,
    help="Which MMU the host runs: shadow (every fault and zap takes mmu_lock for write), tdp "
    "(the TDP MMU, 5.12+: faults take mmu_lock for read, and from 5.13 the zapped roots are torn "
    "down under the read lock after the write lock is dropped), or auto: what each strategy's "
    "kernel uses on an EPT host (tdp for generation and zap-all-fast, shadow before 5.15). "
    "Default: the scenario's guest.mmu, auto unless it says otherwise. Kernels without a TDP MMU "
    "run the shadow MMU; the table's first row says which ran.",
)
@click.option("--no-oracle", is_flag=True, help="Do not check every access against the oracle (faster).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (faster).")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0.1, max=7 * 24 * 3600),
    metavar="SECONDS",
    help="Stop after this many seconds of wall time: the strategies finished by then are "
    f"reported and written, the rest listed as not run (exit status {EXIT_TIME_LIMIT}).",
)
def command(
    scenario: str,
    strategies: tuple[str, ...],
    costs_path: Path | None,
    seed: int,
    out_dir: str | None,
    as_json: bool,
    vcpus: int | None,
    memory: str | None,
    slot_zap: str,
    mmu: str | None,
    no_oracle: bool,
    no_plots: bool,
    time_limit: float | None,
) -> None:
    """Simulate SCENARIO under each invalidation strategy and compare what it costs the guest.

    SCENARIO is an embedded scenario name or a TOML file (default: boot). Embedded scenarios:
    boot, vga-bank-switch, hotplug, migration, rom-loop, virtio-mem, random, fast-zap-2013.
    It must be a *workload* scenario (kind = "workload": [guest], [vcpu], [[slots]],
    [[devices]], [[vmm]]; annotated example: examples/workload.toml). The other kinds,
    interleaving (kvmmu check) and steps (kvmmu diff), describe single accesses without time
    and have nothing to simulate; every workload also runs under check and diff, converted.

    Every vCPU and the VMM thread run the model's own fault and memslot-update code; each step
    they take is charged its cost, mmu_lock waiters spin, memslot updates wait for SRCU readers.
    The table shows memslot update latency (mean, p99), mmu_lock hold and spin, vCPU stall, and
    the work each scheme did (faults, refaults, fast-path hits, walks, zaps, wraps) with the
    oracle's verdict (a correct strategy shows 0 violations). Written to the results directory:
    report.json, summary.csv, trace.json (open in Perfetto or chrome://tracing), PNG plots and
    index.html. Every VM starts 150 generations below the wrap, so long runs cross it.

    Before it starts, the run's memory is estimated (kvmmu.sim.budget: guest pages it can touch x
    512 B, plus the interpreter): a run that would not fit in the available memory is refused,
    naming a --vcpus or --memory that would. The embedded scenarios need 130-400 MiB.

    \b
    Exit status:
      0  every strategy ran; no oracle violation except where expected (a +variant, or a
         historical strategy with known bugs)
      1  the oracle found violations under a strategy that should be correct
      2  bad input (one line on stderr)
      3  stopped by --time-limit (the finished strategies are reported)
    """
    names = list(strategies) or list(STRATEGIES)
    if time_limit is not None and not math.isfinite(time_limit):  # click lets nan through
        raise InputError(f"--time-limit: must be a number of seconds (got {time_limit})")
    try:
        sc = for_run(scenario)
        mem = _size(memory)
        if mem is not None and not 0 < mem <= MAX_MEMORY:
            raise InputError(f"--memory: must be between 4KiB and 1TiB (got {memory})")
        if vcpus is not None or mem is not None:
            try:
                sc = sc.with_overrides(vcpus=vcpus, memory=mem)
            except ScenarioError as exc:  # name the option the user typed, not the file's field
                msg = str(exc).replace("guest.memory", f"--memory {memory}")
                raise InputError(msg.replace("guest.vcpus", f"--vcpus {vcpus}")) from None
        check_memory(sc, plots=not no_plots)
        costs = load_costs(costs_path)
        mmus = _mmus(names, mmu or sc.guest.mmu, Console(stderr=True))
        # Checked before minutes of simulation, not after: a refused folder costs nothing.
        out = check_output_dir(out_dir if out_dir is not None else DEFAULT_OUT / _dirname(sc.name))
    except (ScenarioError, KindError, CostError, OutputError) as exc:
        raise InputError(str(exc)) from None
    except ValueError as exc:  # a --memory that is not a size
        raise InputError(f"--memory: {exc}") from None
    opts = SimOptions(
        seed=seed,
        oracle=not no_oracle,
        vm_options={"slot_zap": None if slot_zap == "kernel" else slot_zap, "start_near_wrap": True},
    )
    err = Console(stderr=True)
    t0 = time.perf_counter()
    deadline = t0 + time_limit if time_limit is not None else None
    finished: list[RunResult] = []
    with progress_bar(err, count="percent") as bar:
        task = bar.add_task("simulating", total=len(names))
        done: dict[str, float] = {}

        def step(name: str, fraction: float) -> None:
            if deadline is not None and time.perf_counter() > deadline:
                raise _TimeUp
            done[name] = fraction
            bar.update(task, completed=sum(done.values()), description=f"simulating {name}")

        for name in names:
            try:
                finished.append(simulate_all(sc, [name], costs,
                                             replace(opts, mmu=mmus[name]), step))
            except _TimeUp:
                break
        stopped = len(finished) < len(names)
        if not finished:
            click.echo(
                f"kvmmu: --time-limit {time_limit:g} s reached before the first strategy "
                f"({names[0]}) finished; nothing written",
                err=True,
            )
            raise SystemExit(EXIT_TIME_LIMIT)
        run = replace(finished[0], strategies=tuple(r for f in finished for r in f.strategies))
        extra = []
        if not no_plots:
            # The seed mail in one picture (`kvmmu plot seed` draws it up to 10^5 pages).
            bar.update(task, description="the seed's argument: walks vs generation")
            mail = ex.seed_argument(costs, leaf_pages=(100, 1_000, 10_000), warm_pages=(100, 1_000))
            extra.append(lambda: seed_figure(mail))
        bar.update(task, description="writing the report")
        files = write_report(run, out, plots=not no_plots, extra_plots=extra)
    wall = time.perf_counter() - t0
    unexpected = unexpected_violations(run)
    status = EXIT_TIME_LIMIT if stopped else EXIT_VIOLATIONS if unexpected else 0
    skipped = names[len(finished):]
    if stopped:
        click.echo(
            f"kvmmu: --time-limit {time_limit:g} s reached: {len(finished)} of {len(names)} "
            f"strategies finished; not run: {', '.join(skipped)}",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(report_dict(run), indent=1))
        raise SystemExit(status)
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped: do not squeeze the table into 80 columns
    console.print(comparison_table(run))
    console.print(
        "[dim]update latency: one KVM_SET_USER_MEMORY_REGION, from the ioctl to its return; "
        "mmu_lock held/spin: summed over all threads (held for read: TDP MMU faults and its "
        "teardown of zapped roots, shared; for write: everything else); vCPU stall: time vCPUs "
        "spent out of the guest handling their accesses (spin included); refaults: slow-path faults on a gfn "
        "mapped before.[/dim]"
    )
    for r in run.strategies:
        for v in r.violations[:3]:
            console.print(f"[red]{r.strategy}: oracle: {v}[/red]", highlight=False)
    console.print(f"{len(files)} files in {out}/ ({wall:.1f} s): {', '.join(f.name for f in files)}")
    if unexpected:
        click.echo(
            f"kvmmu: the oracle found violations under {', '.join(unexpected)}, which should be "
            f"correct (exit status {EXIT_VIOLATIONS})",
            err=True,
        )
    raise SystemExit(status)


def unexpected_violations(run: RunResult) -> list[str]:
    """Strategies whose oracle violations count as a failed run: those not marked as expected to
    violate (``Strategy.expected_violations``: a ``+variant``, or a kernel with known bugs)."""
    return [
        r.strategy
        for r in run.strategies
        if (r.violations or r.stats.get("oracle_violations", 0))
        and not resolve_strategy(r.strategy).expected_violations
    ]


class _TimeUp(Exception):
    """--time-limit reached: unwinds the strategy in progress (its model is discarded)."""


def _dirname(name: str) -> str:
    """A directory name for a scenario name (which a TOML file may set to anything)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "scenario"


#: The embedded scenarios, for tests and documentation.
EMBEDDED = scenario_names()
