"""``kvmmu diff``: the same scenario on the model and on the real KVM, compared.

Argument parsing and printing only; the work is :mod:`kvmmu.kvm.diff` and
:mod:`kvmmu.kvm.errno_check`.  Exit status: 0 agreement, 1 divergence, 2 bad input (one line).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from kvmmu.cli.progress import progress_bar
from kvmmu.report.atomic import OutputError, atomic_write_text, check_output_file, probe_writable

if TYPE_CHECKING:  # the diff module loads ctypes bindings: imported when a comparison starts
    from kvmmu.kvm.diff import DiffResult, Observation

#: First line of every scenario ``--save-failing`` writes: how a later run knows the file is ours.
SAVED_HEADER = "# Saved by `kvmmu diff --random --save-failing`"


class InputError(click.ClickException):
    """Bad input: one line (``Error: ...``) on stderr and exit status 2."""

    exit_code = 2


def _need_kvm() -> None:
    from kvmmu.kvm.bindings import kvm_available  # ctypes and the ioctl tables: only when used

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
    type=click.FloatRange(min=0.1, max=3600),
    default=5.0,
    show_default=True,
    help="Seconds one guest step may take.",
)
@click.option(
    "--save-failing",
    help="Write diverging random scenarios as TOML (random-SEED.toml) into this folder; a file "
    "of that name that kvmmu did not write is never overwritten (the run is refused first).",
)
@click.option(
    "--context",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Agreeing steps shown before a divergence.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON on stdout (every observation of both sides for SCENARIO; "
    "the counts and each divergence for --random and --errno). Exit status as without it.",
)
def command(
    scenario: Path | None,
    n_random: int | None,
    n_errno: int | None,
    seed: int,
    strategy: str,
    timeout: float,
    save_failing: str | None,
    context: int,
    as_json: bool,
) -> None:
    """Run SCENARIO on the model and on /dev/kvm and compare what the guest observes.

    SCENARIO is a *steps* TOML file (kind = "steps": [scenario], [[memory]], [[step]], one exact
    sequence of memslot requests and accesses; annotated example: examples/steps.toml), or any
    other kind, converted: a workload file or embedded name (kvmmu diff boot) runs its memslot
    operations in time order, each at most 3 times, on a compacted guest-physical map, probed by
    reads where each request acts; an interleaving file (kvmmu check's) runs round by round.

    With --random N, run N generated scenarios instead; with --errno N, compare the result of
    N random KVM_SET_USER_MEMORY_REGION requests.  Prints agreement, or the first divergence
    with the steps leading to it.
    """
    from kvmmu import STRATEGIES, resolve_strategy
    from kvmmu.kvm import diff as kdiff
    from kvmmu.kvm.scenario import ScenarioError, to_toml
    from kvmmu.scenarios import ScenarioError as KindError
    from kvmmu.scenarios import for_diff

    chosen = [x for x in (scenario, n_random, n_errno) if x is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of SCENARIO, --random N, --errno N")
    try:
        resolve_strategy(strategy)
    except (KeyError, ValueError):
        raise InputError(
            f"--strategy: unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}"
        ) from None
    if not math.isfinite(timeout):
        raise InputError(f"--timeout: must be a number of seconds from 0.1 to 3600 (got {timeout})")
    save_dir: Path | None = None
    if save_failing is not None:
        if n_random is None:
            raise InputError("--save-failing goes with --random N")
        save_dir = _check_save_failing(save_failing, seed, n_random)
    console = Console(soft_wrap=True)
    if scenario is not None:
        try:
            scn, _ = for_diff(scenario)  # any kind or an embedded name: see kvmmu.scenarios
        except KindError as exc:
            raise InputError(str(exc)) from None
        _need_kvm()
        try:
            res = kdiff.run_diff(scn, strategy=strategy, timeout=timeout, path=str(scenario))
        except ScenarioError as exc:
            raise InputError(str(exc)) from None
        if as_json:
            click.echo(json.dumps({"mode": "scenario", "path": str(scenario), **_result_json(res)}, indent=1))
        else:
            console.print(res.report(context), highlight=False)
        raise SystemExit(0 if res.agree else 1)

    _need_kvm()
    if n_errno is not None:
        from kvmmu.kvm.errno_check import run_errno_agreement

        with progress_bar() as progress:
            task = progress.add_task("memslot requests", total=n_errno)
            summary = run_errno_agreement(
                n_errno, seed, on_progress=lambda d: progress.update(task, completed=d)
            )
        if as_json:
            data = {
                "mode": "errno",
                "seed": seed,
                "requests": summary.requests,
                "agree": summary.agree,
                "by_result": summary.by_result,
                "by_kind": summary.by_kind,
                "phys_bits": summary.phys_bits,
                "mismatches": [
                    {"index": m.index, "request": m.request.describe(), "real": m.real, "model": m.model}
                    for m in summary.mismatches
                ],
            }
            click.echo(json.dumps(data, indent=1))
            raise SystemExit(0 if summary.agree else 1)
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
    with progress_bar() as progress:
        task = progress.add_task("random scenarios", total=n_random)

        def on_result(s: int, res: kdiff.DiffResult) -> None:
            progress.advance(task)
            if not res.agree:
                failing.append(s)
                if not as_json:
                    console.print(res.report(context), highlight=False)
                if save_dir is not None:
                    out = save_dir / f"random-{s}.toml"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(out, f"{SAVED_HEADER} (seed {s})\n{to_toml(res.scenario)}")
                    if not as_json:
                        console.print(f"  saved as {out}", highlight=False)

        summary_r = kdiff.run_random(
            n_random, seed, strategy=strategy, timeout=timeout, on_result=on_result
        )
    if as_json:
        data = {
            "mode": "random",
            "seeds": [seed, seed + n_random - 1],
            "strategy": strategy,
            "scenarios": summary_r.scenarios,
            "agree": summary_r.scenarios - len(summary_r.failures),
            "multi_vcpu": summary_r.multi_vcpu,
            "observations": summary_r.observations,
            "failing_seeds": failing,
            "failures": [_result_json(f) for f in summary_r.failures],
        }
        click.echo(json.dumps(data, indent=1))
        raise SystemExit(0 if not summary_r.failures else 1)
    console.print(
        f"{summary_r.scenarios - len(summary_r.failures)}/{summary_r.scenarios} random scenarios "
        f"agree (seeds {seed}..{seed + n_random - 1}, {summary_r.multi_vcpu} with 2 vCPUs, "
        f"{summary_r.observations} observations compared, strategy {strategy})",
        highlight=False,
    )
    raise SystemExit(0 if not summary_r.failures else 1)


def _check_save_failing(folder: str, seed: int, n: int) -> Path:
    """The folder for diverging scenarios, checked before any guest runs: writable, and no
    ``random-SEED.toml`` of the seeds to run that kvmmu did not write."""
    if not folder.strip():
        raise InputError("--save-failing: empty path; name a folder, e.g. --save-failing failing")
    base = Path(folder)

    def ours(text: str) -> bool:
        return text.startswith(SAVED_HEADER)

    try:
        if base.exists() and not base.is_dir():
            raise OutputError(f"--save-failing {folder}: exists and is not a folder")
        if base.exists():
            for name in os.listdir(base):
                m = re.fullmatch(r"random-(\d+)\.toml", name)
                if m and seed <= int(m.group(1)) < seed + n:
                    check_output_file(base / name, "--save-failing", ours=ours)
        probe_writable(base, folder, "--save-failing")
    except OutputError as exc:
        raise InputError(str(exc)) from None
    return base



def _result_json(res: DiffResult) -> dict[str, Any]:
    def obs(o: Observation) -> dict[str, str]:
        return {"label": o.label, "request": o.request, "result": o.result}

    return {
        "scenario": res.scenario.scenario.name,
        "agree": res.agree,
        "divergence": res.divergence,
        "oracle_violations": res.oracle_violations,
        "phys_bits": res.phys_bits,
        "real": [obs(o) for o in res.real],
        "model": [obs(o) for o in res.model],
    }
