"""The explorer's errors that subclass a built-in exception other than ``Exception`` itself.

Design. :class:`UnknownLocalError` is a ``TypeError`` (a local of a type the state key cannot
canonicalise is a type error of the key, and callers may catch it as such).  It is raised by
:mod:`kvmmu.check.state` and :mod:`kvmmu.check.keys`, which ``make compiled`` compiles with mypyc
(:data:`kvmmu.compiled.EXPLORER`); mypyc refuses native classes that inherit from most built-in
types, ``TypeError`` among them ("Inheriting from most builtin types is unimplemented",
mypyc/irbuild/prepare.py), so the class is defined here, in a module that is never compiled, and
``kvmmu.check.state`` re-exports it under its old name.
"""

from __future__ import annotations


class UnknownLocalError(TypeError):
    """A generator local of a type the key does not know how to canonicalise."""


def not_a_generator(delegate: object) -> UnknownLocalError:
    """The error for a protocol thread that delegates to something other than a generator.

    The usual cause is a compiled protocol (``make compiled``): mypyc's generators have no frames
    to read, and the process did not load the protocol from source, as ``kvmmu check`` does.
    """
    return UnknownLocalError(
        f"a protocol thread delegates to {type(delegate).__qualname__}, not a generator (a "
        "protocol compiled with mypyc? the explorer reads the generators' frames: run it as "
        "`kvmmu check` or with KVMMU_INTERPRETED=1 in the environment)")
