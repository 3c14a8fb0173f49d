"""The persistent sorted map: behaves like a dict kept in key order, and old versions stay intact."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmmu.persistent import FANOUT, SortedMap

ops = st.lists(st.tuples(st.booleans(), st.integers(-50, 400), st.integers()), max_size=300)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_every_version_behaves_like_the_dict_it_was_built_from(
        ops: list[tuple[bool, int, int]]) -> None:
    m: SortedMap[int] = SortedMap()
    ref: dict[int, int] = {}
    versions: list[tuple[SortedMap[int], dict[int, int]]] = [(m, {})]
    for insert, k, v in ops:
        if insert:
            m, ref[k] = m.set(k, v), v
        else:
            m = m.delete(k)
            ref.pop(k, None)
        versions.append((m, dict(ref)))
    for version, want in versions:  # the old ones too: nothing was shared destructively
        assert list(version) == sorted(want) and len(version) == len(want)
        assert list(version.values_in_order()) == [want[k] for k in sorted(want)]
        assert all(version.get(k) == want.get(k) and (k in version) == (k in want)
                   for k in range(-52, 403))


@settings(max_examples=100, deadline=None)
@given(keys=st.sets(st.integers(0, 10_000), max_size=200), probe=st.integers(-5, 10_005))
def test_floor_is_the_greatest_key_not_above(keys: set[int], probe: int) -> None:
    m = SortedMap((k, -k) for k in keys)
    below = [k for k in keys if k <= probe]
    assert m.floor(probe) == ((max(below), -max(below)) if below else None)


def test_the_tree_stays_logarithmic_when_filled_and_emptied() -> None:
    n = 32764
    m: SortedMap[int] = SortedMap()
    for k in range(n):
        m = m.set(k * 3, k)
    assert m.height() <= 1 + math.ceil(math.log(n, FANOUT // 2))
    for k in range(0, n - 10):
        m = m.delete(k * 3)
    assert list(m) == [k * 3 for k in range(n - 10, n)]
    assert m.height() <= 2  # a root left with one child is replaced by it


def test_a_missing_key_raises_key_error_and_deleting_it_changes_nothing() -> None:
    m = SortedMap([(1, "a")])
    assert m.delete(2) is m and m[1] == "a"
    with pytest.raises(KeyError):
        m[2]
