"""kvmmu.kvm.bindings: structure layouts, ioctl numbers, Kvm/Vm/Vcpu against the real KVM."""

from __future__ import annotations

import ctypes
import threading
import time

import pytest

from kvmmu.kvm import bindings as b

from .conftest import open_fds


def test_struct_sizes_match_the_uapi_headers() -> None:
    assert ctypes.sizeof(b.KvmRegs) == 144
    assert ctypes.sizeof(b.KvmSregs) == 312
    assert ctypes.sizeof(b.KvmUserspaceMemoryRegion) == 32
    assert ctypes.sizeof(b.KvmUserspaceMemoryRegion2) == 160
    assert b.KvmRun.u.offset == 32
    assert b.KvmRunMmio.data.offset == 8


def test_ioctl_numbers_are_computed_from_sizes() -> None:
    # The values kvm-hello-world and QEMU's linux-headers spell out.
    assert b.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert b.KVM_SET_USER_MEMORY_REGION2 == 0x40A0AE49
    assert b.KVM_GET_REGS == 0x8090AE81
    assert b.KVM_SET_SREGS == 0x4138AE84
    assert b.KVM_ENABLE_CAP == 0x4068AEA3
    assert b.KVM_GET_DIRTY_LOG == 0x4010AE42
    assert b.KVM_GET_STATS_FD == 0xAECE


@pytest.mark.kvm
def test_capabilities_of_this_host(no_fd_leak: None) -> None:
    with b.Kvm() as kvm:
        assert kvm.api_version == 12
        assert kvm.check_extension(b.Cap.USER_MEMORY) == 1
        assert kvm.check_extension(b.Cap.READONLY_MEM) == 1
        assert kvm.check_extension(b.Cap.NR_MEMSLOTS) >= 32
        assert kvm.check_extension(b.Cap.NR_VCPUS) >= 1
        assert kvm.check_extension(b.Cap.DISABLE_QUIRKS2) & b.KVM_X86_QUIRK_SLOT_ZAP_ALL
        assert kvm.vcpu_mmap_size >= ctypes.sizeof(b.KvmRun)


@pytest.mark.kvm
def test_every_descriptor_and_mapping_is_released(no_fd_leak: None) -> None:
    before = open_fds()
    with b.Kvm() as kvm:
        vm = kvm.create_vm()
        vcpu = vm.create_vcpu()
        vm.stats()
        vcpu.stats()
        mem = vm.allocate(2 * b.PAGE_SIZE)
        assert open_fds() == before + 5  # /dev/kvm, vm, vcpu, two stats fds
        vm.close()
        assert vcpu.closed and vm.closed and mem.addr == 0
        vm.close()  # idempotent
    assert open_fds() == before


@pytest.mark.kvm
def test_memslot_errno_names(no_fd_leak: None) -> None:
    with b.Kvm() as kvm, kvm.create_vm() as vm:
        mem = vm.allocate(0x4000)
        vm.set_user_memory_region(0, 0, 0x10000, 0x4000, mem.addr)
        cases = [
            ((1, 0, 0x12000, 0x4000, mem.addr), "EEXIST"),  # overlap
            ((1, 0, 0x20001, 0x1000, mem.addr), "EINVAL"),  # misaligned gpa
            ((1, 0x8, 0x20000, 0x1000, mem.addr), "EINVAL"),  # unknown flag
            ((0, 2, 0x10000, 0x4000, mem.addr), "EINVAL"),  # READONLY toggle
            ((5, 0, 0, 0, 0), "EINVAL"),  # delete of a missing slot
            ((1, 0, (1 << 64) - 0x1000, 0x2000, mem.addr), "EINVAL"),  # wraps
        ]
        for args, name in cases:
            with pytest.raises(b.KvmIoctlError) as err:
                vm.set_user_memory_region(*args)
            assert err.value.errno_name == name, args
        vm.set_user_memory_region2(1, 0, 0x20000, 0x1000, mem.addr)  # the 160-byte variant
        with pytest.raises(b.KvmIoctlError) as err:
            vm.get_dirty_log(0, 0x4000)
        assert err.value.errno_name == "ENOENT"


@pytest.mark.kvm
def test_dirty_log_and_quirk_cap(no_fd_leak: None) -> None:
    with b.Kvm() as kvm, kvm.create_vm() as vm:
        vm.disable_quirks(b.KVM_X86_QUIRK_SLOT_ZAP_ALL)
        mem = vm.allocate(0x8000)
        vm.set_user_memory_region(3, b.KVM_MEM_LOG_DIRTY_PAGES, 0, 0x8000, mem.addr)
        assert vm.get_dirty_log(3, 0x8000) == bytes(1)  # nothing written yet
        with pytest.raises(b.KvmIoctlError) as err:
            vm.enable_cap(b.Cap.DISABLE_QUIRKS2, 1 << 60)  # not a supported quirk
        assert err.value.errno_name == "EINVAL"


@pytest.mark.kvm
def test_immediate_exit_returns_intr_and_a_kick_interrupts_a_running_vcpu(no_fd_leak: None) -> None:
    with b.Kvm() as kvm, kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        vcpu.run_struct.immediate_exit = 1
        assert vcpu.run() == b.SimpleExit(b.ExitReason.INTR)
        assert vcpu.run_struct.immediate_exit == 0
        # A thread blocked in KVM_RUN on a guest that never exits (real-mode `jmp $` at the
        # reset vector, fetched from a RAM slot) is kicked out by the signal.
        mem = vm.allocate(0x10000)
        mem.write(0xFFF0, b"\xeb\xfe")  # jmp $ (the 2-byte encoding of a self-branch)
        vm.set_user_memory_region(0, 0, 0xFFFF0000, 0x10000, mem.addr)
        result: list[b.Exit] = []

        def runner() -> None:
            with b.KickGuard():
                result.append(vcpu.run())

        t = threading.Thread(target=runner)
        t.start()
        time.sleep(0.2)
        assert t.is_alive() and not result  # still in the guest
        assert t.ident is not None
        vcpu.kick(t.ident)
        t.join(5)
        assert not t.is_alive()
        assert result == [b.SimpleExit(b.ExitReason.INTR)]


def test_host_memory_bounds() -> None:
    with b.HostMemory(b.PAGE_SIZE) as mem:
        mem.write_u64(8, 0x1122334455667788)
        assert mem.read(8, 8) == (0x1122334455667788).to_bytes(8, "little")
        with pytest.raises(ValueError, match="outside"):
            mem.read(b.PAGE_SIZE - 4, 8)
    with pytest.raises(ValueError, match="multiple of 4 KiB"):
        b.HostMemory(100)
