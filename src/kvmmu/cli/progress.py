"""The progress bar every long command shows: on stderr when it is a terminal, nothing on a pipe.

One definition so that every command reads the same (description, bar, count, elapsed, ETA) and a
piped run's output is never interleaved with bar redraws.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console | None = None, *, count: str = "m/n",
                 disable: bool = False) -> Progress:
    """A transient bar on ``console`` (default: stderr); ``count`` is ``"m/n"`` (done of total)
    or ``"percent"``; ``disable`` also hides it (e.g. under ``--json``)."""
    err = console if console is not None else Console(stderr=True)
    done: ProgressColumn = (TextColumn("{task.percentage:>3.0f}%") if count == "percent"
                            else MofNCompleteColumn())
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        done,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=disable or not err.is_terminal,
    )
