"""``struct kvm`` as the MMU sees it: everything the protocol code reads and writes.

Design. The fault paths and the memslot update share one context object, as every kernel
function receives ``struct kvm *``.  Drivers (plain run, timed simulation, explorer) never reach
into it; they only resume the generators that hold it.  Two outward links are callables so that
this layer never imports a higher one: ``mmio_dispatch`` (the in-kernel MMIO bus,
``kvm_io_bus_write``/``read``) and ``on_access`` (the oracle, which checks each completed access).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmmu.hostmem import HostMemory
from kvmmu.memslots import MemslotState
from kvmmu.mmu.pages import Mmu
from kvmmu.sync import Srcu
from kvmmu.trace import Tracer

if TYPE_CHECKING:
    from kvmmu.mmu.faults import Outcome, VcpuArch
    from kvmmu.mmu.invalidation import Strategy

#: ``(gpa, size, is_write, value) -> value read, or None when no in-kernel device claims gpa``.
MmioDispatch = Callable[[int, int, bool, int], "int | None"]
#: ``(vcpu, outcome, start_epoch)``: called when an access completes.
AccessHook = Callable[["VcpuArch", "Outcome", int], None]


@dataclass(slots=True)
class Kvm:
    """The shared state of one VM that the protocol touches."""

    strategy: Strategy
    memslots: MemslotState
    srcu: Srcu
    mmu: Mmu
    host_memory: HostMemory
    #: generation bits compared (the layout's ``MMIO_GEN_MASK``, or narrower for exploration).
    gen_mask: int
    #: guest physical address width: ``kvm_mmu_max_gfn()`` is ``2^(phys_bits-12) - 1``.
    phys_bits: int
    large_pages: bool
    mmio_dispatch: MmioDispatch
    trace: Tracer | None = None
    on_access: AccessHook | None = None
