"""The figure of ``kvmmu reproduce``: each published value next to the model's, on a log axis.

Design. One group of bars per published value (row and label), in seconds on a log scale since
the rows span 50 us to 16 s: published, model untuned and, when a calibrated profile was given,
model calibrated.  A row's notes (fitted, assumed) are marked on its tick label so that a fitted
row is never read as a prediction.  Written through a temporary file and ``os.replace``, never over
a file kvmmu did not write (:func:`kvmmu.report.atomic.check_output_file`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from kvmmu.report.atomic import atomic_write_bytes
from kvmmu.sim.published import RowResult


def draw(results: Sequence[RowResult], path: Path) -> Path:
    """Draw ``results`` into the PNG at ``path`` (atomically); return the path."""
    from matplotlib.figure import Figure  # on first use: `--help` must not pay for it

    labels: list[str] = []
    series: dict[str, list[float]] = {"published": [], "model untuned": [], "model calibrated": []}
    for res in results:
        mark = " (fitted)" if res.row.fitted else (" (assumed)" if res.row.assumed else "")
        for v in res.values:
            labels.append(f"{res.row.key}\n{v.label}{mark}")
            series["published"].append(v.published_s)
            series["model untuned"].append(v.untuned_s)
            series["model calibrated"].append(v.calibrated_s if v.calibrated_s is not None
                                              else float("nan"))
    shown = {k: s for k, s in series.items() if any(x == x for x in s)}  # drop an all-NaN series
    fig = Figure(figsize=(max(8.0, 0.9 * len(labels)), 5.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(shown)
    colours = {"published": "#333333", "model untuned": "#1f77b4", "model calibrated": "#ff7f0e"}
    for i, (name, values) in enumerate(shown.items()):
        xs = [k + (i - (len(shown) - 1) / 2) * width for k in range(len(labels))]
        ax.bar(xs, values, width, label=name, color=colours[name])
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log scale)")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_title("Published figures vs the model (kvmmu reproduce)")
    ax.legend(fontsize=8)
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    atomic_write_bytes(path, png.getvalue())
    return path
