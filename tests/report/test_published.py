"""kvmmu.report.published: the figure of `kvmmu reproduce --figure`, written like every output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kvmmu.report.published import draw
from kvmmu.sim.costs import default_costs
from kvmmu.sim.published import reproduce


def test_the_published_figure_is_a_png_with_the_mode_open_would_give_it(tmp_path: Path) -> None:
    # mkstemp() makes 0600 files; a figure must be readable like the other outputs (0666 & ~umask).
    results = reproduce(default_costs(), keys=["zap-mmio-3.10"])
    old = os.umask(0o022)
    try:
        path = draw(results, tmp_path / "published.png")
    finally:
        os.umask(old)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["published.png"]  # no temporary left
