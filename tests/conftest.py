"""Suite-wide options: the suite on the modules ``make compiled`` builds.

``--compiled`` runs the suite on the mypyc-built protocol group (``kvmmu.compiled.COMPILED``).
The explorer reads the protocol generators' frames, which compiled generators do not have, so its
tests (under ``tests/check``, and those marked ``explorer``) are left out of that session.

``--compiled-explorer`` runs those explorer tests instead, on the mypyc-built explorer group
(``kvmmu.compiled.EXPLORER``) over the interpreted protocol, as ``kvmmu check`` runs over a build:
``KVMMU_INTERPRETED=1 pytest --compiled-explorer`` (``make test-compiled`` does both sessions).
Left out of it, each for a reason given below: one test that patches a compiled class, and all
but one strategy of the slowest test (the incremental key held to the key from scratch on random
runs: 9 to 19 s per strategy compiled, 135 s for the twelve; ``make test`` runs every strategy
interpreted, and the compiled key is the same code for all of them).

Both options stop the session at once unless the modules loaded as asked: a build that silently
fell back to the sources would otherwise pass for a compiled one.  Over compiled code pytest's
default traceback, which parses the source of every entry, can die of an internal error in
CPython's parser (``SystemError: AST constructor recursion depth mismatch``, seen on 3.11.7), so
these sessions print native tracebacks unless ``--tb`` says otherwise.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

CHECK_TESTS = Path(__file__).parent / "check"

#: Explorer tests left out of ``--compiled-explorer``, and why.
NOT_OVER_COMPILED_EXPLORER = {
    "test_a_crash_of_the_model_is_a_finding":
        "patches World.step, a method of a compiled class (which the compiled search calls "
        "directly, not through the class)",
}
#: The parametrised test sampled under ``--compiled-explorer``, and the case kept: the TDP MMU,
#: whose runs reach the most kinds of state (read-lock holders, roots torn down and replaced).
SAMPLED = ("test_the_incremental_key_equals_the_key_from_scratch_on_random_runs",
           frozenset({"generation@tdp"}))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compiled", action="store_true",
                     help="require the protocol modules `make compiled` builds (stop at once if "
                          "any loads from source) and leave out the explorer's tests, which run "
                          "interpreted")
    parser.addoption("--compiled-explorer", action="store_true",
                     help="run the explorer's tests only, on the explorer modules `make compiled` "
                          "builds over the interpreted protocol (with KVMMU_INTERPRETED=1; stop "
                          "at once if they did not load that way)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "explorer: runs the interleaving explorer, which reads "
                                       "generator frames (interpreted protocol modules only)")
    protocol = config.getoption("--compiled")
    explorer = config.getoption("--compiled-explorer")
    if not (protocol or explorer):
        return
    if protocol and explorer:
        raise pytest.UsageError("--compiled and --compiled-explorer are two sessions: the "
                                "explorer needs the protocol interpreted")
    if config.option.tbstyle == "auto":
        config.option.tbstyle = "native"
    from kvmmu import compiled

    for name in compiled.COMPILED if protocol else (*compiled.COMPILED, *compiled.EXPLORER):
        importlib.import_module(name)
    if protocol:
        missing = sorted(set(compiled.COMPILED) - set(compiled.loaded_compiled()))
        if missing:
            raise pytest.UsageError(f"--compiled: loaded from source: {', '.join(missing)} "
                                    "(run `make compiled`, and not with KVMMU_INTERPRETED=1)")
        return
    if os.environ.get(compiled.ENV, "") in ("", "0"):
        raise pytest.UsageError(f"--compiled-explorer needs {compiled.ENV}=1 in the environment "
                                "(the protocol must load from source)")
    missing = sorted(set(compiled.EXPLORER) - set(compiled.loaded_compiled(compiled.EXPLORER)))
    native = compiled.loaded_compiled(compiled.COMPILED)
    if missing or native:
        raise pytest.UsageError(
            "--compiled-explorer: "
            + (f"loaded from source: {', '.join(missing)} (run `make compiled`)" if missing
               else f"protocol modules loaded compiled: {', '.join(native)}"))


def _left_out_of_compiled_explorer(item: pytest.Item) -> bool:
    name = getattr(item, "originalname", item.name)
    if name in NOT_OVER_COMPILED_EXPLORER:
        return True
    callspec = getattr(item, "callspec", None)
    return name == SAMPLED[0] and callspec is not None and callspec.id not in SAMPLED[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CHECK_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.explorer)
    if config.getoption("--compiled"):
        keep = [i for i in items if i.get_closest_marker("explorer") is None]
    elif config.getoption("--compiled-explorer"):
        keep = [i for i in items if i.get_closest_marker("explorer") is not None
                and not _left_out_of_compiled_explorer(i)]
    else:
        return
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
