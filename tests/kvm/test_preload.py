"""The LD_PRELOAD ioctl shim: built here, it logs KVM ioctls in strace's form, decoded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmmu.kvm.capture import QUIRK_SLOT_ZAP_ALL, KernelInfo, with_quirks
from kvmmu.kvm.preload import LOG_ENV, PreloadError, build, environment
from kvmmu.kvm.strace import parse_strace

# A dynamically linked program making the ioctls a VMM makes, on /dev/null: the kernel refuses
# them (ENOTTY), the shim logs them on the way (include/uapi/linux/kvm.h numbers and layouts).
PROGRAM = r"""
import fcntl, struct
null = open("/dev/null", "rb")
fd = null.fileno()
calls = [
    (0x4020AE46, struct.pack("=IIQQQ", 5 | (1 << 16), 2, 0xFEBE0000, 65536, 0x7F0012340000)),
    (0x4010AE67, struct.pack("=QII", 0xA0000, 0x20000, 0)),
    (0x4068AEA3, struct.pack("=II4Q64x", 213, 0, 0x80, 0, 0, 0)),
]
for req, arg in calls:
    try:
        fcntl.ioctl(fd, req, arg)
    except OSError:
        pass
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the shim (apt-get install gcc)")
    return build(tmp_path_factory.mktemp("shim"))


def test_the_shim_logs_memslot_coalesced_and_quirk_ioctls_decoded(shim: Path, tmp_path: Path) -> None:
    log = tmp_path / "ioctl.log"
    subprocess.run([sys.executable, "-c", PROGRAM], env=environment(shim, log), check=True, timeout=60)
    parsed = parse_strace(log.read_text())
    (call,) = parsed.calls
    assert (call.address_space, call.slot, call.flags, call.gpa, call.size) == (1, 5, 2, 0xFEBE0000, 65536)
    assert call.hva == 0x7F0012340000 and call.errno == "ENOTTY"
    assert parsed.zones == [(0xA0000, 0x20000, 0)]
    assert parsed.disabled_quirks == QUIRK_SLOT_ZAP_ALL
    assert with_quirks(KernelInfo(), parsed).slot_zap == "slot"


def test_without_the_log_variable_the_shim_only_passes_calls_through(shim: Path, tmp_path: Path) -> None:
    env = environment(shim, tmp_path / "unused.log")
    del env[LOG_ENV]
    subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True, timeout=60)
    assert not (tmp_path / "unused.log").exists()


def test_a_missing_compiler_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PreloadError, match="no C compiler"):
        build(tmp_path, cc="no-such-cc")
