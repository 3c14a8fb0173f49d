"""The seed mail in one picture: why the MMIO generation exists (Xiao Guangrong, March 2013).

Design. Two panels side by side, drawn with the figure rules of :mod:`kvmmu.report.plots` (one
style per strategy, legends outside the data, a caption that concludes):

* left: memslot CREATE latency against live shadow pages, log-log.  ``zap-all-3.9`` and
  ``zap-mmio-3.10`` visit every shadow page under ``mmu_lock`` ("walking all shadow pages is not
  scale"), so they rise linearly; every ``generation-*`` strategy bumps a number and stays flat
  (their curves coincide, which the caption says rather than hiding one under the other);
* right: what the rejected alternative costs instead.  ``zap-all-fast`` makes a CREATE cheap for
  the VMM but "all vCPUs fault on all memory": the extra vCPU time spent refaulting after one
  CREATE grows with the warm working set, where the generation refaults nothing.

Prior art: the before/after figures of the patch series' cover letters, put side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvmmu.report.plots import Plot, _figure, _finish, _plain_ticks, _stagger, coincident_groups, style
from kvmmu.sim.results import Sweep


def seed_figure(data: Mapping[str, Any]) -> Plot:
    """``seed_argument.png`` from :func:`kvmmu.sim.experiments.seed_argument`'s result."""
    sweep: Sweep = data["sweep"]
    refaults = data["refaults"]
    vcpus = int(data["vcpus"])
    fig = _figure(13, 4.8)
    left, right = fig.subplots(1, 2)
    series = {n: sweep.series(n, "update_latency_mean_ns") for n in sweep.strategies}
    groups = coincident_groups({n: ys for n, (_, ys) in series.items()})
    handles, labels = [], []
    for name, (xs, ys) in series.items():
        (h,) = left.plot(xs, [y / 1e3 for y in ys], ms=6, lw=1.8, alpha=0.9, **style(name).line(),
                         **_stagger(name, groups, len(xs)))
        handles.append(h)
        labels.append(name)
    left.set_xscale("log")
    left.set_yscale("log")
    _plain_ticks(left, "x", [float(x) for xs, _ in series.values() for x in xs])
    _plain_ticks(left, "y", [y / 1e3 for _, ys in series.values() for y in ys])
    left.set_xlabel("leaf shadow pages mapped when the VMM creates a slot")
    left.set_ylabel("memslot CREATE latency (µs, log)")
    left.set_title("VMM side: the walks grow, the generation does not", fontsize=10)
    left.grid(alpha=0.3, which="both")
    fast = refaults.get("zap-all-fast", [])
    gen = refaults.get("generation", [])
    if fast:
        warm = [p["warm_pages"] for p in fast]
        (h,) = right.plot(warm, [p["extra_stall_ns"] / 1e6 for p in fast], ms=6, lw=1.8,
                          **style("zap-all-fast").line())
        handles.append(h)
        labels.append("zap-all-fast: extra vCPU time\nrefaulting after the CREATE")
        for p in fast:
            right.annotate(f"{int(p['refaults_ram']):,} refaults",
                           (p["warm_pages"], p["extra_stall_ns"] / 1e6),
                           textcoords="offset points", xytext=(6, -4), fontsize=7)
    right.set_xscale("log")
    right.set_yscale("log")
    if fast:
        _plain_ticks(right, "x", [float(p["warm_pages"]) for p in fast])
        _plain_ticks(right, "y", [p["extra_stall_ns"] / 1e6 for p in fast])
    right.set_xlabel(f"warm 4 KiB pages per vCPU ({vcpus} vCPUs)")
    right.set_ylabel("vCPU time lost to one CREATE (ms, log)")
    right.set_title("vCPU side: the rejected alternative refaults everything", fontsize=10)
    right.grid(alpha=0.3, which="both")
    from matplotlib.legend_handler import HandlerTuple

    for g in groups:
        members = [handles[labels.index(n)] for n in g if n in labels]
        if len(members) > 1:
            handles.append(tuple(members))
            labels.append("coincide:\n" + " =\n".join(g))
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=None)})
    big = max(sweep.points, key=lambda p: p.x).x
    walk = {n: ys[-1] / 1e3 for n, (_, ys) in series.items()}
    caption = (
        f"At {big:,} shadow pages a CREATE costs "
        + ", ".join(f"{n} {walk[n]:,.0f} µs" for n in series)
        + ". The walks grow in proportion to the shadow pages (3.9 frees them all, 3.10 visits "
        "them all under mmu_lock); the generation (3.11 on) bumps a number and stays flat. "
    )
    if fast:
        top = fast[-1]
        caption += (
            f"The alternative the seed mail rejected, zap-all-fast, is cheap for the VMM but "
            f"makes {vcpus} vCPUs refault {int(top['refaults_ram']):,} pages "
            f"({top['extra_stall_ns'] / 1e6:.2f} ms of vCPU time) after one CREATE at "
            f"{int(top['warm_pages']):,} warm pages each; the generation refaults "
            f"{int(sum(p['refaults_ram'] for p in gen))} RAM pages."
        )
    fig.suptitle("Why KVM tags MMIO SPTEs with a generation (the 2013 seed mail, simulated)",
                 fontsize=11)
    return _finish(fig, "seed_argument.png", "the seed mail in one picture", caption, width_in=13)


def seed_numbers(data: Mapping[str, Any]) -> dict[str, Any]:
    """The figure's numbers for JSON: the sweep's points and the refault series."""
    sweep: Sweep = data["sweep"]
    return {
        "create_latency_ns": [{"leaf_pages": p.x, "strategy": p.strategy,
                               "update_latency_mean_ns": p.row["update_latency_mean_ns"],
                               "vmm_lock_hold_per_update_ns": p.row["vmm_lock_hold_per_update_ns"]}
                              for p in sweep.points],
        "refaults": data["refaults"],
        "vcpus": data["vcpus"],
    }
