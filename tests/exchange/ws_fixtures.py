"""Shared by the websocket test modules: loopback stream servers (fixtures, registered for the
whole suite by ``tests/conftest.py``) and a message's lateness."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from chaos_shims.exchange import LoopbackExchange
from chaos_shims.exchange.market import Market
from chaos_shims.exchange.ws import LoopbackAiohttpWsExchange, LoopbackWsExchange

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
