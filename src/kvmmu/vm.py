"""The VM a user holds: memslots, vCPUs, devices, strategy, oracle, statistics, tracing.

Design. ``VM`` assembles the layers below it (SPTE codec, memslot state, MMU, strategy hooks,
oracle) and offers the ioctl-shaped API a VMM would use: ``set_user_memory_region`` with the
kernel's errno, ``get_dirty_log``, ``create_vcpu``.  Each operation that the kernel runs
concurrently with vCPUs also exists as a generator (``*_steps``) for the timed simulation and the
interleaving explorer; the plain method drives that same generator to completion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from kvmmu.devices import MmioBus, MmioDevice
from kvmmu.errors import KvmError
from kvmmu.hostmem import HostMemory
from kvmmu.memslots import (
    KVM_USER_MEM_SLOTS,
    NO_CHANGE,
    Change,
    MemoryRegionRequest,
    Memslot,
    MemslotPlan,
    MemslotState,
    plan_memory_region,
    set_memory_region,
)
from kvmmu.mmu.context import Kvm
from kvmmu.mmu.faults import VcpuArch
from kvmmu.mmu.invalidation import Strategy, X86Arch, resolve_strategy
from kvmmu.mmu.pages import Mmu, ShadowPage
from kvmmu.mmu.steps import MMU_LOCK, MMU_READ_LOCK, SRCU_SYNC, Step, Steps, run_to_completion
from kvmmu.oracle import Oracle
from kvmmu.spte import (
    LAYOUTS,
    GenerationLayout,
    MmioSpteCodec,
    ept_mmio_mask,
    shadow_mmio_mask,
)
from kvmmu.sync import Srcu
from kvmmu.trace import Tracer
from kvmmu.vcpu import Vcpu

MMU_KINDS: Final = ("ept", "shadow")
#: The design note's "start 150 below the wrap value" (2013: offset; 2014: memslots gen = -150).
WRAP_HEADROOM: Final = 150


def _check_arguments(strategy: object, address_spaces: object, phys_bits: object,
                     maxphyaddr: object, start_near_wrap: object, nr_memslots: object) -> None:
    """The constructor's public boundary: a clear exception for each nonsensical argument."""
    if not isinstance(strategy, str | Strategy):
        raise TypeError(f"strategy must be a strategy name (str) or a Strategy, not {strategy!r}")
    for name, value in (("address_spaces", address_spaces), ("phys_bits", phys_bits),
                        ("maxphyaddr", maxphyaddr), ("nr_memslots", nr_memslots)):
        if value is None and name != "maxphyaddr":
            continue  # None: the kernel's default (the strategy's profile)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {value!r}")
    if address_spaces is not None and address_spaces not in (1, 2):
        raise ValueError(f"address_spaces must be 1, or 2 with SMM, not {address_spaces}")
    if not isinstance(maxphyaddr, int) or not 32 <= maxphyaddr <= 52:
        raise ValueError(f"maxphyaddr must be 32..52, not {maxphyaddr}")
    if nr_memslots is not None and (not isinstance(nr_memslots, int)
                                    or not 1 <= nr_memslots <= KVM_USER_MEM_SLOTS):
        raise ValueError(f"nr_memslots must be 1..{KVM_USER_MEM_SLOTS} (KVM_USER_MEM_SLOTS), "
                         f"not {nr_memslots}")
    if start_near_wrap is not None and not isinstance(start_near_wrap, bool):
        if not isinstance(start_near_wrap, int):
            raise TypeError("start_near_wrap must be None, a bool or an int, "
                            f"not {start_near_wrap!r}")
        if start_near_wrap < 0:
            raise ValueError("start_near_wrap is how far below the wrap the generation starts: "
                             f"an int >= 0, not {start_near_wrap}")


class VMM:
    """The VMM thread's identity as a lock owner (it issues memslot updates)."""

    def __repr__(self) -> str:
        return "VMM"


@dataclass(frozen=True, slots=True)
class VmSpec:
    """What :class:`VM` makes of its constructor's arguments before it builds anything: checked
    once, with the defaults filled in (the strategy's kernel profile, the SPTE layout and MMIO
    codec, the generation mask and where the generation starts).

    ``VM(...)`` makes one per VM; a driver that builds many equal VMs (the explorer builds one
    per schedule it replays) makes it once with :meth:`of` and each VM with :meth:`VM.from_spec`,
    the same build from the same values.  ``slot_zap`` stays as given: :class:`X86Arch` resolves
    and checks it when the VM is built.
    """

    strategy: Strategy
    address_spaces: int
    oracle: bool
    strict: bool
    phys_bits: int
    layout: GenerationLayout
    codec: MmioSpteCodec
    gen_mask: int
    #: How far below the wrap the memslot generation starts (None: at the era's start).
    below: int | None
    nr_memslots: int
    apic_access_page: bool
    slot_zap: str | None
    large_pages: bool
    preempt: bool
    tdp_mmu: bool

    @classmethod
    def of(cls, strategy: str | Strategy = "generation", *, layout: str | None = None,
           address_spaces: int | None = None, oracle: bool = True, strict: bool = False,
           phys_bits: int | None = None, mmu: str = "ept", maxphyaddr: int = 46,
           slot_zap: str | None = None, large_pages: bool = False,
           start_near_wrap: bool | int | None = None, mmio_gen_bits: int | None = None,
           mmio_caching: bool = True, nr_memslots: int | None = None,
           apic_access_page: bool = False, preempt: bool = True, tdp_mmu: bool = False
           ) -> VmSpec:
        """The spec of ``VM(...)`` with these arguments (see :class:`VM`); raises as it does."""
        _check_arguments(strategy, address_spaces, phys_bits, maxphyaddr, start_near_wrap,
                         nr_memslots)
        profile = resolve_strategy(strategy)
        if address_spaces is None:
            address_spaces = profile.default_address_spaces
        if not 1 <= address_spaces <= profile.max_address_spaces:
            raise ValueError(f"address_spaces must be 1..{profile.max_address_spaces} for "
                             f"{profile.name} (kernels {profile.kernels}), "
                             f"not {address_spaces}")
        if not isinstance(tdp_mmu, bool):
            raise TypeError(f"tdp_mmu must be a bool, not {tdp_mmu!r}")
        if tdp_mmu and not profile.tdp_mmu:
            raise ValueError(f"{profile.name} (kernels {profile.kernels}) has no TDP "
                             "MMU in this model: use the shadow MMU (tdp_mmu=False)")
        if tdp_mmu and mmu != "ept":
            raise ValueError("the TDP MMU needs two-dimensional paging: mmu='ept', not "
                             f"{mmu!r}")
        if phys_bits is None:
            phys_bits = maxphyaddr if mmu == "ept" else 52
        layout_name = layout or profile.layout
        if layout_name not in LAYOUTS:
            raise ValueError(f"unknown layout {layout_name!r}; choose from {', '.join(LAYOUTS)}")
        spte_layout = LAYOUTS[layout_name]
        marker_era = "modern" if layout_name == "modern" else "2013"
        if mmu == "ept":
            marker = ept_mmio_mask(marker_era)
        elif mmu == "shadow":
            marker = shadow_mmio_mask(marker_era, maxphyaddr)
        else:
            raise ValueError(f"mmu must be one of {', '.join(MMU_KINDS)}, not {mmu!r}")
        if not mmio_caching:
            marker = replace(marker, caching=False)
        if not 20 <= phys_bits <= 52:
            raise ValueError(f"phys_bits must be 20..52, not {phys_bits}")
        gen_mask = spte_layout.gen_mask
        if mmio_gen_bits is not None:
            if not 2 <= mmio_gen_bits <= spte_layout.gen_bits:
                raise ValueError(f"mmio_gen_bits must be 2..{spte_layout.gen_bits}")
            gen_mask = (1 << mmio_gen_bits) - 1
        if start_near_wrap is None:
            # The kernels whose MMIO SPTEs carry a generation and that started it near the wrap.
            below: int | None = (WRAP_HEADROOM if profile.era != "modern"
                                 and profile.mmio_generation else None)
        elif start_near_wrap is True:
            below = WRAP_HEADROOM
        elif start_near_wrap is False:
            below = None
        else:
            below = int(start_near_wrap)
        if below is not None and below > gen_mask:
            below = below % (gen_mask + 1) or gen_mask + 1
        if not isinstance(preempt, bool):
            raise TypeError(f"preempt must be a bool, not {preempt!r}")
        return cls(profile, address_spaces, oracle, strict, phys_bits, spte_layout,
                   MmioSpteCodec(spte_layout, marker), gen_mask, below,
                   profile.nr_memslots if nr_memslots is None else nr_memslots,
                   apic_access_page, slot_zap, large_pages, preempt, tdp_mmu)


class VM:
    """A model VM.

    Parameters: ``strategy`` (a name from ``STRATEGIES``, optionally ``+variant``); ``layout``
    (``"2013"``, ``"2014"``, ``"modern"``; default: the strategy's); ``address_spaces`` (1, or 2
    with SMM; default: the kernel's, i.e. 2 from 4.2 on, 1 before); ``oracle`` (check every
    access) and ``strict`` (raise on the first violation); ``phys_bits`` (guest physical address
    width, ``kvm_mmu_max_gfn()``: the host MAXPHYADDR under EPT/NPT, 52 with shadow paging as on
    this project's machines; default: derived from ``mmu``); ``mmu`` (``"ept"`` or ``"shadow"``:
    which MMIO marker) and ``maxphyaddr`` (host); ``slot_zap`` (what DELETE/MOVE zap; default: the
    kernel's, e.g. ``"all"`` for ``KVM_X86_QUIRK_SLOT_ZAP_ALL``; ``"slot"``: quirk disabled);
    ``nr_memslots`` (default: the kernel's ``KVM_USER_MEM_SLOTS``); ``apic_access_page`` (a VMX
    host with an in-kernel LAPIC: a slot over 0xFEE00000 gets EEXIST); ``large_pages`` (2 MiB leaves);
    ``start_near_wrap`` (True: 150 below the wrap; an int: that far below; default: as the era did,
    i.e. 2013/2014 yes, modern no); ``mmio_gen_bits`` (compare fewer generation bits, so that an
    explorer reaches the wrap quickly); ``mmio_caching`` (``kvm.mmio_caching``); ``trace``;
    ``tdp_mmu`` (``kvm.tdp_mmu``: the TDP MMU of the strategy's kernel, ``Strategy.tdp_mmu``, whose
    faults hold ``mmu_lock`` for read; needs ``mmu="ept"``.  Default off: the shadow MMU, the one
    the real KVM on this project's machines runs; ``kvmmu run`` defaults to the kernel's choice on
    an EPT host instead, ``Strategy.tdp_mmu_default``).
    """

    def __init__(self, strategy: str | Strategy = "generation", *, layout: str | None = None,
                 address_spaces: int | None = None, oracle: bool = True, strict: bool = False,
                 phys_bits: int | None = None, mmu: str = "ept", maxphyaddr: int = 46,
                 slot_zap: str | None = None, large_pages: bool = False,
                 start_near_wrap: bool | int | None = None, mmio_gen_bits: int | None = None,
                 mmio_caching: bool = True, nr_memslots: int | None = None,
                 apic_access_page: bool = False, trace: bool | Tracer = False,
                 preempt: bool = True, tdp_mmu: bool = False) -> None:
        self._build(VmSpec.of(strategy, layout=layout, address_spaces=address_spaces,
                              oracle=oracle, strict=strict, phys_bits=phys_bits, mmu=mmu,
                              maxphyaddr=maxphyaddr, slot_zap=slot_zap, large_pages=large_pages,
                              start_near_wrap=start_near_wrap, mmio_gen_bits=mmio_gen_bits,
                              mmio_caching=mmio_caching, nr_memslots=nr_memslots,
                              apic_access_page=apic_access_page, preempt=preempt,
                              tdp_mmu=tdp_mmu), trace)

    @classmethod
    def from_spec(cls, spec: VmSpec, *, trace: bool | Tracer = False) -> VM:
        """A new VM as ``VM(...)`` with the arguments ``spec`` was made from would build."""
        vm = cls.__new__(cls)
        vm._build(spec, trace)
        return vm

    def _build(self, spec: VmSpec, trace: bool | Tracer) -> None:
        """The VM's objects, from checked arguments: nothing here depends on more than ``spec``."""
        strategy = self.strategy = spec.strategy
        self.nr_memslots = spec.nr_memslots
        self.apic_access_page = spec.apic_access_page
        self.bus = MmioBus()
        self.host_memory = HostMemory()
        tracer = trace if isinstance(trace, Tracer) else (Tracer() if trace else None)
        tdp_mmu = spec.tdp_mmu
        self.kvm = Kvm(
            strategy=strategy,
            memslots=MemslotState.create(strategy.era, spec.address_spaces,
                                         gen_mask=spec.gen_mask, start_below_wrap=spec.below),
            srcu=Srcu(),
            mmu=Mmu(spec.layout, spec.codec, trace=tracer,
                    valid_gen_toggles=strategy.valid_gen_toggles,
                    zap_break_batch=strategy.zap_break_batch, tdp_mmu=tdp_mmu,
                    tdp_teardown_unlocked=tdp_mmu and strategy.tdp_mmu == "5.13",
                    tdp_read_slot_ops=tdp_mmu and strategy.tdp_mmu == "5.13"),
            host_memory=self.host_memory,
            gen_mask=spec.gen_mask,
            phys_bits=spec.phys_bits,
            large_pages=spec.large_pages,
            mmio_dispatch=self.bus.dispatch,
            trace=tracer,
        )
        # CONFIG_PREEMPTION: whether a zap's cond_resched_lock() sees a spinning waiter.
        self.kvm.mmu.lock.preempt = spec.preempt
        self.vmm = VMM()
        self.arch = X86Arch(self.kvm, spec.slot_zap, self.vmm)
        self.oracle: Oracle | None = Oracle(self.kvm, spec.strict) if spec.oracle else None
        if self.oracle is not None:
            self.kvm.on_access = self.oracle.check_access
        self.vcpus: list[Vcpu] = []

    # --- the ioctls ------------------------------------------------------------------------
    def set_user_memory_region_steps(self, slot: int, flags: int, guest_phys_addr: int,
                                     memory_size: int, userspace_addr: int = 0
                                     ) -> Steps[Change]:
        """``KVM_SET_USER_MEMORY_REGION`` as a protocol generator (raises at the first step)."""
        plan = self._plan_region(slot, flags, guest_phys_addr, memory_size, userspace_addr)
        if plan.change is not NO_CHANGE:
            self.kvm.mmu.stats.memslot_updates += 1
        yield from set_memory_region(self.kvm.memslots, self.arch, self.kvm.srcu, plan)
        return plan.change

    def _plan_region(self, slot: int, flags: int, guest_phys_addr: int, memory_size: int,
                     userspace_addr: int) -> MemslotPlan:
        """The ioctl's argument checks and ``plan_memory_region``.  A plain function, not part of
        the generator above, so that its temporaries are not locals of the VMM thread's frame,
        which the explorer keys at every state."""
        if not (isinstance(slot, int) and isinstance(flags, int)
                and isinstance(guest_phys_addr, int) and isinstance(memory_size, int)
                and isinstance(userspace_addr, int)):
            for name, value in (("slot", slot), ("flags", flags),
                                ("guest_phys_addr", guest_phys_addr),
                                ("memory_size", memory_size), ("userspace_addr", userspace_addr)):
                if not isinstance(value, int):
                    raise TypeError(f"{name} must be an int, not {value!r}")
        request = MemoryRegionRequest(slot, flags, guest_phys_addr, memory_size, userspace_addr)
        return plan_memory_region(request, self.kvm.memslots, phys_bits=self.kvm.phys_bits,
                                  nr_memslots=self.nr_memslots,
                                  max_gfn_check=self.strategy.max_gfn_check,
                                  apic_access_page=(self.apic_access_page
                                                    and self.strategy.private_slot_overlap))

    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace_addr: int = 0) -> Change:
        """``KVM_SET_USER_MEMORY_REGION``: returns the change made; raises :class:`KvmError`."""
        return run_to_completion(self.set_user_memory_region_steps(
            slot, flags, guest_phys_addr, memory_size, userspace_addr))

    def get_dirty_log(self, slot: int) -> bytes:
        """``KVM_GET_DIRTY_LOG``: the slot's bitmap, cleared by the read (pages re-protected)."""
        if not isinstance(slot, int):
            raise TypeError(f"slot must be an int, not {slot!r}")
        as_id, slot_id = (slot >> 16) & 0xFFFF, slot & 0xFFFF
        if as_id >= self.kvm.memslots.nr_as or slot_id >= self.nr_memslots:
            raise KvmError("EINVAL", f"slot {slot:#x} does not name a memslot")
        memslot = self.kvm.memslots.active[as_id].by_id.get(slot_id)
        if memslot is None or memslot.dirty_bitmap is None:
            raise KvmError("ENOENT", f"slot {slot_id} has no dirty log "
                           "(missing, or KVM_MEM_LOG_DIRTY_PAGES is off)")
        bitmap = bytes(memslot.dirty_bitmap)
        memslot.dirty_bitmap[:] = bytes(len(bitmap))
        if any(bitmap):
            run_to_completion(self.kvm.mmu.write_protect_range(
                self.vmm, memslot.base_gfn, memslot.end_gfn, as_id))
        return bitmap

    def create_vcpu(self) -> Vcpu:
        """``KVM_CREATE_VCPU``."""
        vcpu = Vcpu(self, len(self.vcpus))
        self.vcpus.append(vcpu)
        return vcpu

    def register_device(self, base: int, size: int, device: MmioDevice) -> None:
        """Put an in-kernel device on the MMIO bus (its accesses complete without an exit)."""
        self.bus.register(base, size, device)

    # --- for drivers ------------------------------------------------------------------------
    def is_blocked(self, step: Step) -> bool:
        """Whether a thread that yielded ``step`` would only wait if resumed now."""
        if step is MMU_LOCK:
            return self.kvm.mmu.lock.is_blocked()
        if step is MMU_READ_LOCK:
            return self.kvm.mmu.lock.is_read_blocked()
        if step is SRCU_SYNC:
            return self.kvm.srcu.is_blocked()
        return False

    def check_state(self) -> list[Any]:
        """The oracle's state invariant now (empty when the oracle is off)."""
        if self.oracle is None:
            return []
        return self.oracle.check_state(v.arch for v in self.vcpus)

    def memslots(self, as_id: int = 0) -> list[Memslot]:
        return list(self.kvm.memslots.active[as_id])

    @property
    def generation(self) -> int:
        """The memslot generation of address space 0 (``kvm_memslots(kvm)->generation``)."""
        return self.kvm.memslots.active[0].generation

    @property
    def stats(self) -> dict[str, int]:
        """VM-wide counters: the MMU's, the sum of every vCPU's, ``mmu_lock`` and the oracle's."""
        out = asdict(self.kvm.mmu.stats)
        for vcpu in self.vcpus:
            for k, v in asdict(vcpu.stats).items():
                out[k] = out.get(k, 0) + v
        lock = self.kvm.mmu.lock
        out["mmu_lock_acquisitions"] = lock.acquisitions
        out["mmu_lock_contended"] = lock.contended
        out["mmu_lock_breaks"] = lock.breaks
        out["mmu_lock_read_acquisitions"] = lock.read_acquisitions
        out["shadow_pages"] = len(self.kvm.mmu.active)
        out["srcu_grace_periods"] = self.kvm.srcu.grace_periods
        out["oracle_checked"] = self.oracle.checked if self.oracle else 0
        out["oracle_violations"] = self.oracle.count if self.oracle else 0
        return out

    def state_key(self) -> tuple[Any, ...]:
        """A hashable digest of all shared state (for an explorer's visited set).

        Shadow pages are named by (as, level, gfn, mmu_valid_gen), not by their model address, and
        listed in the active list's order: the kernel's list is FIFO and its zap walks depend on
        that order (v3.17 ``arch/x86/kvm/mmu.c``: ``kvm_mmu_alloc_page()``'s "The active_mmu_pages
        list is the FIFO list ... kvm_zap_obsolete_pages depends on this feature", and
        ``kvm_zap_obsolete_pages()`` walks it with ``list_for_each_entry_safe_reverse``), so two
        schedules that built the same pages in another order will zap them in another order, and
        are different states.
        """
        kvm = self.kvm
        mmu = kvm.mmu

        def page_name(sp: ShadowPage | None) -> tuple[int, ...] | None:
            if sp is None:
                return None
            # role.invalid too: with a one-bit mmu_valid_gen (5.4+) a zapped root two zaps old
            # has the current generation again, and a vCPU holding it behaves differently.
            return (sp.as_id, sp.level, sp.gfn, sp.mmu_valid_gen, int(sp.invalid))

        pages = []
        for sp in mmu.active.values():
            entries = tuple((i, page_name(c) if c is not None else s)
                            for i, (s, c) in enumerate(zip(sp.spt, sp.children, strict=True))
                            if s or c is not None)
            pages.append((page_name(sp), sp.mmio_cached, entries))  # zap-mmio-cached reads it
        slots = tuple((s.generation, tuple((m.id, m.base_gfn, m.npages, m.flags,
                                            m.userspace_addr, m.invalid) for m in s))
                      for s in kvm.memslots.active)
        vcpus = tuple((v.arch.as_id, page_name(v.arch.root), v.arch.mmio_gfn, v.arch.mmio_gen)
                      for v in self.vcpus)
        lock = mmu.lock.holder
        holder = lock.id if isinstance(lock, VcpuArch) else (-1 if lock is not None else None)
        waiting = kvm.srcu.waiting_for
        readers = tuple(sorted((r.id if isinstance(r, VcpuArch) else -1,
                                waiting is not None and e < waiting)
                               for r, e in kvm.srcu.readers.items()))
        memory = self.host_memory.key()
        shared = tuple(sorted(r.id if isinstance(r, VcpuArch) else -1 for r in mmu.lock.readers))
        return (slots, kvm.memslots.updating, mmu.mmu_valid_gen, tuple(pages), vcpus, holder,
                shared, readers, waiting is not None, memory)
