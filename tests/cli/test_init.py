"""The ``kvmmu`` group: help and short commands do not import the heavy optional packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: What ``kvmmu --help`` must not import: plotting, the dask cluster, the /dev/kvm bindings.
HEAVY = ("matplotlib", "dask", "kvmmu.kvm")

PROBE = """
import sys
from kvmmu.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.startswith({heavy!r}))
print("HEAVY:", heavy, file=sys.stderr)
"""


def modules_imported_by(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stderr.rsplit("HEAVY:", 1)[1].strip()


def test_help_imports_neither_matplotlib_nor_dask_nor_the_kvm_bindings() -> None:
    assert modules_imported_by("--help") == "[]"


def test_a_subcommands_help_imports_none_of_them_either() -> None:
    for command in ("run", "plot", "diff", "calibrate", "check", "capture", "replay", "validate"):
        assert modules_imported_by(command, "--help") == "[]", command


def test_every_float_option_of_every_command_refuses_nan_and_inf() -> None:
    import click

    from kvmmu.cli import FiniteFloatRange, cli

    floats = [(c.name, p.name) for c in cli.commands.values() for p in c.params
              if isinstance(p.type, click.FloatRange)]
    assert floats  # run/plot --time-limit, diff/capture --timeout, check --budget...
    for cmd_name, param_name in floats:
        param = next(p for p in cli.commands[str(cmd_name)].params if p.name == param_name)
        assert isinstance(param.type, FiniteFloatRange), (cmd_name, param_name)
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter):
                param.type.convert(bad, param, None)
