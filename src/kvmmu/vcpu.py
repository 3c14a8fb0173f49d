"""The vCPU a user holds: guest accesses, plain or steppable.

Design. ``Vcpu`` is a thin handle over ``VcpuArch`` (the MMU's per-vCPU state) and the shared
protocol in ``kvmmu.mmu.faults``: :meth:`Vcpu.access` runs one access to completion,
:meth:`Vcpu.access_steps` returns the same access as a generator for a scheduler to interleave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from kvmmu.mmu.faults import Outcome, VcpuArch, VcpuStats, access
from kvmmu.mmu.steps import Steps
from kvmmu.spte import PAGE_SIZE

if TYPE_CHECKING:
    from kvmmu.vm import VM

ACCESS_SIZES: Final = (1, 2, 4, 8)


class Vcpu:
    """One virtual CPU of a :class:`~kvmmu.vm.VM`."""

    __slots__ = ("_gpa_limit", "arch", "vm")

    def __init__(self, vm: VM, vcpu_id: int) -> None:
        self.vm = vm
        self.arch = VcpuArch(vcpu_id)
        self._gpa_limit = 1 << vm.kvm.phys_bits

    @property
    def id(self) -> int:
        return self.arch.id

    @property
    def stats(self) -> VcpuStats:
        return self.arch.stats

    @property
    def as_id(self) -> int:
        """The memslot address space the vCPU is in (1: SMM, when the VM has two)."""
        return self.arch.as_id

    @as_id.setter
    def as_id(self, value: int) -> None:
        if not 0 <= value < self.vm.kvm.memslots.nr_as:
            raise ValueError(f"address space {value} does not exist in this VM")
        if value != self.arch.as_id:
            self.arch.as_id = value
            self.arch.root = None  # a different role: kvm_mmu_reset_context()
            self.arch.psc_page = None
            self.arch.mmio_gfn = 0

    def _check(self, gpa: int, size: int, value: int = 0) -> None:
        if not isinstance(gpa, int) or not isinstance(value, int):
            raise TypeError(f"gpa and value must be integers, not {gpa!r} and {value!r}")
        if size not in ACCESS_SIZES:
            raise ValueError(f"access size must be one of {ACCESS_SIZES}, not {size!r}")
        if not 0 <= gpa < self._gpa_limit:
            raise ValueError(f"gpa {gpa:#x} is beyond the {self.vm.kvm.phys_bits}-bit "
                             "guest physical address width")
        if (gpa & (PAGE_SIZE - 1)) + size > PAGE_SIZE:
            raise ValueError(f"access at gpa {gpa:#x} of {size} bytes crosses a page")
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"value {value:#x} does not fit in a {size}-byte access "
                             f"(0..{(1 << (8 * size)) - 1:#x})")

    def access_steps(self, gpa: int, write: bool = False, size: int = 4, value: int = 0,
                     emulated: bool = False) -> Steps[Outcome]:
        """The access as a protocol generator: yields a Step before each shared access."""
        self._check(gpa, size, value)
        return access(self.vm.kvm, self.arch, gpa, write, size, value, emulated)

    def access(self, gpa: int, write: bool = False, size: int = 4, value: int = 0,
               emulated: bool = False) -> Outcome:
        """Perform one guest access and return what the guest observed and how."""
        try:
            bad = size not in ACCESS_SIZES or not 0 <= gpa < self._gpa_limit \
                or (gpa & (PAGE_SIZE - 1)) + size > PAGE_SIZE or value >> (8 * size) or value < 0
        except TypeError:  # a float or None: _check says which argument
            bad = True
        if bad:
            self._check(gpa, size, value)  # raises, saying which
        arch = self.arch
        # The plain run: drive the protocol with a bare loop (see run_to_completion) and read
        # the result where the access left it, as a VMM reads kvm_run after KVM_RUN.
        for _ in access(self.vm.kvm, arch, gpa, write, size, value, emulated):
            pass
        out = arch.last_outcome
        assert out is not None
        return out

    def __repr__(self) -> str:
        return f"Vcpu({self.id}, as={self.as_id})"
