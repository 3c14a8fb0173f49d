"""``kvmmu replay CAPTURE``: a real VMM's recorded memslot churn under every strategy.

Parsing and printing only: the capture is read by :mod:`kvmmu.kvm.capture`, turned into the
simulation's workload by :mod:`kvmmu.sim.workloads.replay`, simulated by :mod:`kvmmu.sim.run`,
reported by :mod:`kvmmu.report` (the usual table, plots, timeline and HTML) and judged by
:func:`kvmmu.report.replay.verdict`.  An unreadable capture or a refused output folder is one line
on stderr and exit status 2.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kvmmu.mmu.invalidation import STRATEGIES, strategy_choices
from kvmmu.report.atomic import OutputError, check_output_dir

DEFAULT_OUT = Path("kvmmu-out")


class InputError(click.ClickException):
    """Bad input: one line on stderr and exit status 2."""

    exit_code = 2


@click.command("replay")
@click.argument("capture", type=click.Path(path_type=Path))
@click.option(
    "-s",
    "--strategy",
    "strategies",
    multiple=True,
    type=click.Choice(strategy_choices()),
    metavar="NAME",
    help=f"Strategy to simulate (repeatable). Default: all of {', '.join(STRATEGIES)}.",
)
@click.option(
    "--costs",
    "costs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cost profile (TOML, as `kvmmu calibrate` writes). Default: the packaged profile.",
)
@click.option(
    "--slot-zap",
    type=click.Choice(["capture", "slot", "all"]),
    default="capture",
    show_default=True,
    help="What DELETE/MOVE zap: as the capturing kernel did (its KVM_X86_QUIRK_SLOT_ZAP_ALL "
    "setting), only the slot's SPTEs, or everything.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Results folder: new, empty or one kvmmu wrote (replaced atomically). "
    "Default: kvmmu-out/replay-<command>.",
)
@click.option("--json", "as_json", is_flag=True, help="Print report.json and the verdict as JSON.")
@click.option("--no-oracle", is_flag=True, help="Do not check every access against the oracle.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (faster).")
def command(
    capture: Path,
    strategies: tuple[str, ...],
    costs_path: Path | None,
    slot_zap: str,
    out_dir: Path | None,
    as_json: bool,
    no_oracle: bool,
    no_plots: bool,
) -> None:
    """Replay CAPTURE (a `kvmmu capture` directory or file, or a plain strace log of any VMM)
    under each invalidation strategy, in simulated time, and say which strategy makes its
    memslot churn cheapest, and why.

    The VMM thread issues the recorded KVM_SET_USER_MEMORY_REGION requests (the VMM's own slots,
    gpas, sizes, flags and host addresses) at their recorded times; each vCPU performs the guest's
    recorded MMIO accesses (kvm_mmio) at theirs. MMIO caching is on in the model, whatever the
    capturing kernel did: that is what the strategies differ in. The usual report follows (table,
    report.json, summary.csv, trace.json for Perfetto, plots, index.html), then the verdict:
    the strategies ranked by time in memslot ioctls plus vCPU stall, each one's extra cost
    explained by the work that differs. Example: kvmmu replay tests/data/qemu-q35-post
    """
    from kvmmu.kvm.capture import CaptureError, load_capture
    from kvmmu.report.files import report_dict
    from kvmmu.report.output import write_report
    from kvmmu.report.replay import verdict
    from kvmmu.report.tables import comparison_table
    from kvmmu.sim.costs import CostError, load_costs
    from kvmmu.sim.run import SimOptions, simulate_all
    from kvmmu.sim.workloads.replay import replay_workload
    from kvmmu.sim.workloads.schema import ScenarioError

    names = list(strategies) or list(STRATEGIES)
    try:
        cap = load_capture(capture)
        sc, workload = replay_workload(cap)
        costs = load_costs(costs_path)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", sc.name).strip("-.") or "replay"
        out = check_output_dir(out_dir if out_dir is not None else DEFAULT_OUT / slug)
    except (CaptureError, ScenarioError, CostError, OutputError) as exc:
        raise InputError(str(exc)) from None
    zap = cap.meta.kernel.slot_zap if slot_zap == "capture" else slot_zap
    kernel = cap.meta.kernel
    opts = SimOptions(
        oracle=not no_oracle,
        vm_options={"slot_zap": zap, "start_near_wrap": True},
        workload=workload,
        # The captured host's MMU (this project's hosts: the shadow MMU, tdp_mmu=N); a strategy
        # whose kernel had no TDP MMU runs the shadow MMU either way.
        mmu="tdp" if kernel.mmu == "tdp" and kernel.tdp_mmu else "shadow",
    )
    err = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as bar:
        task = bar.add_task("replaying", total=len(names))
        done: dict[str, float] = {}

        def step(name: str, fraction: float) -> None:
            done[name] = fraction
            bar.update(task, completed=sum(done.values()), description=f"replaying under {name}")

        run = simulate_all(sc, names, costs, opts, step)
        bar.update(task, description="writing the report")
        files = write_report(run, out, plots=not no_plots)
    wall = time.perf_counter() - t0
    v = verdict(run)
    if as_json:
        doc = report_dict(run)
        doc["verdict"] = {
            "cheapest": v.cheapest,
            "ranking": [
                {"strategy": c.strategy, "update_ns": c.update_ns, "vcpu_stall_ns": c.stall_ns, **c.work}
                for c in v.ranking
            ],
            "lines": list(v.lines),
        }
        click.echo(json.dumps(doc, indent=1))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    console.print(sc.description, highlight=False, markup=False)
    console.print(comparison_table(run))
    console.print(
        f"[dim]slot zap on DELETE/MOVE: {zap}; MMU: {opts.mmu} (the captured host's); MMIO "
        "caching on; coalesced MMIO not modelled "
        "(each buffered write is an access); update latency: one KVM_SET_USER_MEMORY_REGION, ioctl "
        "to return; vCPU stall: time vCPUs spent out of the guest handling their accesses.[/dim]"
    )
    for r in run.strategies:
        for viol in r.violations[:3]:
            console.print(f"[red]{r.strategy}: oracle: {viol}[/red]", highlight=False)
    console.print("[bold]which strategy makes this churn cheapest[/bold]")
    for line in v.lines:
        console.print(f"  {line}", highlight=False, markup=False)
    console.print(f"{len(files)} files in {out}/ ({wall:.1f} s): {', '.join(f.name for f in files)}")
