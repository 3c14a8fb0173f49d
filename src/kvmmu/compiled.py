"""Compiled and interpreted modules: what ``make compiled`` builds, and running interpreted anyway.

Design. The model's hot modules are ``mypy --strict`` clean, so mypyc can compile them to C
extensions (``make compiled``; ``make pure`` removes them).  The extensions sit next to their
sources and Python's path finder prefers them: ``FileFinder`` tries the extension suffixes before
``.py`` (``importlib._bootstrap_external._get_supported_file_loaders``).  Without a C compiler
nothing is built and the same sources run interpreted: the fallback needs no code of its own.

Two groups, built by two mypyc runs.  :data:`COMPILED` is the protocol and the data structures it
runs on; :data:`EXPLORER` is the interleaving explorer's own bookkeeping (state keys, search,
partial-order reduction, the world that resumes the threads).  Each run links its modules into
one shared library, ``<hash>__mypyc`` next to the package, the hash naming the group's modules
(mypyc/build.py ``group_name``), so the two libraries and their C files under ``src/build`` never
collide.  Inside one run mypyc compiles calls and attribute reads between its own native classes
to direct C; across runs it knows nothing of the other group, so the explorer's code treats every
protocol class (``VM``, ``ShadowPage``, ``Memslots``) as an ordinary Python class, through the
generic object protocol, and runs the same whether those modules were loaded compiled or not.

Compiled generators have no Python frames, and the explorer (:mod:`kvmmu.check`) reads the
protocol generators' frames and locals.  So the protocol runs interpreted under the explorer: with
``KVMMU_INTERPRETED=1`` in the environment, or for a ``kvmmu check`` command line, the package's
``__init__`` installs :class:`SourceOnlyFinder` before it imports any submodule, and every
``kvmmu`` module outside :data:`EXPLORER` then loads from its ``.py`` file (the same effect as PEP
451's finder protocol used by editable installs, restricted to source loaders).  The explorer's
group is left to the ordinary finders and loads compiled when built: it defines no protocol
generator (no frame the key reads is one of its own: the threads it resumes are the protocol's
generators, created by the interpreted ``Vcpu`` and ``VM``), and by the argument above it never
reads a protocol object natively.  That saves about a quarter of ``kvmmu check``'s CPU time for
the same states (``benchmarks/bench_check.py --bounds 1,2``, 2 x 2 x 2 at bound 2:
``generation`` 5.6 -> 4.1 s, ``zap-all-fast`` 9.3 -> 7.2 s, when the group was added).

Over a compiled build, mypyc's ``__setstate__`` cannot rebuild a frozen dataclass
(:func:`repair_pickling`), and a compiled class's methods cannot be patched (compiled callers
in its group call them directly): ``tests/conftest.py`` leaves out the one test that patches one.

``python src/kvmmu/compiled.py sources [protocol|explorer]`` prints one group's files to compile
(used by the Makefile, one mypyc run per group; run as a script it imports nothing of kvmmu, so a
stale build cannot break it); ``status`` tells which modules of each group are built; ``clean``
removes the build of both.
"""

from __future__ import annotations

import copyreg
import dataclasses
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

#: The environment variable that makes every kvmmu module but the explorer's load from source.
ENV: Final = "KVMMU_INTERPRETED"

#: The modules ``make compiled`` builds: the protocol and the data structures it runs on, the
#: event engine.  Not the explorer, the CLI, the reports or the KVM bindings (ctypes): they are not
#: hot, and several use dynamic features mypyc does not compile.  Not ``kvmmu.vm``, ``kvmmu.vcpu``
#: nor ``kvmmu.mmu.invalidation`` either: they are public boundaries (``VM(...)``,
#: ``vcpu.access``, ``resolve_strategy``) whose own argument checks must speak before mypyc's
#: ("int object expected"), and ``vm`` compares ``start_near_wrap is True``, which a compiled
#: ``bool | int`` parameter (a tagged int) never is; their per-access work is a call into
#: ``mmu.faults``.  Nor ``kvmmu.mmu.context``: its dataclass names ``Strategy`` for the type
#: checker only, which a compiled dataclass would look up at import.
COMPILED: Final = (
    "kvmmu.hostmem",
    "kvmmu.persistent",
    "kvmmu.spte",
    "kvmmu.sync",
    "kvmmu.memslots",
    "kvmmu.devices",
    "kvmmu.trace",
    "kvmmu.oracle",
    "kvmmu.mmu.steps",
    "kvmmu.mmu.pages",
    "kvmmu.mmu.faults",
    "kvmmu.sim.engine",
)

#: The explorer's own modules, compiled by a second mypyc run (its own group and shared library:
#: see the module docstring) and used compiled by ``kvmmu check`` over interpreted protocol
#: modules.  None defines a generator whose frame the state key reads.  Not ``scenario``,
#: ``schedule``, ``explain``, ``minimize``, ``wrap`` nor ``distributed``: they run once per
#: command, not once per state.  Two classes mypyc refuses (they subclass ``list`` and
#: ``TypeError``) live apart, uncompiled: :mod:`kvmmu.check.tables`, :mod:`kvmmu.check.errors`.
EXPLORER: Final = (
    "kvmmu.check.keys",
    "kvmmu.check.por",
    "kvmmu.check.state",
    "kvmmu.check.world",
    "kvmmu.check.explore",
)

#: The groups by the name ``sources`` takes; one mypyc run (one shared library) each.
GROUPS: Final = {"protocol": COMPILED, "explorer": EXPLORER}

_SRC: Final = Path(__file__).resolve().parent.parent
_PARAMS: Final = "__dataclass_params__"  # where @dataclass keeps its arguments (``frozen``)


def sources(group: str = "protocol") -> list[str]:
    """The source files of one group of :data:`GROUPS`, relative to the ``src`` directory."""
    return [name.replace(".", "/") + ".py" for name in GROUPS[group]]


def built() -> list[str]:
    """The modules of every group that have an extension module next to their source."""
    out = []
    for name in (*COMPILED, *EXPLORER):
        stem = _SRC / name.replace(".", "/")
        if any(stem.with_name(stem.name + s).exists()
               for s in importlib.machinery.EXTENSION_SUFFIXES):
            out.append(name)
    return out


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from an extension (mypyc) rather than from source."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def loaded_compiled(names: Sequence[str] = COMPILED) -> list[str]:
    """The modules of ``names`` (by default :data:`COMPILED`) imported in this process from their
    extensions."""
    return [n for n in names if n in sys.modules and is_compiled(sys.modules[n])]


def _rebuild(cls: Any, values: tuple[Any, ...]) -> Any:
    """Unpickle a frozen dataclass as ``dataclasses`` does for ``slots=True`` (its
    ``_dataclass_setstate``): a bare instance, each field set past the frozen ``__setattr__``."""
    obj = cls.__new__(cls)
    for f, value in zip(dataclasses.fields(cls), values, strict=True):
        object.__setattr__(obj, f.name, value)
    return obj


def _reduce_by_fields(obj: Any) -> tuple[Any, ...]:
    return _rebuild, (type(obj), tuple(getattr(obj, f.name) for f in dataclasses.fields(obj)))


def repair_pickling(names: Sequence[str] = EXPLORER) -> list[type]:
    """Make the frozen dataclasses of the modules of ``names`` loaded compiled picklable again.

    A mypyc class gets mypyc's own ``__setstate__``, which sets each attribute through the class's
    ``__setattr__`` (mypyc/lib-rt/misc_ops.c ``CPyPickle_SetState``, mypy 2.4.1); for a frozen
    dataclass that is the ``FrozenInstanceError`` guard, so every pickled ``CheckConfig``,
    ``Finding``, ``Failure`` or ``Result`` failed to load (the distributed search pickles them to
    and from its workers).  A ``copyreg`` reducer, which ``pickle`` and ``copy`` consult before the
    class's own, rebuilds them field by field instead (the pickles load in a pure process too).
    Interpreted modules are left alone.  Returns the classes registered.
    """
    done = []
    for name in loaded_compiled(names):
        for value in vars(sys.modules[name]).values():
            if (isinstance(value, type) and value.__module__ == name
                    and dataclasses.is_dataclass(value)
                    and getattr(value, _PARAMS).frozen):
                copyreg.pickle(value, _reduce_by_fields)
                done.append(value)
    return done


class SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds ``kvmmu`` submodules from their ``.py`` files only, ignoring built extensions; the
    :data:`EXPLORER` modules are left to the ordinary finders (compiled when built)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("kvmmu.") or path is None or fullname in EXPLORER:
            return None
        loaders = [(importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)]
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, *loaders).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def wants_interpreted(environ: dict[str, str] | os._Environ[str], argv: Sequence[str]) -> bool:
    """``KVMMU_INTERPRETED=1``, or a ``kvmmu check`` command line (the explorer reads frames)."""
    if environ.get(ENV, "") not in ("", "0"):
        return True
    # The console script, or ``python -m kvmmu`` (argv[0] is "-m" while the package is imported).
    program = Path(argv[0]).name if argv else ""
    return program in ("kvmmu", "__main__.py", "-m") and len(argv) > 1 and argv[1] == "check"


def install(meta_path: list[importlib.abc.MetaPathFinder] | None = None) -> None:
    """Load every kvmmu module imported from now on from source, but the explorer's group
    (idempotent)."""
    finders = sys.meta_path if meta_path is None else meta_path
    if not any(isinstance(f, SourceOnlyFinder) for f in finders):
        finders.insert(0, SourceOnlyFinder())


def clean(src: Path = _SRC, package: str = "kvmmu") -> list[Path]:
    """Remove what ``make compiled`` built under ``src``: each extension module next to a source
    of the same name in ``package`` (also of modules since dropped from a group), mypyc's shared
    libraries (one ``<hash>__mypyc`` per group next to the package, or ``<module>__mypyc`` next
    to the module of a one-module group) and ``src/build``; nothing else."""
    removed = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        built_here = [p for p in src.glob(f"{package}/**/*{suffix}")
                      if p.with_name(p.name[:-len(suffix)] + ".py").exists()
                      or p.name.endswith(f"__mypyc{suffix}")]
        for path in [*built_here, *src.glob(f"*__mypyc{suffix}")]:
            path.unlink()
            removed.append(path)
    build = src / "build"
    if build.is_dir():
        import shutil

        shutil.rmtree(build)
        removed.append(build)
    return removed


def main(argv: Sequence[str]) -> int:
    """``python src/kvmmu/compiled.py sources [protocol|explorer]|status|clean``."""
    what = argv[0] if argv else "status"
    if what == "sources" and len(argv) <= 2:
        group = argv[1] if len(argv) == 2 else "protocol"
        if group not in GROUPS:
            print(f"compiled.py sources: no group {group!r} (one of {', '.join(GROUPS)})",
                  file=sys.stderr)
            return 2
        print(" ".join(sources(group)))
    elif what == "status":
        have = built()
        if not have:
            print(f"0 of {len(COMPILED) + len(EXPLORER)} modules compiled (pure Python)")
        for group, names in GROUPS.items():
            mine = [n for n in have if n in names]
            if have:
                print(f"{group}: {len(mine)} of {len(names)} modules compiled"
                      + (f": {', '.join(mine)}" if mine else ""))
    elif what == "clean":
        for path in clean():
            print(f"removed {path.relative_to(_SRC)}")
    else:
        print(f"usage: compiled.py sources [protocol|explorer]|status|clean (not {' '.join(argv)!r})",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
