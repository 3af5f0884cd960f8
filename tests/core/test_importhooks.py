"""Post-import hooks: fire after the module runs, once, and never break the import."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from chaos_shims.core import importhooks


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"chaos_target_{id(tmp_path)}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / name / "sub.py").write_text("import importlib.resources\nVALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_hook_fires_after_the_module_has_run(package: str) -> None:
    seen: list[int] = []
    importhooks.when_imported(f"{package}.sub", lambda module: seen.append(module.VALUE))
    assert seen == []
    module = __import__(f"{package}.sub", fromlist=["VALUE"])
    assert seen == [2]
    # The module keeps its real loader: nothing sees the hook's proxy afterwards.
    assert type(module.__loader__).__name__ != "_HookedLoader"
    assert type(module.__spec__.loader).__name__ != "_HookedLoader"


def test_hook_runs_at_once_when_already_imported(package: str) -> None:
    __import__(package)
    seen: list[str] = []
    importhooks.when_imported(package, lambda module: seen.append(module.__name__))
    assert seen == [package]


def test_same_hook_registered_twice_runs_once(package: str) -> None:
    seen: list[ModuleType] = []
    hook = seen.append
    importhooks.when_imported(package, hook)
    importhooks.when_imported(package, hook)
    __import__(package)
    assert len(seen) == 1


def test_failing_hook_never_breaks_the_import(package: str, caplog: pytest.LogCaptureFixture) -> None:
    def broken(module: ModuleType) -> None:
        raise RuntimeError("hook bug")

    importhooks.when_imported(package, broken)
    with caplog.at_level("ERROR", logger="chaos_shims"):
        module = __import__(package)
    assert module.VALUE == 1
    assert any("post-import hook" in r.getMessage() for r in caplog.records)


def test_unwatched_imports_are_untouched(package: str) -> None:
    module = __import__(package)
    assert type(module.__loader__).__name__ == "SourceFileLoader"
