"""The cost model: how many nanoseconds each thing a guest, KVM or the VMM does takes.

Design. A profile is a TOML file with a flat ``[costs]`` table of ``<name>_ns = int`` and an
optional ``[source]`` table of strings (free text: where the figures come from, which machine, when;
keys are free). The packaged default is ``kvmmu/data/costs/default.toml``; its comments cite each
figure. ``kvmmu calibrate`` writes profiles in the same format. A profile may omit names: they keep
the default's value, so a calibration that measures only some costs is still a full profile; an
unknown name, a non-integer or a negative value is an error naming the file, the key and what is
allowed. The file is parsed with :mod:`tomllib` and validated with pydantic (strict integers: a
``true`` or a ``1.5`` is refused, not coerced).

Costs are integers because the engine's clock is (``kvmmu.sim.engine``). Every
:class:`~kvmmu.mmu.steps.Step` maps to one or more named costs (:data:`STEP_COSTS`); the timed run
charges a yielded step that sum, and charges the few costs that are not a step of the protocol
(:data:`DRIVER_COSTS`) where the driver sees the event happen. Prior art: gem5's and SST's latency
parameter files (flat, named, unit in the name), and the tables of ``real-kvm-here.md``.

The names (all ``_ns``):

=============================  ===================================================================
name                           what takes that long
=============================  ===================================================================
``guest_access_ns``            one guest access that the hardware translates (no exit)
``vmexit_ns``                  a VM exit and re-entry around any fault the guest takes
``slow_path_fault_ns``         kvm_mmu_page_fault() slow path: gfn to pfn, page-table walk, besides
                               the memslot lookup, lock and SPTE write charged as steps
``mmio_fast_path_ns``          handle_mmio_page_fault(): the lockless walk and the SPTE check
``vcpu_cache_hit_ns``          vcpu_match_mmio_gpa(): the per-vCPU MMIO cache compare
``read_generation_ns``         reading the memslots generation
``memslot_lookup_ns``          kvm_vcpu_gfn_to_memslot(): SRCU dereference and binary search
``mmu_lock_ns``                taking an uncontended mmu_lock
``mmu_unlock_ns``              releasing mmu_lock
``lock_handoff_ns``            mmu_lock passing to a spinning waiter (cache-line transfer); also
                               a cond_resched lock break
``spte_write_ns``              writing one SPTE under mmu_lock (mmu_spte_set / mark_mmio_spte)
``guest_retry_ns``             RET_PF_RETRY: re-entering the guest to re-execute the access
``exit_to_userspace_ns``       a KVM_EXIT_MMIO round trip through the VMM
``emulate_ns``                 the instruction emulator performing one access
``root_reload_ns``             kvm_mmu_reload(): a vCPU loading a new root
``memslot_ioctl_ns``           KVM_SET_USER_MEMORY_REGION overhead besides publishes and grace
                               periods (ioctl, validation, allocation)
``memslot_publish_ns``         one rcu_assign_pointer of a new memslot array
``srcu_grace_period_ns``       synchronize_srcu_expedited() with no reader to wait for
``write_generation_ns``        writing the memslots generation
``spte_walked_ns``             one SPTE read and tested by a walk under mmu_lock
``spte_zapped_ns``             one SPTE cleared while zapping
``shadow_page_freed_ns``       one shadow page freed (kvm_mmu_commit_zap_page)
``mmu_valid_gen_bump_ns``      kvm_mmu_zap_all_fast(): bump mmu_valid_gen, request root reloads
``spte_write_protect_ns``      one SPTE made read-only for dirty logging
``memslot_copy_per_slot_ns``   before 5.17: per slot of the sorted array, per memslot update
                               (``kvm_dup_memslots()`` memcpy and ``update_memslots()``' shift);
                               5.17+ (a54d806688fe series) swaps trees in O(log n): not charged
``memslot_hva_walk_ns``        an mmu-notifier call testing one memslot for its hva range: every
                               slot before 5.17 (``kvm_handle_hva_range()``), one interval-tree
                               node per level from 5.17 (``kvm_for_each_memslot_in_hva_range``)
``mmu_notifier_ns``            one ``madvise(MADV_DONTNEED)``-style invalidation: the syscall,
                               ``invalidate_range_start/end`` and the TLB flush, besides the walk
``host_page_alloc_ns``         a guest fault on memory whose host page was dropped
                               (``MADV_DONTNEED``): ``hva_to_pfn()`` -> ``get_user_pages()``
                               faults a fresh zeroed 4 KiB page in, besides the fault itself
``host_unmap_present_ns``       one ``madvise(MADV_DONTNEED)`` call that drops present host pages,
                               besides ``mmu_notifier_ns``: the pages freed, the host's TLB
                               shootdown and KVM's remote TLB flush, both of which kick the CPU
                               running the vCPU; the vCPU waits meanwhile (its faults retry,
                               ``mmu_invalidate_retry()``), so the call adds to the guest's time
=============================  ===================================================================
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
)

from kvmmu.mmu.steps import Step
from kvmmu.tomlfile import field_path, parse_toml

#: The largest cost a profile may give one name: one second. Nothing a single step of KVM does takes
#: that long (the slowest measured here, a memslot delete with 32k live PTEs, is ~1.6 ms), and a
#: simulated run of many steps must stay well inside the engine's integer clock.
MAX_COST_NS = 1_000_000_000

#: Entries per shadow page: a walk of one page reads this many SPTEs.
SPTES_PER_PAGE = 512

#: Every cost name a profile may set, in documentation order.
COST_NAMES: tuple[str, ...] = (
    "guest_access_ns",
    "vmexit_ns",
    "slow_path_fault_ns",
    "mmio_fast_path_ns",
    "vcpu_cache_hit_ns",
    "read_generation_ns",
    "memslot_lookup_ns",
    "mmu_lock_ns",
    "mmu_unlock_ns",
    "lock_handoff_ns",
    "spte_write_ns",
    "guest_retry_ns",
    "exit_to_userspace_ns",
    "emulate_ns",
    "root_reload_ns",
    "memslot_ioctl_ns",
    "memslot_publish_ns",
    "srcu_grace_period_ns",
    "write_generation_ns",
    "spte_walked_ns",
    "shadow_page_visited_ns",
    "spte_zapped_ns",
    "shadow_page_freed_ns",
    "mmu_valid_gen_bump_ns",
    "spte_write_protect_ns",
    "memslot_copy_per_slot_ns",
    "memslot_hva_walk_ns",
    "mmu_notifier_ns",
    "host_page_alloc_ns",
    "host_unmap_present_ns",
)

#: What each protocol step costs, by step name: a sum of (cost name, multiplier).
STEP_COSTS: Mapping[str, tuple[tuple[str, int], ...]] = MappingProxyType(
    {
        "GUEST_ACCESS": (("guest_access_ns", 1),),
        "READ_SPTE_LOCKLESS": (("mmio_fast_path_ns", 1),),
        "READ_GENERATION": (("read_generation_ns", 1),),
        "READ_MEMSLOTS": (("memslot_lookup_ns", 1),),
        "VCPU_CACHE": (("vcpu_cache_hit_ns", 1),),
        "MMU_LOCK": (("mmu_lock_ns", 1),),
        "WRITE_SPTE": (("spte_write_ns", 1),),
        "MMU_UNLOCK": (("mmu_unlock_ns", 1),),
        # An rwlock's read side costs what its write side does (one atomic on the lock word).
        "MMU_READ_LOCK": (("mmu_lock_ns", 1),),
        "MMU_READ_UNLOCK": (("mmu_unlock_ns", 1),),
        "RETRY": (("guest_retry_ns", 1),),
        "EXIT_TO_USERSPACE": (("exit_to_userspace_ns", 1),),
        "EMULATE": (("emulate_ns", 1),),
        "ROOT_RELOAD": (("root_reload_ns", 1),),
        "PUBLISH_MEMSLOTS": (("memslot_publish_ns", 1),),
        "SRCU_SYNC": (("srcu_grace_period_ns", 1),),
        "WRITE_GENERATION": (("write_generation_ns", 1),),
        "ZAP_SPTE": (("spte_zapped_ns", 1),),
        # A walk reads every entry of the page it visits.
        "WALK_SHADOW_PAGE": (("spte_walked_ns", SPTES_PER_PAGE),),
        "FREE_SHADOW_PAGE": (("shadow_page_freed_ns", 1),),
        "BUMP_MMU_VALID_GEN": (("mmu_valid_gen_bump_ns", 1),),
        "LOCK_BREAK": (("lock_handoff_ns", 1),),
        "WRITE_PROTECT": (("spte_write_protect_ns", 1),),
        "VISIT_SHADOW_PAGE": (("shadow_page_visited_ns", 1),),
    }
)

#: Costs the timed run charges itself, where no step marks the moment, and why.
DRIVER_COSTS: Mapping[str, str] = MappingProxyType(
    {
        "vmexit_ns": "a guest access that the hardware could not translate (the fault's exit)",
        "slow_path_fault_ns": "a fault that reaches the slow path (takes mmu_lock)",
        "lock_handoff_ns": "a spinning waiter taking mmu_lock from its previous holder",
        "memslot_ioctl_ns": "each KVM_SET_USER_MEMORY_REGION the VMM issues",
        "memslot_copy_per_slot_ns": "per slot in the address space, per update, in eras before 5.17",
        "memslot_hva_walk_ns": "per memslot an mmu-notifier invalidation tests (kvmmu memslot-perf)",
        "mmu_notifier_ns": "each host unmap of guest memory (kvmmu memslot-perf)",
        "host_page_alloc_ns": "a guest write to a page the host dropped (kvmmu memslot-perf)",
        "host_unmap_present_ns": "each host unmap call that drops present pages (kvmmu "
        "memslot-perf)",
        "spte_zapped_ns": "per live entry of each shadow page freed (the model counts them: sptes_dropped)",
    }
)

DEFAULT_PROFILE = "default.toml"


class CostError(ValueError):
    """An unusable cost profile; the message names the file, the key and what is allowed."""


@dataclass(frozen=True, slots=True)
class CostModel:
    """A validated profile: every name's cost, and each step's total, ready for the hot loop."""

    costs: Mapping[str, int]
    source: Mapping[str, str]
    path: str
    #: ``by_step[int(step)]`` is the step's cost; indexed by value for speed.
    by_step: tuple[int, ...]

    def __getitem__(self, name: str) -> int:
        return self.costs[name]

    def step(self, step: Step) -> int:
        """What one yielded ``step`` costs, in ns."""
        return self.by_step[step]

    @classmethod
    def from_mapping(
        cls,
        costs: Mapping[str, int],
        source: Mapping[str, str] | None = None,
        path: str = "<mapping>",
    ) -> CostModel:
        """A model from a full mapping of names to ns (no defaults are filled in)."""
        missing = [n for n in COST_NAMES if n not in costs]
        if missing:
            raise CostError(f"{path}: costs: missing {', '.join(missing)}")
        unmapped = [s.name for s in Step if s.name not in STEP_COSTS]
        if unmapped:  # a step added to the protocol without a cost: refuse rather than guess 0
            raise CostError(f"{path}: no cost mapping for step(s) {', '.join(unmapped)}")
        size = max(int(s) for s in Step) + 1
        by_step = [0] * size
        for s in Step:
            by_step[s] = sum(costs[name] * k for name, k in STEP_COSTS[s.name])
        return cls(
            costs=MappingProxyType({n: int(costs[n]) for n in COST_NAMES}),
            source=MappingProxyType(dict(source or {})),
            path=path,
            by_step=tuple(by_step),
        )

    def to_toml(self) -> str:
        """The profile as TOML, in the format :func:`load_costs` reads."""
        lines = ["[costs]"]
        lines += [f"{name} = {self.costs[name]}" for name in COST_NAMES]
        if self.source:
            lines += ["", "[source]"]
            lines += [f"{k} = {_toml_str(v)}" for k, v in self.source.items()]
        return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_CostsTable = create_model(  # type: ignore[call-overload]
    "CostsTable",
    __config__=ConfigDict(extra="forbid"),
    **{name: (StrictInt | None, Field(default=None, ge=0, le=MAX_COST_NS)) for name in COST_NAMES},
)


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    costs: _CostsTable  # type: ignore[valid-type]
    source: dict[str, StrictStr] = Field(default_factory=dict)


def _given(profile: _Profile) -> dict[str, int]:
    table: BaseModel = profile.costs
    return {k: v for k, v in table.model_dump().items() if v is not None}


def _describe(err: Mapping[str, Any]) -> str:
    loc = field_path(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden" and len(err["loc"]) == 2:
        return f"{loc}: unknown cost name; allowed: {', '.join(COST_NAMES)}"
    if kind == "extra_forbidden":
        return f"{loc}: unknown table; allowed: [costs], [source]"
    if loc.startswith("costs."):
        return (
            f"{loc}: must be an integer number of ns from 0 to {MAX_COST_NS:_} (one second) "
            f"(got {err.get('input')!r})"
        )
    if loc.startswith("source."):
        return f"{loc}: must be a string (got {err.get('input')!r})"
    if kind == "missing":
        return f"{loc}: missing table; a profile needs a [costs] table of <name>_ns = int"
    return f"{loc}: {err['msg']}"


def parse_costs(text: str, path: str, base: CostModel | None = None) -> CostModel:
    """Parse and validate a profile's text; names it omits keep ``base``'s (or the default's)."""
    raw = parse_toml(text, path, CostError)
    try:
        profile = _Profile.model_validate(raw)
    except ValidationError as exc:
        raise CostError(f"{path}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    given = _given(profile)
    if base is None and len(given) < len(COST_NAMES):
        base = default_costs()
    merged: dict[str, int] = dict(base.costs) if base is not None else {}
    merged.update(given)
    return CostModel.from_mapping(merged, profile.source, path)


def load_costs(path: str | Path | None = None) -> CostModel:
    """The profile at ``path``, or the packaged default when ``path`` is None."""
    if path is None:
        return default_costs()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CostError(f"{p}: cannot read cost profile: {exc.strerror}") from None
    return parse_costs(text, str(p))


def default_costs() -> CostModel:
    """The packaged default profile (``kvmmu/data/costs/default.toml``), which sets every name."""
    ref = resources.files("kvmmu").joinpath("data", "costs", DEFAULT_PROFILE)
    text = ref.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    profile = _Profile.model_validate(raw)
    where = f"<kvmmu>/data/costs/{DEFAULT_PROFILE}"
    return CostModel.from_mapping(_given(profile), profile.source, where)
