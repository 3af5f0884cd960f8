"""Shared by the websocket test modules: loopback stream servers, a message's lateness, and
patch hygiene for wraps that shadow an inherited method (``tests/patch_hygiene.py`` reads
``owner.__dict__[name]``, which does not exist before such a wrap)."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import wrapt

from chaos_shims.exchange import LoopbackExchange
from chaos_shims.exchange.market import Market
from chaos_shims.exchange.ws import LoopbackAiohttpWsExchange, LoopbackWsExchange
from chaos_shims.integrations import PATCH_POINTS

#: events per second per stream: a message every 20 ms keeps lag measurements short
RATE = 50.0
TRADES = "btcusdt@trade"


@pytest.fixture(scope="module")
def stream_exchange() -> Iterator[LoopbackExchange]:
    """A REST exchange whose market moves RATE steps a second: what the streams show (the
    session's ``loopback`` stays still for the REST tests)."""
    market = Market(interval=1.0 / RATE, seed=7)
    with LoopbackExchange(market=market, tick_rate=RATE) as exchange:
        yield exchange


@pytest.fixture(scope="module")
def ws_server(stream_exchange: LoopbackExchange) -> Iterator[LoopbackWsExchange]:
    """A ``websockets`` stream server on the REST exchange's market."""
    with LoopbackWsExchange(stream_exchange) as server:
        yield server


@pytest.fixture(scope="module")
def aiohttp_ws_server(stream_exchange: LoopbackExchange) -> Iterator[LoopbackAiohttpWsExchange]:
    """The same streams on an ``aiohttp.web`` server."""
    with LoopbackAiohttpWsExchange(stream_exchange) as server:
        yield server


def lateness_ms(raw: str | bytes) -> float:
    """How long ago the server stamped this event (its ``E``, whole ms: up to 1 ms early)."""
    event = json.loads(raw)
    event = event.get("data", event)
    return time.time() * 1000.0 - float(event["E"])


def import_targets(name: str) -> None:
    """Import every module a patch point waits for (the legacy client warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module_name in PATCH_POINTS[name].modules:
            importlib.import_module(module_name)


_ABSENT = object()


def _targets(name: str) -> list[tuple[Any, str]]:
    point = PATCH_POINTS[name]
    integration = point.integration()
    return [pair for module_name in point.modules
            for pair in integration.patched_attributes(sys.modules[module_name])]


def assert_shadowing_hygiene_when_imported_first(name: str) -> None:
    """Patch twice, unpatch twice, and again: each wrap wraps the method the class resolved
    before (its own or inherited) exactly once, and unpatching leaves the class ``__dict__``
    as it was (an inherited method's shadowing slot is gone again)."""
    point = PATCH_POINTS[name]
    import_targets(name)
    point.disable()
    before = {(owner, attribute): (owner.__dict__.get(attribute, _ABSENT),
                                   inspect.getattr_static(owner, attribute))
              for owner, attribute in _targets(name)}
    assert before and not any(isinstance(resolved, wrapt.FunctionWrapper)
                              for _, resolved in before.values())
    try:
        for _round in range(2):
            point.enable()
            point.enable()
            assert point.is_patched()
            for (owner, attribute), (_, resolved) in before.items():
                current = owner.__dict__[attribute]
                assert isinstance(current, wrapt.FunctionWrapper), (owner, attribute)
                assert current.__wrapped__ is resolved, (owner, attribute)
            point.disable()
            point.disable()
            assert not point.is_patched()
            for (owner, attribute), (own, resolved) in before.items():
                assert owner.__dict__.get(attribute, _ABSENT) is own, (owner, attribute)
                assert inspect.getattr_static(owner, attribute) is resolved
    finally:
        point.disable()


def assert_shadowing_hygiene_when_imported_after(name: str) -> None:
    """In a fresh interpreter: enable first, then the imports patch, then unpatch restores."""
    point = PATCH_POINTS[name]
    script = textwrap.dedent(f"""
        import importlib, inspect, sys, warnings
        import wrapt
        from chaos_shims.integrations import PATCH_POINTS
        point = PATCH_POINTS[{name!r}]
        point.enable()
        assert not any(m in sys.modules for m in {point.modules!r}), "imported too early"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
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
            assert inspect.getattr_static(owner, attribute) is original, (owner, attribute)
        print("ok", len(wrapped))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
