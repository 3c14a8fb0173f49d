"""Tests of kvmmu.check.errors: the explorer's errors say what to do."""

from __future__ import annotations

import pytest

from kvmmu.check.errors import UnknownLocalError
from kvmmu.check.state import frames


def test_a_thread_delegating_to_a_non_generator_names_the_compiled_protocol_and_the_fix() -> None:
    # A mypyc-compiled protocol generator is not a GeneratorType and has no frame to read.
    with pytest.raises(UnknownLocalError) as info:
        frames(iter(()))
    text = str(info.value)
    assert "tuple_iterator, not a generator" in text
    assert "KVMMU_INTERPRETED=1" in text and "kvmmu check" in text
    assert isinstance(info.value, TypeError)
