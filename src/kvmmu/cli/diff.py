"""``kvmmu diff``: the same scenario on the model and on the real KVM, compared.

Argument parsing and printing only; the work is :mod:`kvmmu.kvm.diff` and
:mod:`kvmmu.kvm.errno_check`.  Exit status: 0 agreement, 1 divergence, 2 bad input (one line).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress

from kvmmu.kvm.bindings import kvm_available


class InputError(click.ClickException):
    """Bad input: one line (``Error: ...``) on stderr and exit status 2."""

    exit_code = 2


def _need_kvm() -> None:
    reason = kvm_available()
    if reason is not None:
        raise InputError(f"the real KVM is needed: {reason}")


@click.command("diff")
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--random", "n_random", type=click.IntRange(min=1), help="Run N random scenarios.")
@click.option(
    "--errno",
    "n_errno",
    type=click.IntRange(min=1),
    help="Compare errno of N random memslot requests.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the random generators."
)
@click.option(
    "--strategy", default="generation", show_default=True, help="The model's invalidation strategy."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds one guest step may take.",
)
@click.option(
    "--save-failing",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write diverging random scenarios as TOML into this directory.",
)
@click.option(
    "--context",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Agreeing steps shown before a divergence.",
)
def command(
    scenario: Path | None,
    n_random: int | None,
    n_errno: int | None,
    seed: int,
    strategy: str,
    timeout: float,
    save_failing: Path | None,
    context: int,
) -> None:
    """Run SCENARIO (TOML) on the model and on /dev/kvm and compare what the guest observes.

    With --random N, run N generated scenarios instead; with --errno N, compare the result of
    N random KVM_SET_USER_MEMORY_REGION requests.  Prints agreement, or the first divergence
    with the steps leading to it.
    """
    from kvmmu import STRATEGIES, resolve_strategy
    from kvmmu.kvm import diff as kdiff
    from kvmmu.kvm.scenario import ScenarioError, load_scenario, to_toml

    chosen = [x for x in (scenario, n_random, n_errno) if x is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of SCENARIO, --random N, --errno N")
    try:
        resolve_strategy(strategy)
    except (KeyError, ValueError):
        raise InputError(
            f"--strategy: unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}"
        ) from None
    console = Console(soft_wrap=True)
    if scenario is not None:
        try:
            scn = load_scenario(scenario)
        except ScenarioError as exc:
            raise InputError(str(exc)) from None
        _need_kvm()
        try:
            res = kdiff.run_diff(scn, strategy=strategy, timeout=timeout, path=str(scenario))
        except ScenarioError as exc:
            raise InputError(str(exc)) from None
        console.print(res.report(context), highlight=False)
        raise SystemExit(0 if res.agree else 1)

    _need_kvm()
    if n_errno is not None:
        from kvmmu.kvm.errno_check import run_errno_agreement

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("memslot requests", total=n_errno)
            summary = run_errno_agreement(
                n_errno, seed, on_progress=lambda d: progress.update(task, completed=d)
            )
        results = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_result.items()))
        console.print(
            f"errno agreement: {summary.requests - len(summary.mismatches)}/{summary.requests} "
            f"requests gave the same result (seed {seed}; real: {results}; "
            f"{len(summary.by_kind)} kinds; guest physical width {summary.phys_bits} bits)",
            highlight=False,
        )
        for m in summary.mismatches[:20]:
            console.print(
                f"  #{m.index} {m.request.describe()}: real {m.real}, model {m.model}",
                highlight=False,
            )
        raise SystemExit(0 if summary.agree else 1)

    assert n_random is not None
    failing: list[int] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("random scenarios", total=n_random)

        def on_result(s: int, res: kdiff.DiffResult) -> None:
            progress.advance(task)
            if not res.agree:
                failing.append(s)
                progress.console.print(res.report(context), highlight=False)
                if save_failing is not None:
                    save_failing.mkdir(parents=True, exist_ok=True)
                    out = save_failing / f"random-{s}.toml"
                    out.write_text(to_toml(res.scenario), encoding="utf-8")
                    progress.console.print(f"  saved as {out}", highlight=False)

        summary_r = kdiff.run_random(
            n_random, seed, strategy=strategy, timeout=timeout, on_result=on_result
        )
    console.print(
        f"{summary_r.scenarios - len(summary_r.failures)}/{summary_r.scenarios} random scenarios "
        f"agree (seeds {seed}..{seed + n_random - 1}, {summary_r.multi_vcpu} with 2 vCPUs, "
        f"{summary_r.observations} observations compared, strategy {strategy})",
        highlight=False,
    )
    raise SystemExit(0 if not summary_r.failures else 1)
