"""TOML files validated with pydantic: reading them, and naming where an error is.

Design. Scenarios (``sim``, ``check``, ``kvm``) and cost profiles are TOML files a person writes,
so every error must be one line naming the file, the field and what is allowed.  The parts all
loaders share live here: reading and parsing the file with the standard library's :mod:`tomllib`
(turning I/O, encoding and syntax errors into the loader's own error type), and spelling a
pydantic error location as a dotted path (``vmm[2].at``).  What is allowed at a field is each
loader's own knowledge and stays with it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Location parts pydantic inserts that name no field of the file.
PYDANTIC_TAGS = frozenset({"__post_init__", "function-after", "function-before"})


def field_path(loc: Sequence[Any], skip: Iterable[str] = PYDANTIC_TAGS) -> str:
    """A pydantic error location as the file's dotted path: ``("vmm", 2, "at")`` -> ``vmm[2].at``."""
    skipped = frozenset(skip)
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in skipped:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_toml(text: str, source: str, error: type[Exception]) -> dict[str, Any]:
    """``text`` parsed; a syntax error becomes ``error("<source>: not valid TOML: ...")``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc}") from None


def read_toml(path: str | Path, error: type[Exception], what: str = "") -> dict[str, Any]:
    """The file at ``path`` parsed; unreadable, non-UTF-8 or invalid files raise ``error``.

    ``what`` names the kind of file in the "cannot read" message ("cannot read scenario: ...").
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        label = f"cannot read {what}" if what else "cannot read"
        raise error(f"{p}: {label}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{p}: not a UTF-8 text file") from None
    return parse_toml(text, str(p), error)


#: The kinds of scenario file, by the top-level ``kind`` key (see :mod:`kvmmu.scenarios`).
SCENARIO_KINDS: tuple[str, ...] = ("workload", "interleaving", "steps")


def take_kind(data: dict[str, Any], kind: str, source: str, error: type[Exception]) -> dict[str, Any]:
    """``data`` without its optional top-level ``kind`` key, which must name ``kind`` if present.

    Every scenario file may say what it is (``kind = "workload"``); a loader accepts its own kind
    and names the command that takes any other one.
    """
    if "kind" not in data:
        return data
    rest = dict(data)
    given = rest.pop("kind")
    if given != kind:
        if given in SCENARIO_KINDS:
            raise error(f"{source}: kind: {given!r}, but {kind!r} scenarios are needed here "
                        "(kvmmu run takes workload, check interleaving, diff steps)")
        raise error(f"{source}: kind: must be one of {', '.join(SCENARIO_KINDS)} (got {given!r})")
    return rest
