"""kvmmu: KVM's x86 MMIO-SPTE cache and its generation-number invalidation, as a runnable model.

The public face (re-exports only)::

    from kvmmu import VM
    vm = VM(strategy="generation")
    vm.set_user_memory_region(0, 0, 0x0, 0x10000, userspace_addr=0x7F0000000000)
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)            # RAM, via the slow path (first touch)
    vcpu.access(0xFEE00000)        # MMIO: exits to userspace
"""

import os as _os
import sys as _sys

from kvmmu import compiled as _compiled

# Before any other submodule: the explorer needs the interpreted modules (see kvmmu.compiled).
if _compiled.wants_interpreted(_os.environ, _sys.argv):
    _compiled.install()

from kvmmu.devices import MmioBus, MmioDevice, RegisterBank
from kvmmu.errors import KvmError, OracleViolation
from kvmmu.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Change
from kvmmu.mmu.faults import AccessKind, Outcome, Path
from kvmmu.mmu.invalidation import STRATEGIES, VARIANTS, Strategy, resolve_strategy
from kvmmu.mmu.steps import Step
from kvmmu.spte import LAYOUTS
from kvmmu.trace import Tracer
from kvmmu.vcpu import Vcpu
from kvmmu.vm import VM

__all__ = [
    "KVM_MEM_LOG_DIRTY_PAGES",
    "KVM_MEM_READONLY",
    "LAYOUTS",
    "STRATEGIES",
    "VARIANTS",
    "VM",
    "AccessKind",
    "Change",
    "KvmError",
    "MmioBus",
    "MmioDevice",
    "OracleViolation",
    "Outcome",
    "Path",
    "RegisterBank",
    "Step",
    "Strategy",
    "Tracer",
    "Vcpu",
    "resolve_strategy",
]
