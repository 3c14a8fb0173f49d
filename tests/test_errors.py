"""Errors carry the errno name for machines and a sentence for people."""

from __future__ import annotations

import pytest

from kvmmu.errors import KvmError


def test_a_kvm_error_carries_errno_name_number_and_reason() -> None:
    e = KvmError("EEXIST", "overlaps slot 3")
    assert (e.errno_name, e.errno, e.message) == ("EEXIST", 17, "overlaps slot 3")
    assert str(e) == "EEXIST: overlaps slot 3"


def test_an_unknown_errno_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown errno"):
        KvmError("EWHATEVER", "x")
