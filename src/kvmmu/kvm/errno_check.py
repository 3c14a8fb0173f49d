"""errno agreement: random ``KVM_SET_USER_MEMORY_REGION`` requests on the model and the kernel.

Design. The memslot ioctl's answer depends on the request *and* on the slots already there
(overlaps, moves, size changes, READONLY toggles, deletes of missing slots), so requests are
generated as a *sequence* applied to one fresh VM per side, and each request's result (``ok`` or
the errno name) is compared.  No guest runs in these VMs, so the userspace addresses need not be
mapped: KVM only checks them (alignment, ``access_ok``) and the model keeps them as numbers; the
same numbers go to both sides.

:func:`random_request` draws one request of a named *kind* (valid create, overlap, misaligned gpa
/ size / userspace address, unknown flag, bad slot id, bad address space, wrap past 2^64, beyond
the guest physical width, READONLY toggle, size change, userspace-address change, delete of a
missing slot, delete, move, flags-only, identical no-op, huge size), aimed at the slots the
sequence created so far.  A valid request's size is kept small: the kernel allocates per-page
metadata (rmaps, dirty bitmaps) at create time, and a random terabyte slot would cost real memory.

Prior art: the kernel selftest ``set_memory_region_test`` (its ``test_invalid_memory_region_flags``
and overlap checks) and syzkaller's ``syz_kvm_setup_cpu``-free ioctl fuzzing of memslots.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from kvmmu import VM, KvmError
from kvmmu.kvm.bindings import Cap, Kvm, KvmIoctlError, Vm

PAGE = 4096
U64 = (1 << 64) - 1
#: Host addresses requests use (valid user addresses, never touched).
UADDR_BASE = 0x7F00_0000_0000
MAX_VALID_PAGES = 256

KINDS: tuple[str, ...] = (
    "create",
    "create",
    "create",
    "overlap",
    "misaligned_gpa",
    "misaligned_size",
    "misaligned_uaddr",
    "unknown_flag",
    "bad_slot_id",
    "bad_address_space",
    "wrap",
    "beyond_phys",
    "readonly_toggle",
    "size_change",
    "uaddr_change",
    "delete_missing",
    "delete",
    "delete",
    "move",
    "move",
    "flags_only",
    "noop",
    "huge",
    "uaddr_beyond_user",
)


@dataclass(frozen=True, slots=True)
class Request:
    """One ``struct kvm_userspace_memory_region`` and the kind of request it was drawn as."""

    kind: str
    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int

    def describe(self) -> str:
        return (
            f"{self.kind}: slot {self.slot:#x} flags {self.flags:#x} gpa {self.guest_phys_addr:#x} "
            f"size {self.memory_size:#x} uaddr {self.userspace_addr:#x}"
        )


@dataclass(slots=True)
class _Tracked:
    flags: int
    gpa: int
    size: int
    uaddr: int


@dataclass(slots=True)
class RequestGenerator:
    """Draws requests aimed at the slots that earlier *accepted* requests created.

    Feed each result back with :meth:`applied` so that the generator knows the real state.
    """

    rng: random.Random
    phys_bits: int
    nr_memslots: int
    slot_ids: int = 12
    slots: dict[int, _Tracked] | None = None

    def __post_init__(self) -> None:
        self.slots = {}

    def _slots(self) -> dict[int, _Tracked]:
        assert self.slots is not None
        return self.slots

    def _free_gpa(self, npages: int) -> int:
        return self.rng.randrange(0, 4096 - npages) * PAGE

    def draw(self, kind: str | None = None) -> Request:
        rng = self.rng
        kind = kind or rng.choice(KINDS)
        slots = self._slots()
        sid = rng.randrange(self.slot_ids)
        npages = rng.choice([1, 2, 4, 16, MAX_VALID_PAGES])
        gpa = self._free_gpa(npages)
        uaddr = UADDR_BASE + rng.randrange(1 << 20) * PAGE
        flags = rng.choice([0, 0, 1, 2, 3])
        existing = rng.choice(sorted(slots)) if slots else None
        ex = slots[existing] if existing is not None else None

        def req(k: str, slot: int, fl: int, g: int, size: int, ua: int) -> Request:
            return Request(k, slot, fl, g, size, ua)

        if kind == "create":
            return req(kind, sid, flags, gpa, npages * PAGE, uaddr)
        if kind == "overlap" and ex is not None:
            shift = rng.randrange(-npages + 1, ex.size // PAGE) * PAGE
            return req(kind, sid, flags, max(0, ex.gpa + shift), npages * PAGE, uaddr)
        if kind == "misaligned_gpa":
            return req(
                kind, sid, flags, gpa + rng.choice([1, 8, 0x800, 0xFFF]), npages * PAGE, uaddr
            )
        if kind == "misaligned_size":
            return req(kind, sid, flags, gpa, npages * PAGE + rng.choice([1, 0x200, 0xFFF]), uaddr)
        if kind == "misaligned_uaddr":
            return req(kind, sid, flags, gpa, npages * PAGE, uaddr + rng.choice([1, 0x10, 0x800]))
        if kind == "unknown_flag":
            return req(kind, sid, flags | 1 << rng.randrange(2, 32), gpa, npages * PAGE, uaddr)
        if kind == "bad_slot_id":
            bad = rng.choice([self.nr_memslots, self.nr_memslots + 1, 0xFFFF, self.nr_memslots - 1])
            return req(kind, bad, flags, gpa, npages * PAGE, uaddr)
        if kind == "bad_address_space":
            return req(
                kind, sid | rng.randrange(1, 0x10000) << 16, flags, gpa, npages * PAGE, uaddr
            )
        if kind == "wrap":
            return req(
                kind,
                sid,
                flags,
                (U64 + 1) - rng.choice([1, 2, 16]) * PAGE,
                npages * PAGE + 16 * PAGE,
                uaddr,
            )
        if kind == "beyond_phys":
            top = 1 << self.phys_bits
            g = top - rng.choice([0, 1, 2]) * PAGE
            return req(kind, sid, flags, g + rng.choice([0, PAGE]), npages * PAGE + PAGE, uaddr)
        if kind == "huge":
            size = rng.choice([1 << 43, (1 << 44) + PAGE, 1 << 50])
            return req(kind, sid, flags, gpa, size, uaddr)
        if kind == "uaddr_beyond_user":
            return req(
                kind,
                sid,
                flags,
                gpa,
                npages * PAGE,
                rng.choice([(1 << 47) - PAGE, 1 << 47, 1 << 63]),
            )
        if kind == "delete_missing":
            missing = [i for i in range(self.slot_ids + 4) if i not in slots]
            return req(
                kind,
                rng.choice(missing),
                rng.choice([0, 1]),
                rng.choice([0, gpa]),
                0,
                rng.choice([0, uaddr]),
            )
        if ex is None or existing is None:
            return req("create", sid, flags, gpa, npages * PAGE, uaddr)
        # Requests about an existing slot.
        if kind == "readonly_toggle":
            return req(kind, existing, ex.flags ^ 2, ex.gpa, ex.size, ex.uaddr)
        if kind == "size_change":
            return req(
                kind,
                existing,
                ex.flags,
                ex.gpa,
                ex.size + rng.choice([PAGE, -PAGE if ex.size > PAGE else 2 * PAGE]),
                ex.uaddr,
            )
        if kind == "uaddr_change":
            return req(kind, existing, ex.flags, ex.gpa, ex.size, ex.uaddr + PAGE)
        if kind == "delete":
            return req(
                kind,
                existing,
                rng.choice([0, ex.flags, 1]),
                rng.choice([0, ex.gpa]),
                0,
                rng.choice([0, ex.uaddr]),
            )
        if kind == "move":
            return req(kind, existing, ex.flags, self._free_gpa(ex.size // PAGE), ex.size, ex.uaddr)
        if kind == "flags_only":
            return req(kind, existing, ex.flags ^ 1, ex.gpa, ex.size, ex.uaddr)
        return req("noop", existing, ex.flags, ex.gpa, ex.size, ex.uaddr)

    def applied(self, r: Request, result: str) -> None:
        """Record an accepted request's effect (the generator aims later requests with it)."""
        if result != "ok":
            return
        slots = self._slots()
        sid = r.slot & 0xFFFF
        if r.memory_size == 0:
            slots.pop(sid, None)
        else:
            slots[sid] = _Tracked(r.flags, r.guest_phys_addr, r.memory_size, r.userspace_addr)


@dataclass(frozen=True, slots=True)
class ErrnoMismatch:
    index: int
    request: Request
    model: str
    real: str


@dataclass(frozen=True, slots=True)
class ErrnoSummary:
    """How many requests ran, how each kind was answered, and the mismatches."""

    requests: int
    by_result: dict[str, int]
    by_kind: dict[str, int]
    mismatches: tuple[ErrnoMismatch, ...]
    phys_bits: int

    @property
    def agree(self) -> bool:
        return not self.mismatches


def model_apply(vm: VM, r: Request) -> str:
    try:
        vm.set_user_memory_region(
            r.slot, r.flags, r.guest_phys_addr, r.memory_size, r.userspace_addr
        )
    except KvmError as exc:
        return exc.errno_name
    return "ok"


def real_apply(vm: Vm, r: Request) -> str:
    try:
        vm.set_user_memory_region(
            r.slot, r.flags, r.guest_phys_addr, r.memory_size, r.userspace_addr
        )
    except KvmIoctlError as exc:
        return exc.errno_name
    return "ok"


def run_errno_agreement(
    n: int,
    seed: int,
    *,
    per_vm: int = 200,
    kvm_path: str = "/dev/kvm",
    on_progress: Callable[[int], None] | None = None,
) -> ErrnoSummary:
    """``n`` random requests, ``per_vm`` per fresh pair of VMs; every result compared."""
    from kvmmu.kvm.diff import probe_phys_bits

    rng = random.Random(seed)
    by_result: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    mismatches: list[ErrnoMismatch] = []
    done = 0
    with Kvm(kvm_path) as kvm:
        with kvm.create_vm() as probe_vm:
            phys_bits = probe_phys_bits(probe_vm)
            nr_memslots = probe_vm.check_extension(Cap.NR_MEMSLOTS)
        while done < n:
            gen = RequestGenerator(rng, phys_bits, nr_memslots)
            model = VM(
                strategy="generation",
                address_spaces=1,
                oracle=True,
                phys_bits=phys_bits,
                nr_memslots=nr_memslots,
            )
            with kvm.create_vm() as vm:
                for _ in range(min(per_vm, n - done)):
                    r = gen.draw()
                    m, k = model_apply(model, r), real_apply(vm, r)
                    if m != k:
                        mismatches.append(ErrnoMismatch(done, r, m, k))
                    gen.applied(r, k)
                    by_result[k] = by_result.get(k, 0) + 1
                    by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
                    done += 1
            if on_progress is not None:
                on_progress(done)
    return ErrnoSummary(done, by_result, by_kind, tuple(mismatches), phys_bits)
