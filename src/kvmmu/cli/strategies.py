"""``kvmmu strategies``: every strategy as the kernel it models, and the ``--strategy`` option type.

The table is :data:`kvmmu.mmu.invalidation.STRATEGIES` itself: name, kernels, what CREATE, DELETE,
MOVE, FLAGS_ONLY and a generation wrap do, the commits it rests on and its known bugs.  Nothing
here restates a fact; it formats the profile fields.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kvmmu.mmu.invalidation import (
    ALIASES,
    BACKPORTS,
    STRATEGIES,
    VARIANTS,
    Strategy,
    resolve_strategy,
)

_CREATE_ZAP = {
    None: "nothing",
    "all-slow": "zap every shadow page (kvm_mmu_zap_all)",
    "mmio-cached": "walk the active list, zap pages flagged mmio_cached",
    "all-fast": "zap every shadow page fast (bump mmu_valid_gen)",
}
_SLOT_ZAP = {
    "all": "zap every shadow page fast (bump mmu_valid_gen)",
    "slot": "zap the slot's SPTEs only",
    "all-slow": "zap every shadow page (kvm_mmu_zap_all)",
}
_STEP = {
    "2013": "+1 per publish (DELETE/MOVE publish twice)",
    "2014": "odd while in progress, +2 per publish",
    "2015": "odd while in progress, +2 x address spaces per publish",
    "modern": "bit 63 while in progress, + address spaces per publish",
}


class StrategyParam(click.ParamType[str, Any]):
    """A strategy name (``NAME``, ``NAME+variant``, or an old alias): checked, canonicalised."""

    name = "strategy"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        if isinstance(value, Strategy):
            return value.name
        try:
            return resolve_strategy(str(value)).name
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def behaviour(s: Strategy) -> dict[str, str]:
    """What each kind of memslot change does under ``s``, in words."""
    create = _CREATE_ZAP[s.create_zap]
    if s.create_zap is not None and s.create_zap_by_base:
        create += " (if the base gfn changed: none for a CREATE at gpa 0)"
    if s.mmio_generation:
        create = "bump the generation; " + ("zap nothing" if s.create_zap is None else create)
    wrap = "no generation in MMIO SPTEs"
    if s.mmio_generation:
        kind = ("walk the active list, zap mmio_cached pages" if s.wrap_zap_kind == "mmio-cached"
                else "zap every shadow page fast")
        where = "at commit" if s.wrap_check == "commit" else "in kvm_arch_memslots_updated"
        wrap = f"{kind} ({where})" if s.wrap_zap else "nothing (broken variant)"
    flush = _SLOT_ZAP[s.slot_zap]
    return {
        "generation": _STEP[s.era] if s.mmio_generation or s.cache_generation else "not used",
        "CREATE": create,
        "DELETE": flush,
        "MOVE": f"{flush}, then as CREATE" if s.create_zap else flush,
        "FLAGS_ONLY": ("bump the generation" if s.mmio_generation else "nothing")
        + "; dirty logging on: write-protect the slot",
        "wrap": wrap,
        "fault on a slot being deleted": ("exits as MMIO (KVM_PFN_NOSLOT)"
                                          if s.invalid_slot_fault == "mmio" else "retried"),
        "per-vCPU MMIO cache": "tagged with a generation" if s.cache_generation else "no generation",
        "TDP MMU": _TDP[s.tdp_mmu] + (" (default on EPT/NPT hosts)" if s.tdp_mmu_default else ""),
    }


_TDP = {
    "": "not modelled: the shadow MMU only (kvm.tdp_mmu came in 5.10)",
    "5.12": "faults take mmu_lock for read; zap-all under the write lock",
    "5.13": "faults take mmu_lock for read; zapped roots torn down under the read lock",
}


def as_dict(s: Strategy) -> dict[str, Any]:
    return {
        "name": s.name,
        "status": s.label[len(s.name):].strip(" ()") or "correct",
        "kernels": s.kernels,
        "summary": s.summary,
        "behaviour": behaviour(s),
        "address_spaces": s.default_address_spaces,
        "memslots": s.nr_memslots,
        "spte_layout": s.layout,
        "tdp_mmu": s.tdp_mmu or None,
        "tdp_mmu_default": s.tdp_mmu_default,
        "commits": list(s.commits),
        "sources": list(s.sources),
        "known_bugs": list(s.known_bugs),
    }


@click.command("strategies")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Also print each strategy's sources.")
def command(as_json: bool, verbose: bool) -> None:
    """List the invalidation strategies: the kernel each one models, what each memslot change
    does under it, the commits it rests on and the bugs it had.

    Historically buggy kernels are modelled with their bugs (the oracle and `kvmmu check` find
    them; reports mark them). `zap-all-fast` is hypothetical: the alternative the 2013 seed mail
    rejected. Append +VARIANT to break one safeguard on purpose, or +BACKPORT to apply one later
    fix to an older kernel; old names still work for one release.
    """
    rows = [as_dict(s) for s in STRATEGIES.values()]
    if as_json:
        doc = {"strategies": rows, "variants": dict(VARIANTS),
               "backports": dict(BACKPORTS), "aliases": dict(ALIASES)}
        click.echo(json.dumps(doc, indent=2))
        return
    console = Console(width=None if console_is_terminal() else 200)
    table = Table(title="kvmmu strategies", show_lines=True)
    for col in ("name", "kernels", "CREATE / MOVE", "DELETE", "wrap", "known bugs"):
        table.add_column(col, overflow="fold")
    for s, row in zip(STRATEGIES.values(), rows, strict=True):
        b = row["behaviour"]
        bugs = "\n".join(f"- {x}" for x in s.known_bugs) or "-"
        name = f"{s.name}\n[dim]{row['status']}[/dim]"
        table.add_row(name, f"{s.kernels}\n[dim]{'; '.join(c.split(' ')[0] for c in s.commits)}[/dim]",
                      b["CREATE"], b["DELETE"], b["wrap"], bugs)
    console.print(table)
    if verbose:
        for s in STRATEGIES.values():
            console.print(f"\n[bold]{s.name}[/bold] ({s.kernels})")
            for src in s.sources:
                console.print(f"  - {src}", highlight=False)
    console.print(f"variants: {', '.join('+' + v for v in VARIANTS)}; backports: "
                  f"{', '.join('+' + b for b in BACKPORTS)}; old names: "
                  + ", ".join(f"{a} -> {n}" for a, n in ALIASES.items()), highlight=False)


def console_is_terminal() -> bool:
    return sys.stdout.isatty()
