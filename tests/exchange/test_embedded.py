"""The embedded exchange: REST and streams of one market, started together, that unmodified
ccxt (sync, async, pro) binance and a plain websockets client use once pointed there."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from chaos_shims.exchange.embedded import (
    DESCRIPTION_SCHEMA,
    EmbeddedExchange,
    EmbeddedExchangeError,
    PortInUse,
    load_description,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedExchange]:
    with EmbeddedExchange(seed=3, url_host="localhost") as exchange:
        yield exchange


def _config(embedded: EmbeddedExchange) -> dict[str, Any]:
    return {**embedded.ccxt_config(), "enableRateLimit": False}


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if "://" in value else []
    if isinstance(value, dict):
        return [url for item in value.values() for url in _urls(item)]
    return []


def test_every_url_points_at_the_embedded_servers(embedded: EmbeddedExchange) -> None:
    urls = _urls(embedded.ccxt_config()["urls"])
    assert urls
    rest = f"http://localhost:{embedded.rest_port}/"
    stream = f"ws://localhost:{embedded.ws_port}/"
    assert all(url.startswith((rest, stream)) for url in urls), urls
    assert embedded.ccxt_config()["urls"]["api"]["ws"]["spot"] == embedded.ws_url
    assert embedded.stream_url("btcusdt@trade") == embedded.ws_url + "/btcusdt@trade"


def test_sync_ccxt_trades_on_it(embedded: EmbeddedExchange) -> None:
    client = ccxt.binance(_config(embedded))
    book = client.fetch_order_book("BTC/USDT", 5)
    bid = book["bids"][0][0]
    order = client.create_order("BTC/USDT", "limit", "buy", 0.0002, bid - 50,
                                {"postOnly": True})
    try:
        assert [o["id"] for o in client.fetch_open_orders("BTC/USDT")] == [order["id"]]
        assert client.fetch_balance()["used"]["USDT"] > 0
    finally:
        assert client.cancel_order(order["id"], "BTC/USDT")["status"] == "canceled"


@pytest.mark.asyncio
async def test_async_ccxt_trades_on_it(embedded: EmbeddedExchange) -> None:
    import ccxt.async_support as ccxt_async

    client = ccxt_async.binance(_config(embedded))
    try:
        book = await client.fetch_order_book("ETH/USDT", 5)
        order = await client.create_order("ETH/USDT", "limit", "sell", 0.01,
                                          book["asks"][0][0] + 5, {"postOnly": True})
        cancelled = await client.cancel_order(order["id"], "ETH/USDT")
        assert cancelled["status"] == "canceled"
        assert await client.load_time_difference() is not None
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_ccxt_pro_streams_from_it(embedded: EmbeddedExchange) -> None:
    import ccxt.pro as ccxt_pro

    client = ccxt_pro.binance(_config(embedded))
    try:
        trades = await asyncio.wait_for(client.watch_trades("BTC/USDT"), 5)
        assert trades and trades[-1]["symbol"] == "BTC/USDT"
        nonces = []
        for _ in range(3):
            book = await asyncio.wait_for(client.watch_order_book("BTC/USDT"), 5)
            nonces.append(book["nonce"])
        assert nonces == sorted(nonces) and nonces[-1] > nonces[0]
        assert book["bids"][0][0] < book["asks"][0][0]
    finally:
        await client.close()


def test_a_plain_websockets_client_syncs_with_the_rest_snapshot(
    embedded: EmbeddedExchange,
) -> None:
    """Binance's recipe across the two servers: subscribe, snapshot, diffs that continue it."""
    client = ccxt.binance(_config(embedded))
    with connect(embedded.ws_url) as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}))
        assert json.loads(ws.recv(timeout=5)) == {"result": None, "id": 1}
        snapshot = client.fetch_order_book("BTC/USDT", 1000)["nonce"]
        event = json.loads(ws.recv(timeout=5))
        while event["u"] <= snapshot:
            event = json.loads(ws.recv(timeout=5))
        assert event["U"] <= snapshot + 1 <= event["u"]
        following = json.loads(ws.recv(timeout=5))
        assert following["U"] == event["u"] + 1


def test_the_description_carries_what_another_process_needs(
    embedded: EmbeddedExchange, tmp_path: Any,
) -> None:
    path = embedded.write_description(tmp_path / "nested" / "exchange.json")
    assert os.stat(path).st_mode & 0o777 == 0o600  # it holds the API secret
    description = load_description(path)
    assert description["schema"] == DESCRIPTION_SCHEMA
    assert description["ws_url"] == embedded.ws_url
    assert description["ccxt"]["urls"] == embedded.ccxt_config()["urls"]
    assert description["symbols"] == ["BTC/USDT", "ETH/USDT"]
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not an embedded exchange description"):
        load_description(tmp_path / "other.json")


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("service", ["REST", "websocket"])
def test_a_port_in_use_is_refused_by_name(service: str) -> None:
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        ports = {"rest_port": port} if service == "REST" else {"ws_port": port}
        exchange = EmbeddedExchange(**ports)
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} \\({service}\\) is already in use"):
            exchange.start()
        assert isinstance(PortInUse(service, "127.0.0.1", port), EmbeddedExchangeError)
        assert not exchange.running
        assert not exchange.rest.running  # nothing half-started is left behind


def test_start_and_stop_are_idempotent() -> None:
    exchange = EmbeddedExchange()
    assert exchange.start() is exchange.start()
    port = exchange.rest_port
    exchange.stop()
    exchange.stop()
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port is free again
