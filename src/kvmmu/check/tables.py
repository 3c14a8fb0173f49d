"""The explorer's tracked shadow-page table: a ``list`` subclass, kept out of the compiled build.

Design. :mod:`kvmmu.check.keys` hashes shadow pages incrementally (Zobrist-style): the first time
it sees a page it swaps the page's ``spt`` list for a :class:`TrackedTable`, which notes the
indices the protocol writes, so a page's hash is brought up to date from those entries only.  The
table must *be* a list (the protocol indexes, slices and scans ``spt`` with the list's own C
methods, and ``type(x) is list`` fast paths stay valid for reads), so it subclasses ``list``.

It lives in its own module because ``make compiled`` compiles the explorer's modules with mypyc
(:data:`kvmmu.compiled.EXPLORER`), and mypyc refuses a native class that inherits from ``list``
("Inheriting from most builtin types is unimplemented", mypyc/irbuild/prepare.py).  A module
mypyc does not compile keeps it an ordinary Python class, which the compiled ``keys`` uses
through the generic object protocol; writes to it are rare (one Python call each), reads are the
list's own.  The alternative, ``@mypyc_attr(native_class=False)``, would make ``mypy_extensions`` a
run-time dependency of the pure package.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, SupportsIndex, overload


class TrackedTable(list[int]):
    """A shadow page's ``spt`` that remembers which entries were written since it was hashed.

    ``pending`` holds written indices, or is None when every entry must be looked at (a slice
    assignment: the page was freed).  ``total`` is the sum of the live entries' terms.
    """

    __slots__ = ("page_term", "page_term_of", "pending", "terms", "total")

    def __init__(self, values: Iterable[int]) -> None:
        super().__init__(values)
        self.pending: set[int] | None = None
        self.terms: dict[int, int] = {}
        self.total = 0
        self.page_term = 0
        self.page_term_of: tuple[bool, int] | None = None

    @overload
    def __setitem__(self, index: SupportsIndex, value: int) -> None: ...

    @overload
    def __setitem__(self, index: slice, value: Iterable[int]) -> None: ...

    def __setitem__(self, index: Any, value: Any) -> None:
        list.__setitem__(self, index, value)
        pending = self.pending
        if pending is not None:
            if type(index) is int:
                pending.add(index)
            else:
                self.pending = None
