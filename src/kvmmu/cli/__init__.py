"""The ``kvmmu`` command: a click group; each subcommand lives in its own module of this package.

Argument parsing and nothing else: every subcommand calls into the library and formats what it
returns.  Bad input is one line on stderr and exit status 2, never a traceback: click's usage
errors are shortened to their message, and the library's ``ValueError``/``KvmError`` raised while
checking parameters become the same kind of line.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Any

import click

from kvmmu.errors import KvmError

#: Subcommand modules, each defining ``command: click.Command``. Add one line per new command.
COMMAND_MODULES: tuple[str, ...] = (
    "run", "diff", "calibrate", "plot", "check", "capture", "replay", "validate", "strategies",
    "memslot_perf", "reproduce",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kvmmu")
def cli() -> None:
    """kvmmu: the KVM x86 MMU's MMIO-SPTE cache and its invalidation, as a model you can run,
    time, check for races and hold against the real /dev/kvm.

    Start with `kvmmu run`.
    """


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing ``nan`` and ``inf``: a range check lets nan through (every
    comparison with it is false) and inf passes a range with no maximum, so ``--timeout nan``
    or ``--timeout inf`` reached the code as a number (issue 11)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def _finite_floats(group: click.Group) -> None:
    """Every FloatRange option of every command refuses nan and inf (one rule, one place)."""
    for command in group.commands.values():
        for param in command.params:
            t = param.type
            if isinstance(t, click.FloatRange) and not isinstance(t, FiniteFloatRange):
                param.type = FiniteFloatRange(t.min, t.max, min_open=t.min_open,
                                              max_open=t.max_open, clamp=t.clamp)


for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"kvmmu.cli.{_name}").command)
_finite_floats(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the group, turning input errors into one line, exit 2."""
    try:
        rv = cli.main(args=argv, prog_name="kvmmu", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # bare `kvmmu`: show the help, succeed
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.UsageError as e:
        click.echo(f"kvmmu: error: {e.format_message()}", err=True)
        sys.exit(2)
    except (KvmError, ValueError) as e:
        click.echo(f"kvmmu: error: {e}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("kvmmu: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"kvmmu: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
