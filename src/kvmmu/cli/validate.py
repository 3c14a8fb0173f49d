"""``kvmmu validate CAPTURE``: the model, configured like the capturing kernel, against its trace.

Parsing and printing only: the comparison is :func:`kvmmu.kvm.validate.validate`, the capture
format :mod:`kvmmu.kvm.capture`.  An unreadable capture is one line on stderr and exit status 2;
disagreements are findings, printed with their timestamps (exit status 1 only with ``--strict``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the command imports kvmmu.kvm lazily: `kvmmu --help` stays light
    from kvmmu.kvm.validate import Validation


class InputError(click.ClickException):
    """Bad input: one line on stderr and exit status 2."""

    exit_code = 2


def _ms(ns: int) -> str:
    return f"{ns / 1e6:,.3f}"


def _mark(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]NO[/red]"


@click.command("validate")
@click.argument("capture", type=click.Path(path_type=Path))
@click.option(
    "--accesses",
    type=click.Choice(["auto", "emulated", "hardware"]),
    default="auto",
    show_default=True,
    help="How the model replays the guest's MMIO accesses: through KVM's emulator, through the "
    "hardware page walk, or auto (emulated when the capture holds no kvm_page_fault).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if anything disagrees.")
def command(capture: Path, accesses: str, as_json: bool, strict: bool) -> None:
    """Replay CAPTURE (a `kvmmu capture` directory or file, or a plain strace log) on the model
    configured like the kernel that made it (MMU kind, MMIO caching, address spaces, slot-zap
    quirk, read from the capture) and compare with the kernel's own trace: kvm_mmu_zap_all_fast
    per memslot delete and create, shadow pages created and zapped, MMIO exits per region.

    Prints the agreement and every disagreement with its timestamp (ms since the capture
    started) and what explains it. Example: kvmmu validate tests/data/qemu-q35-post
    """
    from kvmmu.kvm.capture import CaptureError, load_capture
    from kvmmu.kvm.validate import validate

    try:
        cap = load_capture(capture)
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    emulated = None if accesses == "auto" else accesses == "emulated"
    v = validate(cap, emulated=emulated)
    if as_json:
        click.echo(json.dumps(_as_dict(v), indent=1))
    else:
        _print(cap.meta.command, v)
    if strict and v.agreed < v.compared:
        raise SystemExit(1)


def _as_dict(v: Validation) -> dict[str, Any]:
    return {
        "config": v.config,
        "notes": v.notes,
        "agreed": v.agreed,
        "compared": v.compared,
        "totals": [
            {"name": t.name, "kernel": t.kernel, "model": t.model, "agrees": t.agrees} for t in v.totals
        ],
        "memslot_ioctls": [
            {
                "t_ns": c.t_ns,
                "tid": c.tid,
                "op": c.op,
                "slot": c.call.slot,
                "as": c.call.address_space,
                "gpa": c.call.gpa,
                "size": c.call.size,
                "flags": c.call.flags,
                "kernel_zap_all_fast": c.kernel_zap_all_fast,
                "model_zap_all_fast": c.model_zap_all_fast,
                "kernel_pages_zapped": c.kernel_pages_zapped,
                "model_pages_zapped": c.model_pages_zapped,
                "kernel_errno": c.kernel_errno,
                "model_errno": c.model_errno,
                "agrees": c.agrees,
            }
            for c in v.calls
        ],
        "mmio_regions": [
            {
                "start": r.start,
                "end": r.end,
                "name": r.name,
                "accesses": r.accesses,
                "writes": r.writes,
                "kernel_exits": r.kernel_exits,
                "model_exits": r.model_exits,
                "agrees": r.agrees,
            }
            for r in v.regions
        ],
        "disagreements": [{"t_ns": d.t_ns, "what": d.what, "why": d.why} for d in v.disagreements],
    }


def _print(command: tuple[str, ...], v: Validation) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=150, highlight=False)
    cfg = v.config
    console.print(f"capture of: {' '.join(command) or '(strace log)'}", markup=False)
    console.print(
        f"model: strategy {cfg['strategy']}, {cfg['mmu']} MMU, mmio_caching "
        f"{'on' if cfg['mmio_caching'] else 'off'}, {cfg['address_spaces']} address space(s), "
        f"slot zap {cfg['slot_zap']}, accesses {cfg['accesses']}"
    )
    for note in v.notes:
        console.print(f"  note: {note}", markup=False)
    calls = Table(title="memslot ioctls: kernel trace vs model", title_justify="left")
    for col in (
        "#",
        "t ms",
        "thread",
        "op",
        "slot",
        "gpa",
        "size",
        "zap_all_fast k/m",
        "pages zapped k/m",
        "agree",
    ):
        calls.add_column(col, justify="left" if col in ("op", "gpa", "size") else "right")
    for c in v.calls:
        calls.add_row(
            str(c.index),
            _ms(c.t_ns),
            str(c.tid),
            c.op + (f" ({c.kernel_errno})" if c.kernel_errno else ""),
            f"{c.call.address_space}:{c.call.slot}" if c.call.address_space else str(c.call.slot),
            f"{c.call.gpa:#x}",
            f"{c.call.size:#x}",
            f"{c.kernel_zap_all_fast} / {c.model_zap_all_fast}",
            f"{c.kernel_pages_zapped} / {c.model_pages_zapped}",
            _mark(c.agrees),
        )
    console.print(calls)
    totals = Table(title="totals", title_justify="left")
    for col in ("measure", "kernel", "model", "agree"):
        totals.add_column(col, justify="left" if col == "measure" else "right")
    for t in v.totals:
        totals.add_row(t.name, f"{t.kernel:,}", f"{t.model:,}", _mark(t.agrees))
    console.print(totals)
    if v.regions:
        regions = Table(title="MMIO exits per region", title_justify="left")
        for col in ("region", "name", "accesses", "writes", "exits kernel", "exits model", "agree"):
            regions.add_column(col, justify="left" if col in ("region", "name") else "right")
        for r in v.regions:
            regions.add_row(
                f"{r.start:#x}-{r.end - 1:#x}",
                r.name,
                f"{r.accesses:,}",
                f"{r.writes:,}",
                f"{r.kernel_exits:,}",
                f"{r.model_exits:,}",
                _mark(r.agrees),
            )
        console.print(regions)
    if v.disagreements:
        console.print(f"disagreements ({len(v.disagreements)}):")
        for d in v.disagreements:
            console.print(f"  t={_ms(d.t_ns)} ms  {d.what}", markup=False)
            if d.why:
                console.print(f"      why: {d.why}", markup=False, style="dim")
    deletes = next((t for t in v.totals if t.name.startswith("deletes paired")), None)
    pairing = (
        f"; deletes paired with one kvm_mmu_zap_all_fast: kernel {deletes.kernel}, model {deletes.model}"
        if deletes is not None
        else ""
    )
    if not v.kernel_trace:
        console.print(
            "no kernel trace in this capture: the model's figures only (k/m columns: kernel unknown)"
        )
        return
    console.print(f"agreement: {v.agreed} of {v.compared} comparisons{pairing}")
