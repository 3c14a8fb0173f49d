"""``kvmmu reproduce``: the published figures of issue 10's table against the model.

Parsing and formatting only: the rows and their settings are :mod:`kvmmu.sim.published`, the
figure :mod:`kvmmu.report.published`, the measurements behind ``--calibrate``
:mod:`kvmmu.kvm.calibrate` (the same rounds and fit as ``kvmmu calibrate``, never run unless asked:
it drives /dev/kvm for half a minute).  Exit status: 0 printed, 1 ``--calibrate`` measured an
implausible fit (nothing compared; ``kvmmu calibrate --force --out P`` then ``--costs P`` uses it
anyway), 2 bad input or no /dev/kvm for ``--calibrate`` (one line).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kvmmu.report.atomic import OutputError, check_output_file
from kvmmu.sim.costs import CostError, CostModel, default_costs, load_costs, parse_costs
from kvmmu.sim.published import ROWS, RowResult, reproduce

_NOT_AVAILABLE = ("not available (give --costs PROFILE from `kvmmu calibrate`, or --calibrate "
                  "to measure one now on this machine's /dev/kvm)")
#: Rounds of a ``--calibrate`` measurement (as ``kvmmu calibrate``'s default), each a full one.
CALIBRATE_ROUNDS = 3
CALIBRATE_QUICK = False
#: Exit status when ``--calibrate`` measured an implausible fit.
EXIT_IMPLAUSIBLE = 1


class InputError(click.ClickException):
    """Bad input or an unusable /dev/kvm: one line on stderr and exit status 2."""

    exit_code = 2


def _s(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 1:
        return f"{x:.3g} s"
    if x >= 1e-3:
        return f"{x * 1e3:.3g} ms"
    return f"{x * 1e6:.3g} us"


def _r(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _ok(x: bool | None) -> str:
    return "n/a" if x is None else ("yes" if x else "NO")


def table(results: list[RowResult], calibrated: bool) -> Table:
    t = Table(title="Published figures vs the model (ratio = model / published)")
    for col in ("row", "value", "published", "untuned", "ratio", "within 2x", "calibrated",
                "ratio", "within 25%", "flags"):
        t.add_column(col, overflow="fold")
    for res in results:
        flags = ", ".join(f for f, on in (("fitted", res.row.fitted), ("assumed", res.row.assumed))
                          if on)
        for i, v in enumerate(res.values):
            t.add_row(res.row.key if i == 0 else "", v.label, _s(v.published_s),
                      _s(v.untuned_s), _r(v.untuned_ratio), _ok(v.untuned_ok),
                      _s(v.calibrated_s) if calibrated else "n/a", _r(v.calibrated_ratio),
                      _ok(v.calibrated_ok), flags if i == 0 else "")
    return t


def _measure(console: Console) -> tuple[CostModel, dict[str, Any]]:
    """``--calibrate``: the rounds of ``kvmmu calibrate`` now, as a profile (exits on failure)."""
    from kvmmu.cli.progress import progress_bar
    from kvmmu.kvm import calibrate as kc
    from kvmmu.kvm.bindings import kvm_available

    reason = kvm_available()
    if reason is not None:
        raise InputError(f"--calibrate needs the real KVM: {reason}")
    defaults = default_costs()
    with progress_bar(console) as progress:
        task = progress.add_task("calibrating", total=kc.work_units(CALIBRATE_QUICK, None,
                                                                     CALIBRATE_ROUNDS))

        def advance(label: str, n: int) -> None:
            progress.update(task, advance=n, description=label)

        cals = kc.calibrate_rounds(CALIBRATE_ROUNDS, quick=CALIBRATE_QUICK, progress=advance)
    rf = kc.fit_rounds(cals, defaults.costs)
    if rf.fit.problems:
        for problem in rf.fit.problems:
            click.echo(f"kvmmu: implausible: {problem}", err=True)
        click.echo("kvmmu: the calibration looks implausible; nothing compared. Measure on an idle "
                   "host, or write it anyway with `kvmmu calibrate --force --out P` and pass "
                   "--costs P.", err=True)
        raise SystemExit(EXIT_IMPLAUSIBLE)
    source = kc.profile_source(rf, f"kvmmu reproduce --calibrate ({CALIBRATE_ROUNDS} rounds)")
    profile = parse_costs(kc.profile_toml(rf.fit.costs, source), "<measured now>")
    info = {"between_rounds_spread": rf.between_spread(), "warnings": list(rf.warnings())}
    return profile, info


def _this_machine() -> str:
    """CPU, kernel, and the KVM module and MMU the calibration would measure (sysfs)."""
    import platform
    from pathlib import Path

    from kvmmu.kvm.calibrate import cpu_model

    parts = [cpu_model(), f"kernel {platform.release()}"]
    modules = Path("/sys/module")
    kvm = [m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if (modules / m).exists()]
    if kvm:
        parts.append(f"KVM module {', '.join(kvm)}")
    try:
        tdp = (modules / "kvm" / "parameters" / "tdp_mmu").read_text().strip()
        parts.append("TDP MMU" if tdp == "Y" else "shadow MMU (tdp_mmu=N)")
    except OSError:
        pass
    return ", ".join(parts)


@click.command("reproduce")
@click.option("--costs", "costs_path", type=click.Path(dir_okay=False), default=None,
              help="A calibrated cost profile (from `kvmmu calibrate` on this machine) for the "
                   "'calibrated' column; without it (or --calibrate) that column says not "
                   "available.")
@click.option("--calibrate", "measure", is_flag=True,
              help=f"Measure the calibrated profile now on this machine's /dev/kvm "
                   f"({CALIBRATE_ROUNDS} rounds of `kvmmu calibrate`, about half a minute; the "
                   "quietest round is used) instead of reading --costs.")
@click.option("--row", "rows", multiple=True, metavar="KEY",
              help=f"Only this row (repeatable): {', '.join(r.key for r in ROWS)}.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead.")
@click.option("--figure", "figure", type=str, default=None, metavar="PNG",
              help="Also draw the rows into this PNG (never over a file kvmmu did not write).")
def command(costs_path: str | None, measure: bool, rows: tuple[str, ...], as_json: bool,
            figure: str | None) -> None:
    """Reproduce the published figures (fast zap-all 2013, 3.10's mmio zap, scalable memslots
    2021, the ChromeOS memslot deletes of 0df9dab891ff) as their authors describe the settings,
    with the model untuned (default costs) and calibrated (a profile measured on this machine);
    print published, model and ratios, whether each is within 2x (untuned) and 25 % (calibrated),
    and per row what is fitted, assumed, where it was measured, and what the model lacks where
    it disagrees.

    \b
    Examples:
      kvmmu reproduce
      kvmmu reproduce --calibrate --figure published.png
      kvmmu reproduce --costs my-machine.toml --row memslots-509-unmap --json
    """
    known = [r.key for r in ROWS]
    for key in rows:
        if key not in known:
            raise click.UsageError(f"--row {key!r}: unknown; choose from {', '.join(known)}")
    if measure and costs_path is not None:
        raise click.UsageError("--costs and --calibrate: give one (a profile, or measure now)")
    try:
        calibrated = load_costs(costs_path) if costs_path is not None else None
    except CostError as exc:
        raise click.UsageError(str(exc)) from None
    fig_path = None
    if figure is not None:
        try:
            fig_path = check_output_file(figure, "--figure", ours=lambda _text: False)
        except OutputError as exc:
            raise click.UsageError(str(exc)) from None
    console = Console(stderr=True)
    measured: dict[str, Any] | None = None
    if measure:
        calibrated, measured = _measure(console)
    if sys.stderr.isatty():
        with console.status("reproduce") as status:
            results = reproduce(default_costs(), calibrated, rows or None,
                                lambda key: status.update(f"reproduce: {key}"))
    else:
        results = reproduce(default_costs(), calibrated, rows or None)
    if fig_path is not None:
        from kvmmu.report.published import draw

        draw(results, fig_path)
    where = ("measured now (--calibrate)" if measure else costs_path)
    if as_json:
        click.echo(json.dumps({
            "this_machine": _this_machine(),
            "calibrated_costs": where,
            "calibrated_profile": None if calibrated is None else {
                "source": dict(calibrated.source),
                "costs_ns": dict(calibrated.costs),
                **(measured or {}),
            },
            "rows": [r.as_dict() for r in results],
        }, indent=2))
        return
    out = Console(width=150, soft_wrap=False)
    out.print(table(results, calibrated is not None))
    out.print(f"this machine: {_this_machine()}", highlight=False)
    if calibrated is None:
        out.print(f"calibrated: {_NOT_AVAILABLE}", highlight=False)
    else:
        src = calibrated.source
        out.print(f"calibrated: {where}: {src.get('profile', 'profile without [source]')}, "
                  f"{src.get('date', 'date unknown')}; rounds {src.get('rounds', 'unknown')}",
                  highlight=False)
        if src.get("between_rounds_ns"):
            out.print(f"  range over the rounds (ns): {src['between_rounds_ns']}",
                      highlight=False)
        for warning in (measured or {}).get("warnings", []):
            out.print(f"  busy host: {warning}", highlight=False)
    for res in results:
        out.print(f"\n[bold]{res.row.key}[/bold]: {res.row.source}")
        out.print(f"  setting: {res.row.setting}", highlight=False)
        out.print(f"  host:    {res.row.host or 'not named by the source'}", highlight=False)
        out.print(f"  model:   {res.row.model_setting}", highlight=False)
        for note in res.notes():
            out.print(f"  {note}", highlight=False)
    if fig_path is not None:
        out.print(f"\nfigure: {fig_path}")
