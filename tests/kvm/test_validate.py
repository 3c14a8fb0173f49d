"""The model configured like the capturing kernel, held against the kernel's trace."""

from __future__ import annotations

from pathlib import Path

from kvmmu.kvm.capture import Capture, CapturedEvent, CaptureMeta, KernelInfo, load_capture
from kvmmu.kvm.strace import MemslotCall
from kvmmu.kvm.validate import model_config, regions_of, validate

POST = Path(__file__).parent.parent / "data" / "qemu-q35-post" / "capture.json.gz"
SHADOW_HOST = KernelInfo(mmu="shadow", mmio_caching=False, address_spaces=1, slot_zap="all")


def _cap(calls: list[MemslotCall], events: list[CapturedEvent]) -> Capture:
    meta = CaptureMeta(sources=("strace", "tracefs"), kernel=SHADOW_HOST, vcpu_tids=(9,))
    return Capture(meta, tuple(calls), tuple(events))


def _zap(t: int, tid: int = 7) -> CapturedEvent:
    return CapturedEvent(t, tid, "kvm_mmu_zap_all_fast", "kvm-mmu-valid-gen 1 used_pages 0")


def test_the_model_is_configured_like_the_kernel_the_capture_names() -> None:
    cfg = model_config(load_capture(POST))
    assert cfg["mmu"] == "shadow" and cfg["mmio_caching"] is False
    assert cfg["address_spaces"] == 1 and cfg["slot_zap"] == "all"


def test_on_the_post_every_delete_pairs_with_one_zap_all_fast_in_kernel_and_model() -> None:
    v = validate(load_capture(POST))
    deletes = [c for c in v.calls if c.op == "delete"]
    creates = [c for c in v.calls if c.op == "create"]
    assert len(deletes) == 23 and len(creates) == 27
    assert all(c.kernel_zap_all_fast == c.model_zap_all_fast == 1 for c in deletes)
    assert all(c.kernel_zap_all_fast == c.model_zap_all_fast == 0 for c in creates)
    totals = {t.name: t for t in v.totals}
    assert totals["kvm_mmu_zap_all_fast"].agrees
    assert totals["MMIO accesses"].agrees
    # The kernel built shadow roots the model does not (it reloads them on guest entry): the
    # disagreement is reported, with its timestamp, not hidden.
    pages = totals["shadow pages created (kvm_mmu_get_page new)"]
    assert pages.kernel > 0
    assert any(
        d.what.startswith("shadow pages created") and "kvm_mmu_reload" in d.why for d in v.disagreements
    )
    assert v.agreed < v.compared


def test_on_the_post_exits_agree_per_region_except_the_coalesced_vga_window() -> None:
    v = validate(load_capture(POST))
    by_name = {r.name: r for r in v.regions}
    vga = by_name["VGA legacy window"]
    assert vga.writes == vga.accesses and vga.kernel_exits < vga.model_exits
    assert by_name["local APIC"].agrees  # the in-kernel irqchip
    unnamed = [r for r in v.regions if not r.name]
    assert unnamed and all(r.agrees for r in unnamed)
    (why,) = [d.why for d in v.disagreements if "VGA legacy" in d.what]
    assert "coalesced MMIO" in why


def test_a_delete_the_kernel_did_not_zap_for_is_a_disagreement_at_its_time() -> None:
    calls = [
        MemslotCall(1_000, 50_000, 7, 1, 0, 0, 0x100000, 0x10000, 0x7F0000000000),
        MemslotCall(5_000_000, 50_000, 7, 1, 0, 0, 0x100000, 0, 0x7F0000000000),
    ]
    v = validate(_cap(calls, []))
    (d,) = v.disagreements
    assert d.t_ns == 5_000_000 and "kvm_mmu_zap_all_fast kernel 0, model 1" in d.what


def test_a_zap_outside_every_ioctl_of_its_thread_is_reported_unpaired() -> None:
    calls = [
        MemslotCall(1_000, 50_000, 7, 1, 0, 0, 0x100000, 0x10000, 0x7F0000000000),
        MemslotCall(5_000_000, 50_000, 7, 1, 0, 0, 0x100000, 0, 0x7F0000000000),
    ]
    v = validate(_cap(calls, [_zap(5_010_000), _zap(5_010_000, tid=8), _zap(9_000_000)]))
    assert [c.kernel_zap_all_fast for c in v.calls] == [0, 1]
    unpaired = [d for d in v.disagreements if "outside every memslot ioctl" in d.what]
    assert [d.t_ns for d in unpaired] == [5_010_000, 9_000_000]


def test_a_refusal_is_compared_by_errno() -> None:
    calls = [
        MemslotCall(1_000, 1_000, 7, 1, 0, 0, 0x100000, 0x10000, 0x7F0000000000),
        # The same gpa range again under another slot id: EEXIST in kvm_set_memory_region().
        MemslotCall(9_000, 1_000, 7, 2, 0, 0, 0x100000, 0x10000, 0x7F0000000000, errno="EEXIST"),
    ]
    v = validate(_cap(calls, []))
    assert v.calls[1].model_errno == "EEXIST" and v.calls[1].agrees


def test_a_memslot_only_capture_gives_the_models_figures_and_no_disagreement() -> None:
    calls = [MemslotCall(0, 0, 1, 0, 0, 0, 0, 1 << 20, 0x7F0000000000)]
    v = validate(Capture(CaptureMeta(sources=("strace",)), tuple(calls)))
    assert v.disagreements == [] and any("no kernel trace" in n for n in v.notes)
    assert v.compared == 0 and v.calls[0].model_zap_all_fast == 0


def test_regions_cluster_nearby_pages_and_name_architectural_ranges() -> None:
    from kvmmu.kvm.capture import MmioAccess

    acc = [MmioAccess(0, 1, True, 4, g, 0, True) for g in (0xB8000, 0xB0000000, 0xB00F8000, 0xFEE00030)]
    assert regions_of(acc) == [
        (0xA0000, 0xC0000, "VGA legacy window"),
        (0xB0000000, 0xB00F9000, ""),
        (0xFEE00000, 0xFEE01000, "local APIC"),
    ]
