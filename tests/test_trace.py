"""Tracepoints: the kernel's TP_printk formats, as ftrace lines, only when tracing is on."""

from __future__ import annotations

import re

from kvmmu import VM, Tracer

HVA = 0x7F00_0000_0000
FTRACE = re.compile(r"^\s*\S+-\d+ \[\d{3}\] \.\.\.1\.\s+\d+\.\d{6}: (\w+): (.*)$")


def test_each_event_uses_the_kernels_format_string() -> None:
    t = Tracer()
    t.mark_mmio_spte(0, 0xFFFF8880_01234000, 0x300, 0x6, 0x1F)
    t.handle_mmio_page_fault(0, 0, 0x300, 0x6)
    t.check_mmio_spte(0, 0xC000_0000_0030_0006, 0x20, 0x1F, False)
    t.kvm_mmu_zap_all_fast(0, 3, 0x12)
    t.kvm_mmu_get_page(0, Tracer.sp_text(0, 0x200, 1, 0), True)
    t.kvm_mmio(0, "unsatisfied-read", 4, 0xFEE00000, 0)
    texts = [r.text for r in t.records]
    assert texts == [
        "sptep:ffff888001234000 gfn 300 access 6 gen 1f",
        "addr:0 gfn 300 access 6",
        "spte c000000000300006 kvm_gen 20 spte-gen 1f valid 0",
        "kvm-mmu-valid-gen 3 used_pages 12",
        "sp gen 0 gfn 200 l1 8-byte q0 direct wux nxe ad root 0 sync new",
        "mmio unsatisfied-read len 4 gpa 0xfee00000 val 0x0",
    ]
    for line in t.lines():
        assert FTRACE.match(line), line


def test_a_traced_vm_records_the_mmio_life_cycle_in_order() -> None:
    vm = VM("generation", trace=True)
    vcpu = vm.create_vcpu()
    vcpu.access(0xFEE00000)
    vcpu.access(0xFEE01000)
    vcpu.access(0xFEE00000)
    assert vm.kvm.trace is not None
    events = [r.event for r in vm.kvm.trace.records]
    assert events.index("mark_mmio_spte") < events.index("kvm_mmio")
    assert "check_mmio_spte" in events and "handle_mmio_page_fault" in events
    assert events.count("kvm_mmio") == 3


def test_tracing_is_off_by_default_and_then_there_is_no_tracer() -> None:
    vm = VM("generation")
    assert vm.kvm.trace is None


def test_an_event_filter_keeps_only_the_named_events() -> None:
    t = Tracer(events=frozenset({"kvm_mmio"}))
    vm = VM("generation", trace=t)
    vm.create_vcpu().access(0xFEE00000)
    assert {r.event for r in t.records} == {"kvm_mmio"}


def test_a_zap_all_fast_fires_once_and_each_freed_page_fires_prepare_zap() -> None:
    vm = VM("generation", trace=True)  # DELETE zaps everything (the default quirk)
    vm.set_user_memory_region(0, 0, 0, 4 << 20, HVA)
    vcpu = vm.create_vcpu()
    vcpu.access(0x1000)
    vcpu.access(0x20_1000)
    pages = vm.stats["shadow_pages"]
    assert vm.kvm.trace is not None
    vm.kvm.trace.records.clear()
    vm.set_user_memory_region(0, 0, 0, 0, HVA)
    events = [r.event for r in vm.kvm.trace.records]
    assert events.count("kvm_mmu_zap_all_fast") == 1
    assert events.count("kvm_mmu_prepare_zap_page") == pages == 5
    zap = next(r for r in vm.kvm.trace.records if r.event == "kvm_mmu_zap_all_fast")
    # The tracepoint fires before the toggle: it prints the generation being retired (current
    # arch/x86/kvm/mmu/mmu.c kvm_mmu_zap_all_fast(): trace_kvm_mmu_zap_all_fast(kvm), then
    # "kvm->arch.mmu_valid_gen = kvm->arch.mmu_valid_gen ? 0 : 1").
    assert zap.text == "kvm-mmu-valid-gen 0 used_pages 5"
    assert vm.kvm.mmu.mmu_valid_gen == 1
    assert all(r.text.startswith("sp gen 0 ") for r in vm.kvm.trace.records
               if r.event == "kvm_mmu_prepare_zap_page")  # the obsolete generation


def test_check_mmio_spte_is_not_traced_while_an_update_is_in_progress() -> None:
    """5.1+ mmu.c check_mmio_spte(): ``if (unlikely(gen & KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS))
    return false;`` comes before trace_check_mmio_spte(); 3.x/4.x traced every check."""
    from kvmmu.mmu.steps import Step

    for name, traced_in_window in (("generation", False), ("generation-3.18", True)):
        vm = VM(name, trace=True)
        a = vm.create_vcpu()
        a.access(0xFEE0_0000)  # MMIO SPTE
        a.access(0xFEE0_1000)  # the per-vCPU cache moves on
        assert vm.kvm.trace is not None
        update = vm.set_user_memory_region_steps(0, 0, 0, 0x1000, 0x7F00_0000_0000)
        for step in update:
            if step is Step.SRCU_SYNC:  # published: the generation says "in progress" (or odd)
                break
        vm.kvm.trace.records.clear()
        a.access(0xFEE0_0000)  # fast path during the update: the check fails either way
        checks = [r for r in vm.kvm.trace.records if r.event == "check_mmio_spte"]
        assert bool(checks) is traced_in_window, name
        for _ in update:
            pass


def test_mark_mmio_spte_traces_the_access_stored_in_the_spte() -> None:
    """3.11-5.1: ``access & (ACC_WRITE_MASK | ACC_USER_MASK)`` (6 for a full access); later
    kernels: ``access & shadow_mmio_access_mask``, which is 0 under EPT."""
    old = VM("generation-3.11", trace=True)
    old.create_vcpu().access(0xFEE0_0000)
    new = VM("generation", trace=True)
    new.create_vcpu().access(0xFEE0_0000)
    for vm, access in ((old, "access 6 "), (new, "access 0 ")):
        assert vm.kvm.trace is not None
        (mark,) = [r.text for r in vm.kvm.trace.records if r.event == "mark_mmio_spte"]
        assert access in mark, mark
