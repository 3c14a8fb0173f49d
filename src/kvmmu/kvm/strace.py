"""Memslot ioctls read from an ``strace`` log, whatever VMM made it.

Design. The kernel has no tracepoint for memslot changes (``kvm_set_memory_region()`` in
``virt/kvm/kvm_main.c`` traces nothing), so what a VMM asks of ``KVM_SET_USER_MEMORY_REGION`` is
seen from the outside: ``strace -f -e trace=ioctl`` decodes ``struct kvm_userspace_memory_region``
in full (strace's ``src/kvm.c``, ``kvm_ioctl_set_user_memory_region()``; strace 6.8 and later
also decode ``KVM_SET_USER_MEMORY_REGION2``).  Any VMM works the same way (QEMU, Firecracker,
cloud-hypervisor, crosvm), so this module only reads text, and reads every form strace prints:

* with ``-f`` the line starts with the thread id (``1234  `` in a ``-o`` file, ``[pid  1234] ``
  on stderr); without ``-f`` there is none (the calls then belong to one thread, id 0);
* timestamps: ``-ttt`` (seconds since the epoch, microseconds or, with
  ``--absolute-timestamps=format:unix,precision:ns``, nanoseconds), ``-tt`` (time of day, which
  may pass midnight) or none (then calls are spaced 1 µs apart, in file order);
* ``-T`` durations (``<0.000046>``), optional;
* a call interrupted by another thread's line: ``... <unfinished ...>`` then
  ``<... ioctl resumed>) = 0 <...>``;
* results ``= 0``, ``= -1 EEXIST (File exists)`` and ``= ?`` (the process died in the call);
* flags as names (``KVM_MEM_LOG_DIRTY_PAGES|KVM_MEM_READONLY``) or numbers; the slot field
  carries the address space in its high 16 bits (``KVM_SET_USER_MEMORY_REGION`` in
  ``Documentation/virt/kvm/api.rst``: "bits 16-31 of slot specify the address space").

A memslot ioctl that strace printed undecoded (``_IOC(_IOC_WRITE, 0xae, 0x46, 0x20)``, an old
strace) is counted, so that the caller can say the log is incomplete instead of silently replaying
part of it.  ``KVM_RUN`` calls name the vCPU threads.

Prior art: strace's own decoder (``src/kvm.c``) for the printed form; ``ltrace``/``strace -o``
post-processors such as ``strace-parser`` for the unfinished/resumed pairing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

#: ``KVM_MEM_*`` flag bits (``include/uapi/linux/kvm.h``).
MEM_FLAGS: dict[str, int] = {
    "KVM_MEM_LOG_DIRTY_PAGES": 1,
    "KVM_MEM_READONLY": 2,
    "KVM_MEM_GUEST_MEMFD": 4,
}
#: The ioctls read here; the ``_IOC`` numbers catch an strace that does not decode them
#: (``KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, ...)``, ``..._REGION2 = _IOW(KVMIO, 0x49, ...)``).
MEMSLOT_IOCTLS = ("KVM_SET_USER_MEMORY_REGION", "KVM_SET_USER_MEMORY_REGION2")
_UNDECODED = re.compile(r"_IOC\(_IOC_WRITE, 0xae, 0x4[69],")

_PREFIX = re.compile(
    r"^(?:\[pid\s+(?P<pid1>\d+)\]\s+|(?P<pid2>\d+)\s+)?"
    r"(?:(?P<unix>\d+\.\d+)|(?P<tod>\d\d:\d\d:\d\d(?:\.\d+)?)\s)?\s*(?P<rest>.*)$"
)
_RESULT = re.compile(
    r"\)\s+=\s+(?P<ret>-?\d+|\?)(?:\s+(?P<errno>E[A-Z0-9]+))?[^<]*(?:<(?P<dur>[\d.]+)>)?\s*$"
)
_FIELD = re.compile(r"(\w+)=([^,}]+)")


class StraceError(ValueError):
    """The text is not an strace log with memslot ioctls; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class MemslotCall:
    """One ``KVM_SET_USER_MEMORY_REGION(2)`` call as the VMM made it.

    ``t_ns`` is the call's start on the log's clock (ns; epoch or time of day, as printed),
    ``dur_ns`` how long it took (0 when the log has no ``-T``), ``errno`` the error name or
    ``""`` on success, ``"?"`` when the call never returned.
    """

    t_ns: int
    dur_ns: int
    tid: int
    slot: int
    address_space: int
    flags: int
    gpa: int
    size: int
    hva: int
    errno: str = ""
    ioctl: str = "KVM_SET_USER_MEMORY_REGION"

    @property
    def is_delete(self) -> bool:
        """A request with ``memory_size == 0`` deletes the slot."""
        return self.size == 0

    @property
    def ok(self) -> bool:
        return self.errno == ""


@dataclass(slots=True)
class StraceLog:
    """What one strace log says about a VMM's memslots and threads."""

    calls: list[MemslotCall] = field(default_factory=list)
    #: Memslot ioctls strace printed undecoded (their fields are unknown).
    undecoded: int = 0
    #: Threads that called ``KVM_RUN`` (the vCPU threads), in order of first call.
    vcpu_tids: list[int] = field(default_factory=list)
    kvm_runs: int = 0
    #: ``KVM_REGISTER_COALESCED_MMIO`` calls (their zones are not decoded by strace 6.1).
    coalesced_zones: int = 0
    #: The zones, where the log decodes them (the LD_PRELOAD shim does): ``(addr, size, pio)``.
    zones: list[tuple[int, int, int]] = field(default_factory=list)
    #: Quirks the VMM disabled (``KVM_CAP_DISABLE_QUIRKS``/``..._QUIRKS2`` ``args[0]``), or None
    #: when no ``KVM_ENABLE_CAP`` was decoded (strace 6.1 prints its struct as a pointer).
    disabled_quirks: int | None = None
    irqchip: bool = False
    #: Every thread id that appears (the VMM's process tree, as strace saw it).
    tids: set[int] = field(default_factory=set)


def _int(text: str) -> int:
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _flags(text: str) -> int:
    bits = 0
    for part in text.strip().split("|"):
        part = part.strip()
        if part in MEM_FLAGS:
            bits |= MEM_FLAGS[part]
        else:
            bits |= _int(part)  # a number, or a ValueError for a name we do not know
    return bits


def _timestamp(m: re.Match[str]) -> int | None:
    if m["unix"] is not None:
        whole, _, frac = m["unix"].partition(".")
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    if m["tod"] is not None:
        hms, _, frac = m["tod"].partition(".")
        h, mi, s = (int(x) for x in hms.split(":"))
        return ((h * 60 + mi) * 60 + s) * 1_000_000_000 + int((frac + "000000000")[:9])
    return None


def _struct(args: str, lineno: int) -> dict[str, str]:
    start, end = args.find("{"), args.rfind("}")
    if start < 0 or end < start:
        raise StraceError(f"line {lineno}: memslot ioctl without a decoded struct: {args[:80]!r}")
    return dict(_FIELD.findall(args[start + 1 : end]))


def parse_strace(text: str | Iterable[str]) -> StraceLog:
    """Read an strace log (the text, or its lines); raise :class:`StraceError` if it is not one."""
    lines = text.splitlines() if isinstance(text, str) else text
    log = StraceLog()
    pending: dict[int, tuple[int | None, str, int]] = {}  # tid -> (t, args, lineno) unfinished
    seen_syscall = False
    last_tod: int | None = None
    day = 0
    order = 0
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _PREFIX.match(line)
        if m is None:  # pragma: no cover - the pattern matches any line
            continue
        tid = int(m["pid1"] or m["pid2"] or 0)
        t = _timestamp(m)
        if t is not None and m["tod"] is not None:
            # A time of day passes midnight once in a while: keep the clock increasing.
            if last_tod is not None and t + day < last_tod - 43_200 * 10**9:
                day += 86_400 * 10**9
            t += day
            last_tod = t
        rest = m["rest"]
        order += 1
        if t is None:
            t = order * 1000
        if rest.startswith("<... ioctl resumed>"):
            seen_syscall = True
            if tid not in pending:
                continue
            t0, args, first = pending.pop(tid)
            _finish(
                log, tid, t0 if t0 is not None else t, t, args + rest[len("<... ioctl resumed>") :], first
            )
            continue
        if not rest.startswith("ioctl("):
            if re.match(r"^[a-z_0-9]+\(", rest) or rest.startswith(("+++", "---")):
                seen_syscall = True
                log.tids.add(tid)
            continue
        seen_syscall = True
        log.tids.add(tid)
        if rest.endswith("<unfinished ...>"):
            pending[tid] = (t, rest[: -len("<unfinished ...>")], lineno)
            continue
        _finish(log, tid, t, t, rest, lineno)
    if not seen_syscall:
        raise StraceError("no system call lines: not an strace log (run strace -f -e trace=ioctl -ttt -T)")
    return log


#: ``KVM_CAP_DISABLE_QUIRKS`` (116) and ``KVM_CAP_DISABLE_QUIRKS2`` (213), include/uapi/linux/kvm.h.
_QUIRK_CAPS = {"116", "213", "KVM_CAP_DISABLE_QUIRKS", "KVM_CAP_DISABLE_QUIRKS2"}
_CAP = re.compile(r"cap=(?P<cap>\w+).*?args=\[(?P<arg0>[^,\]]+)")


def _enable_cap(log: StraceLog, args: str) -> None:
    """Note the quirks a decoded ``KVM_ENABLE_CAP`` disables; any decoded call makes them known."""
    m = _CAP.search(args)
    if m is None:
        return  # printed as a pointer: nothing known
    if log.disabled_quirks is None:
        log.disabled_quirks = 0
    if m["cap"] in _QUIRK_CAPS:
        with contextlib.suppress(ValueError):  # an argument we cannot read: no quirk noted
            log.disabled_quirks |= _int(m["arg0"])


def _finish(log: StraceLog, tid: int, t0: int, t_end: int, text: str, lineno: int) -> None:
    """One complete ioctl line (an unfinished one joined with its resumption)."""
    log.tids.add(tid)
    res = _RESULT.search(text)
    args = text[len("ioctl(") : res.start()] if res is not None and text.startswith("ioctl(") else text
    parts = [p.strip() for p in args.split(",", 2)]
    name = parts[1] if len(parts) > 1 else ""
    if name == "KVM_RUN":
        log.kvm_runs += 1
        if tid not in log.vcpu_tids:
            log.vcpu_tids.append(tid)
        return
    if name == "KVM_CREATE_IRQCHIP":
        log.irqchip = True
        return
    if name == "KVM_REGISTER_COALESCED_MMIO":
        log.coalesced_zones += 1
        if "{" in args:
            z = _struct(args, lineno)
            with contextlib.suppress(KeyError, ValueError):  # unknown form: counted, not located
                log.zones.append((_int(z["addr"]), _int(z["size"]), _int(z.get("pio", "0"))))
        return
    if name == "KVM_ENABLE_CAP":
        _enable_cap(log, args)
        return
    if _UNDECODED.search(args):
        log.undecoded += 1
        return
    if name not in MEMSLOT_IOCTLS:
        return
    fields = _struct(args, lineno)
    dur = 0
    errno = "?"  # no result: the process died inside the call
    if res is not None:
        if res["dur"] is not None:
            dur = round(float(res["dur"]) * 1e9)
        elif t_end > t0:  # no -T: an unfinished call's resumption still bounds it
            dur = t_end - t0
        if res["ret"] != "?":
            errno = (res["errno"] or "EUNKNOWN") if int(res["ret"]) < 0 else ""
    try:
        slot = _int(fields["slot"])
        log.calls.append(
            MemslotCall(
                t_ns=t0,
                dur_ns=dur,
                tid=tid,
                slot=slot & 0xFFFF,
                address_space=slot >> 16,
                flags=_flags(fields.get("flags", "0")),
                gpa=_int(fields["guest_phys_addr"]),
                size=_int(fields["memory_size"]),
                hva=_int(fields.get("userspace_addr", "0")),
                errno=errno,
                ioctl=name,
            )
        )
    except (KeyError, ValueError) as exc:
        raise StraceError(f"line {lineno}: cannot read {name} fields ({exc}): {args[:120]!r}") from None
