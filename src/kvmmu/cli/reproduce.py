"""``kvmmu reproduce``: the published figures of issue 10's table against the model.

Parsing and formatting only: the rows and their settings are :mod:`kvmmu.sim.published`, the
figure :mod:`kvmmu.report.published`.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from kvmmu.report.atomic import OutputError, check_output_file
from kvmmu.sim.costs import CostError, default_costs, load_costs
from kvmmu.sim.published import ROWS, RowResult, reproduce

_NOT_AVAILABLE = "not available (give --costs PROFILE from `kvmmu calibrate`)"


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


def table(results: list[RowResult], calibrated: bool) -> Table:
    t = Table(title="Published figures vs the model (ratio = model / published)")
    for col in ("row", "value", "published", "model untuned", "ratio", "model calibrated",
                "ratio", "ok"):
        t.add_column(col, overflow="fold")
    for res in results:
        for i, v in enumerate(res.values):
            t.add_row(res.row.key if i == 0 else "", v.label, _s(v.published_s),
                      _s(v.untuned_s), _r(v.untuned_ratio),
                      _s(v.calibrated_s) if calibrated else "n/a", _r(v.calibrated_ratio),
                      "yes" if v.agrees() else "NO")
    return t


@click.command("reproduce")
@click.option("--costs", "costs_path", type=click.Path(dir_okay=False), default=None,
              help="A calibrated cost profile (from `kvmmu calibrate` on this machine) for the "
                   "'model calibrated' column; without it that column says not available.")
@click.option("--row", "rows", multiple=True, metavar="KEY",
              help=f"Only this row (repeatable): {', '.join(r.key for r in ROWS)}.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead.")
@click.option("--figure", "figure", type=str, default=None, metavar="PNG",
              help="Also draw the rows into this PNG (never over a file kvmmu did not write).")
def command(costs_path: str | None, rows: tuple[str, ...], as_json: bool,
            figure: str | None) -> None:
    """Reproduce the published figures (fast zap-all 2013, 3.10's mmio zap, scalable memslots
    2021, ChromeOS deletes) as their authors describe the settings, with the model untuned
    (default costs) and calibrated; print published, model and ratios, and per row what is
    fitted, assumed, or missing from the model where it disagrees.

    \b
    Examples:
      kvmmu reproduce
      kvmmu reproduce --costs my-machine.toml --figure published.png
      kvmmu reproduce --row memslots-509-unmap --json
    """
    known = [r.key for r in ROWS]
    for key in rows:
        if key not in known:
            raise click.UsageError(f"--row {key!r}: unknown; choose from {', '.join(known)}")
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
    if sys.stderr.isatty():
        with console.status("reproduce") as status:
            results = reproduce(default_costs(), calibrated, rows or None,
                                lambda key: status.update(f"reproduce: {key}"))
    else:
        results = reproduce(default_costs(), calibrated, rows or None)
    if fig_path is not None:
        from kvmmu.report.published import draw

        draw(results, fig_path)
    if as_json:
        click.echo(json.dumps({
            "calibrated_costs": costs_path,
            "rows": [r.as_dict() for r in results],
        }, indent=2))
        return
    out = Console(width=140, soft_wrap=False)
    out.print(table(results, calibrated is not None))
    if calibrated is None:
        out.print(f"model calibrated: {_NOT_AVAILABLE}")
    for res in results:
        out.print(f"\n[bold]{res.row.key}[/bold]: {res.row.source}")
        out.print(f"  setting: {res.row.setting}", highlight=False)
        out.print(f"  model:   {res.row.model_setting}", highlight=False)
        for note in res.notes():
            out.print(f"  {note}", highlight=False)
    if fig_path is not None:
        out.print(f"\nfigure: {fig_path}")
