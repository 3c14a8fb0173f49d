"""Shared fixtures for the tests that drive the real /dev/kvm.

Tests marked ``@pytest.mark.kvm`` (the marker is declared in pyproject.toml) are skipped, with the
reason, where /dev/kvm is missing or unusable; where it works (development machines and CI, as
root) they run.  ``no_fd_leak`` fails a test that leaves descriptors open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kvmmu.kvm.bindings import kvm_available

KVM_UNAVAILABLE = kvm_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if KVM_UNAVAILABLE is None:
        return
    skip = pytest.mark.skip(reason=f"needs a usable /dev/kvm: {KVM_UNAVAILABLE}")
    for item in items:
        if item.get_closest_marker("kvm") is not None:
            item.add_marker(skip)


def open_fds() -> int:
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves descriptors open."""
    before = open_fds()
    yield
    assert open_fds() == before, "file descriptors leaked"
