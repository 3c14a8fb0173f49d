"""A persistent sorted map from ``int`` keys: a copy-on-write B+-tree, O(log n) per operation.

Design. Memslot snapshots are read under SRCU while an update builds the next one (``struct
kvm_memslots`` in ``virt/kvm/kvm_main.c``); before Linux 5.17 every update copied the whole sorted
array, O(n) per ``KVM_SET_USER_MEMORY_REGION`` and O(n^2) to fill 32,764 slots.  Commit
a54d806688fe ("KVM: Keep memslots in tree-based structures instead of array-based ones", 5.17)
keeps an rb-tree by gfn and a hash table by id in each of two alternating sets, replaying every
change on both.  The model needs something different: every published snapshot must stay intact
for as long as any reader (vCPU, oracle, explorer) holds it.  Path copying gives exactly that
(Driscoll, Sarnak, Sleator, Tarjan, "Making data structures persistent", JCSS 1989): an update
copies the O(log n) nodes from the root to the changed leaf and shares every other node with the
previous version.

The tree is a B+-tree with up to :data:`FANOUT` entries per node, because in CPython copying one
32-element list (a ``memcpy``) costs about what allocating one binary-tree node does, so a wide node
makes the copied path short (three levels for 32k keys).  Invariants: every node is non-empty and an
inner node's ``keys[i]`` is the least key under ``items[i]``.  Deletion does not rebalance (Sen and
Tarjan, "Deletion without rebalancing in multiway search trees", ISAAC 2009 / TODS 2014): a node
that empties is unlinked and a root left with one child is replaced by it, so the height stays
bounded by the logarithm of the number of insertions, and no underflow handling is needed.

Nodes are immutable once reachable from a published map; nothing here holds global state.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Generic, TypeVar

V = TypeVar("V")

#: Most entries a node holds; a node with more is split in two halves.
FANOUT: Final = 32


class _Node:
    """A leaf (``items`` are values) or an inner node (``items`` are child nodes)."""

    __slots__ = ("items", "keys", "leaf")

    def __init__(self, leaf: bool, keys: list[int], items: list[Any]) -> None:
        self.leaf = leaf
        self.keys = keys
        self.items = items


def _set(node: _Node, key: int, value: Any) -> tuple[_Node, _Node | None, bool]:
    """``node`` with ``key`` bound to ``value``: (new node, split-off right sibling, key was new)."""
    keys = node.keys
    if node.leaf:
        i = bisect_left(keys, key)
        items = node.items.copy()
        if i < len(keys) and keys[i] == key:
            items[i] = value
            return _Node(True, keys, items), None, False  # the key list is unchanged: shared
        keys = keys.copy()
        keys.insert(i, key)
        items.insert(i, value)
        added = True
    else:
        i = bisect_right(keys, key) - 1
        if i < 0:
            i = 0  # a new least key goes into the leftmost subtree
        child, split, added = _set(node.items[i], key, value)
        keys = keys.copy()
        items = node.items.copy()
        items[i] = child
        keys[i] = child.keys[0]
        if split is not None:
            keys.insert(i + 1, split.keys[0])
            items.insert(i + 1, split)
    if len(keys) > FANOUT:
        h = len(keys) // 2
        return (_Node(node.leaf, keys[:h], items[:h]), _Node(node.leaf, keys[h:], items[h:]),
                added)
    return _Node(node.leaf, keys, items), None, added


def _delete(node: _Node, key: int) -> tuple[_Node | None, bool]:
    """``node`` without ``key``: (new node or None when it empties, whether the key was there)."""
    keys = node.keys
    if node.leaf:
        i = bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            return node, False
        if len(keys) == 1:
            return None, True
        return _Node(True, keys[:i] + keys[i + 1:], node.items[:i] + node.items[i + 1:]), True
    i = bisect_right(keys, key) - 1
    if i < 0:
        return node, False
    child, found = _delete(node.items[i], key)
    if not found:
        return node, False
    if child is None:
        if len(keys) == 1:
            return None, True
        return _Node(False, keys[:i] + keys[i + 1:], node.items[:i] + node.items[i + 1:]), True
    keys = keys.copy()
    items = node.items.copy()
    keys[i] = child.keys[0]
    items[i] = child
    return _Node(False, keys, items), True


def _values(node: _Node) -> Iterator[Any]:
    if node.leaf:
        yield from node.items
    else:
        for child in node.items:
            yield from _values(child)


def _keys(node: _Node) -> Iterator[int]:
    if node.leaf:
        yield from node.keys
    else:
        for child in node.items:
            yield from _keys(child)


_EMPTY: Final = _Node(True, [], [])


class SortedMap(Mapping[int, V], Generic[V]):
    """An immutable map ``int -> V`` in key order; :meth:`set` and :meth:`delete` return new maps.

    A new map shares all but O(log n) nodes with the one it came from, which stays valid.
    """

    __slots__ = ("_len", "_root")

    def __init__(self, items: Iterable[tuple[int, V]] = (), _root: _Node = _EMPTY,
                 _length: int = 0) -> None:
        self._root: _Node = _root
        self._len = _length
        for k, v in items:
            self._root, self._len = self._with(k, v)

    def _make(self, root: _Node, length: int) -> SortedMap[V]:
        return SortedMap((), root, length)

    def _with(self, key: int, value: V) -> tuple[_Node, int]:
        root, split, added = _set(self._root, key, value)
        if split is not None:
            root = _Node(False, [root.keys[0], split.keys[0]], [root, split])
        return root, self._len + added

    def set(self, key: int, value: V) -> SortedMap[V]:
        """This map with ``key`` bound to ``value``."""
        root, length = self._with(key, value)
        return self._make(root, length)

    def delete(self, key: int) -> SortedMap[V]:
        """This map without ``key`` (itself if the key is absent)."""
        root, found = _delete(self._root, key)
        if not found:
            return self
        if root is None:
            return self._make(_EMPTY, 0)
        while not root.leaf and len(root.keys) == 1:
            root = root.items[0]
        return self._make(root, self._len - 1)

    def floor(self, key: int) -> tuple[int, V] | None:
        """The entry with the greatest key ``<= key``, or None."""
        node = self._root
        while True:
            i = bisect_right(node.keys, key) - 1
            if i < 0:
                return None
            if node.leaf:
                return node.keys[i], node.items[i]
            node = node.items[i]

    def get(self, key: int, default: Any = None) -> Any:
        node = self._root
        while not node.leaf:
            i = bisect_right(node.keys, key) - 1
            if i < 0:
                return default
            node = node.items[i]
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return node.items[i]
        return default

    def __getitem__(self, key: int) -> V:
        missing = _MISSING
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.get(key, _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[int]:
        return _keys(self._root)

    def __len__(self) -> int:
        return self._len

    def values_in_order(self) -> Iterator[V]:
        """The values in key order (faster than going through the keys)."""
        return _values(self._root)

    def height(self) -> int:
        """Levels from the root to the leaves (1 for a single leaf)."""
        node, h = self._root, 1
        while not node.leaf:
            node, h = node.items[0], h + 1
        return h

    def __repr__(self) -> str:
        return f"SortedMap({dict(self.items())!r})"


_MISSING: Final = object()
