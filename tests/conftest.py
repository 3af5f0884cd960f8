"""Shared fixtures: a real loopback Binance exchange, real ccxt clients, chaos always restored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chaos_shims.activation import deactivate
from chaos_shims.exchange import LoopbackExchange

#: the websocket stream servers (module-scoped fixtures) for the websocket test modules
pytest_plugins = ("tests.exchange.ws_fixtures",)


@pytest.fixture(scope="session", autouse=True)
def _artifacts_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run artifacts of every process the tests start go to a temporary folder, not the repo."""
    import os

    folder = tmp_path_factory.mktemp("chaos-artifacts")
    previous = os.environ.get("CHAOS_SHIMS_ARTIFACTS_DIR")
    os.environ["CHAOS_SHIMS_ARTIFACTS_DIR"] = str(folder)
    yield
    if previous is None:
        os.environ.pop("CHAOS_SHIMS_ARTIFACTS_DIR", None)
    else:
        os.environ["CHAOS_SHIMS_ARTIFACTS_DIR"] = previous


@pytest.fixture(autouse=True)
def _chaos_restored() -> Iterator[None]:
    """Whatever a test activates is off and unpatched after it, pass or fail."""
    yield
    deactivate(unpatch=True)


@pytest.fixture(scope="session")
def loopback() -> Iterator[LoopbackExchange]:
    with LoopbackExchange() as exchange:
        yield exchange


@pytest.fixture
def exchange(loopback: LoopbackExchange) -> Iterator[LoopbackExchange]:
    loopback.clear_requests()
    yield loopback


def client_config(exchange: LoopbackExchange, **overrides: Any) -> dict[str, Any]:
    # ccxt's client-side throttle would only slow tests down: the server is on loopback.
    return {**exchange.ccxt_config(), "enableRateLimit": False, **overrides}


@pytest.fixture
def binance(exchange: LoopbackExchange) -> Any:
    """An unmodified sync ccxt.binance with its markets loaded, talking to the loopback server."""
    ccxt = pytest.importorskip("ccxt")
    client = ccxt.binance(client_config(exchange))
    client.load_markets()
    exchange.clear_requests()
    return client


@pytest_asyncio.fixture
async def async_binance(exchange: LoopbackExchange) -> AsyncIterator[Any]:
    """An unmodified ccxt.async_support.binance with its markets loaded."""
    pytest.importorskip("ccxt")
    import ccxt.async_support as ccxt_async

    client = ccxt_async.binance(client_config(exchange))
    try:
        await client.load_markets()
        exchange.clear_requests()
        yield client
    finally:
        await client.close()


@pytest.fixture
def registry() -> Any:
    """A fresh Prometheus registry, so counts are this test's alone."""
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """An empty folder for run artifacts (what ``chaos-shims report`` reads)."""
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


@pytest.fixture
def no_run_left() -> Iterator[None]:
    """No run and no tick state from another test, before or after this one."""
    from chaos_shims import run, ticks

    run._reset_for_tests()
    ticks._reset_for_tests()
    yield
    run._reset_for_tests()
    ticks._reset_for_tests()
