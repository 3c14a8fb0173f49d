"""Record the ``kvm`` and ``kvmmmu`` trace events of one run, leaving tracefs as it was found.

Design. The kernel's tracepoints are the one place where the real shadow MMU says what it did
(``kvm_mmu_zap_all_fast``, ``kvm_mmu_prepare_zap_page``, ``kvm_mmio``, ...; formats in section 5 of
``kvm-mmio-generation.md``).  Tracing is global state shared with whoever else uses the machine,
so :class:`TraceRecorder` touches as little of it as possible and puts back everything it touched:

* tracefs is mounted at ``/sys/kernel/tracing`` only if it is not mounted anywhere; then it is
  unmounted again at the end;
* the recording happens in a private ftrace *instance* (``instances/kvmmu-<pid>-<n>``): its own
  ring buffer, its own ``tracing_on`` and event switches.  The top-level buffer, its
  ``tracing_on``, its enabled events and its buffer size are never written, so another user's
  trace survives intact; removing the instance frees everything the recording allocated;
* the instance records only the processes it is told to (by default this process and every
  thread it has or starts): ``set_event_pid`` filters in the kernel, ``options/event-fork`` adds
  the threads and children those tasks create, and :meth:`TraceRecorder.events` drops any line of
  another task, so another VM on the machine never shows up in a recording.

The context manager restores on every exit path, exceptions included; :func:`snapshot` reads what
a recording may change (the mount, this process's instances) so that a test can compare before and
after, and :attr:`TraceRecorder.written` lists every file the recorder wrote, so that a test can
check it never wrote outside its instance.

Prior art: ``trace-cmd record -B <instance>`` and perf's ftrace instances; the kernel's
``Documentation/trace/ftrace.rst`` ("Instances").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

TRACEFS = Path("/sys/kernel/tracing")
#: Event systems recorded: the generic KVM events and the MMU's.
SYSTEMS: tuple[str, ...] = ("kvm", "kvmmmu")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

# "python3-7139 [000] ...1.   752.198451: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 0 used_pages 8"
_LINE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>\d+\.\d+):\s+"
    r"(?P<event>\w+):\s?(?P<text>.*)$"
)
_instance_ids = itertools.count()


class TracefsError(RuntimeError):
    """tracefs cannot be used here (not root, no tracefs, no kvm events)."""


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One line of the trace: the event name and its text (in the kernel's format)."""

    task: str
    pid: int
    cpu: int
    timestamp: float
    event: str
    text: str


def parse_trace(text: str) -> list[TraceEvent]:
    """Parse the ``trace`` file's text (comment lines skipped)."""
    out: list[TraceEvent] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        out.append(
            TraceEvent(
                m["task"], int(m["pid"]), int(m["cpu"]), float(m["ts"]), m["event"], m["text"]
            )
        )
    return out


def find_mount() -> Path | None:
    """Where tracefs is mounted, if anywhere (``/proc/self/mounts``)."""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "tracefs":
                return Path(parts[1])
    return None


@dataclass(frozen=True, slots=True)
class TraceState:
    """What a recording may change and must put back: the mount and this process's instances.

    The top-level settings (``tracing_on``, ``set_event``, ``buffer_size_kb``, the event switches)
    and other users' instances belong to whoever else traces on the machine and may change at any
    moment (another VM's tracer, another test run): comparing them made a test depend on what else
    ran (a top-level ``set_event`` changed by another agent's tracer failed one).  The recorder
    never writes outside its own instance, which :attr:`TraceRecorder.written` lets a test check.
    """

    mounted_at: str | None
    instances: tuple[str, ...]


def snapshot() -> TraceState:
    """Read the mount point and this process's instances (``kvmmu-<pid>-*``)."""
    root = find_mount()
    if root is None:
        return TraceState(None, ())
    inst = root / "instances"
    return TraceState(
        str(root),
        tuple(sorted(n for n in os.listdir(inst) if n.startswith(f"kvmmu-{os.getpid()}-")))
        if inst.is_dir() else (),
    )


class TraceRecorder:
    """Context manager: record kvm/kvmmmu events in a private instance, restore on exit.

    ``events`` names which events to enable (``"kvmmmu/kvm_mmu_zap_all_fast"``) or whole
    systems (``"kvm"``); by default both systems.  :meth:`events` returns what was recorded so far.
    """

    def __init__(
        self,
        events: tuple[str, ...] = SYSTEMS,
        buffer_size_kb: int = 4096,
        pids: Iterable[int] | None = None,
        clock: str | None = None,
    ) -> None:
        self._wanted = events
        self._buffer_kb = buffer_size_kb
        # ``trace_clock`` of the instance (``mono``: CLOCK_MONOTONIC, comparable with another
        # tool's timestamps); None keeps the kernel's default (``local``).
        self._clock = clock
        # Tasks seen in set_event_pid: the kernel drops a task from it when the task exits
        # (``event_filter_pid_sched_process_exit()`` in kernel/trace/trace_events.c), so the
        # tasks of a finished process must be remembered to keep their lines.
        self._seen: set[int] = set()
        # Default: this process, all its threads (vCPU threads start later: event-fork adds them).
        self._pids = tuple(pids) if pids is not None else own_tasks()
        if not self._pids:
            raise TracefsError("no process to record: pids is empty")
        self._mounted_here: Path | None = None
        self._instance: Path | None = None
        #: Every file this recorder wrote, in order: all inside its own instance.
        self.written: list[Path] = []

    def _write(self, path: Path, text: str) -> None:
        self.written.append(path)
        path.write_text(text)

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._restore()
            raise
        return self

    def _start(self) -> None:
        root = find_mount()
        if root is None:
            root = TRACEFS
            if _libc.mount(b"nodev", str(root).encode(), b"tracefs", 0, None) != 0:
                err = ctypes.get_errno()
                raise TracefsError(f"cannot mount tracefs at {root}: {os.strerror(err)}")
            self._mounted_here = root
        for system in SYSTEMS:
            if not (root / "events" / system).is_dir():
                raise TracefsError(f"no {system} trace events in {root}/events (kvm not loaded?)")
        name = f"kvmmu-{os.getpid()}-{next(_instance_ids)}"
        inst = root / "instances" / name
        try:
            inst.mkdir()
        except OSError as exc:
            raise TracefsError(f"cannot create trace instance {inst}: {exc.strerror}") from None
        self._instance = inst
        self._write(inst / "tracing_on", "0")
        self._write(inst / "buffer_size_kb", str(self._buffer_kb))
        if self._clock is not None:
            try:
                self._write(inst / "trace_clock", self._clock)
            except OSError:
                raise TracefsError(f"trace clock {self._clock!r} not offered by {root}") from None
        # Before any event is enabled: only our tasks, and the tasks they start, are recorded.
        self._write(inst / "options" / "event-fork", "1")
        self._write(inst / "set_event_pid", " ".join(str(p) for p in self._pids))
        for spec in self._wanted:
            switch = inst / "events" / spec / "enable"
            if not switch.is_file():
                raise TracefsError(f"no trace event or system {spec!r} in {root}/events")
            self._write(switch, "1")
        self._write(inst / "trace", "")  # start empty
        self._write(inst / "tracing_on", "1")

    def events(self, also: Iterable[int] = ()) -> list[TraceEvent]:
        """Everything recorded so far (the buffer is left as is).

        ``also``: more task ids known to be ours (e.g. the threads strace saw), for tasks that
        started and exited between two calls of :meth:`recorded_pids`.
        """
        if self._instance is None:
            raise TracefsError("not recording")
        # The kernel filter already holds; the check here keeps a foreign line out even if a
        # task of ours exited and its pid was reused before the filter saw it go.
        allowed = self.recorded_pids() | frozenset(also)
        return [e for e in parse_trace((self._instance / "trace").read_text()) if e.pid in allowed]

    def recorded_pids(self) -> frozenset[int]:
        """The tasks the instance records: those given, plus the ones they started since."""
        if self._instance is None:
            raise TracefsError("not recording")
        text = (self._instance / "set_event_pid").read_text()
        self._seen.update(int(p) for p in text.split())
        return frozenset(self._seen) | frozenset(self._pids)

    def lost_events(self) -> int:
        """Events the ring buffer overwrote (``overrun`` summed over the CPUs): 0 if none."""
        if self._instance is None:
            raise TracefsError("not recording")
        lost = 0
        for stats in (self._instance / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "overrun":
                    lost += int(value)
        return lost

    def stop(self) -> None:
        """Stop recording; :meth:`events` still reads what was recorded."""
        if self._instance is not None:
            self._write(self._instance / "tracing_on", "0")

    def _restore(self) -> None:
        inst, self._instance = self._instance, None
        if inst is not None:
            try:
                self._write(inst / "tracing_on", "0")
                # An instance with enabled events cannot always be removed while they fire;
                # switch them off first, then remove it (frees its buffer).
                self._write(inst / "events" / "enable", "0")
            finally:
                inst.rmdir()
        root, self._mounted_here = self._mounted_here, None
        if root is not None and _libc.umount2(str(root).encode(), 0) != 0:
            err = ctypes.get_errno()
            raise TracefsError(f"cannot unmount {root}: {os.strerror(err)}")

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._restore()


def own_tasks() -> tuple[int, ...]:
    """This process's pid and the ids of all its threads (``/proc/self/task``)."""
    tids = {int(t) for t in os.listdir("/proc/self/task")}
    return (os.getpid(), *sorted(tids - {os.getpid()}))


def count(events: list[TraceEvent], name: str) -> int:
    """How many recorded events are called ``name``."""
    return sum(1 for e in events if e.event == name)
