"""``kvmmu capture -- CMD ...``: record a real VMM's memslot ioctls and its KVM's trace.

Parsing and printing only: the recording is :func:`kvmmu.kvm.capture.record`, the format
:mod:`kvmmu.kvm.capture`.  Bad input or a host that cannot capture (not root, no /dev/kvm, no
tracefs, no strace, command not found) is one line on stderr and exit status 2; a command that
exits with a failure status still leaves its capture, and ``kvmmu capture`` then exits 1 after
saying so.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from kvmmu.report.atomic import OutputError, atomic_directory, check_output_dir

DEFAULT_OUT = Path("kvmmu-out")


class InputError(click.ClickException):
    """Bad input: one line on stderr and exit status 2."""

    exit_code = 2


def _default_out(command: tuple[str, ...]) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(command[0]).name).strip("-.") or "vmm"
    return DEFAULT_OUT / f"capture-{name}"


@click.command(
    "capture",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Capture directory (replaced atomically if it holds an earlier capture). "
    "Default: kvmmu-out/capture-<command>.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    help="End the command (SIGTERM to its session) after this many seconds; Ctrl-C ends it too, "
    "and the capture is kept either way.",
)
@click.option(
    "--via",
    type=click.Choice(["strace", "preload"]),
    default="strace",
    show_default=True,
    help="How memslot ioctls are seen: strace (any VMM; ptrace slows it) or preload (an "
    "LD_PRELOAD ioctl shim compiled here with cc: no slowdown, decodes coalesced MMIO zones and "
    "KVM_ENABLE_CAP quirks; dynamically linked VMMs only).",
)
@click.option("--strace", "strace_bin", default="strace", show_default=True, help="The strace to use.")
@click.option("--json", "as_json", is_flag=True, help="Print the capture's summary as JSON.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def command(
    out_dir: Path | None,
    timeout: float | None,
    via: str,
    strace_bin: str,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run CMD (a VMM: qemu-system-x86_64, firecracker, cloud-hypervisor...) and record its
    memslot ioctls (strace, or an LD_PRELOAD shim with --via preload; with times and durations)
    and the kvm/kvmmmu trace events of its own process tree (a private tracefs instance, removed
    afterwards).

    DIR must be new, empty or a folder kvmmu wrote. Writes DIR/capture.json.gz (the
    kvmmu-capture format, versioned; see the README) and DIR/strace.log.gz (strace's own log).
    Then `kvmmu validate DIR` holds the model against the kernel's trace, and `kvmmu replay DIR`
    runs the memslot churn under every strategy.

    Needs root, /dev/kvm, tracefs and strace (apt-get install strace). Example, a SeaBIOS POST
    that ends by itself in about 11 s:

    \b
      kvmmu capture --out post -- qemu-system-x86_64 -machine q35 -enable-kvm \\
          -m 512 -nic none -display none -no-reboot -boot reboot-timeout=0
    """
    # Imported here: `kvmmu --help` must not load the /dev/kvm bindings.
    from kvmmu.kvm.capture import (
        CAPTURE_FILE,
        STRACE_FILE,
        CaptureError,
        preflight,
        record,
        summary,
        write_capture,
    )

    out = out_dir if out_dir is not None else _default_out(command)
    try:
        preflight(command, strace_bin if via == "strace" else None)
        check_output_dir(out)  # before the run: never a VMM run whose capture cannot be kept
    except (OutputError, CaptureError) as exc:
        raise InputError(str(exc)) from None
    err = Console(stderr=True)
    status = (
        contextlib.nullcontext()
        if not err.is_terminal
        else err.status(f"capturing {Path(command[0]).name} (ends when it exits)")
    )
    try:
        with _stop_signals_interrupt(), status:
            rec = record(command, strace=strace_bin, timeout=timeout, via=via)
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    cap = rec.capture
    try:
        with atomic_directory(out) as tmp:
            write_capture(cap, tmp / CAPTURE_FILE)
            (tmp / STRACE_FILE).write_bytes(gzip.compress(rec.strace_text.encode(), mtime=0))
    except OutputError as exc:
        raise InputError(str(exc)) from None
    facts = summary(cap)
    facts["capture"] = str(out / CAPTURE_FILE)
    facts["ended_by"] = rec.ended_by or "exit"
    if as_json:
        click.echo(json.dumps(facts, indent=1))
    else:
        _print(facts)
    rc = cap.meta.exit_code
    if rec.ended_by == "timeout":
        err.print(f"ended by --timeout after {timeout:g} s (exit status {rc})", highlight=False)
    elif rec.ended_by == "interrupt":
        err.print(
            f"ended by Ctrl-C (exit status {rc}); the capture keeps what ran until then", highlight=False
        )
    elif rc != 0:
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
        click.echo(f"kvmmu: error: {command[0]} {how} (capture written to {out})", err=True)
        raise SystemExit(1)
    if not cap.memslots:
        hint = " (a statically linked VMM ignores LD_PRELOAD: use --via strace)" if via == "preload" else ""
        click.echo(f"kvmmu: warning: {command[0]} made no memslot ioctl seen{hint}", err=True)


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the capture like Ctrl-C: the VMM is stopped, the trace instance
    removed and the capture kept (the default action would kill kvmmu with tracing half set up)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _print(f: dict[str, Any]) -> None:
    console = Console(soft_wrap=True, highlight=False)
    console.print(" ".join(f["command"]), markup=False)
    console.print(f"  exit status {f['exit_code']}, {f['duration_s']} s")
    console.print(
        f"  memslot ioctls: {f['memslot_ioctls']} ({f['memslot_create']} create, "
        f"{f['memslot_delete']} delete, "
        f"{f['memslot_move']} move, {f['memslot_flags']} flags change, {f['memslot_error']} refused) "
        f"in {f['bursts']} bursts; address spaces {f['address_spaces_used']}"
    )
    if "trace_events" in f:
        console.print(
            f"  kernel trace: {f['trace_events']} events ({f['trace_events_lost']} lost): "
            f"{f['kvm_mmu_zap_all_fast']} kvm_mmu_zap_all_fast, {f['kvm_mmu_get_page_new']} shadow pages "
            f"created, {f['kvm_mmu_prepare_zap_page']} kvm_mmu_prepare_zap_page, "
            f"{f['mmio_accesses']} MMIO accesses, {f['mmio_exits']} MMIO exits"
        )
    console.print(f"  written: {f['capture']}")
