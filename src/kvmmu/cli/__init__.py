"""The ``kvmmu`` command: a click group; each subcommand lives in its own module of this package.

Argument parsing and nothing else: every subcommand calls into the library and formats what it
returns. Errors in user input are one line on stderr and exit status 2 (click's usage errors).
"""

from __future__ import annotations

import importlib

import click

#: Subcommand modules, each defining ``command: click.Command``. Add one line per new command.
COMMAND_MODULES: tuple[str, ...] = ("diff",)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kvmmu")
def cli() -> None:
    """kvmmu: the KVM x86 MMU's MMIO-SPTE cache and its invalidation, as a model you can run,
    time, check for races and hold against the real /dev/kvm.

    Start with `kvmmu run`.
    """


for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"kvmmu.cli.{_name}").command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="kvmmu")
