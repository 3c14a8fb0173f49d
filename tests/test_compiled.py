"""kvmmu.compiled: the two groups of compiled modules, and what ``kvmmu check`` loads compiled.

The tests marked "over a build" need ``make compiled`` to have run (``make test-compiled`` runs
them, in its ``--compiled`` session); ``make test`` runs on a tree that never compiles anything,
where they skip.  The two-group build itself is pinned on a small package built here with mypyc
(skipped without a C compiler).
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kvmmu
from kvmmu import compiled

SRC = Path(kvmmu.__file__).parent.parent
SCRIPT = SRC / "kvmmu" / "compiled.py"
EXT = importlib.machinery.EXTENSION_SUFFIXES[0]

over_a_build = pytest.mark.skipif(
    compiled.built() != [*compiled.COMPILED, *compiled.EXPLORER],
    reason="needs both groups built (make compiled; make test-compiled runs this)")


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if k != compiled.ENV}
    proc = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_every_listed_module_has_a_source_file_to_compile() -> None:
    for group in compiled.GROUPS:
        assert all((SRC / path).is_file() for path in compiled.sources(group))
    assert not set(compiled.COMPILED) & set(compiled.EXPLORER)  # one build each
    assert "kvmmu.compiled" not in (*compiled.COMPILED, *compiled.EXPLORER)  # the switch: source
    assert not any(name.startswith(("kvmmu.check", "kvmmu.cli")) for name in compiled.COMPILED)
    assert all(name.startswith("kvmmu.check.") for name in compiled.EXPLORER)
    # The classes mypyc refuses stay in modules it never compiles.
    assert {"kvmmu.check.tables", "kvmmu.check.errors"}.isdisjoint(compiled.EXPLORER)


def test_sources_prints_each_group_for_the_makefile() -> None:
    def sources(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), "sources", *args], cwd=SRC,
                              capture_output=True, text=True, timeout=60, check=False)

    assert sources().stdout.split() == compiled.sources("protocol")  # the default group
    assert sources("protocol").stdout.split() == [m.replace(".", "/") + ".py"
                                                  for m in compiled.COMPILED]
    assert sources("explorer").stdout.split() == [m.replace(".", "/") + ".py"
                                                  for m in compiled.EXPLORER]
    bad = sources("everything")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "protocol, explorer" in bad.stderr


def test_the_explorer_group_defines_no_generator() -> None:
    # The explorer reads the frames of the threads' generators: none of them may be compiled code.
    for path in compiled.sources("explorer"):
        tree = ast.parse((SRC / path).read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Yield | ast.YieldFrom)], path


def test_the_source_only_finder_leaves_the_explorer_group_to_the_ordinary_finders() -> None:
    finder = compiled.SourceOnlyFinder()
    mmu_dir, check_dir = str(SRC / "kvmmu" / "mmu"), str(SRC / "kvmmu" / "check")
    spec = finder.find_spec("kvmmu.mmu.faults", [mmu_dir])
    assert spec is not None and spec.origin is not None and spec.origin.endswith("faults.py")
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    tables = finder.find_spec("kvmmu.check.tables", [check_dir])  # explorer, not compiled
    assert tables is not None and isinstance(tables.loader, importlib.machinery.SourceFileLoader)
    for name in compiled.EXPLORER:
        assert finder.find_spec(name, [check_dir]) is None  # compiled when built
    assert finder.find_spec("json", None) is None  # not ours: not touched


def test_the_explorer_command_and_the_environment_ask_for_interpreted_modules() -> None:
    assert compiled.wants_interpreted({}, ["/usr/bin/kvmmu", "check", "--bound", "2"])
    assert compiled.wants_interpreted({}, ["/x/kvmmu/__main__.py", "check"])
    assert compiled.wants_interpreted({}, ["-m", "check"])  # python -m kvmmu check
    assert compiled.wants_interpreted({"KVMMU_INTERPRETED": "1"}, ["pytest"])
    assert not compiled.wants_interpreted({}, ["/usr/bin/kvmmu", "run", "check"])
    assert not compiled.wants_interpreted({"KVMMU_INTERPRETED": "0"}, ["pytest"])


def test_with_the_switch_the_protocol_loads_from_source() -> None:
    code = ("import kvmmu, kvmmu.sim.engine, kvmmu.check; from kvmmu import compiled; "
            "print(sorted(compiled.loaded_compiled()), "
            "kvmmu.mmu.faults.__file__.endswith('.py'), kvmmu.vm.__file__.endswith('.py'))")
    assert run_python(code, env={compiled.ENV: "1"}) == "[] True True"


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                    reason="needs a C compiler (cc or $CC) for mypyc")
def test_two_groups_build_side_by_side_and_clean_removes_both(tmp_path: Path) -> None:
    # A miniature of `make compiled`: two mypyc runs in one src directory, the second group's
    # code using the first group's class.  Both shared libraries must survive and load together.
    pkg = tmp_path / "minipkg"
    (pkg / "check").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "check" / "__init__.py"):
        init.write_text("")
    (pkg / "pages.py").write_text(
        "class Page:\n    def __init__(self, gfn: int) -> None:\n        self.gfn = gfn\n")
    (pkg / "spte.py").write_text("def spte(gfn: int) -> int:\n    return gfn << 12 | 1\n")
    (pkg / "check" / "keys.py").write_text(
        "from minipkg.pages import Page\nfrom minipkg.spte import spte\n\n"
        "def key(p: Page) -> int:\n    return spte(p.gfn) ^ 7\n")
    (pkg / "check" / "por.py").write_text(
        "from minipkg.check.keys import key\nfrom minipkg.pages import Page\n\n"
        "def keys(n: int) -> list[int]:\n    return [key(Page(g)) for g in range(n)]\n")
    groups = (["minipkg/pages.py", "minipkg/spte.py"], ["minipkg/check/keys.py",
                                                        "minipkg/check/por.py"])
    for group in groups:
        subprocess.run([sys.executable, "-m", "mypyc", *group], cwd=tmp_path, check=True,
                       capture_output=True, env={**os.environ, "MYPYC_OPT_LEVEL": "0"}, timeout=300)
    assert len(list(tmp_path.glob(f"*__mypyc{EXT}"))) == 2  # one shared library per group
    code = ("import importlib.machinery as m, minipkg.check.por as por, minipkg.pages as pages; "
            "print(por.keys(3), all(isinstance(x.__loader__, m.ExtensionFileLoader) "
            "for x in (por, pages)))")
    assert run_python(code, cwd=tmp_path) == f"{[(g << 12 | 1) ^ 7 for g in range(3)]} True"

    removed = compiled.clean(tmp_path, "minipkg")
    assert {p.name for p in removed} >= {f"keys{EXT}", f"por{EXT}", f"pages{EXT}", f"spte{EXT}",
                                         "build"}
    assert not list(tmp_path.rglob(f"*{EXT}")) and not (tmp_path / "build").exists()
    assert sorted(p.name for p in pkg.rglob("*.py")) == ["__init__.py", "__init__.py", "keys.py",
                                                          "pages.py", "por.py", "spte.py"]


@over_a_build
def test_over_a_build_kvmmu_check_runs_the_compiled_explorer_on_the_interpreted_protocol() -> None:
    # sys.argv as the console script sees it, set before kvmmu is imported.
    code = ("import sys; sys.argv = ['kvmmu', 'check', '--bound', '1']; "
            "import kvmmu, kvmmu.check, kvmmu.sim.engine; from kvmmu import compiled; "
            "print(compiled.loaded_compiled(compiled.EXPLORER) == list(compiled.EXPLORER), "
            "compiled.loaded_compiled())")
    assert run_python(code) == "True []"
    plain = ("import kvmmu, kvmmu.check, kvmmu.sim.engine; from kvmmu import compiled; "
             "print(compiled.loaded_compiled() == list(compiled.COMPILED), "
             "compiled.loaded_compiled(compiled.EXPLORER) == list(compiled.EXPLORER))")
    assert run_python(plain) == "True True"  # without the switch, both groups compiled


@over_a_build
def test_over_a_build_the_explorer_results_pickle_and_unpickle() -> None:
    # mypyc's own __setstate__ cannot set a frozen dataclass's fields: kvmmu.check repairs it.
    code = ("import copy, pickle; from kvmmu.check import CheckConfig, explore; "
            "from kvmmu import compiled; "
            "c = CheckConfig('generation-3.11+tagged-cache', vcpus=1, updates=1); "
            "r = explore(c, preemptions=1); "
            "back = pickle.loads(pickle.dumps(r)); "
            "print(compiled.is_compiled(__import__('sys').modules['kvmmu.check.explore']), "
            "r.failure is not None, back == r, pickle.loads(pickle.dumps(c)) == c, "
            "copy.copy(r.failure) == r.failure)")
    assert run_python(code, env={compiled.ENV: "1"}) == "True True True True True"


def test_kvmmu_check_runs_interpreted_by_itself_even_over_a_compiled_build() -> None:
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV}
    proc = subprocess.run([sys.executable, "-m", "kvmmu", "check", "--strategy", "generation-3.11",
                           "--vcpus", "1", "--updates", "1"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr  # 3.11's stale MMIO, found by reading frames
    assert "VIOLATION: stale-mmio" in proc.stdout
