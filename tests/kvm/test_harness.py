"""kvmmu.kvm.harness: the guest on real vCPU threads, observed semantics, timeouts, teardown."""

from __future__ import annotations

import threading

import pytest

from kvmmu.kvm.bindings import KVM_MEM_READONLY, ExitReason, SimpleExit
from kvmmu.kvm.guest import GuestLayout
from kvmmu.kvm.harness import Access, GuestCrashed, GuestTimeout, RealMachine

pytestmark = pytest.mark.kvm

GPA = 0x100000


def test_ram_mmio_and_values(no_fd_leak: None) -> None:
    with RealMachine(GuestLayout(window=4 << 20)) as m:
        mem = m.allocate(0x4000)
        mem.write(0x10, bytes(range(1, 9)))
        m.set_user_memory_region(0, 0, GPA, 0x4000, mem.addr)
        assert m.access(Access(0, GPA + 0x10, size=8)).value == 0x0807060504030201
        assert m.access(Access(0, GPA + 0x12, size=2)).value == 0x0403
        w = m.access(Access(0, GPA + 0x20, write=True, size=4, value=0xDEADBEEF))
        assert w.kind == "ram" and mem.read(0x20, 4) == (0xDEADBEEF).to_bytes(4, "little")
        r = m.access(Access(0, 0x300008, size=4))
        assert r.kind == "mmio" and len(r.mmio) == 1
        e = r.mmio[0]
        assert (e.gpa, e.len, e.is_write) == (0x300008, 4, False)
        wr = m.access(Access(0, 0x300010, write=True, size=2, value=0xBEEF))
        assert wr.mmio[0].is_write and wr.mmio[0].data == (0xBEEF).to_bytes(2, "little")


def test_delete_recreate_move_readonly(no_fd_leak: None) -> None:
    """The observed semantics listed in real-kvm-here.md, with live shadow PTEs."""
    with RealMachine(GuestLayout(window=4 << 20)) as m:
        a = m.allocate(0x1000)
        b = m.allocate(0x1000)
        a.write_u64(0, 0xAAAA)
        b.write_u64(0, 0xBBBB)
        m.set_user_memory_region(0, 0, GPA, 0x1000, a.addr)
        assert m.access(Access(0, GPA, size=8)).value == 0xAAAA  # live SPTE now
        m.set_user_memory_region(0, 0, GPA, 0, 0)  # delete
        gone = m.access(Access(0, GPA, size=8))
        assert gone.kind == "mmio" and gone.mmio[0].gpa == GPA  # no stale data
        assert m.access(Access(0, GPA, write=True, size=8, value=1)).kind == "mmio"
        m.set_user_memory_region(0, 0, GPA, 0x1000, b.addr)  # re-create on new backing
        assert m.access(Access(0, GPA, size=8)).value == 0xBBBB
        m.set_user_memory_region(0, 0, GPA + 0x10000, 0x1000, b.addr)  # move
        assert m.access(Access(0, GPA, size=8)).kind == "mmio"
        assert m.access(Access(0, GPA + 0x10000, size=8)).value == 0xBBBB
        m.set_user_memory_region(1, KVM_MEM_READONLY, 0x200000, 0x1000, a.addr)
        assert m.access(Access(0, 0x200000, size=8)).value == 0xAAAA
        ro = m.access(Access(0, 0x200000, write=True, size=8, value=7))
        assert ro.mmio[0].is_write and ro.mmio[0].gpa == 0x200000
        assert a.read_u64(0) == 0xAAAA  # memory unchanged


def test_two_vcpus_run_while_memslots_change(no_fd_leak: None) -> None:
    # spin > 0: idle vCPUs poll inside KVM_RUN, so the updates below happen while both run.
    with RealMachine(GuestLayout(window=4 << 20, nr_vcpus=2), spin=200_000) as m:
        mem = m.allocate(0x2000)
        mem.write_u64(0, 41)
        mem.write_u64(0x1000, 42)
        for round_ in range(20):
            m.set_user_memory_region(0, 0, GPA, 0x2000, mem.addr)
            r0, r1 = m.access_many([Access(0, GPA, size=8), Access(1, GPA + 0x1000, size=8)])
            assert (r0.value, r1.value) == (41, 42), round_
            m.set_user_memory_region(0, 0, GPA, 0, 0)
            r0, r1 = m.access_many([Access(0, GPA, size=8), Access(1, GPA + 0x1000, size=8)])
            assert r0.kind == r1.kind == "mmio"
        # Both vCPU threads run (other threads of the test process, e.g. a thread pool an
        # earlier test left, are not counted: their position in the list is not ours to fix).
        ours = [t for t in threading.enumerate() if t.name.startswith("kvmmu-vcpu")]
        assert len(ours) == 2 and all(t.is_alive() for t in ours)


def test_hanging_guest_is_stopped_by_the_timeout(no_fd_leak: None) -> None:
    def vcpu_threads() -> int:  # only ours: other threads of the process may come and go
        return sum(t.name.startswith("kvmmu-vcpu") for t in threading.enumerate())

    threads = vcpu_threads()
    with RealMachine(GuestLayout(window=2 << 20), timeout=0.3) as m:
        m.post_hang(0)
        with pytest.raises(GuestTimeout, match="no result"):
            m.wait(0)
        with pytest.raises(GuestTimeout):  # the machine stays dead
            m.access(Access(0, 0, size=4))
    assert vcpu_threads() == threads


def test_faulting_guest_shuts_down_and_is_torn_down(no_fd_leak: None) -> None:
    with RealMachine(GuestLayout(window=2 << 20), timeout=2) as m:
        # Beyond the mapped window: #PF, no IDT, triple fault.
        with pytest.raises(GuestCrashed) as err:
            m.access(Access(0, 0x3000_0000, size=8))
        assert err.value.exit == SimpleExit(ExitReason.SHUTDOWN)


def test_too_many_vcpus_is_refused(no_fd_leak: None) -> None:
    with pytest.raises(ValueError, match="KVM_CAP_NR_VCPUS"):
        RealMachine(GuestLayout(nr_vcpus=16))



def test_a_write_touch_stores_into_every_page_and_takes_faults(no_fd_leak: None) -> None:
    pages = 64
    with RealMachine(GuestLayout(window=4 << 20)) as m:
        mem = m.allocate(pages * 4096)
        mem.write(0, b"\xaa" * (pages * 4096))
        m.set_user_memory_region(0, 0, GPA, pages * 4096, mem.addr)
        m.touch(0, GPA, pages)  # a read touch leaves memory alone
        assert {mem.read(p * 4096, 1) for p in range(pages)} == {b"\xaa"}
        m.set_user_memory_region(0, 0, GPA, 0, mem.addr)  # delete: the next touch faults afresh
        m.set_user_memory_region(0, 0, GPA, pages * 4096, mem.addr)
        stats = m.vcpus[0].stats()
        before = stats.get("pf_taken")
        m.touch(0, GPA, pages, write=True)
        assert stats.get("pf_taken") > before
        # The stored byte is the stride's low byte: 0 for a page stride.
        assert {mem.read(p * 4096, 1) for p in range(pages)} == {b"\x00"}
        assert mem.read(1, 1) == b"\xaa"
