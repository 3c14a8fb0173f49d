"""Pure-Python bindings to ``/dev/kvm``: ctypes structures, ioctl numbers, and Kvm/Vm/Vcpu objects.

Design. The project must drive the real KVM from the same interpreter that runs the model, with
nothing to compile, so the bindings are ``ctypes`` structures laid out exactly as in
``include/uapi/linux/kvm.h`` and ``arch/x86/include/uapi/asm/kvm.h`` and passed to
``fcntl.ioctl`` as mutable buffers.  Every structure's size is asserted at import: a layout error
then fails loudly at once instead of corrupting a guest.  Ioctl numbers are *computed* from the
structure sizes with the kernel's ``_IOC`` encoding (``_IO/_IOR/_IOW/_IOWR``), never copied as
magic numbers, so a size mistake would also show in the request number.

``KVM_RUN`` is issued as ``fcntl.ioctl(fd, KVM_RUN, 0)``; CPython releases the GIL around the
system call, so several vCPU threads run guests while another thread changes memslots.  Memory
(guest RAM, ``kvm_run``) is mapped with libc's ``mmap`` through ctypes rather than the ``mmap``
module: a raw address is what ``userspace_addr`` needs, and ``munmap`` then happens exactly when
the owner closes, with no exported-buffer reference keeping it alive.

Errors: every failed ioctl raises :class:`KvmIoctlError` carrying the errno *name* (``"EINVAL"``),
because the differential tests compare names with the model's :class:`kvmmu.KvmError`.

Stopping a vCPU: a guest that never exits would keep ``KVM_RUN`` busy forever.  As in QEMU
(``SIG_IPI``) and the kernel selftests, a vCPU is kicked by setting ``immediate_exit`` and sending
it a signal.  The signal (``SIGUSR1``) is *blocked* in the vCPU's thread and unblocked only inside
``KVM_RUN`` through ``KVM_SET_SIGNAL_MASK``; it therefore interrupts the guest (``EINTR``) but is
never delivered to Python, and is consumed with ``sigtimedwait`` afterwards: no process-wide
signal handler is installed.

Prior art: the kernel's ``tools/testing/selftests/kvm/lib`` (``kvm_util.c``: vm/vcpu objects,
``vcpu_run``, ``__vm_set_user_memory_region``; ``kvm_binary_stats``), Dave Johnson's
*kvm-hello-world* (the minimal VMM), and QEMU's ``kvm-all.c`` (the signal kick).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import fcntl
import mmap
import os
import signal
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import Self

from kvmmu.kvm.stats import StatsReader

# --------------------------------------------------------------------------------------------
# ioctl number encoding (include/uapi/asm-generic/ioctl.h)
# --------------------------------------------------------------------------------------------

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2

KVMIO = 0xAE


def _ioc(direction: int, type_: int, nr: int, size: int) -> int:
    assert 0 <= size < (1 << _IOC_SIZEBITS), size
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, KVMIO, nr, 0)


def _ior(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ, KVMIO, nr, ctypes.sizeof(struct))


def _iow(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_WRITE, KVMIO, nr, ctypes.sizeof(struct))


def _iowr(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, KVMIO, nr, ctypes.sizeof(struct))


# --------------------------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------------------------

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class KvmRegs(ctypes.Structure):
    """``struct kvm_regs`` (x86): the general-purpose registers, rip and rflags."""

    _fields_ = [
        (name, u64)
        for name in (
            [
                "rax",
                "rbx",
                "rcx",
                "rdx",
                "rsi",
                "rdi",
                "rsp",
                "rbp",
                "r8",
                "r9",
                "r10",
                "r11",
                "r12",
                "r13",
                "r14",
                "r15",
                "rip",
                "rflags",
            ]
        )
    ]


class KvmSegment(ctypes.Structure):
    """``struct kvm_segment``: one segment register as the VMCS/VMCB holds it."""

    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class KvmDtable(ctypes.Structure):
    """``struct kvm_dtable``: GDTR / IDTR."""

    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class KvmSregs(ctypes.Structure):
    """``struct kvm_sregs``: segments, descriptor tables, control registers, EFER."""

    _fields_ = [
        ("cs", KvmSegment),
        ("ds", KvmSegment),
        ("es", KvmSegment),
        ("fs", KvmSegment),
        ("gs", KvmSegment),
        ("ss", KvmSegment),
        ("tr", KvmSegment),
        ("ldt", KvmSegment),
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * 4),
    ]


class KvmUserspaceMemoryRegion(ctypes.Structure):
    """``struct kvm_userspace_memory_region``. ``slot``: bits 0-15 slot id, 16-31 address space."""

    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class KvmUserspaceMemoryRegion2(ctypes.Structure):
    """``struct kvm_userspace_memory_region2`` (KVM_CAP_USER_MEMORY2): adds guest_memfd."""

    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
        ("guest_memfd_offset", u64),
        ("guest_memfd", u32),
        ("pad1", u32),
        ("pad2", u64 * 14),
    ]


class KvmDirtyLog(ctypes.Structure):
    """``struct kvm_dirty_log``: slot and a pointer to a bitmap the kernel fills."""

    _fields_ = [("slot", u32), ("padding1", u32), ("dirty_bitmap", u64)]


class KvmEnableCap(ctypes.Structure):
    """``struct kvm_enable_cap``."""

    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class KvmSignalMask(ctypes.Structure):
    """``struct kvm_signal_mask`` with room for the kernel's 64-bit x86 sigset."""

    _fields_ = [("len", u32), ("sigset", u8 * 8)]


class KvmCpuidEntry2(ctypes.Structure):
    """``struct kvm_cpuid_entry2``."""

    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


#: Room for the CPUID leaves KVM_GET_SUPPORTED_CPUID returns (E2BIG below this many).
MAX_CPUID_ENTRIES = 256


class KvmCpuid2(ctypes.Structure):
    """``struct kvm_cpuid2`` with a fixed array (the ioctl number uses the header size only)."""

    _fields_ = [("nent", u32), ("padding", u32), ("entries", KvmCpuidEntry2 * MAX_CPUID_ENTRIES)]


class _KvmCpuid2Header(ctypes.Structure):
    _fields_ = [("nent", u32), ("padding", u32)]


# --- struct kvm_run: the fixed head, then the exit union at offset 32 -------------------------


class KvmRunIo(ctypes.Structure):
    _fields_ = [
        ("direction", u8),
        ("size", u8),
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),
    ]


class KvmRunMmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class KvmRunFailEntry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class KvmRunInternal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class KvmRunHw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", u64)]


class KvmRunExit(ctypes.Union):
    _fields_ = [
        ("hw", KvmRunHw),
        ("fail_entry", KvmRunFailEntry),
        ("io", KvmRunIo),
        ("mmio", KvmRunMmio),
        ("internal", KvmRunInternal),
        ("padding", ctypes.c_char * 256),
    ]


class KvmRun(ctypes.Structure):
    """The head of ``struct kvm_run`` (the shared page mapped from the vCPU fd)."""

    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("u", KvmRunExit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
    ]


# Sizes from the uapi headers: a wrong layout must never reach the kernel.
assert ctypes.sizeof(KvmRegs) == 144
assert ctypes.sizeof(KvmSegment) == 24
assert ctypes.sizeof(KvmDtable) == 16
assert ctypes.sizeof(KvmSregs) == 312
assert ctypes.sizeof(KvmUserspaceMemoryRegion) == 32
assert ctypes.sizeof(KvmUserspaceMemoryRegion2) == 160
assert ctypes.sizeof(KvmDirtyLog) == 16
assert ctypes.sizeof(KvmEnableCap) == 104
assert ctypes.sizeof(KvmCpuidEntry2) == 40
assert ctypes.sizeof(_KvmCpuid2Header) == 8
assert ctypes.sizeof(KvmRunExit) == 256
assert KvmRun.u.offset == 32 and KvmRun.kvm_valid_regs.offset == 288
assert KvmRunMmio.len.offset == 16 and KvmRunMmio.is_write.offset == 20

# --------------------------------------------------------------------------------------------
# Request numbers, capabilities, exit reasons, flags
# --------------------------------------------------------------------------------------------

KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _ioc(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, ctypes.sizeof(_KvmCpuid2Header))
KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, KvmDirtyLog)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, KvmUserspaceMemoryRegion)
KVM_SET_USER_MEMORY_REGION2 = _iow(0x49, KvmUserspaceMemoryRegion2)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, KvmRegs)
KVM_SET_REGS = _iow(0x82, KvmRegs)
KVM_GET_SREGS = _ior(0x83, KvmSregs)
KVM_SET_SREGS = _iow(0x84, KvmSregs)
KVM_SET_SIGNAL_MASK = _ioc(_IOC_WRITE, KVMIO, 0x8B, 4)  # sizeof(struct kvm_signal_mask) == 4
KVM_SET_CPUID2 = _ioc(_IOC_WRITE, KVMIO, 0x90, ctypes.sizeof(_KvmCpuid2Header))
KVM_ENABLE_CAP = _iow(0xA3, KvmEnableCap)
KVM_GET_STATS_FD = _io(0xCE)

# Spot checks against the values every VMM hard-codes (kvm-hello-world, QEMU's kvm headers).
assert KVM_SET_USER_MEMORY_REGION == 0x4020AE46
assert KVM_GET_SREGS == 0x8138AE83 and KVM_SET_REGS == 0x4090AE82
assert KVM_RUN == 0xAE80 and KVM_CREATE_VM == 0xAE01


class Cap(IntEnum):
    """``KVM_CAP_*`` numbers used here."""

    USER_MEMORY = 3
    NR_VCPUS = 9
    NR_MEMSLOTS = 10
    COALESCED_MMIO = 15
    SYNC_MMU = 16
    MAX_VCPUS = 66
    READONLY_MEM = 81
    MULTI_ADDRESS_SPACE = 118
    BINARY_STATS_FD = 203
    DISABLE_QUIRKS2 = 213
    USER_MEMORY2 = 231


class ExitReason(IntEnum):
    """``KVM_EXIT_*`` (the ones this package can meet on x86)."""

    UNKNOWN = 0
    EXCEPTION = 1
    IO = 2
    HYPERCALL = 3
    DEBUG = 4
    HLT = 5
    MMIO = 6
    IRQ_WINDOW_OPEN = 7
    SHUTDOWN = 8
    FAIL_ENTRY = 9
    INTR = 10
    INTERNAL_ERROR = 17
    SYSTEM_EVENT = 24
    X86_RDMSR = 29
    X86_WRMSR = 30
    NOTIFY = 37
    MEMORY_FAULT = 39


KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
#: ``KVM_X86_QUIRK_SLOT_ZAP_ALL``: DELETE/MOVE zap every shadow page, not just the slot's.
KVM_X86_QUIRK_SLOT_ZAP_ALL = 1 << 7

#: The signal that kicks a vCPU out of KVM_RUN (blocked outside KVM_RUN, see the module doc).
KICK_SIGNAL = signal.SIGUSR1

PAGE_SIZE = 4096

# --------------------------------------------------------------------------------------------
# libc: mmap / munmap (raw addresses), errors
# --------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.restype = ctypes.c_int
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
MADV_NOHUGEPAGE = 15


class KvmIoctlError(OSError):
    """A failed ioctl or mapping on /dev/kvm; ``errno_name`` is e.g. ``"EINVAL"``."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(
            err, f"{what}: {errno_mod.errorcode.get(err, str(err))} ({os.strerror(err)})"
        )
        self.what = what

    @property
    def errno_name(self) -> str:
        """The symbolic errno, as the model's ``KvmError.errno_name`` spells it."""
        return errno_mod.errorcode.get(self.errno or 0, str(self.errno))


def _ioctl(
    fd: int, request: int, arg: int | ctypes.Structure | ctypes.Array[ctypes.c_char], what: str
) -> int:
    """``fcntl.ioctl`` with errors turned into :class:`KvmIoctlError`.

    A ctypes structure is passed as a mutable buffer, so ``_IOR`` results land in it.
    """
    try:
        if isinstance(arg, int):
            return fcntl.ioctl(fd, request, arg)
        return int(fcntl.ioctl(fd, request, arg, True))
    except OSError as exc:
        raise KvmIoctlError(exc.errno or 0, what) from None


class HostMemory:
    """Anonymous, page-aligned host memory at a raw address (guest RAM or a results page)."""

    def __init__(self, size: int, *, no_huge_pages: bool = True) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"host memory size {size:#x} must be a positive multiple of 4 KiB")
        addr = _libc.mmap(
            None,
            size,
            mmap.PROT_READ | mmap.PROT_WRITE,
            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
            -1,
            0,
        )
        if addr is None or addr == _MAP_FAILED:
            raise KvmIoctlError(ctypes.get_errno(), "mmap guest memory")
        if no_huge_pages:
            # One shadow PTE per 4 KiB guest page is what the cost model counts; transparent huge
            # pages would let KVM map 2 MiB at once and hide the per-page faults.
            _libc.madvise(addr, size, MADV_NOHUGEPAGE)
        self.addr: int = addr
        self.size = size

    def _check(self, offset: int, n: int) -> None:
        if self.addr == 0:
            raise ValueError("host memory is unmapped")
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"range {offset:#x}+{n:#x} outside host memory of {self.size:#x}")

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        ctypes.memmove(self.addr + offset, data, len(data))

    def read(self, offset: int, n: int) -> bytes:
        self._check(offset, n)
        return ctypes.string_at(self.addr + offset, n)

    def write_u64(self, offset: int, value: int) -> None:
        self._check(offset, 8)
        ctypes.c_uint64.from_address(self.addr + offset).value = value

    def read_u64(self, offset: int) -> int:
        self._check(offset, 8)
        return int(ctypes.c_uint64.from_address(self.addr + offset).value)

    def close(self) -> None:
        if self.addr:
            _libc.munmap(self.addr, self.size)
            self.addr = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Decoded exits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MmioExit:
    """``KVM_EXIT_MMIO``: the guest touched ``gpa`` with no memslot (or wrote a READONLY one)."""

    gpa: int
    len: int
    is_write: bool
    data: bytes  # the bytes written (``len`` of them); empty for a read


@dataclass(frozen=True, slots=True)
class IoExit:
    """``KVM_EXIT_IO``: an ``in``/``out`` instruction."""

    port: int
    size: int
    is_out: bool
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SimpleExit:
    """An exit with no payload this package uses: HLT, SHUTDOWN, INTR, ..."""

    reason: ExitReason | int


@dataclass(frozen=True, slots=True)
class FailEntryExit:
    """``KVM_EXIT_FAIL_ENTRY``: the CPU refused to enter the guest."""

    hardware_entry_failure_reason: int
    cpu: int


@dataclass(frozen=True, slots=True)
class InternalErrorExit:
    """``KVM_EXIT_INTERNAL_ERROR`` (e.g. the emulator failed)."""

    suberror: int
    data: tuple[int, ...]


Exit = MmioExit | IoExit | SimpleExit | FailEntryExit | InternalErrorExit


def _exit_reason(value: int) -> ExitReason | int:
    try:
        return ExitReason(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------------------------
# Kvm / Vm / Vcpu
# --------------------------------------------------------------------------------------------


class _Fd:
    """An owned file descriptor; ``close`` is idempotent."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError("descriptor is closed")
        return self.fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def _close_fd(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def close(self) -> None:
        """Release the descriptor and everything the object owns (subclasses add to it)."""
        self._close_fd()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Kvm(_Fd):
    """``/dev/kvm``: capabilities and VM creation."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        super().__init__(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        try:
            self.api_version = _ioctl(self.fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
            if self.api_version != 12:
                raise RuntimeError(f"KVM API version {self.api_version}, expected 12")
            self.vcpu_mmap_size = _ioctl(
                self.fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"
            )
        except BaseException:
            self._close_fd()
            raise

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on the system fd: 0 = absent, else a capability value."""
        return _ioctl(self.fileno(), KVM_CHECK_EXTENSION, int(cap), f"KVM_CHECK_EXTENSION({cap})")

    def supported_cpuid(self) -> KvmCpuid2:
        cpuid = KvmCpuid2()
        cpuid.nent = MAX_CPUID_ENTRIES
        _ioctl(self.fileno(), KVM_GET_SUPPORTED_CPUID, cpuid, "KVM_GET_SUPPORTED_CPUID")
        return cpuid

    def create_vm(self) -> Vm:
        fd = _ioctl(self.fileno(), KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        return Vm(self, fd)


class Vm(_Fd):
    """A VM fd. Owns its vCPUs, the memory handed to it, and its stats fd: ``close`` frees all."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        super().__init__(fd)
        self.kvm = kvm
        self.vcpus: list[Vcpu] = []
        self.memories: list[HostMemory] = []
        self._stats: StatsReader | None = None

    # --- capabilities -----------------------------------------------------------------------
    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION`` on the VM fd (some answers are per VM)."""
        return _ioctl(self.fileno(), KVM_CHECK_EXTENSION, int(cap), f"KVM_CHECK_EXTENSION({cap})")

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        """``KVM_ENABLE_CAP`` on the VM."""
        req = KvmEnableCap(cap=cap, flags=flags)
        for i, a in enumerate(args):
            req.args[i] = a
        _ioctl(self.fileno(), KVM_ENABLE_CAP, req, f"KVM_ENABLE_CAP({cap})")

    def disable_quirks(self, quirks: int) -> None:
        """``KVM_CAP_DISABLE_QUIRKS2``: turn quirks off (e.g. ``KVM_X86_QUIRK_SLOT_ZAP_ALL``)."""
        self.enable_cap(Cap.DISABLE_QUIRKS2, quirks)

    # --- memory -----------------------------------------------------------------------------
    def allocate(self, size: int) -> HostMemory:
        """Anonymous host memory owned by this VM (unmapped when the VM closes)."""
        mem = HostMemory(size)
        self.memories.append(mem)
        return mem

    def set_user_memory_region(
        self, slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: int
    ) -> None:
        """``KVM_SET_USER_MEMORY_REGION``; raises :class:`KvmIoctlError` (errno name) on refusal."""
        req = KvmUserspaceMemoryRegion(
            slot=slot & 0xFFFFFFFF,
            flags=flags & 0xFFFFFFFF,
            guest_phys_addr=guest_phys_addr & (2**64 - 1),
            memory_size=memory_size & (2**64 - 1),
            userspace_addr=userspace_addr & (2**64 - 1),
        )
        _ioctl(self.fileno(), KVM_SET_USER_MEMORY_REGION, req, "KVM_SET_USER_MEMORY_REGION")

    def set_user_memory_region2(
        self,
        slot: int,
        flags: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
        guest_memfd: int = 0,
        guest_memfd_offset: int = 0,
    ) -> None:
        """``KVM_SET_USER_MEMORY_REGION2`` (same semantics plus guest_memfd)."""
        req = KvmUserspaceMemoryRegion2(
            slot=slot & 0xFFFFFFFF,
            flags=flags & 0xFFFFFFFF,
            guest_phys_addr=guest_phys_addr & (2**64 - 1),
            memory_size=memory_size & (2**64 - 1),
            userspace_addr=userspace_addr & (2**64 - 1),
            guest_memfd_offset=guest_memfd_offset,
            guest_memfd=guest_memfd,
        )
        _ioctl(self.fileno(), KVM_SET_USER_MEMORY_REGION2, req, "KVM_SET_USER_MEMORY_REGION2")

    def get_dirty_log(self, slot: int, memory_size: int) -> bytes:
        """``KVM_GET_DIRTY_LOG``: one bit per page of the slot, cleared by the read."""
        npages = memory_size // PAGE_SIZE
        nbytes = max(8, ((npages + 63) // 64) * 8)  # the kernel writes whole longs
        bitmap = ctypes.create_string_buffer(nbytes)
        req = KvmDirtyLog(slot=slot, dirty_bitmap=ctypes.addressof(bitmap))
        _ioctl(self.fileno(), KVM_GET_DIRTY_LOG, req, "KVM_GET_DIRTY_LOG")
        return bitmap.raw[: (npages + 7) // 8]

    # --- vCPUs, stats -------------------------------------------------------------------------
    def create_vcpu(self, vcpu_id: int | None = None) -> Vcpu:
        vid = len(self.vcpus) if vcpu_id is None else vcpu_id
        fd = _ioctl(self.fileno(), KVM_CREATE_VCPU, vid, f"KVM_CREATE_VCPU({vid})")
        try:
            vcpu = Vcpu(self, fd, vid)
        except BaseException:
            os.close(fd)
            raise
        self.vcpus.append(vcpu)
        return vcpu

    def stats(self) -> StatsReader:
        """The VM's binary stats (``mmu_shadow_zapped``, ``pages_4k``, ...), opened once."""
        if self._stats is None:
            fd = _ioctl(self.fileno(), KVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD(vm)")
            self._stats = StatsReader(fd)
        return self._stats

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        self._close_fd()
        # Unmap guest memory only after the VM fd is gone: the kernel holds no pins after that.
        for mem in self.memories:
            mem.close()
        self.memories.clear()


class Vcpu(_Fd):
    """A vCPU fd with its mapped ``kvm_run`` page."""

    def __init__(self, vm: Vm, fd: int, vcpu_id: int) -> None:
        super().__init__(fd)
        self.vm = vm
        self.id = vcpu_id
        size = vm.kvm.vcpu_mmap_size
        addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            raise KvmIoctlError(ctypes.get_errno(), "mmap kvm_run")
        self._run_addr: int = addr
        self._run_size = size
        self.run_struct = KvmRun.from_address(addr)
        self._stats: StatsReader | None = None
        self._unblock_kick_inside_run()

    def _unblock_kick_inside_run(self) -> None:
        # KVM_SET_SIGNAL_MASK: the mask in force *during* KVM_RUN. Everything the thread blocks
        # stays blocked except the kick signal, which must interrupt the guest.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        bits = 0
        for sig in blocked:
            if sig != KICK_SIGNAL:
                bits |= 1 << (int(sig) - 1)
        mask = KvmSignalMask(len=8)
        for i in range(8):
            mask.sigset[i] = (bits >> (8 * i)) & 0xFF
        _ioctl(self.fileno(), KVM_SET_SIGNAL_MASK, mask, "KVM_SET_SIGNAL_MASK")

    # --- registers ---------------------------------------------------------------------------
    def get_regs(self) -> KvmRegs:
        regs = KvmRegs()
        _ioctl(self.fileno(), KVM_GET_REGS, regs, "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl(self.fileno(), KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self) -> KvmSregs:
        sregs = KvmSregs()
        _ioctl(self.fileno(), KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl(self.fileno(), KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def set_cpuid(self, cpuid: KvmCpuid2) -> None:
        _ioctl(self.fileno(), KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")

    # --- running -----------------------------------------------------------------------------
    def run(self) -> Exit:
        """One ``KVM_RUN`` (GIL released), decoded. A kick or signal gives ``SimpleExit(INTR)``."""
        try:
            fcntl.ioctl(self.fileno(), KVM_RUN, 0)
        except OSError as exc:
            if exc.errno == errno_mod.EINTR:
                self.run_struct.immediate_exit = 0
                return SimpleExit(ExitReason.INTR)
            raise KvmIoctlError(exc.errno or 0, "KVM_RUN") from None
        return self.decode_exit()

    def decode_exit(self) -> Exit:
        run = self.run_struct
        reason = _exit_reason(run.exit_reason)
        if reason == ExitReason.MMIO:
            m = run.u.mmio
            n = min(int(m.len), 8)
            # A read's buffer is for the VMM to fill: what it holds before that means nothing.
            data = bytes(m.data)[:n] if m.is_write else b""
            return MmioExit(int(m.phys_addr), int(m.len), bool(m.is_write), data)
        if reason == ExitReason.IO:
            io = run.u.io
            n = int(io.size) * int(io.count)
            data = ctypes.string_at(self._run_addr + int(io.data_offset), n)
            return IoExit(
                int(io.port), int(io.size), io.direction == KVM_EXIT_IO_OUT, int(io.count), data
            )
        if reason == ExitReason.FAIL_ENTRY:
            f = run.u.fail_entry
            return FailEntryExit(int(f.hardware_entry_failure_reason), int(f.cpu))
        if reason == ExitReason.INTERNAL_ERROR:
            ie = run.u.internal
            n = min(int(ie.ndata), 16)
            return InternalErrorExit(int(ie.suberror), tuple(int(ie.data[i]) for i in range(n)))
        return SimpleExit(reason)

    def set_mmio_read_data(self, data: bytes) -> None:
        """Fill the data of a pending MMIO read (what the guest's load will return)."""
        m = self.run_struct.u.mmio
        for i in range(8):
            m.data[i] = data[i] if i < len(data) else 0

    def kick(self, thread_id: int) -> None:
        """Force the vCPU running in thread ``thread_id`` out of KVM_RUN (returns INTR)."""
        self.run_struct.immediate_exit = 1
        signal.pthread_kill(thread_id, KICK_SIGNAL)

    def stats(self) -> StatsReader:
        """The vCPU's binary stats (``exits``, ``mmio_exits``, ``pf_taken``, ...), opened once."""
        if self._stats is None:
            fd = _ioctl(self.fileno(), KVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD(vcpu)")
            self._stats = StatsReader(fd)
        return self._stats

    def close(self) -> None:
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        if self._run_addr:
            _libc.munmap(self._run_addr, self._run_size)
            self._run_addr = 0
        self._close_fd()


class KickGuard:
    """Block the kick signal in the current thread while it runs vCPUs; drain it on exit.

    Use in every thread that calls :meth:`Vcpu.run` and may be kicked: the kick then interrupts
    ``KVM_RUN`` (the vCPU's signal mask unblocks it there) but is never delivered to Python.
    The thread that kicks must have stopped kicking before the guard exits.
    """

    def __enter__(self) -> Self:
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, [KICK_SIGNAL])
        return self

    def __exit__(self, *exc: object) -> None:
        # A kick that arrived after the last KVM_RUN is pending: consume it before unblocking.
        while signal.sigtimedwait([KICK_SIGNAL], 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)


def kvm_available(path: str = "/dev/kvm") -> str | None:
    """``None`` if /dev/kvm can be opened and speaks API 12, else the reason it cannot."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    try:
        with Kvm(path):
            return None
    except (OSError, RuntimeError) as exc:
        return f"{path} unusable: {exc}"
