"""``kvmmu calibrate``: measure the real KVM, write a cost profile, show the model's prediction.

Argument parsing and printing only; measurements are :mod:`kvmmu.kvm.calibrate`, the profile
format is :mod:`kvmmu.sim.costs` (the written file is loaded back with it before the command
reports success).  Exit status 2 with one line for bad input or a host without /dev/kvm.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kvmmu.report.atomic import OutputError, atomic_write_text, check_output_file


class InputError(click.ClickException):
    """Bad input: one line (``Error: ...``) on stderr and exit status 2."""

    exit_code = 2


def _us(ns: float) -> str:
    return f"{ns / 1000:,.1f}"


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
    help="Runs per figure (default 7; 3 with --quick).",
)
def command(out_text: str | None, quick: bool, runs: int | None) -> None:
    """Measure first-touch faults, MMIO exits, exits to userspace and memslot operations with
    0 to 32k live shadow PTEs (zap-all quirk on and off) on /dev/kvm; print medians, the
    model's prediction next to the measured delete curve, and write a cost profile."""
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
    console = Console(soft_wrap=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("calibrating", total=kc.work_units(quick, runs))

        def advance(label: str, n: int) -> None:
            progress.update(task, advance=n, description=label)

        cal = kc.calibrate(quick=quick, runs=runs, progress=advance)

    table = Table(title=f"Measured on this machine's /dev/kvm (medians of {cal.runs} runs)")
    for col in ("what", "median µs", "runs (µs)"):
        table.add_column(col, justify="right" if col != "what" else "left")
    for fig, label in (
        (
            cal.first_touch,
            f"first-touch fault, per 4 KiB page ({cal.first_touch_pf_taken} pf_taken)",
        ),
        (cal.mmio_round_trip, "MMIO exit round trip (Python VMM)"),
        (cal.exit_to_userspace, "exit to userspace (KVM_RUN, immediate_exit)"),
    ):
        table.add_row(label, _us(fig.median), " ".join(_us(s) for s in fig.samples))
    console.print(table)

    defaults = default_costs()
    costs, how = kc.derive_costs(cal, defaults.costs)
    source = {
        "profile": f"kvmmu calibrate{' --quick' if quick else ''} on {platform.node()}",
        "kernel": cal.kernel,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": str(cal.runs),
        "unmeasured": "names not listed in [costs] keep kvmmu's default profile",
        **how,
    }
    text = kc.profile_toml(costs, source)
    try:
        profile = parse_costs(text, str(out) if out else "<calibrated>")
    except CostError as exc:  # the format is the simulation's: refuse to write what it rejects
        raise click.ClickException(f"calibrated profile does not load: {exc}") from None

    lives = sorted({p.live_ptes for p in cal.memslot})
    curve = Table(title="memslot operations against live shadow PTEs: measured vs model (µs)")
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
                pred = kc.predict_memslot_op(
                    op,
                    n,
                    zap_all,
                    profile.step,
                    profile["memslot_ioctl_ns"],
                    profile["spte_zapped_ns"],
                )
                row += [_us(cal.point(op, zap_all, n).median), _us(pred)]
            curve.add_row(*row)
    console.print(curve)
    console.print(
        f"delete with the zap-all quirk: {kc.zap_slope(cal):.1f} ns per live PTE measured",
        highlight=False,
    )
    if out is not None:
        atomic_write_text(out, text)
        console.print(
            f"cost profile written to {out} ({len(costs)} measured costs)", highlight=False
        )
    else:
        console.print(text, highlight=False, markup=False)
