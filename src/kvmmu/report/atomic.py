"""Writing results atomically, and never deleting what kvmmu did not write.

Design. A results folder is written into a temporary folder created *beside* the destination (same
filesystem, so the final ``rename`` is atomic), then the temporary folder takes the destination's
name. An exception, or an interrupt, while writing removes the temporary folder and leaves any
previous report untouched; nobody ever sees a half-written report under the final name.

A folder kvmmu writes holds a marker file, :data:`MARKER`, listing the names kvmmu put there. An
existing destination is replaced only when everything in it is listed in its marker (or it is
empty): a folder holding anything else (``--out ~/results``, ``--out .``) is refused with one line
naming a file that would have been lost, before any minutes of work (:func:`check_output_dir`).
The previous report is moved aside and only the files its marker lists are removed, so a file
dropped into it meanwhile survives in the moved-aside folder instead of being deleted. The new
folder gets the old folder's permissions (or the umask's), never the 0700 of ``mkdtemp``.

Single files (a cost profile) go through :func:`atomic_write_text`: a temporary file in the same
folder, flushed, then ``os.replace``; an existing file is replaced only if the caller recognises
it as one kvmmu wrote. Prior art: the write-to-temp-then-rename idiom of ``atomicwrites`` and of
git's lock files; the "refuse a non-empty directory" rule of ``git clone`` and ``cargo new``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

#: The file naming what kvmmu wrote into a results folder (JSON: ``{"kvmmu": 1, "files": [...]}``).
MARKER = ".kvmmu-output"


class OutputError(ValueError):
    """An output destination kvmmu will not write to; the message says why and what to do."""


def _path_text(path: str | os.PathLike[str], option: str, what: str, example: str
               ) -> tuple[str, str]:
    """The path as text and as an error message shows it; OutputError if empty or with a NUL."""
    text = os.fspath(path)
    shown = repr(text) if not text or text != text.strip() else text
    if not text.strip():
        raise OutputError(f"{option}: empty path; {what}, e.g. {option} {example}")
    if "\0" in text:
        raise OutputError(f"{option}: the path contains a NUL byte")
    return text, shown


def _umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def marked_files(folder: Path) -> set[str] | None:
    """The names ``folder``'s marker lists (None: no readable marker: not a kvmmu folder)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return {f for f in files if f and "/" not in f and f not in (".", "..")}


def _foreign(folder: Path) -> list[str]:
    """Entries of ``folder`` that kvmmu did not write there (by its marker)."""
    listed = marked_files(folder) or set()
    return sorted(e for e in os.listdir(folder) if e != MARKER and e not in listed)


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def probe_writable(folder: Path, shown: str, option: str) -> None:
    """Create and remove a temporary folder in ``folder`` (or, while it does not exist yet, in
    its nearest existing ancestor): the cheapest proof that kvmmu can write there."""
    anc = _existing_ancestor(folder)
    if not anc.is_dir():
        raise OutputError(f"{option} {shown}: {anc} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kvmmu-probe-", dir=anc))
    except OSError as exc:
        raise OutputError(f"{option} {shown}: cannot write in {anc} ({exc.strerror})") from None


def check_output_dir(final: str | Path, option: str = "--out") -> Path:
    """Return ``final`` as a Path if kvmmu may write a results folder there; else OutputError.

    Allowed: a path that does not exist yet (its parents are created), an empty folder, or a
    folder kvmmu wrote before (every entry listed in its marker). Refused, with one line: an empty
    name, ``.``/``..`` or any folder containing the current one, a symbolic link, an existing
    file, a folder holding anything kvmmu did not write, a place where nothing can be created.
    """
    text, shown = _path_text(final, option, "name a folder for the results", "results")
    path = Path(text)
    if path.name in ("", ".", ".."):
        raise OutputError(
            f"{option} {shown}: name a folder of its own (kvmmu replaces the whole folder it "
            f"writes), e.g. {option} {Path(text, 'kvmmu-results')}"
        )
    try:
        here = Path.cwd().resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"{option} {shown}: {exc}") from None
    if resolved == here or resolved in here.parents:
        raise OutputError(
            f"{option} {shown}: is the current folder or contains it; name a new folder for the results"
        )
    if path.is_symlink():
        raise OutputError(f"{option} {shown}: is a symbolic link; name the folder itself")
    try:
        exists = path.exists()
        if exists and not path.is_dir():
            raise OutputError(f"{option} {shown}: exists and is not a folder")
        if exists:
            foreign = _foreign(path)
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise OutputError(
                    f"{option} {shown}: the folder holds files kvmmu did not write "
                    f"({foreign[0]!r}{more}); name a new or empty folder, kvmmu never deletes them"
                )
    except OSError as exc:
        raise OutputError(f"{option} {shown}: {exc.strerror or exc}") from None
    probe_writable(path.parent, shown, option)
    return path


def _remove_marked(folder: Path) -> None:
    """Remove what ``folder``'s marker lists, then the folder if that emptied it."""
    for name in marked_files(folder) or set():
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    with contextlib.suppress(OSError):
        (folder / MARKER).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # not empty: something arrived meanwhile; it stays, moved aside


@contextlib.contextmanager
def atomic_directory(final: Path, option: str = "--out") -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it becomes ``final`` (see the module notes).

    Raises :class:`OutputError` before yielding if ``final`` may not be written
    (:func:`check_output_dir`), and again at the end if a foreign file appeared meanwhile.
    """
    final = check_output_dir(final, option)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise OutputError(f"{option} {final}: {exc.strerror or exc}") from None
    try:
        yield tmp
        names = sorted(os.listdir(tmp))
        (tmp / MARKER).write_text(json.dumps({"kvmmu": 1, "files": names}) + "\n", encoding="utf-8")
        check_output_dir(final, option)  # a foreign file may have arrived while we worked
        mode = final.stat().st_mode & 0o7777 if final.exists() else _umask_mode(0o777)
        os.chmod(tmp, mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rmdir(old)
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _remove_marked(old)


def check_output_file(
    path: str | Path, option: str = "--out", *, ours: Callable[[str], bool] | None = None
) -> Path:
    """Return ``path`` if kvmmu may write a file there; else OutputError.

    An existing file is replaced only if ``ours(text)`` recognises its content as kvmmu's own.
    """
    text, shown = _path_text(path, option, "name a file", "profile.toml")
    p = Path(text)
    if p.name in ("", ".", "..") or text.endswith("/"):
        raise OutputError(f"{option} {shown}: names a folder; name a file, e.g. {option} profile.toml")
    try:
        if p.is_dir():
            raise OutputError(f"{option} {shown}: is a folder; name a file")
        if p.exists() or p.is_symlink():
            if not p.is_file() or p.is_symlink():
                raise OutputError(f"{option} {shown}: exists and is not a regular file")
            try:
                content = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                content = ""
            if ours is None or not ours(content):
                raise OutputError(
                    f"{option} {shown}: the file exists and kvmmu did not write it; "
                    "name a new file, kvmmu never overwrites it"
                )
    except OSError as exc:
        raise OutputError(f"{option} {shown}: {exc.strerror or exc}") from None
    if not p.parent.absolute().is_dir():
        raise OutputError(f"{option} {shown}: folder {p.parent} does not exist")
    probe_writable(p.parent, shown, option)
    return p


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the mode a plain ``open()`` would give it (the
    existing file's, or 0666 less the umask: ``mkstemp`` alone would leave it 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
