"""Shadow pages: allocation and links, zaps, zap-all-fast batches, range zaps and write protection."""

from __future__ import annotations

from collections.abc import Iterator

from kvmmu.mmu.faults import Path
from kvmmu.mmu.pages import BATCH_ZAP_PAGES, Mmu
from kvmmu.mmu.steps import Step, run_to_completion
from kvmmu.spte import (
    LAYOUT_MODERN,
    SPTE_WRITABLE,
    MmioSpteCodec,
    ept_mmio_mask,
    make_ram_spte,
)
from kvmmu.vcpu import Vcpu
from kvmmu.vm import VM


def new_mmu() -> Mmu:
    return Mmu(LAYOUT_MODERN, MmioSpteCodec(LAYOUT_MODERN, ept_mmio_mask("modern")))


def build_tree(mmu: Mmu, tables: int) -> list:  # type: ignore[type-arg]
    root, _ = mmu.root_for(0)
    l3 = mmu.alloc_page(0, 3, 0, root, 0)
    l2 = mmu.alloc_page(0, 2, 0, l3, 0)
    leaves = [mmu.alloc_page(i * 512, 1, 0, l2, i) for i in range(tables)]
    for i, leaf in enumerate(leaves):
        leaf.spt[0] = make_ram_spte(0x1000 + i, True, False, LAYOUT_MODERN)
    return leaves


def test_a_child_is_linked_by_a_nonleaf_spte_naming_its_address() -> None:
    mmu = new_mmu()
    leaves = build_tree(mmu, 2)
    l2 = leaves[0].parent
    assert l2 is not None and l2.children[1] is leaves[1]
    assert l2.spt[1] & ~0xFFF & ((1 << 52) - 1) == leaves[1].hpa
    assert mmu.stats.mmu_cache_miss == 5


def test_unlinking_a_table_frees_its_subtree_and_clears_the_parent_entry() -> None:
    mmu = new_mmu()
    leaves = build_tree(mmu, 3)
    l2 = leaves[0].parent
    assert l2 is not None
    freed = mmu.unlink(l2)
    assert len(freed) == 4 and all(sp.hpa not in mmu.active for sp, _ in freed)
    assert [live for _, live in freed] == [3, 1, 1, 1]  # l2's links, then each leaf's RAM entry
    assert all(not any(sp.spt) for sp, _ in freed)  # kvm_mmu_page_unlink_children()
    assert l2.parent is not None and l2.parent.spt[0] == 0
    assert mmu.stats.mmu_shadow_zapped == 4


def test_zap_all_fast_frees_every_page_dropping_the_lock_every_batch() -> None:
    mmu = new_mmu()
    build_tree(mmu, 30)
    who = object()
    steps = list(mmu.zap_all_fast(who))
    assert not mmu.active and mmu.mmu_valid_gen == 1
    assert steps.count(Step.FREE_SHADOW_PAGE) == 33
    assert steps.count(Step.MMU_LOCK) == 1 + 33 // BATCH_ZAP_PAGES
    assert mmu.lock.holder is None


def test_pages_created_after_zap_all_fast_are_not_obsolete() -> None:
    mmu = new_mmu()
    old = build_tree(mmu, 1)[0]
    run_to_completion(mmu.zap_all_fast(object()))
    new = build_tree(mmu, 1)[0]
    assert mmu.is_obsolete(old) and not mmu.is_obsolete(new)


def test_a_range_zap_clears_only_the_leaves_in_the_range() -> None:
    mmu = new_mmu()
    leaves = build_tree(mmu, 4)
    zapped = run_to_completion(mmu.zap_gfn_range(object(), 512, 1536, 0))
    assert zapped == 2
    assert [bool(leaf.spt[0]) for leaf in leaves] == [True, False, False, True]


def test_write_protection_clears_the_writable_bit_in_the_range() -> None:
    mmu = new_mmu()
    leaves = build_tree(mmu, 2)
    n = run_to_completion(mmu.write_protect_range(object(), 0, 512, 0))
    assert n == 1
    assert not leaves[0].spt[0] & SPTE_WRITABLE and leaves[1].spt[0] & SPTE_WRITABLE


def test_zap_all_slow_frees_every_page_under_one_lock_hold() -> None:
    mmu = new_mmu()
    build_tree(mmu, 30)
    steps = list(mmu.zap_all_slow(object()))
    assert not mmu.active and not mmu.roots
    assert steps.count(Step.FREE_SHADOW_PAGE) == 33
    assert steps.count(Step.MMU_LOCK) == 1 and steps.count(Step.MMU_UNLOCK) == 1
    # 30 leaves with one RAM entry each; level 2 links to 30 leaves; levels 3 and 4 one link each.
    assert mmu.stats.sptes_dropped == 30 + 30 + 1 + 1


def test_freeing_pages_counts_the_live_entries_they_held() -> None:
    mmu = new_mmu()
    leaves = build_tree(mmu, 2)
    leaves[0].spt[7] = make_ram_spte(0x99, False, False, LAYOUT_MODERN)
    run_to_completion(mmu.zap_all_fast(object()))
    # Leaves: 2 + 1 RAM entries; level 2: 2 links; levels 3 and 4: 1 link each.
    assert mmu.stats.sptes_dropped == 3 + 2 + 1 + 1


def _zap_all_fast_breaks(tables: int, *, tracked: bool, spinning: int, batch: int = BATCH_ZAP_PAGES
                         ) -> int:
    mmu = new_mmu()
    mmu.zap_break_batch = batch
    build_tree(mmu, tables)
    mmu.lock.contention_tracked = tracked
    mmu.lock.spinning = spinning
    run_to_completion(mmu.zap_all_fast("vmm"))
    assert not mmu.active
    return mmu.lock.breaks


def test_zap_all_fast_breaks_the_lock_only_for_a_spinning_waiter() -> None:
    # v3.11 / v6.8 arch/x86/kvm/mmu(/mmu).c kvm_zap_obsolete_pages(): "if (batch >=
    # BATCH_ZAP_PAGES && cond_resched_rwlock_write(&kvm->mmu_lock)) { batch = 0; goto
    # restart; }": no waiter, no break, however many pages (here 3 upper + 45 leaf tables).
    assert _zap_all_fast_breaks(45, tracked=True, spinning=0) == 0
    # A waiter spinning throughout: a break each time a batch of 10 pages is complete.
    assert _zap_all_fast_breaks(45, tracked=True, spinning=1) == 48 // BATCH_ZAP_PAGES
    # Untracked (plain run, explorer): the same break points, taken whatever happens.
    assert _zap_all_fast_breaks(45, tracked=False, spinning=0) == 48 // BATCH_ZAP_PAGES


def test_the_5_3_zap_tested_for_a_break_at_every_page() -> None:
    # 002c5f73c508 (5.3) kvm_zap_obsolete_pages(): "if (need_resched() ||
    # spin_needbreak(&kvm->mmu_lock))" before each page; 5.4 restored the batch.
    assert _zap_all_fast_breaks(7, tracked=True, spinning=1, batch=0) == 10


# --- the TDP MMU's kvm_mmu_zap_all_fast(): where the old roots are torn down ------------------


def _warm_tdp_vm(tdp_mmu: str) -> tuple[VM, Vcpu]:
    from dataclasses import replace

    from kvmmu.mmu.invalidation import STRATEGIES

    vm = VM(replace(STRATEGIES["generation"], tdp_mmu=tdp_mmu), tdp_mmu=True, strict=True)
    vm.set_user_memory_region(0, 0, 0, 64 << 20, 0x7F00_0000_0000)
    vm.set_user_memory_region(1, 0, 1 << 30, 1 << 20, 0x7E00_0000_0000)
    vcpu = vm.create_vcpu()
    for gpa in range(0, 64 << 20, 2 << 20):
        vcpu.access(gpa)  # 32 level-1 tables under one root
    return vm, vcpu


def _round_robin(vm: VM, threads: dict[str, Iterator[Step]]) -> tuple[list[str], list[set[str]]]:
    """Step every unfinished thread in turn, skipping one whose pending step would only wait;
    return the order they finished in and who held mmu_lock for read after each step."""
    lock = vm.kvm.mmu.lock
    names = {id(vm.vmm): "vmm", **{id(v.arch): f"vcpu{v.arch.id}" for v in vm.vcpus}}
    pending = {name: next(gen) for name, gen in threads.items()}
    finished: list[str] = []
    readers: list[set[str]] = []
    while pending:
        progressed = False
        for name in list(pending):
            if vm.is_blocked(pending[name]):
                continue
            progressed = True
            try:
                pending[name] = next(threads[name])
            except StopIteration:
                del pending[name]
                finished.append(name)
            readers.append({names[id(r)] for r in lock.readers})
        assert progressed, f"deadlock: {pending}"
    return finished, readers


def test_from_5_13_zapped_tdp_roots_are_torn_down_under_the_read_lock_while_vcpus_fault() -> None:
    # v6.8 arch/x86/kvm/mmu/mmu.c kvm_mmu_zap_all_fast(): kvm_tdp_mmu_invalidate_all_roots() under
    # write_lock, write_unlock(), then kvm_tdp_mmu_zap_invalidated_roots(): read_lock(),
    # tdp_mmu_zap_root(kvm, root, true) (b7cccd397f31, 5.13; on a workqueue flushed by the ioctl in
    # v6.1.20).  A vCPU reloads its root at one of the teardown's read-lock breaks and then
    # faults beside it.
    vm, vcpu = _warm_tdp_vm("5.13")
    delete = vm.set_user_memory_region_steps(1, 0, 1 << 30, 0, 0)
    for step in delete:
        if step is Step.FREE_SHADOW_PAGE:
            break  # the first old page is freed: the VMM reads, nobody writes
    lock = vm.kvm.mmu.lock
    assert lock.holder is None and lock.readers == {vm.vmm}
    finished, readers = _round_robin(vm, {"vmm": delete, "vcpu0": vcpu.access_steps(0x5000)})
    assert finished == ["vcpu0", "vmm"]  # the fault did not wait for the teardown to end
    assert {"vmm", "vcpu0"} in readers  # both held mmu_lock for read at once
    assert vcpu.stats.root_reloads == 2 and vm.stats["mmu_shadow_zapped"] >= 34


def test_in_5_12_the_tdp_mmu_is_zapped_under_the_write_lock_so_faults_wait() -> None:
    # v5.12.9 arch/x86/kvm/mmu/mmu.c kvm_mmu_zap_all_fast(): "if (is_tdp_mmu_enabled(kvm))
    # kvm_tdp_mmu_zap_all(kvm);" before write_unlock(); the zap yields only at
    # cond_resched_rwlock_write() (tdp_mmu_iter_cond_resched()).
    vm, vcpu = _warm_tdp_vm("5.12")
    delete = vm.set_user_memory_region_steps(1, 0, 1 << 30, 0, 0)
    for step in delete:
        if step is Step.FREE_SHADOW_PAGE:
            break
    lock = vm.kvm.mmu.lock
    assert lock.holder is vm.vmm and not lock.readers
    access = vcpu.access_steps(0x5000)
    assert next(access) is Step.MMU_LOCK and vm.is_blocked(Step.MMU_LOCK)  # the root reload
    _finished, readers = _round_robin(vm, {"vmm": delete, "vcpu0": access})
    assert all("vmm" not in r for r in readers)  # the VMM never took the read lock


def test_from_5_13_the_tdp_mmu_write_protects_for_dirty_logging_under_the_read_lock() -> None:
    # v6.1.20 arch/x86/kvm/mmu/mmu.c kvm_mmu_slot_remove_write_access(): "if
    # (is_tdp_mmu_enabled(kvm)) { read_lock(&kvm->mmu_lock); kvm_tdp_mmu_wrprot_slot(...);" --
    # v5.12.9 held the write lock around kvm_tdp_mmu_wrprot_slot().
    from kvmmu.memslots import KVM_MEM_LOG_DIRTY_PAGES

    for era, shared in (("5.13", True), ("5.12", False)):
        vm, vcpu = _warm_tdp_vm(era)
        enable = vm.set_user_memory_region_steps(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 64 << 20,
                                                 0x7F00_0000_0000)
        for step in enable:
            if step is Step.WRITE_PROTECT:
                break
        lock = vm.kvm.mmu.lock
        if not shared:
            assert lock.holder is vm.vmm and not lock.readers
            continue
        assert lock.holder is None and lock.readers == {vm.vmm}
        out = vcpu.access(0x3000)  # a fresh page of the logged slot: faults beside the VMM
        assert out.path is Path.SLOW and lock.readers == {vm.vmm}
        for _ in enable:
            pass
        assert vm.stats["sptes_write_protected"] == 32  # every leaf mapped before, once
        assert vcpu.access(0x3000, write=True).path is Path.FAST  # logged by fast_page_fault()


def test_freed_pages_keep_no_links_to_their_children() -> None:
    """A freed table drops its children as well as its entries, whatever its level (a level-1
    table never had any: it holds leaves only)."""
    mmu = new_mmu()
    leaves = build_tree(mmu, 3)
    root = mmu.roots[0]
    freed = mmu.unlink(root)
    assert sorted(sp.level for sp, _ in freed) == [1, 1, 1, 2, 3, 4]
    assert all(c is None for sp, _ in freed for c in sp.children)
    assert all(sp.invalid and not any(sp.spt) for sp, _ in freed)
    assert not mmu.active and not mmu.roots and leaves[0].parent is not None
