"""A real VMM run, captured: its memslot ioctls and the kernel's trace of its KVM, in one file.

Design. Two observers, because the kernel offers no single one (see ``real-kvm-here.md``):

* ``strace -f -e trace=ioctl`` with nanosecond absolute timestamps and durations sees every
  ``KVM_SET_USER_MEMORY_REGION(2)`` the VMM makes, decoded (:mod:`kvmmu.kvm.strace`); or the
  ``LD_PRELOAD`` shim of :mod:`kvmmu.kvm.preload` logs the same calls in the same form, without
  ptrace's slowdown, on CLOCK_MONOTONIC, with the coalesced MMIO zones and quirks decoded;
* a private tracefs instance (:class:`kvmmu.kvm.tracefs.TraceRecorder`, filtered to the VMM's own
  process tree with ``set_event_pid`` + ``event-fork``, clock ``mono``) records what the kernel did
  about it: ``kvm_mmu_zap_all_fast``, ``kvm_mmu_get_page``, ``kvm_mmu_prepare_zap_page``,
  ``kvm_mmio``, ``kvm_userspace_exit``, ``kvm_page_fault``.

The command is started behind a gate (a shell that waits on a pipe before ``exec``), so that its
pid is known and filtered *before* it runs; strace's CLOCK_REALTIME timestamps are put on the
trace's CLOCK_MONOTONIC by an offset sampled when the gate opens, and every time in the capture is
in ns since that moment.  Tracing state is restored on every exit path (the recorder's context
manager); the command runs in its own session so that an interrupt can end all of it.

The capture format (``kvmmu-capture``, :data:`VERSION`) is one JSON document, gzip-compressed
(``capture.json.gz``), documented in the README ("Capturing a real VMM"):

* ``meta``: the command and its exit status, when and how long, the kernel that ran it
  (:class:`KernelInfo`: module, MMU kind, ``mmio_caching``, address spaces, slot-zap quirk), the
  vCPU threads, how many trace events were lost;
* ``memslots``: one object per memslot ioctl (:class:`~kvmmu.kvm.strace.MemslotCall` fields);
* ``events``: ``[t_ns, tid, event, text]`` with the kernel's own ``TP_printk`` text.

A plain strace log of any VMM loads as a capture too (:func:`load_capture`), with memslots and no
kernel trace.  Readers refuse a newer version instead of misreading it.

Prior art: ``perf record``/``perf.data`` (a versioned header describing the recording machine, then
the samples) and ``trace-cmd record``'s instance recording, scoped to one command.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmmu.kvm.strace import MemslotCall, StraceError, StraceLog, parse_strace
from kvmmu.kvm.tracefs import TracefsError, TraceRecorder

FORMAT = "kvmmu-capture"
VERSION = 1
CAPTURE_FILE = "capture.json.gz"
STRACE_FILE = "strace.log.gz"
#: The trace events a capture records (few: all of ``kvm`` would overrun the buffer with
#: ``kvm_entry``/``kvm_exit``/``kvm_emulate_insn`` for every emulated instruction).
EVENTS: tuple[str, ...] = (
    "kvmmmu/kvm_mmu_zap_all_fast",
    "kvmmmu/kvm_mmu_get_page",
    "kvmmmu/kvm_mmu_prepare_zap_page",
    "kvm/kvm_mmio",
    "kvm/kvm_userspace_exit",
    "kvm/kvm_page_fault",
)
#: Per-CPU ring buffer of the private instance: a q35 SeaBIOS POST writes about 1 MB.
BUFFER_KB = 8192
#: The gate: wait for a line on stdin (the pipe), then become the command, stdin from /dev/null.
_GATE = 'read _; exec "$@" </dev/null'


class CaptureError(ValueError):
    """A capture cannot be made or read; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class KernelInfo:
    """The KVM that ran the command, as far as a model configuration needs it."""

    release: str = "unknown"
    module: str = "unknown"
    #: ``shadow`` (shadow paging) or ``tdp`` (EPT/NPT).
    mmu: str = "unknown"
    tdp_mmu: bool | None = None
    #: ``/sys/module/kvm/parameters/mmio_caching``: False means no MMIO SPTE is ever built.
    mmio_caching: bool | None = None
    #: 2 with an SMM address space (``KVM_CAP_MULTI_ADDRESS_SPACE``), else 1.
    address_spaces: int = 1
    #: ``all``: ``KVM_X86_QUIRK_SLOT_ZAP_ALL`` on (KVM's default), ``slot``: disabled.
    slot_zap: str = "all"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaptureMeta:
    """Where a capture came from."""

    command: tuple[str, ...] = ()
    exit_code: int | None = None
    recorded_at: str = ""
    duration_ns: int = 0
    #: ``strace`` and/or ``tracefs``.
    sources: tuple[str, ...] = ()
    kernel: KernelInfo = field(default_factory=KernelInfo)
    vcpu_tids: tuple[int, ...] = ()
    #: Every thread of the command strace saw (the trace holds events of these only).
    tids: tuple[int, ...] = ()
    kvm_runs: int = 0
    coalesced_zones: int = 0
    #: Coalesced MMIO zones ``(addr, size)`` where the log decoded them (``--via preload``).
    coalesced_mmio: tuple[tuple[int, int], ...] = ()
    irqchip: bool = False
    undecoded_memslot_ioctls: int = 0
    events_enabled: tuple[str, ...] = ()
    events_lost: int = 0
    tool: str = ""


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One kernel trace event: ns since the capture started, the thread, name and text."""

    t_ns: int
    tid: int
    event: str
    text: str


@dataclass(frozen=True, slots=True)
class MmioAccess:
    """One guest MMIO access seen in ``kvm_mmio``; ``exited`` if it went out to userspace."""

    t_ns: int
    tid: int
    write: bool
    size: int
    gpa: int
    value: int
    exited: bool


@dataclass(frozen=True, slots=True)
class Capture:
    """A whole capture (memslot times are ns since the capture started, like event times)."""

    meta: CaptureMeta
    memslots: tuple[MemslotCall, ...]
    events: tuple[CapturedEvent, ...] = ()

    @property
    def has_trace(self) -> bool:
        return "tracefs" in self.meta.sources

    def mmio_accesses(self) -> list[MmioAccess]:
        """The guest's MMIO accesses, each marked with whether it exited to userspace.

        ``kvm_mmio`` (``arch/x86/kvm/x86.c``, ``trace_kvm_mmio``) logs ``write`` and
        ``unsatisfied-read`` when the access is started and, for a read completed by userspace,
        a ``read`` on completion (same gpa): that second line is the same access.  An access
        exited if a ``kvm_userspace_exit: reason KVM_EXIT_MMIO`` follows it on the same thread
        before the thread's next MMIO access; a coalesced write or an in-kernel device does not.
        """
        out: list[MmioAccess] = []
        last: dict[int, int] = {}  # tid -> index in out of its latest access
        completing: dict[int, int] = {}  # tid -> gpa of an unsatisfied read awaiting its value
        for e in self.events:
            if e.event == "kvm_userspace_exit":
                if "KVM_EXIT_MMIO" in e.text and e.tid in last:
                    i = last.pop(e.tid)
                    a = out[i]
                    out[i] = MmioAccess(a.t_ns, a.tid, a.write, a.size, a.gpa, a.value, True)
                continue
            if e.event != "kvm_mmio":
                continue
            m = _MMIO.match(e.text)
            if m is None:
                continue
            kind, size, gpa, val = m["kind"], int(m["len"]), int(m["gpa"], 16), int(m["val"], 16)
            if kind == "read" and completing.get(e.tid) == gpa:
                del completing[e.tid]
                continue
            if kind == "unsatisfied-read":
                completing[e.tid] = gpa
            last[e.tid] = len(out)
            out.append(MmioAccess(e.t_ns, e.tid, kind == "write", size, gpa, val, False))
        return out

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e.event == event)

    def window(self, call: MemslotCall, slack_ns: int = 1_000) -> tuple[int, int]:
        """The times within which the kernel handled ``call``, with a slack.

        strace stamps a call at its syscall-entry stop, before the kernel runs the ioctl, and
        its end at the exit stop, after (the shim stamps around libc's call): the kernel's events
        fall inside.  The trace prints microseconds, hence the default 1 µs slack; a larger one
        absorbs an error in the realtime-to-monotonic offset.
        """
        return call.t_ns - slack_ns, call.t_ns + call.dur_ns + slack_ns


_MMIO = re.compile(
    r"mmio (?P<kind>[\w-]+) len (?P<len>\d+) gpa 0x(?P<gpa>[0-9a-f]+) val 0x(?P<val>[0-9a-f]+)"
)


# --- reading and writing ------------------------------------------------------------------


def capture_to_dict(cap: Capture) -> dict[str, Any]:
    """The JSON document of a capture (format :data:`FORMAT`, version :data:`VERSION`)."""
    meta = asdict(cap.meta)
    return {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta,
        "memslots": [
            {
                "t_ns": c.t_ns,
                "dur_ns": c.dur_ns,
                "tid": c.tid,
                "ioctl": c.ioctl,
                "slot": c.slot,
                "as": c.address_space,
                "flags": c.flags,
                "gpa": c.gpa,
                "size": c.size,
                "hva": c.hva,
                "errno": c.errno,
            }
            for c in cap.memslots
        ],
        "events": [[e.t_ns, e.tid, e.event, e.text] for e in cap.events],
    }


def capture_from_dict(data: Any, where: str) -> Capture:
    """Validate a capture document; raise :class:`CaptureError` naming what is wrong."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CaptureError(f'{where}: not a kvmmu capture (no "format": "{FORMAT}")')
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise CaptureError(f"{where}: bad capture version {version!r}")
    if version > VERSION:
        raise CaptureError(
            f"{where}: capture version {version} is newer than this kvmmu reads ({VERSION}); upgrade kvmmu"
        )
    try:
        m: dict[str, Any] = dict(data["meta"])
        k: dict[str, Any] = dict(m.pop("kernel", {}))
        kernel = KernelInfo(**{**k, "notes": tuple(k.get("notes", ()))})
        # Lists back to tuples; unknown keys (from a later minor addition) are ignored.
        fields: dict[str, Any] = {
            name: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
            for name, v in m.items()
            if name in CaptureMeta.__dataclass_fields__
        }
        meta = CaptureMeta(**fields, kernel=kernel)
        memslots = tuple(
            MemslotCall(
                t_ns=int(c["t_ns"]),
                dur_ns=int(c["dur_ns"]),
                tid=int(c["tid"]),
                slot=int(c["slot"]),
                address_space=int(c.get("as", 0)),
                flags=int(c["flags"]),
                gpa=int(c["gpa"]),
                size=int(c["size"]),
                hva=int(c["hva"]),
                errno=str(c.get("errno", "")),
                ioctl=str(c.get("ioctl", "KVM_SET_USER_MEMORY_REGION")),
            )
            for c in data["memslots"]
        )
        events = tuple(CapturedEvent(int(t), int(tid), str(ev), str(tx)) for t, tid, ev, tx in data["events"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CaptureError(f"{where}: malformed capture ({type(exc).__name__}: {exc})") from None
    return Capture(meta, memslots, events)


def write_capture(cap: Capture, path: Path) -> None:
    """Write ``cap`` to ``path`` (gzip if the name ends in ``.gz``), atomically."""
    payload = json.dumps(capture_to_dict(cap), separators=(",", ":")).encode()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_capture(path: str | Path) -> Capture:
    """A capture from a capture file, a directory holding one, or a plain strace log."""
    p = Path(path)
    if p.is_dir():
        if not (p / CAPTURE_FILE).is_file():
            raise CaptureError(f"{p}: no {CAPTURE_FILE} in this directory")
        p = p / CAPTURE_FILE
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CaptureError(f"{p}: no such file or directory") from None
    except OSError as exc:
        raise CaptureError(f"{p}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise CaptureError(f"{p}: corrupt gzip data ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return capture_from_dict(data, str(p))
    try:
        log = parse_strace(text)
    except StraceError as exc:
        raise CaptureError(f"{p}: neither a kvmmu capture nor an strace log: {exc}") from None
    return capture_from_strace(log, command=(), source=str(p))


def capture_from_strace(log: StraceLog, command: Sequence[str] = (), source: str = "") -> Capture:
    """A memslot-only capture from an strace log of any VMM (times from its first call)."""
    if not log.calls:
        where = f"{source}: " if source else ""
        raise CaptureError(f"{where}no KVM_SET_USER_MEMORY_REGION call in the strace log")
    t0 = log.calls[0].t_ns
    calls = tuple(_shift(c, -t0) for c in log.calls)
    last = calls[-1]
    meta = CaptureMeta(
        command=tuple(command),
        duration_ns=last.t_ns + last.dur_ns,
        sources=("strace",),
        kernel=with_quirks(KernelInfo(), log),
        coalesced_mmio=_mmio_zones(log),
        vcpu_tids=tuple(log.vcpu_tids),
        tids=tuple(sorted(log.tids)),
        kvm_runs=log.kvm_runs,
        coalesced_zones=log.coalesced_zones,
        irqchip=log.irqchip,
        undecoded_memslot_ioctls=log.undecoded,
        tool=f"kvmmu {_version()} (strace log {source})" if source else f"kvmmu {_version()}",
    )
    return Capture(meta, calls)


#: ``KVM_X86_QUIRK_SLOT_ZAP_ALL`` (arch/x86/include/uapi/asm/kvm.h).
QUIRK_SLOT_ZAP_ALL = 1 << 7


def with_quirks(kernel: KernelInfo, log: StraceLog) -> KernelInfo:
    """``kernel`` with the slot-zap quirk as the VMM's decoded ``KVM_ENABLE_CAP`` calls set it."""
    if log.disabled_quirks is None:
        return kernel
    zap = "slot" if log.disabled_quirks & QUIRK_SLOT_ZAP_ALL else "all"
    note = (
        f"slot_zap {zap}: read from the VMM's KVM_ENABLE_CAP calls (disabled quirks {log.disabled_quirks:#x})"
    )
    notes = (*(n for n in kernel.notes if not n.startswith("slot_zap")), note)
    return KernelInfo(
        kernel.release,
        kernel.module,
        kernel.mmu,
        kernel.tdp_mmu,
        kernel.mmio_caching,
        kernel.address_spaces,
        zap,
        notes,
    )


def _mmio_zones(log: StraceLog) -> tuple[tuple[int, int], ...]:
    return tuple(sorted({(addr, size) for addr, size, pio in log.zones if not pio}))


def _shift(c: MemslotCall, by: int) -> MemslotCall:
    return MemslotCall(
        c.t_ns + by, c.dur_ns, c.tid, c.slot, c.address_space, c.flags, c.gpa, c.size, c.hva, c.errno, c.ioctl
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvmmu")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


# --- the host ----------------------------------------------------------------------------


def _param(module: str, name: str) -> str | None:
    try:
        return Path(f"/sys/module/{module}/parameters/{name}").read_text().strip()
    except OSError:
        return None


def _yes(value: str | None) -> bool | None:
    return None if value is None else value.upper() in {"Y", "1"}


def detect_kernel() -> KernelInfo:
    """This host's KVM: module, MMU kind, MMIO caching, address spaces (``/sys/module``, ioctl)."""
    from kvmmu.kvm.bindings import Cap, Kvm

    modules = [m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if Path(f"/sys/module/{m}").is_dir()]
    module = modules[0] if modules else "kvm"
    tdp = _yes(_param("kvm_intel", "ept")) or _yes(_param("kvm_amd", "npt"))
    spaces = 1
    try:
        with Kvm() as kvm:
            spaces = max(1, kvm.check_extension(Cap.MULTI_ADDRESS_SPACE))
    except OSError:
        pass
    notes = (
        "slot_zap: KVM_X86_QUIRK_SLOT_ZAP_ALL is KVM's default; strace does not decode "
        "KVM_ENABLE_CAP, so a VMM that disables it (KVM_CAP_DISABLE_QUIRKS2 bit 7) is not seen",
    )
    return KernelInfo(
        release=os.uname().release,
        module=module,
        mmu="tdp" if tdp else "shadow",
        tdp_mmu=_yes(_param("kvm", "tdp_mmu")),
        mmio_caching=_yes(_param("kvm", "mmio_caching")),
        address_spaces=spaces,
        slot_zap="all",
        notes=notes,
    )


def preflight(command: Sequence[str], strace: str | None = "strace") -> str | None:
    """Check that a capture can be made here; return strace's path (None: not asked for) or
    raise :class:`CaptureError`."""
    if not command:
        raise CaptureError(
            "no command to capture: give it after --, e.g. kvmmu capture -- qemu-system-x86_64 ..."
        )
    if os.geteuid() != 0:
        raise CaptureError("capture needs root: the kernel trace is read from tracefs (run it with sudo)")
    from kvmmu.kvm.bindings import kvm_available

    why = kvm_available()
    if why is not None:
        raise CaptureError(f"capture needs a usable /dev/kvm: {why}")
    found = None
    if strace is not None:
        found = shutil.which(strace)
        if found is None:
            raise CaptureError(f"{strace} not found: install it (apt-get install strace)")
    if shutil.which(command[0]) is None:
        raise CaptureError(f"{command[0]}: command not found")
    return found


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of :func:`record`: the capture, the raw strace text and why it stopped."""

    capture: Capture
    strace_text: str
    #: ``""``: the command exited by itself; ``"timeout"`` or ``"interrupt"``: we ended it.
    ended_by: str


def record(
    command: Sequence[str],
    strace: str = "strace",
    timeout: float | None = None,
    tick: Callable[[float], None] | None = None,
    via: str = "strace",
) -> Recorded:
    """Run ``command`` with a private trace of its tasks; return the capture.

    ``via``: ``strace`` (any VMM) or ``preload`` (the LD_PRELOAD shim of :mod:`kvmmu.kvm.preload`:
    no ptrace slowdown, decodes coalesced MMIO zones and quirks; dynamically linked VMMs only).
    ``timeout``: end the command (SIGTERM to its session, SIGKILL 5 s later) after that many
    seconds.  ``tick`` is called with the elapsed seconds while the command runs.
    """
    if via not in ("strace", "preload"):
        raise CaptureError(f"--via must be strace or preload, not {via!r}")
    strace_path = preflight(command, strace if via == "strace" else None)
    kernel = detect_kernel()
    with tempfile.TemporaryDirectory(prefix="kvmmu-capture-") as scratch:
        log_path = Path(scratch) / "ioctl.log"
        env: dict[str, str] | None = None
        if via == "preload":
            from kvmmu.kvm.preload import PreloadError, build, environment

            try:
                env = environment(build(Path(scratch)), log_path)
            except PreloadError as exc:
                raise CaptureError(str(exc)) from None
            argv = ["sh", "-c", _GATE, "sh", *command]
        else:
            assert strace_path is not None
            argv = [
                "sh",
                "-c",
                _GATE,
                "sh",
                strace_path,
                "-f",
                "-qq",
                "-e",
                "trace=ioctl",
                "--absolute-timestamps=format:unix,precision:ns",
                "--syscall-times=ns",
                "-o",
                str(log_path),
                "--",
                *command,
            ]
        return _record(command, argv, env, log_path, kernel, via, timeout, tick, strace_path)


def _record(
    command: Sequence[str],
    argv: list[str],
    env: dict[str, str] | None,
    log_path: Path,
    kernel: KernelInfo,
    via: str,
    timeout: float | None,
    tick: Callable[[float], None] | None,
    strace_path: str | None,
) -> Recorded:
    gate_r, gate_w = os.pipe()
    proc = subprocess.Popen(argv, start_new_session=True, stdin=gate_r, env=env)
    os.close(gate_r)
    ended_by = ""
    try:
        with TraceRecorder(events=EVENTS, buffer_size_kb=BUFFER_KB, pids=(proc.pid,), clock="mono") as rec:
            started_at = datetime.now(UTC)
            # strace stamps CLOCK_REALTIME, the trace (and the shim) CLOCK_MONOTONIC: the offset is
            # the midpoint of two monotonic reads around one realtime read.
            m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            r0 = time.clock_gettime_ns(time.CLOCK_REALTIME)
            m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            offset = r0 - (m0 + m1) // 2 if via == "strace" else 0
            t0 = m1
            os.write(gate_w, b"go\n")
            os.close(gate_w)
            gate_w = -1
            ended_by = _wait(proc, rec, timeout, tick)
            rec.stop()
            duration = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - t0
            text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
            log = parse_strace(text) if text.strip() else StraceLog()
            events = rec.events(also=log.tids)
            tids = rec.recorded_pids() | log.tids
            lost = rec.lost_events()
    except TracefsError as exc:
        raise CaptureError(f"cannot trace: {exc}") from None
    except StraceError as exc:
        raise CaptureError(f"cannot read the ioctl log: {exc}") from None
    finally:
        if gate_w >= 0:
            os.close(gate_w)
        if proc.poll() is None:
            _end(proc)
    rc = proc.returncode
    calls = tuple(_shift(c, -(offset + t0)) for c in log.calls)
    trace = tuple(CapturedEvent(round(e.timestamp * 1e9) - t0, e.pid, e.event, e.text) for e in events)
    tool = _strace_version(strace_path) if strace_path is not None else "LD_PRELOAD ioctl shim"
    meta = CaptureMeta(
        command=tuple(command),
        exit_code=rc,
        recorded_at=started_at.isoformat(timespec="seconds"),
        duration_ns=duration,
        sources=("strace" if via == "strace" else "preload", "tracefs"),
        kernel=with_quirks(kernel, log),
        vcpu_tids=tuple(log.vcpu_tids),
        tids=tuple(sorted(tids)),
        kvm_runs=log.kvm_runs,
        coalesced_zones=log.coalesced_zones,
        coalesced_mmio=_mmio_zones(log),
        irqchip=log.irqchip,
        undecoded_memslot_ioctls=log.undecoded,
        events_enabled=EVENTS,
        events_lost=lost,
        tool=f"kvmmu {_version()}, {tool}",
    )
    return Recorded(Capture(meta, calls, trace), text, ended_by)


def _wait(
    proc: subprocess.Popen[bytes],
    rec: TraceRecorder,
    timeout: float | None,
    tick: Callable[[float], None] | None,
) -> str:
    """Wait for the command, noting the tasks it starts (they leave ``set_event_pid`` on exit).

    Returns ``""`` when it exited by itself, ``"timeout"`` or ``"interrupt"`` (Ctrl-C: a VMM that
    runs until stopped is captured by stopping it) when it was ended here.
    """
    start = time.monotonic()
    try:
        while proc.poll() is None:
            rec.recorded_pids()
            elapsed = time.monotonic() - start
            if tick is not None:
                tick(elapsed)
            if timeout is not None and elapsed >= timeout:
                _end(proc)
                return "timeout"
            time.sleep(0.02)
    except KeyboardInterrupt:
        _end(proc)
        return "interrupt"
    except BaseException:  # anything else: the command must not outlive the capture
        _end(proc)
        raise
    return ""


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End the command's whole session: strace, the VMM and its children.

    SIGTERM to the session's process group, SIGKILL 5 s later if its leader (strace) lives on;
    then whatever of the group outlived the leader gets SIGKILL too: a process of the VMM that
    ignores SIGTERM, or a tracee strace detached as it exited, would otherwise run on after the
    capture, holding the output kvmmu was started with.
    """
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    _end_group(proc.pid)


def _end_group(pgid: int, grace: float = 1.0) -> None:
    """Wait up to ``grace`` seconds for the live members of process group ``pgid`` to exit, then
    SIGKILL the rest and wait (up to 5 s) until none is left.  Zombies do not count: an orphan is
    reaped by whatever PID 1 is, which in a container may never do it."""
    deadline = time.monotonic() + grace
    killed = False
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            if killed:
                return
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            killed = True
            deadline = time.monotonic() + 5.0
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is alive (not a zombie), from ``/proc/<pid>/stat``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def _strace_version(path: str) -> str:
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "strace"
    first = out.splitlines()[0] if out else "strace"
    return first.replace(" -- version", "")


# --- what a capture holds ------------------------------------------------------------------

#: Memslot calls closer than this belong to one burst (QEMU commits a memory-map transaction as
#: a run of ioctls; firmware steps are milliseconds apart).
BURST_GAP_NS = 1_000_000


def classify(calls: Sequence[MemslotCall]) -> list[str]:
    """What each call did to the slot it names: ``create``, ``delete``, ``move``, ``flags``
    (dirty logging or read-only toggled in place), ``same`` (no change) or ``error``.

    Follows ``kvm_set_memory_region()`` (``virt/kvm/kvm_main.c``): size 0 deletes, an absent slot
    is created, a new gpa moves, new flags at the same gpa and size are ``KVM_MR_FLAGS_ONLY``.
    """
    present: dict[tuple[int, int], MemslotCall] = {}
    kinds: list[str] = []
    for c in calls:
        key = (c.address_space, c.slot)
        if not c.ok:
            kinds.append("error")
            continue
        cur = present.get(key)
        if c.is_delete:
            kinds.append("delete")
            present.pop(key, None)
            continue
        if cur is None:
            kinds.append("create")
        elif cur.gpa != c.gpa:
            kinds.append("move")
        elif cur.flags != c.flags:
            kinds.append("flags")
        else:
            kinds.append("same")
        present[key] = c
    return kinds


def bursts(calls: Sequence[MemslotCall], gap_ns: int = BURST_GAP_NS) -> list[list[int]]:
    """Indices of the calls grouped in bursts (consecutive calls less than ``gap_ns`` apart)."""
    groups: list[list[int]] = []
    end = -(1 << 62)
    for i, c in enumerate(calls):
        if c.t_ns - end >= gap_ns or not groups:
            groups.append([])
        groups[-1].append(i)
        end = c.t_ns + c.dur_ns
    return groups


def summary(cap: Capture) -> dict[str, Any]:
    """The figures ``kvmmu capture`` prints: memslot operations by kind, bursts, trace events."""
    kinds = classify(cap.memslots)
    by_kind = {k: kinds.count(k) for k in ("create", "delete", "move", "flags", "same", "error")}
    out: dict[str, Any] = {
        "command": list(cap.meta.command),
        "exit_code": cap.meta.exit_code,
        "duration_s": round(cap.meta.duration_ns / 1e9, 3),
        "memslot_ioctls": len(cap.memslots),
        **{f"memslot_{k}": v for k, v in by_kind.items()},
        "address_spaces_used": sorted({c.address_space for c in cap.memslots}),
        "bursts": len(bursts(cap.memslots)),
        "vcpu_threads": len(cap.meta.vcpu_tids),
        "kvm_runs": cap.meta.kvm_runs,
        "kernel": asdict(cap.meta.kernel),
    }
    if cap.has_trace:
        acc = cap.mmio_accesses()
        out |= {
            "trace_events": len(cap.events),
            "trace_events_lost": cap.meta.events_lost,
            "kvm_mmu_zap_all_fast": cap.count("kvm_mmu_zap_all_fast"),
            "kvm_mmu_get_page_new": sum(
                1 for e in cap.events if e.event == "kvm_mmu_get_page" and e.text.endswith(" new")
            ),
            "kvm_mmu_prepare_zap_page": cap.count("kvm_mmu_prepare_zap_page"),
            "kvm_page_fault": cap.count("kvm_page_fault"),
            "mmio_accesses": len(acc),
            "mmio_exits": sum(1 for a in acc if a.exited),
        }
    return out
