"""KVM's binary statistics (``KVM_GET_STATS_FD``): a header, descriptors, then u64 values.

Design. Since Linux 5.14 every VM and vCPU exposes its counters through a file descriptor in a
self-describing binary format (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"): a header,
an id string, one descriptor per statistic (flags, exponent, size, offset, name), and a data
block.  The descriptors never change for the life of the fd, so :class:`StatsReader` parses them
once and each :meth:`StatsReader.read` is a single ``pread`` of the data block.  That makes a
before/after reading around one guest step cheap enough to take for every step.

The names are KVM's own (``exits``, ``mmio_exits``, ``pf_taken`` on a vCPU; ``mmu_shadow_zapped``,
``pages_4k`` on a VM), so that figures line up with the model's ``kvmmu.stats`` counters.

Prior art: ``tools/testing/selftests/kvm/lib/kvm_util.c`` (``read_stats_header``,
``read_stats_descriptors``, ``__vm_get_stat``) and ``tools/kvm/kvm_stat`` (the Python reader of the
same format).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

u16, u32, s16 = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int16


class KvmStatsDescHead(ctypes.Structure):
    """``struct kvm_stats_desc`` without its trailing ``name[name_size]``."""

    _fields_ = [
        ("flags", u32),
        ("exponent", s16),
        ("size", u16),
        ("offset", u32),
        ("bucket_size", u32),
    ]


class KvmStatsHeader(ctypes.Structure):
    """``struct kvm_stats_header`` at offset 0 of a binary stats fd."""

    _fields_ = [
        ("flags", u32),
        ("name_size", u32),
        ("num_desc", u32),
        ("id_offset", u32),
        ("desc_offset", u32),
        ("data_offset", u32),
    ]


# Binary stats (KVM_GET_STATS_FD)


KVM_STATS_TYPE_MASK = 0xF
KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT, KVM_STATS_TYPE_PEAK = 0, 1, 2


@dataclass(frozen=True, slots=True)
class StatDesc:
    """One descriptor of a binary stats fd."""

    name: str
    flags: int
    exponent: int
    size: int  # number of u64 values (1 for counters, more for histograms)
    offset: int  # from the data block


class StatsReader:
    """Parses a ``KVM_GET_STATS_FD`` file once (header + descriptors) and reads values by name.

    Layout (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"): header, id string, descriptors
    (each ``struct kvm_stats_desc`` followed by ``name_size`` bytes of name), then the data
    block of u64 values which ``pread`` re-reads on every :meth:`read`.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:
            head = KvmStatsHeader.from_buffer_copy(os.pread(fd, ctypes.sizeof(KvmStatsHeader), 0))
            self.id = os.pread(fd, head.name_size, head.id_offset).split(b"\0", 1)[0].decode()
            desc_size = ctypes.sizeof(KvmStatsDescHead) + head.name_size
            raw = os.pread(fd, desc_size * head.num_desc, head.desc_offset)
            descs: dict[str, StatDesc] = {}
            for i in range(head.num_desc):
                chunk = raw[i * desc_size : (i + 1) * desc_size]
                d = KvmStatsDescHead.from_buffer_copy(chunk[: ctypes.sizeof(KvmStatsDescHead)])
                name = chunk[ctypes.sizeof(KvmStatsDescHead) :].split(b"\0", 1)[0].decode()
                descs[name] = StatDesc(
                    name, int(d.flags), int(d.exponent), int(d.size), int(d.offset)
                )
            self.descriptors = descs
            self._data_offset = int(head.data_offset)
            self._data_len = max((d.offset + 8 * d.size for d in descs.values()), default=0)
        except BaseException:
            os.close(fd)
            raise

    def read(self) -> dict[str, int]:
        """Every scalar stat (size 1) by name; histograms are summed."""
        data = os.pread(self.fd, self._data_len, self._data_offset)
        out: dict[str, int] = {}
        for d in self.descriptors.values():
            vals = [
                int.from_bytes(data[d.offset + 8 * i : d.offset + 8 * i + 8], "little")
                for i in range(d.size)
            ]
            out[d.name] = sum(vals)
        return out

    def get(self, name: str) -> int:
        d = self.descriptors[name]
        raw = os.pread(self.fd, 8 * d.size, self._data_offset + d.offset)
        return sum(int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(d.size))

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


assert ctypes.sizeof(KvmStatsHeader) == 24 and ctypes.sizeof(KvmStatsDescHead) == 16
