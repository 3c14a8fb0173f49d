"""An ``LD_PRELOAD`` shim around ``ioctl``: memslot calls logged without ptrace's slowdown.

Design. strace stops the VMM twice per system call; a VMM that makes thousands of ``KVM_RUN``
calls runs visibly slower under it.  A shared object preloaded into the VMM wraps libc's ``ioctl``
(``dlsym(RTLD_NEXT, "ioctl")``), times the calls that matter on ``CLOCK_MONOTONIC`` (the trace's
``mono`` clock, so no clock conversion) and appends one line per call to a log, *in strace's
printed form*, so that :mod:`kvmmu.kvm.strace` reads both.  Being inside the process it also
decodes what strace 6.1 prints as a bare pointer: ``KVM_REGISTER_COALESCED_MMIO`` zones and
``KVM_ENABLE_CAP`` (whose ``KVM_CAP_DISABLE_QUIRKS2`` says whether the VMM turned off
``KVM_X86_QUIRK_SLOT_ZAP_ALL``), and ``KVM_SET_USER_MEMORY_REGION2``.

The C source lives here as text and is compiled on the machine that captures (``cc -shared``), into
a temporary directory: no compiled binary is shipped or committed.  Limits, said where they bite:
a statically linked VMM (Firecracker's and cloud-hypervisor's release builds are static musl
binaries) ignores ``LD_PRELOAD``, and a VMM that issues ``syscall(SYS_ioctl, ...)`` directly
bypasses the wrapper; use strace for those.

Prior art: ``libfaketime`` and ``ltrace``-style interposers (``dlsym(RTLD_NEXT)`` wrappers); the
output follows strace's ``src/kvm.c`` decoders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: The environment variable naming the log the shim appends to.
LOG_ENV = "KVMMU_PRELOAD_LOG"

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#ifndef KVM_SET_USER_MEMORY_REGION2
struct kvm_userspace_memory_region2 {
    __u32 slot; __u32 flags; __u64 guest_phys_addr; __u64 memory_size; __u64 userspace_addr;
    __u64 guest_memfd_offset; __u32 guest_memfd; __u32 pad1; __u64 pad2[14];
};
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#endif

static int (*real_ioctl)(int, unsigned long, ...);
static int log_fd = -1;

__attribute__((constructor)) static void kvmmu_init(void) {
    real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
    const char *path = getenv("KVMMU_PRELOAD_LOG");
    if (path != NULL)
        log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

static long long kvmmu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *kvmmu_errname(int e) {
    switch (e) {
    case EPERM: return "EPERM"; case ENOENT: return "ENOENT"; case EINTR: return "EINTR";
    case EBADF: return "EBADF"; case EAGAIN: return "EAGAIN"; case ENOMEM: return "ENOMEM";
    case EFAULT: return "EFAULT"; case EBUSY: return "EBUSY"; case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL"; case ENOSPC: return "ENOSPC"; case E2BIG: return "E2BIG";
    case ENXIO: return "ENXIO"; case ENOTTY: return "ENOTTY"; case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "EUNKNOWN";
    }
}

int ioctl(int fd, unsigned long req, ...) {
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (real_ioctl == NULL)
        real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
    if (log_fd < 0 || (req != KVM_SET_USER_MEMORY_REGION && req != KVM_SET_USER_MEMORY_REGION2
                       && req != KVM_RUN && req != KVM_REGISTER_COALESCED_MMIO
                       && req != KVM_ENABLE_CAP && req != KVM_CREATE_IRQCHIP))
        return real_ioctl(fd, req, arg);
    long long t0 = kvmmu_now();
    int ret = real_ioctl(fd, req, arg);
    int err = errno;
    long long t1 = kvmmu_now();
    char line[768];
    int n = snprintf(line, sizeof line, "%ld %lld.%09lld ioctl(%d, ", (long)syscall(SYS_gettid),
                     t0 / 1000000000LL, t0 % 1000000000LL, fd);
    if (req == KVM_SET_USER_MEMORY_REGION) {
        const struct kvm_userspace_memory_region *r = arg;
        n += snprintf(line + n, sizeof line - n,
                      "KVM_SET_USER_MEMORY_REGION, {slot=%u, flags=%#x, guest_phys_addr=%#llx, "
                      "memory_size=%llu, userspace_addr=%#llx})", r->slot, r->flags,
                      (unsigned long long)r->guest_phys_addr, (unsigned long long)r->memory_size,
                      (unsigned long long)r->userspace_addr);
    } else if (req == KVM_SET_USER_MEMORY_REGION2) {
        const struct kvm_userspace_memory_region2 *r = arg;
        n += snprintf(line + n, sizeof line - n,
                      "KVM_SET_USER_MEMORY_REGION2, {slot=%u, flags=%#x, guest_phys_addr=%#llx, "
                      "memory_size=%llu, userspace_addr=%#llx, guest_memfd_offset=%llu, "
                      "guest_memfd=%u})", r->slot, r->flags, (unsigned long long)r->guest_phys_addr,
                      (unsigned long long)r->memory_size, (unsigned long long)r->userspace_addr,
                      (unsigned long long)r->guest_memfd_offset, r->guest_memfd);
    } else if (req == KVM_REGISTER_COALESCED_MMIO) {
        const struct kvm_coalesced_mmio_zone *z = arg;
        n += snprintf(line + n, sizeof line - n,
                      "KVM_REGISTER_COALESCED_MMIO, {addr=%#llx, size=%u, pio=%u})",
                      (unsigned long long)z->addr, z->size, z->pio);
    } else if (req == KVM_ENABLE_CAP) {
        const struct kvm_enable_cap *c = arg;
        n += snprintf(line + n, sizeof line - n,
                      "KVM_ENABLE_CAP, {cap=%u, flags=%#x, args=[%#llx, %#llx, %#llx, %#llx]})",
                      c->cap, c->flags, (unsigned long long)c->args[0], (unsigned long long)c->args[1],
                      (unsigned long long)c->args[2], (unsigned long long)c->args[3]);
    } else if (req == KVM_RUN) {
        n += snprintf(line + n, sizeof line - n, "KVM_RUN, 0)");
    } else {
        n += snprintf(line + n, sizeof line - n, "KVM_CREATE_IRQCHIP, 0)");
    }
    long long d = t1 - t0;
    if (ret < 0)
        n += snprintf(line + n, sizeof line - n, " = -1 %s (%s) <%lld.%09lld>\n", kvmmu_errname(err),
                      strerror(err), d / 1000000000LL, d % 1000000000LL);
    else
        n += snprintf(line + n, sizeof line - n, " = %d <%lld.%09lld>\n", ret, d / 1000000000LL,
                      d % 1000000000LL);
    if (n > 0 && n < (int)sizeof line)
        (void)!write(log_fd, line, (size_t)n);  /* O_APPEND: one write per line, never interleaved */
    errno = err;
    return ret;
}
"""


class PreloadError(RuntimeError):
    """The shim cannot be built here (no C compiler, no kernel headers)."""


def build(directory: Path, cc: str = "cc") -> Path:
    """Compile the shim into ``directory``; return the shared object's path."""
    compiler = shutil.which(cc)
    if compiler is None:
        raise PreloadError(f"no C compiler ({cc}) to build the LD_PRELOAD shim (apt-get install gcc)")
    src = directory / "kvmmu_ioctl.c"
    out = directory / "kvmmu_ioctl.so"
    src.write_text(SOURCE, encoding="utf-8")
    proc = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["unknown error"])[0]
        raise PreloadError(f"cannot build the LD_PRELOAD shim: {first}")
    return out


def environment(shim: Path, log: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The command's environment: the shim preloaded (after any preload already asked for)."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(p for p in (env.get("LD_PRELOAD", ""), str(shim)) if p)
    env[LOG_ENV] = str(log)
    return env
