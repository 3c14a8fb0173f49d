"""``kvmmu calibrate``: measure the real KVM, write a cost profile, show the model's prediction.

Argument parsing and printing only; measurements and the plausibility of the fit are
:mod:`kvmmu.kvm.calibrate`, the profile format is :mod:`kvmmu.sim.costs` (the profile is loaded
back with it before it is written). Every figure is printed as median ± MAD over the runs; the
whole calibration is repeated ``--rounds`` times and the quietest round is fitted, with every
estimate's range over the rounds printed beside it (:func:`kvmmu.kvm.calibrate.fit_rounds`). Exit
status: 0 profile written (or printed), 1 the fit is implausible and nothing was written (unless
``--force``), 2 bad input or a host without /dev/kvm (one line). The destination is checked before
the minutes of measuring.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from kvmmu.cli.progress import progress_bar
from kvmmu.report.atomic import OutputError, atomic_write_text, check_output_file

if TYPE_CHECKING:  # the measuring module loads ctypes bindings: imported when a run starts
    from kvmmu.kvm.calibrate import Figure, MemslotPoint, RoundsFit


class InputError(click.ClickException):
    """Bad input: one line (``Error: ...``) on stderr and exit status 2."""

    exit_code = 2


#: Exit status when the fit is implausible and no profile was written.
EXIT_IMPLAUSIBLE = 1


def _us(ns: float) -> str:
    return f"{ns / 1000:,.1f}"


def _pm(median: float, spread: float) -> str:
    """``median ± MAD`` in µs."""
    return f"{median / 1000:,.1f} ± {spread / 1000:,.1f}"


@click.command("calibrate")
@click.option(
    "--out",
    "out_text",
    help="Write the cost profile (TOML) here, atomically; an existing file is replaced only if "
    "`kvmmu calibrate` wrote it. Checked before measuring.",
)
@click.option("--quick", is_flag=True, help="Fewer points and runs (a few seconds).")
@click.option(
    "--runs",
    type=click.IntRange(min=1, max=100),
    help="Runs per figure (default 7; 3 with --quick). Medians and spreads are over the runs.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1, max=20),
    default=3,
    show_default=True,
    help="Repeat the whole calibration this many times on fresh VMs and fit the quietest round "
    "(a shared host slows whole rounds); each estimate's range over the rounds is printed.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write the profile even if a fitted cost is negative, outside its plausible range or "
    "too noisy (the problems are still printed).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print every measurement (samples, median, MAD), the fitted costs and the problems as "
    "JSON on stdout instead of tables.",
)
def command(
    out_text: str | None, quick: bool, runs: int | None, rounds: int, force: bool, as_json: bool
) -> None:
    """Measure first-touch faults, MMIO exits, exits to userspace and memslot operations with
    0 to 32k live shadow PTEs (zap-all quirk on and off) on /dev/kvm; print each figure as
    median ± MAD (median absolute deviation over --runs runs), the model's prediction next to
    the measured curve, and write a cost profile.

    Every fitted cost is checked against a plausible range stated in kvmmu.kvm.calibrate.BOUNDS
    (a loaded host can make delete look faster than create): an implausible or too noisy fit is
    reported and nothing is written (exit 1) unless --force. On a shared host, --rounds repeats
    everything and fits the least disturbed round; rounds that disagree by more than half are
    reported as a busy host. A full round takes about ten seconds, --quick a few.
    """
    from kvmmu.kvm import calibrate as kc
    from kvmmu.kvm.bindings import kvm_available  # ctypes and the ioctl tables: only when used
    from kvmmu.sim.costs import CostError, default_costs, parse_costs

    out: Path | None = None
    if out_text is not None:  # checked first: a refused destination must not cost minutes
        try:
            out = check_output_file(out_text, ours=lambda t: t.startswith(kc.PROFILE_HEADER))
        except OutputError as exc:
            raise InputError(str(exc)) from None
    reason = kvm_available()
    if reason is not None:
        raise InputError(f"the real KVM is needed: {reason}")
    err = Console(stderr=True)
    with progress_bar(err) as progress:
        task = progress.add_task("calibrating", total=kc.work_units(quick, runs, rounds))

        def advance(label: str, n: int) -> None:
            progress.update(task, advance=n, description=label)

        cals = kc.calibrate_rounds(rounds, quick=quick, runs=runs, progress=advance)

    defaults = default_costs()
    rf = kc.fit_rounds(cals, defaults.costs)
    cal, fit = rf.cal, rf.fit
    costs = fit.costs
    source = kc.profile_source(rf, f"kvmmu calibrate{' --quick' if quick else ''}")
    text = kc.profile_toml(costs, source)
    try:
        profile = parse_costs(text, str(out) if out else "<calibrated>")
    except CostError as exc:  # the format is the simulation's: refuse to write what it rejects
        raise click.ClickException(f"calibrated profile does not load: {exc}") from None
    write = out is not None and (not fit.problems or force)
    if write:
        assert out is not None
        atomic_write_text(out, text)

    lives = sorted({p.live_ptes for p in cal.memslot})

    def predict(op: str, n: int, zap_all: bool) -> int:
        return kc.predict_memslot_op(
            op, n, zap_all, profile.step, profile["memslot_ioctl_ns"], profile["spte_zapped_ns"]
        )

    if as_json:
        click.echo(json.dumps(_json(rf, predict, out if write else None), indent=1))
        if fit.problems and not force:
            raise SystemExit(EXIT_IMPLAUSIBLE)
        return

    console = Console(soft_wrap=True)
    table = Table(
        title=f"Measured on this machine's /dev/kvm (median ± MAD of {cal.runs} runs, µs)"
    )
    for col in ("what", "median ± MAD µs", "runs (µs)"):
        table.add_column(col, justify="right" if col != "what" else "left")
    for fig, label in (
        (
            cal.first_touch,
            f"first-touch fault, per 4 KiB page ({cal.first_touch_pf_taken} pf_taken)",
        ),
        (cal.mmio_round_trip, "MMIO exit round trip (Python VMM)"),
        (cal.exit_to_userspace, "exit to userspace (KVM_RUN, immediate_exit)"),
        (cal.host_page_alloc, "host page faulted in by a guest write (beyond the fault)"),
        (cal.madvise_present, "madvise(MADV_DONTNEED) of a present, guest-mapped page"),
        (cal.madvise_empty, "madvise(MADV_DONTNEED) of a dropped page"),
        (cal.null_call, "a null ctypes call (subtracted from the above)"),
    ):
        if fig is None:
            continue
        table.add_row(label, _pm(fig.median, fig.spread), " ".join(_us(s) for s in fig.samples))
    console.print(table)

    curve = Table(title="memslot operations against live shadow PTEs: measured (median ± MAD) vs model, µs")
    curve.add_column("op")
    curve.add_column("live PTEs", justify="right")
    curve.add_column("pages_4k", justify="right")
    for quirk in ("on", "off"):
        curve.add_column(f"measured, zap-all {quirk}", justify="right")
        curve.add_column(f"model, zap-all {quirk}", justify="right")
    for op in ("delete", "move", "create"):
        for n in lives:
            row = [op, f"{n:,}", f"{cal.point(op, True, n).pages_4k:,}"]
            for zap_all in (True, False):
                pt = cal.point(op, zap_all, n)
                row += [_pm(pt.median, pt.spread), _us(predict(op, n, zap_all))]
            curve.add_row(*row)
    console.print(curve)
    console.print(
        f"delete with the zap-all quirk: {fit.raw['zap_slope']:.1f} ± "
        f"{fit.spread['zap_slope']:.1f} ns per live PTE measured (slope ± MAD of per-run slopes)",
        highlight=False,
    )
    console.print(_rounds_table(rf))
    for warning in rf.warnings():
        console.print(f"[yellow]busy host:[/yellow] {warning}", highlight=False)
    for problem in fit.problems:
        console.print(f"[red]implausible:[/red] {problem}", highlight=False)
    if fit.problems and not force:
        what = f"{out} not written" if out is not None else "profile not printed"
        click.echo(
            f"kvmmu: calibration looks implausible ({len(fit.problems)} problem"
            f"{'s' if len(fit.problems) != 1 else ''}); {what}. Measure on an idle host, raise "
            "--runs, or pass --force.",
            err=True,
        )
        raise SystemExit(EXIT_IMPLAUSIBLE)
    if out is not None:
        console.print(
            f"cost profile written to {out} ({len(costs)} measured costs)", highlight=False
        )
    else:
        console.print(text, highlight=False, markup=False)


def _rounds_table(rf: RoundsFit) -> Table:
    """Each fitted estimate: the chosen round's value and the range over all rounds."""
    t = Table(
        title=f"Fitted from round {rf.chosen + 1} of {len(rf.rounds)} (the quietest); "
        "range over the rounds, ns"
    )
    for col in ("estimate", "fitted", "min", "max", "spread"):
        t.add_column(col, justify="left" if col == "estimate" else "right")
    spread = rf.between_spread()
    for k, (lo, hi) in rf.between().items():
        t.add_row(k, f"{rf.fit.raw[k]:,.1f}", f"{lo:,.1f}", f"{hi:,.1f}", f"{spread[k]:.0%}")
    t.caption = "round scores (1.00 = fastest on every timing): " + ", ".join(
        f"{s:.2f}" for s in rf.scores
    )
    return t


def _json(
    rf: RoundsFit,
    predict: Callable[[str, int, bool], int],
    written: Path | None,
) -> dict[str, Any]:
    from kvmmu.kvm.calibrate import cpu_model

    cal, fit = rf.cal, rf.fit

    def fig(f: Figure | MemslotPoint) -> dict[str, Any]:
        return {"median_ns": f.median, "mad_ns": f.spread, "samples_ns": list(f.samples)}

    return {
        "kernel": cal.kernel,
        "runs": cal.runs,
        "first_touch_fault": fig(cal.first_touch) | {"pf_taken": cal.first_touch_pf_taken},
        "mmio_exit_round_trip": fig(cal.mmio_round_trip),
        "exit_to_userspace": fig(cal.exit_to_userspace),
        **{
            name: fig(f)
            for name, f in (
                ("host_page_alloc", cal.host_page_alloc),
                ("madvise_present", cal.madvise_present),
                ("madvise_empty", cal.madvise_empty),
                ("null_call", cal.null_call),
            )
            if f is not None
        },
        "memslot": [
            {
                "op": p.op,
                "zap_all": p.zap_all,
                "live_ptes": p.live_ptes,
                "pages_4k": p.pages_4k,
                "zapped": p.zapped,
                **fig(p),
                "model_ns": predict(p.op, p.live_ptes, p.zap_all),
            }
            for p in cal.memslot
        ],
        "fit": {
            "raw_ns": fit.raw,
            "mad_ns": fit.spread,
            "costs_ns": fit.costs,
            "how": fit.how,
            "problems": list(fit.problems),
        },
        "rounds": [
            {
                "score": rf.scores[i],
                "raw_ns": f.raw,
                "mad_ns": f.spread,
                "problems": list(f.problems),
            }
            for i, f in enumerate(rf.fits)
        ],
        "chosen_round": rf.chosen,
        "between_rounds_ns": {k: list(v) for k, v in rf.between().items()},
        "between_rounds_spread": rf.between_spread(),
        "warnings": list(rf.warnings()),
        "cpu": cpu_model(),
        "profile_written": str(written) if written is not None else None,
    }
