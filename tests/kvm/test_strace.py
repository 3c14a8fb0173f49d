"""The strace memslot-log parser: every printed form strace uses, and refusals of non-logs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmmu.kvm.strace import MEM_FLAGS, MemslotCall, StraceError, parse_strace

QEMU_LINES = """\
9995  1796426935.735900000 ioctl(3, KVM_CREATE_VM, 0) = 8 <0.000279000>
9995  1796426935.742198000 ioctl(8, KVM_CREATE_IRQCHIP, 0) = 0 <0.004019000>
9995  1796426935.795028000 ioctl(8, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=0, \
guest_phys_addr=0, memory_size=536870912, userspace_addr=0x7f582be00000}) = 0 <0.011046000>
9995  1796426935.807566000 ioctl(8, KVM_REGISTER_COALESCED_MMIO, 0x7ffc83245bc0) = 0 <0.000014000>
9997  1796426935.878746000 ioctl(9, KVM_RUN, 0) = -1 EINTR (Interrupted system call) <0.000048000>
9997  1796426935.904346000 ioctl(8, KVM_SET_USER_MEMORY_REGION, {slot=4, flags=KVM_MEM_READONLY, \
guest_phys_addr=0xfebe0000, memory_size=0, userspace_addr=0x7f582bea0000}) = 0 <0.000214000>
9997  1796426935.910000000 +++ exited with 0 +++
"""


def test_a_qemu_log_gives_its_memslot_calls_with_ns_times_durations_and_threads() -> None:
    log = parse_strace(QEMU_LINES)
    assert log.calls == [
        MemslotCall(1796426935795028000, 11046000, 9995, 0, 0, 0, 0, 512 << 20, 0x7F582BE00000),
        MemslotCall(1796426935904346000, 214000, 9997, 4, 0, 2, 0xFEBE0000, 0, 0x7F582BEA0000),
    ]
    assert log.calls[1].is_delete and not log.calls[0].is_delete
    assert log.vcpu_tids == [9997] and log.kvm_runs == 1
    assert log.irqchip and log.coalesced_zones == 1
    assert log.tids == {9995, 9997}


def test_unfinished_calls_are_joined_with_their_resumption_on_the_same_thread() -> None:
    text = (
        "[pid  10] 12:00:00.000100 ioctl(5, KVM_SET_USER_MEMORY_REGION, {slot=65537, "
        "flags=KVM_MEM_LOG_DIRTY_PAGES|KVM_MEM_READONLY, guest_phys_addr=0x1000, memory_size=4096, "
        "userspace_addr=0x7000} <unfinished ...>\n"
        "[pid  11] 12:00:00.000150 ioctl(6, KVM_RUN, 0 <unfinished ...>\n"
        "[pid  10] 12:00:00.000400 <... ioctl resumed>) = -1 EEXIST (File exists)\n"
    )
    (call,) = parse_strace(text).calls
    # Bits 16-31 of the slot field name the address space (Documentation/virt/kvm/api.rst).
    assert (call.address_space, call.slot, call.flags) == (1, 1, 3)
    assert call.errno == "EEXIST" and not call.ok
    # Without -T the resumption still bounds the call.
    assert call.dur_ns == 300_000 and call.tid == 10


def test_time_of_day_stamps_keep_increasing_past_midnight() -> None:
    line = (
        "{t} ioctl(5, KVM_SET_USER_MEMORY_REGION, {{slot=1, flags=0, guest_phys_addr=0, "
        "memory_size={size}, userspace_addr=0x7000}}) = 0\n"
    )
    log = parse_strace(line.format(t="23:59:59.999000", size=4096) + line.format(t="00:00:00.001000", size=0))
    first, second = log.calls
    assert second.t_ns - first.t_ns == 2_000_000


def test_a_call_that_never_returned_is_kept_with_errno_question_mark() -> None:
    text = (
        "ioctl(5, KVM_SET_USER_MEMORY_REGION, {slot=1, flags=0, guest_phys_addr=0, memory_size=0, "
        "userspace_addr=0}) = ?\n+++ killed by SIGKILL +++\n"
    )
    (call,) = parse_strace(text).calls
    assert call.errno == "?" and call.tid == 0


def test_undecoded_memslot_ioctls_are_counted_not_dropped_silently() -> None:
    text = "7 1.000000 ioctl(8, _IOC(_IOC_WRITE, 0xae, 0x46, 0x20), 0x7ffd0000) = 0 <0.000010>\n"
    log = parse_strace(text)
    assert log.undecoded == 1 and log.calls == []


def test_memory_region2_is_read_like_the_first_version() -> None:
    text = (
        "1 2.5 ioctl(8, KVM_SET_USER_MEMORY_REGION2, {slot=3, flags=KVM_MEM_GUEST_MEMFD, "
        "guest_phys_addr=0x100000, memory_size=2097152, userspace_addr=0x7f0000000000, "
        "guest_memfd_offset=0, guest_memfd=12}) = 0 <0.000020>\n"
    )
    (call,) = parse_strace(text).calls
    assert call.ioctl == "KVM_SET_USER_MEMORY_REGION2" and call.flags == 4 and call.size == 2 << 20


@pytest.mark.parametrize(
    "text",
    ["", "hello world\n", '{"format": 1}\n'],
)
def test_text_that_is_not_an_strace_log_is_refused(text: str) -> None:
    with pytest.raises(StraceError, match="not an strace log"):
        parse_strace(text)


def test_a_memslot_ioctl_with_an_unknown_flag_name_is_an_error_naming_the_line() -> None:
    text = (
        "1 1.0 ioctl(8, KVM_SET_USER_MEMORY_REGION, {slot=1, flags=KVM_MEM_BOGUS, guest_phys_addr=0, "
        "memory_size=0, userspace_addr=0}) = 0\n"
    )
    with pytest.raises(StraceError, match="line 1"):
        parse_strace(text)


regions = st.builds(
    MemslotCall,
    t_ns=st.integers(10**18, 2 * 10**18).map(lambda t: t - t % 1000),
    dur_ns=st.integers(0, 10**9).map(lambda d: d - d % 1000),
    tid=st.integers(1, 1 << 22),
    slot=st.integers(0, 0xFFFF),
    address_space=st.integers(0, 1),
    flags=st.sampled_from([0, 1, 2, 3, 4]),
    gpa=st.integers(0, (1 << 52) - 1).map(lambda g: g & ~0xFFF),
    size=st.integers(0, 1 << 40).map(lambda s: s & ~0xFFF),
    hva=st.integers(0, (1 << 47) - 1),
)


def _strace_line(c: MemslotCall, hex_numbers: bool) -> str:
    names = [n for n, b in MEM_FLAGS.items() if c.flags & b]
    flags = "|".join(names) if names else "0"
    num = hex if hex_numbers else str
    return (
        f"{c.tid}  {c.t_ns // 10**9}.{c.t_ns % 10**9 // 1000:06d} ioctl(8, KVM_SET_USER_MEMORY_REGION, "
        f"{{slot={num((c.address_space << 16) | c.slot)}, flags={flags}, guest_phys_addr={num(c.gpa)}, "
        f"memory_size={c.size}, userspace_addr={hex(c.hva)}}}) = 0 <{c.dur_ns / 1e9:.6f}>"
    )


@given(st.lists(regions, min_size=1, max_size=5), st.booleans())
def test_any_decoded_call_strace_prints_reads_back_as_the_same_call(
    calls: list[MemslotCall], hx: bool
) -> None:
    text = "\n".join(_strace_line(c, hx) for c in calls)
    assert parse_strace(text).calls == calls
