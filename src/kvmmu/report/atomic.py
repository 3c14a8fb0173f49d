"""Writing a results directory atomically: all of it or none of it.

Design. Files are written into a temporary directory created *beside* the destination (same
filesystem, so the final ``rename`` is atomic), then the temporary directory replaces the
destination. An exception, or an interrupt, while writing removes the temporary directory and
leaves any previous report untouched; nobody ever sees a half-written report under the final name.
Replacing an existing directory takes two renames (old aside, new in place); the moment between
them is the only window in which the name is missing, never half-filled. Prior art: the
write-to-temp-then-rename idiom of ``atomicwrites`` and of git's lock files, applied to a directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it becomes ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
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
        shutil.rmtree(old, ignore_errors=True)
