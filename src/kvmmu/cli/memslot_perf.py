"""``kvmmu memslot-perf``: the kernel selftest ``memslot_perf_test`` against the model.

Parsing and formatting only; the test is :mod:`kvmmu.sim.memslot_perf`.  The flags and the output
lines are the selftest's (``tools/testing/selftests/kvm/memslot_perf_test.c``), so that a run of
the real test and of the model can be laid side by side.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console

from kvmmu.cli.strategies import StrategyParam
from kvmmu.sim.costs import CostError, load_costs
from kvmmu.sim.memslot_perf import NTESTS, TESTS, PerfArgs, memslot_perf, report_lines

_TESTS_HELP = "; ".join(f"{i}: {name}" for i, (name, _) in enumerate(TESTS))


@click.command("memslot-perf")
@click.option("-s", "nslots", type=int, default=-1, show_default=True,
              help="Memslot count cap (-1: no cap, i.e. the kernel's KVM_CAP_NR_MEMSLOTS).")
@click.option("-f", "first", type=int, default=0, show_default=True,
              help=f"First test to run (0..{NTESTS - 1}).")
@click.option("-e", "last", type=int, default=NTESTS - 1, show_default=True,
              help=f"Last test to run (0..{NTESTS - 1}).")
@click.option("-l", "seconds", type=int, default=5, show_default=True,
              help="Test length in (simulated) seconds.")
@click.option("-r", "runs", type=int, default=1, show_default=True,
              help="Runs per test (the model is deterministic: runs are identical).")
@click.option("--strategy", type=StrategyParam(), default="generation", show_default=True,
              help="The kernel modelled (see `kvmmu strategies`); sets KVM_CAP_NR_MEMSLOTS "
                   "and the memslot storage of its era.")
@click.option("--memslots", "storage", type=click.Choice(["era", "array", "tree"]),
              default="era", show_default=True,
              help="Memslot storage: the strategy's era, the sorted array copied per update "
                   "(before 5.17), or the 5.17+ trees.")
@click.option("--costs", "costs_path", type=click.Path(dir_okay=False), default=None,
              help="Cost profile (TOML; e.g. from `kvmmu calibrate`); default: packaged.")
@click.option("--model-iterations", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Iterations driven through the model; the rest of the test length repeats "
                   "the last one.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead.")
def command(nslots: int, first: int, last: int, seconds: int, runs: int, strategy: str,
            storage: str, costs_path: str | None, model_iterations: int, as_json: bool) -> None:
    """Run memslot_perf_test's tests on the model, printing the selftest's lines.

    \b
    Tests (as numbered by the selftest): {tests}.
    Defaults are the selftest's: every test, no slot cap, 5 s each, 1 run.

    \b
    Examples:
      kvmmu memslot-perf -f 1 -e 1                       # unmap at 32k slots, 5.17+ trees
      kvmmu memslot-perf -f 1 -e 1 --memslots array      # the same before 5.17
      kvmmu memslot-perf -s 8194 -f 0 -e 0 --memslots array
    """
    try:
        args = PerfArgs(first, last, nslots, seconds, runs, model_iterations)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        costs = load_costs(costs_path)
    except CostError as exc:
        raise click.UsageError(str(exc)) from None
    array = None if storage == "era" else storage == "array"
    console = Console(stderr=True)
    if sys.stderr.isatty():
        with console.status("memslot-perf") as status:
            report = memslot_perf(strategy, costs, args, array,
                                  progress=lambda name: status.update(f"memslot-perf: {name}"))
    else:
        report = memslot_perf(strategy, costs, args, array)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    storage_text = "sorted array, copied per update (before 5.17)" if report.memslot_array \
        else "interval tree + rbtree + hash (5.17+)"
    click.echo(f"# kvmmu model of memslot_perf_test: {report.strategy}, memslots: {storage_text}; "
               f"costs {report.costs_path}")
    for line in report_lines(report):
        click.echo(line)


command.__doc__ = (command.__doc__ or "").replace("{tests}", _TESTS_HELP)
command.help = (command.help or "").replace("{tests}", _TESTS_HELP)
