"""Errors of the model, shaped like the kernel's: an ioctl refusal carries its errno name.

Design. ``KVM_SET_USER_MEMORY_REGION`` refuses a request with one errno and no further detail; a
model meant for people who debug VMMs should say *why* as well, without losing the errno that a
differential test compares against the real kernel.  So there is one exception type for every
refusal, :class:`KvmError`, with ``errno_name`` for machines and a sentence for people.
"""

from __future__ import annotations

import errno as _errno


class KvmError(Exception):
    """An ioctl-level refusal: ``errno_name`` is ``"EINVAL"``, ``"EEXIST"``, ``"ENOENT"``, ..."""

    def __init__(self, errno_name: str, message: str) -> None:
        if not hasattr(_errno, errno_name):
            raise ValueError(f"unknown errno name {errno_name!r}")
        super().__init__(f"{errno_name}: {message}")
        self.errno_name = errno_name
        self.errno: int = getattr(_errno, errno_name)
        self.message = message


class OracleViolation(AssertionError):
    """Raised in strict mode when an access observed what the memslots in force contradict."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report
