"""One helper for the patch hygiene of every patch point: whatever the order of import and
patch, nothing is double-wrapped and unpatching restores the original objects by identity.

A wrap may shadow an inherited method (websockets' client classes inherit ``recv``): the
original is what the owner resolves (``inspect.getattr_static``), and after unpatching the
owner's own ``__dict__`` is as it was, the shadowing slot gone again."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
import warnings
from typing import Any

from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.integrations.wrapping import is_chaos_wrapper

#: what ``owner.__dict__`` holds for an inherited attribute: nothing
ABSENT = object()


def import_targets(name: str) -> None:
    """Import every module a patch point waits for (the legacy websockets client warns on
    import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module_name in PATCH_POINTS[name].modules:
            importlib.import_module(module_name)


def _targets(name: str) -> list[tuple[Any, str]]:
    point = PATCH_POINTS[name]
    integration = point.integration()
    return [pair for module_name in point.modules
            for pair in integration.patched_attributes(sys.modules[module_name])]


def assert_hygiene_when_imported_first(name: str) -> None:
    """Targets imported before activation; patch twice, unpatch twice, and again: each wrap
    wraps what the owner resolved before (its own or inherited) exactly once, and unpatching
    leaves the owner's ``__dict__`` as it was."""
    point = PATCH_POINTS[name]
    import_targets(name)
    point.disable()
    before = {(owner, attribute): (owner.__dict__.get(attribute, ABSENT),
                                   inspect.getattr_static(owner, attribute))
              for owner, attribute in _targets(name)}
    assert before and not any(is_chaos_wrapper(resolved) for _, resolved in before.values())
    try:
        for _round in range(2):
            point.enable()
            point.enable()
            assert point.is_patched()
            for (owner, attribute), (_, resolved) in before.items():
                current = owner.__dict__[attribute]
                assert is_chaos_wrapper(current), (owner, attribute)
                # wrapped exactly once: the wrapper's target is the original itself
                assert current.__wrapped__ is resolved, (owner, attribute)
            point.disable()
            point.disable()
            assert not point.is_patched()
            for (owner, attribute), (own, resolved) in before.items():
                assert owner.__dict__.get(attribute, ABSENT) is own, (owner, attribute)
                assert inspect.getattr_static(owner, attribute) is resolved, (owner, attribute)
    finally:
        point.disable()


def assert_hygiene_when_imported_after(name: str) -> None:
    """In a fresh interpreter: activation first, then the import patches, a second enable
    changes nothing, then unpatch (twice) restores. wrapt (imported by the wrapping helpers) comes
    only after the targets: it imports ``socket`` itself, which would hide ``socket_dns``'s hook."""
    point = PATCH_POINTS[name]
    script = textwrap.dedent(f"""
        import importlib, inspect, sys, warnings
        from chaos_shims.integrations import PATCH_POINTS
        point = PATCH_POINTS[{name!r}]
        point.enable()
        assert not any(m in sys.modules for m in {point.modules!r}), "imported too early"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for module_name in {point.modules!r}:
                importlib.import_module(module_name)
        from chaos_shims.integrations.wrapping import is_chaos_wrapper
        integration = point.integration()
        wrapped = []
        for module_name in {point.modules!r}:
            for owner, attribute in integration.patched_attributes(sys.modules[module_name]):
                current = owner.__dict__[attribute]
                assert is_chaos_wrapper(current), (owner, attribute)
                assert not is_chaos_wrapper(current.__wrapped__)
                wrapped.append((owner, attribute, current, current.__wrapped__))
        point.enable()
        for owner, attribute, current, _ in wrapped:
            assert owner.__dict__[attribute] is current, ("wrapped twice", owner, attribute)
        point.disable()
        point.disable()
        for owner, attribute, _, original in wrapped:
            assert inspect.getattr_static(owner, attribute) is original, (owner, attribute)
        print("ok", len(wrapped))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
