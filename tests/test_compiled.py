"""kvmmu.compiled: the list of compiled modules, and running interpreted where frames are read."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import kvmmu
from kvmmu import compiled


def test_every_listed_module_has_a_source_file_to_compile() -> None:
    src = Path(kvmmu.__file__).parent.parent
    assert all((src / path).is_file() for path in compiled.sources())
    assert "kvmmu.compiled" not in compiled.COMPILED  # the switch itself always runs from source
    assert not any(name.startswith(("kvmmu.check", "kvmmu.cli")) for name in compiled.COMPILED)


def test_the_explorer_command_and_the_environment_ask_for_interpreted_modules() -> None:
    assert compiled.wants_interpreted({}, ["/usr/bin/kvmmu", "check", "--bound", "2"])
    assert compiled.wants_interpreted({}, ["/x/kvmmu/__main__.py", "check"])
    assert compiled.wants_interpreted({}, ["-m", "check"])  # python -m kvmmu check
    assert compiled.wants_interpreted({"KVMMU_INTERPRETED": "1"}, ["pytest"])
    assert not compiled.wants_interpreted({}, ["/usr/bin/kvmmu", "run", "check"])
    assert not compiled.wants_interpreted({"KVMMU_INTERPRETED": "0"}, ["pytest"])


def test_the_source_only_finder_finds_kvmmu_modules_in_their_py_files() -> None:
    mmu_dir = str(Path(kvmmu.__file__).parent / "mmu")
    spec = compiled.SourceOnlyFinder().find_spec("kvmmu.mmu.faults", [mmu_dir])
    assert spec is not None and spec.origin is not None and spec.origin.endswith("faults.py")
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert compiled.SourceOnlyFinder().find_spec("json", None) is None  # not ours: not touched


def test_with_the_switch_every_kvmmu_module_loads_from_source() -> None:
    code = ("import kvmmu, kvmmu.sim.engine; from kvmmu import compiled; "
            "print(sorted(compiled.loaded_compiled()), "
            "kvmmu.mmu.faults.__file__.endswith('.py'))")
    env = {**os.environ, "KVMMU_INTERPRETED": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[] True"


def test_kvmmu_check_runs_interpreted_by_itself_even_over_a_compiled_build() -> None:
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV}
    proc = subprocess.run([sys.executable, "-m", "kvmmu", "check", "--strategy", "generation-3.11",
                           "--vcpus", "1", "--updates", "1"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr  # 3.11's stale MMIO, found by reading frames
    assert "VIOLATION: stale-mmio" in proc.stdout
