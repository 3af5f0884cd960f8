"""One helper for the patch hygiene of every patch point: whatever the order of import and
patch, nothing is double-wrapped and unpatching restores the original objects by identity."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from typing import Any

import wrapt

from chaos_shims.integrations import PATCH_POINTS


def _attributes(name: str) -> dict[tuple[Any, str], Any]:
    point = PATCH_POINTS[name]
    integration = point.integration()
    found: dict[tuple[Any, str], Any] = {}
    for module_name in point.modules:
        module = sys.modules[module_name]
        for owner, attribute in integration.patched_attributes(module):
            found[(owner, attribute)] = owner.__dict__[attribute]
    return found


def assert_hygiene_when_imported_first(name: str) -> None:
    """Targets imported before activation; patch twice, unpatch twice, and again."""
    point = PATCH_POINTS[name]
    for module_name in point.modules:
        importlib.import_module(module_name)
    point.disable()
    originals = _attributes(name)
    assert originals and not any(isinstance(v, wrapt.FunctionWrapper) for v in originals.values())
    try:
        for _round in range(2):
            point.enable()
            point.enable()
            assert point.is_patched()
            for (owner, attribute), current in _attributes(name).items():
                assert isinstance(current, wrapt.FunctionWrapper), (owner, attribute)
                # wrapped exactly once: the wrapper's target is the original itself
                assert current.__wrapped__ is originals[(owner, attribute)], (owner, attribute)
            point.disable()
            point.disable()
            assert not point.is_patched()
            assert _attributes(name) == originals
            for (owner, attribute), original in originals.items():
                assert owner.__dict__[attribute] is original
    finally:
        point.disable()


def assert_hygiene_when_imported_after(name: str) -> None:
    """In a fresh interpreter: activation first, then the import patches, then unpatch."""
    point = PATCH_POINTS[name]
    script = textwrap.dedent(f"""
        import importlib, sys
        import wrapt
        from chaos_shims.integrations import PATCH_POINTS
        point = PATCH_POINTS[{name!r}]
        point.enable()
        assert not any(m in sys.modules for m in {point.modules!r}), "imported too early"
        for module_name in {point.modules!r}:
            importlib.import_module(module_name)
        integration = point.integration()
        wrapped = []
        for module_name in {point.modules!r}:
            for owner, attribute in integration.patched_attributes(sys.modules[module_name]):
                current = owner.__dict__[attribute]
                assert isinstance(current, wrapt.FunctionWrapper), (owner, attribute)
                assert not isinstance(current.__wrapped__, wrapt.FunctionWrapper)
                wrapped.append((owner, attribute, current.__wrapped__))
        point.enable()
        point.disable()
        for owner, attribute, original in wrapped:
            assert owner.__dict__[attribute] is original, (owner, attribute)
        print("ok", len(wrapped))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
