"""Compiled and interpreted modules: what ``make compiled`` builds, and running interpreted anyway.

Design. The model's hot modules are ``mypy --strict`` clean, so mypyc can compile them to C
extensions (``make compiled``; ``make pure`` removes them).  The extensions sit next to their
sources and Python's path finder prefers them: ``FileFinder`` tries the extension suffixes before
``.py`` (``importlib._bootstrap_external._get_supported_file_loaders``).  Without a C compiler
nothing is built and the same sources run interpreted: the fallback needs no code of its own.

Compiled generators have no Python frames, and the interleaving explorer (:mod:`kvmmu.check`)
reads the protocol generators' frames and locals.  So the explorer runs interpreted: with
``KVMMU_INTERPRETED=1`` in the environment, or for a ``kvmmu check`` command line, the package's
``__init__`` installs :class:`SourceOnlyFinder` before it imports any submodule, and every
``kvmmu`` module then loads from its ``.py`` file (the same effect as PEP 451's finder protocol
used by editable installs, restricted to source loaders).

``python src/kvmmu/compiled.py sources`` prints the files to compile (one list, used by the
Makefile; run as a script it imports nothing of kvmmu, so a stale build cannot break it);
``status`` tells which modules are built; ``clean`` removes the build.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

#: The environment variable that makes every kvmmu module load from source.
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

_SRC: Final = Path(__file__).resolve().parent.parent


def sources() -> list[str]:
    """The source files of :data:`COMPILED`, relative to the ``src`` directory."""
    return [name.replace(".", "/") + ".py" for name in COMPILED]


def built() -> list[str]:
    """The modules of :data:`COMPILED` that have an extension module next to their source."""
    out = []
    for name in COMPILED:
        stem = _SRC / name.replace(".", "/")
        if any(stem.with_name(stem.name + s).exists()
               for s in importlib.machinery.EXTENSION_SUFFIXES):
            out.append(name)
    return out


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from an extension (mypyc) rather than from source."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def loaded_compiled() -> list[str]:
    """The :data:`COMPILED` modules imported in this process from their extensions."""
    return [n for n in COMPILED if n in sys.modules and is_compiled(sys.modules[n])]


class SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds ``kvmmu`` submodules from their ``.py`` files only, ignoring built extensions."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("kvmmu.") or path is None:
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
    """Load every kvmmu module imported from now on from source (idempotent)."""
    finders = sys.meta_path if meta_path is None else meta_path
    if not any(isinstance(f, SourceOnlyFinder) for f in finders):
        finders.insert(0, SourceOnlyFinder())


def clean() -> list[Path]:
    """Remove what ``make compiled`` built: each extension module next to a kvmmu source of the
    same name (also of modules since dropped from :data:`COMPILED`), mypyc's shared library
    (``<hash>__mypyc`` next to the package) and ``src/build``; nothing else."""
    removed = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        built_here = [p for p in _SRC.glob(f"kvmmu/**/*{suffix}")
                      if p.with_name(p.name[:-len(suffix)] + ".py").exists()]
        for path in [*built_here, *_SRC.glob(f"*__mypyc{suffix}")]:
            path.unlink()
            removed.append(path)
    build = _SRC / "build"
    if build.is_dir():
        import shutil

        shutil.rmtree(build)
        removed.append(build)
    return removed


def main(argv: Sequence[str]) -> int:
    """``python src/kvmmu/compiled.py sources|status|clean``."""
    what = argv[0] if argv else "status"
    if what == "sources":
        print(" ".join(sources()))
    elif what == "status":
        have = built()
        print(f"{len(have)} of {len(COMPILED)} modules compiled"
              + (f": {', '.join(have)}" if have else " (pure Python)"))
    elif what == "clean":
        for path in clean():
            print(f"removed {path.relative_to(_SRC)}")
    else:
        print(f"usage: compiled.py sources|status|clean (not {what!r})",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
