"""Suite-wide options: ``--compiled`` runs the suite on the mypyc-built modules (make compiled).

The explorer reads the protocol generators' frames, which compiled generators do not have, so it
runs interpreted (``kvmmu.compiled``): tests under ``tests/check`` and tests marked ``explorer``
are left out of a ``--compiled`` session (``make test`` runs them; ``KVMMU_INTERPRETED=1 pytest
-m explorer`` runs them over a compiled build).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

CHECK_TESTS = Path(__file__).parent / "check"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compiled", action="store_true",
                     help="require the modules `make compiled` builds (stop at once if any loads "
                          "from source) and leave out the explorer's tests, which run interpreted")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "explorer: runs the interleaving explorer, which reads "
                                       "generator frames (interpreted modules only)")
    if not config.getoption("--compiled"):
        return
    from kvmmu import compiled

    for name in compiled.COMPILED:
        importlib.import_module(name)
    missing = sorted(set(compiled.COMPILED) - set(compiled.loaded_compiled()))
    if missing:
        raise pytest.UsageError(f"--compiled: loaded from source: {', '.join(missing)} "
                                "(run `make compiled`, and not with KVMMU_INTERPRETED=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CHECK_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.explorer)
    if config.getoption("--compiled"):
        keep = [i for i in items if i.get_closest_marker("explorer") is None]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
