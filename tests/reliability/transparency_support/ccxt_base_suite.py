"""ccxt's own offline tests, from its source distribution, as pytest items.

ccxt does not run its Python tests with pytest: ``python/ccxt/test/tests_init.py --baseTests``
(and ``--baseTests --ws``) calls, one after the other, the functions listed in
``base_tests_init()`` (python/ccxt/test/base/tests_init.py) and ``test_base_init_ws()``
(python/ccxt/pro/test/base/tests_init.py). Everything else in that harness talks to live
exchanges. This module reads those two lists from the sdist (so it follows whatever the sdist
lists, in its order) and makes each call one pytest test, so two runs can be compared test by
test. Each async test runs in its own ``asyncio.run``.

The test code is loaded from the sdist (``TRANSPARENCY_CCXT_SDIST``: the unpacked
``ccxt-<version>`` folder): ``ccxt.test`` and ``ccxt.pro.test`` are made packages whose search
path is the sdist's folders, while ``ccxt`` itself is the installed library, the one
chaos_shims patches. Not named ``test_*.py``: the project's own pytest run never collects it.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

SDIST_ENV = "TRANSPARENCY_CCXT_SDIST"


class Runner(NamedTuple):
    """One of ccxt's offline runners: the package its tests live in, and the function that
    calls them (in the sdist file ``runner_file`` under ``python/ccxt/``)."""

    label: str
    package: str
    folder: str
    runner_file: str
    runner_function: str


RUNNERS = (
    Runner("rest", "ccxt.test", "test", "test/base/tests_init.py", "base_tests_init"),
    Runner("ws", "ccxt.pro.test", "pro/test", "pro/test/base/tests_init.py", "test_base_init_ws"),
)


class Entry(NamedTuple):
    runner: Runner
    function: str
    module: str


def sdist_ccxt() -> Path | None:
    root = os.environ.get(SDIST_ENV)
    if not root:
        return None
    folder = Path(root) / "python" / "ccxt"
    return folder if folder.is_dir() else None


def runner_entries(ccxt_folder: Path, runner: Runner) -> list[Entry]:
    """The calls ``runner.runner_function`` makes, in order, with the module each comes from."""
    tree = ast.parse((ccxt_folder / runner.runner_file).read_text(encoding="utf-8"))
    origin: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module
    entries: list[Entry] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name == runner.runner_function:
            for statement in node.body:
                call = statement.value if isinstance(statement, ast.Expr) else None
                if isinstance(call, ast.Await):
                    call = call.value
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                    entries.append(Entry(runner, call.func.id, origin[call.func.id]))
    return entries


def _use_sdist_package(name: str, folder: Path) -> None:
    """``name`` as a package searched only in ``folder`` (the sdist's copy of the tests)."""
    existing = sys.modules.get(name)
    if existing is not None and list(getattr(existing, "__path__", [])) == [str(folder)]:
        return
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent_name, _, child = name.rpartition(".")
    setattr(importlib.import_module(parent_name), child, module)


def _entries() -> list[Entry]:
    folder = sdist_ccxt()
    if folder is None:
        return []
    return [entry for runner in RUNNERS for entry in runner_entries(folder, runner)]


ENTRIES = _entries()

if not ENTRIES:
    pytest.skip(f"the ccxt sdist is not unpacked ({SDIST_ENV} unset or wrong): "
                "run scripts/fetch_target_suites.sh", allow_module_level=True)


def _load(entry: Entry) -> Any:
    folder = sdist_ccxt()
    assert folder is not None
    for runner in RUNNERS:
        _use_sdist_package(runner.package, folder / runner.folder)
    module = importlib.import_module(entry.module)
    source = Path(str(module.__file__)).resolve()
    assert source.is_relative_to(folder.resolve()), f"{entry.module} was not loaded from the sdist"
    return getattr(module, entry.function)


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e.runner.label}-{e.function}" for e in ENTRIES])
def test_ccxt_base(entry: Entry) -> None:
    function = _load(entry)
    if inspect.iscoroutinefunction(function):
        asyncio.run(function())
    else:
        function()
