"""``kvmmu run``: the main job — the embedded scenario under every strategy, compared.

Parsing and formatting only; the scenario and its counters live in :mod:`kvmmu.functional`.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kvmmu.functional import COLUMNS, ScenarioParams, compare
from kvmmu.mmu.invalidation import STRATEGIES, strategy_choices


@click.command("run")
@click.option("-s", "--strategy", "strategies", multiple=True,
              type=click.Choice(strategy_choices()), metavar="NAME",
              help="Strategy to run (repeatable). Default: all of "
                   f"{', '.join(STRATEGIES)}. Append +no-wrap-zap or +cache-without-gen for a "
                   "deliberately broken variant.")
@click.option("--vcpus", type=click.IntRange(1, 64), default=4, show_default=True,
              help="vCPUs sharing the work.")
@click.option("--rounds", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Rounds of first-touch, device traffic and one memslot change each.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the device traffic.")
@click.option("--slot-zap", type=click.Choice(["slot", "all"]), default="slot", show_default=True,
              help="What DELETE/MOVE zap: only the slot's SPTEs, or everything "
                   "(KVM_X86_QUIRK_SLOT_ZAP_ALL, KVM's default).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def command(strategies: tuple[str, ...], vcpus: int, rounds: int, seed: int, slot_zap: str,
            as_json: bool) -> None:
    """Run the embedded boot scenario under each invalidation strategy and compare the work.

    The scenario: RAM first-touched by every vCPU; an option ROM deleted and re-added (PAM);
    a PCI BAR moved back and forth; dirty logging toggled; an in-kernel doorbell and a
    userspace device polled. Every VM starts 150 generations below the wrap, so the run
    crosses it. The oracle checks every access: a correct strategy shows 0 violations.
    """
    names = list(strategies) or list(STRATEGIES)
    params = ScenarioParams(vcpus=vcpus, rounds=rounds, seed=seed, slot_zap=slot_zap)
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
        task = bar.add_task("simulating", total=len(names))

        def step(name: str) -> None:
            bar.update(task, description=f"running {name}")

        results = compare(names, params, progress=step)
        bar.update(task, completed=len(names))
    if as_json:
        click.echo(json.dumps({
            "scenario": "boot (functional)",
            "params": {"vcpus": vcpus, "rounds": rounds, "seed": seed, "slot_zap": slot_zap},
            "results": [{"strategy": r.strategy, **r.counters, "stats": r.stats}
                        for r in results],
        }, indent=2))
        return
    table = Table(title=f"kvmmu run: boot scenario, {vcpus} vCPUs, {rounds} rounds "
                        f"(DELETE/MOVE zap: {slot_zap})", title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    for r in results:
        table.add_column(r.strategy.replace("+", "\n+"), justify="right", no_wrap=True)
    for key, heading in COLUMNS:
        cells = []
        for r in results:
            v = r.counters[key]
            cells.append(f"[red]{v:,}[/red]" if key == "oracle_violations" and v else f"{v:,}")
        table.add_row(heading, *cells)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # piped: do not squeeze the table into 80 columns
    out.print(table)
    out.print("[dim]faults: slow-path page faults (refaults: on a gfn mapped before); fast-path "
              "hits: MMIO answered by the SPTE or the per-vCPU cache; work under mmu_lock: "
              "acquisitions + pages and SPTEs zapped, walked or write-protected.[/dim]")
