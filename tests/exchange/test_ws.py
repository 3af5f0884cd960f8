"""The loopback websocket streams: Binance's raw and combined forms, subscribe messages, depth
diffs that continue the REST book (one market behind both), the message rate, the lifecycle,
and an unmodified ccxt.pro binance streaming from both servers (websockets and aiohttp)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

from chaos_shims.exchange import LoopbackExchange
from chaos_shims.exchange.market import Market
from chaos_shims.exchange.ws import LoopbackAiohttpWsExchange, LoopbackWsExchange
from tests.conftest import client_config

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

SERVERS = [LoopbackWsExchange, LoopbackAiohttpWsExchange]


@pytest.fixture(scope="module", params=SERVERS, ids=["websockets", "aiohttp"])
def server(request: pytest.FixtureRequest, stream_exchange: LoopbackExchange) -> Iterator[Any]:
    with request.param(stream_exchange) as running:
        yield running


def _events(url: str, count: int) -> list[dict[str, Any]]:
    with connect(url) as ws:
        return [json.loads(ws.recv(timeout=5)) for _ in range(count)]


def test_raw_trade_stream(server: Any) -> None:
    events = _events(server.raw_url("btcusdt@trade"), 3)
    assert [e["e"] for e in events] == ["trade"] * 3
    assert {e["s"] for e in events} == {"BTCUSDT"}
    assert [e["t"] for e in events] == list(range(events[0]["t"], events[0]["t"] + 3))
    first = events[0]
    assert set(first) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
    assert abs(float(first["p"]) - 50000) < 1000 and float(first["q"]) > 0
    assert abs(first["E"] - time.time() * 1000) < 1000


def test_depth_diffs_continue_each_other(server: Any) -> None:
    events = _events(server.raw_url("ethusdt@depth@100ms"), 6)
    assert {e["e"] for e in events} == {"depthUpdate"}
    assert set(events[0]) == {"e", "E", "s", "U", "u", "b", "a"}  # spot: no pu
    for previous, event in itertools.pairwise(events):
        assert event["U"] == previous["u"] + 1
        assert event["u"] >= event["U"]
    for event in events:
        assert all(float(qty) >= 0 for _, qty in event["b"] + event["a"])


def test_a_rest_snapshot_and_the_stream_agree(server: Any, stream_exchange: LoopbackExchange) -> None:
    """Binance's recipe: buffer diffs, take a snapshot, apply the diffs after it: one of them
    has U <= lastUpdateId + 1 <= u, because REST and stream show the same market."""
    with connect(server.raw_url("btcusdt@depth")) as ws:
        first = json.loads(ws.recv(timeout=5))
        url = f"{stream_exchange.api_url}/depth?symbol=BTCUSDT&limit=1000"
        with urllib.request.urlopen(url) as reply:
            snapshot = json.load(reply)["lastUpdateId"]
        assert first["U"] <= snapshot + 1
        event = first
        while event["u"] < snapshot + 1:
            following = json.loads(ws.recv(timeout=5))
            assert following["U"] == event["u"] + 1
            event = following
        assert event["U"] <= snapshot + 1 <= event["u"]


def test_combined_form_wraps_each_event(server: Any) -> None:
    events = _events(server.combined_url("btcusdt@trade", "ethusdt@depth"), 4)
    assert {e["stream"] for e in events} == {"btcusdt@trade", "ethusdt@depth"}
    for event in events:
        assert event["data"]["e"] == ("trade" if event["stream"] == "btcusdt@trade" else "depthUpdate")


def test_subscribe_list_and_unsubscribe_messages(server: Any) -> None:
    with connect(server.raw_url("0")) as ws:  # ccxt.pro's form: /ws/<n>, then SUBSCRIBE
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
        assert json.loads(ws.recv(timeout=5)) == {"result": None, "id": 7}
        assert json.loads(ws.recv(timeout=5))["s"] == "ETHUSDT"
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        replies = [json.loads(ws.recv(timeout=5)) for _ in range(5)]
        assert {"result": ["ethusdt@trade"], "id": 8} in replies
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 9}))
        while json.loads(ws.recv(timeout=5)).get("id") != 9:
            pass
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.1)  # nothing subscribed any more
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 10}))
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == 2
        ws.send("not json")
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == 3
    requests = [(r.method, r.params, r.id) for r in server.requests() if r.path == "/ws/0"]
    assert requests[:3] == [("SUBSCRIBE", ("ethusdt@trade",), 7), ("LIST_SUBSCRIPTIONS", (), 8),
                            ("UNSUBSCRIBE", ("ethusdt@trade",), 9)]


def test_unknown_path_is_404(server: Any) -> None:
    with pytest.raises(InvalidStatus) as raised, connect(server.url + "/api/v3/depth"):
        pass
    assert raised.value.response.status_code == 404


def test_rate_is_events_per_second_per_stream() -> None:
    """A server on no market makes its own and steps it ``rate`` times a second."""
    with LoopbackWsExchange(rate=100, seed=3) as own, connect(own.raw_url("btcusdt@trade")) as ws:
        assert own.rate == 100
        ws.recv(timeout=5)
        started = time.monotonic()
        for _ in range(50):
            ws.recv(timeout=5)
        assert 0.4 < time.monotonic() - started < 0.7
    assert not own.market.ticker_running


def test_a_market_given_sets_its_own_rate() -> None:
    market = Market(interval=0.05)
    server = LoopbackWsExchange(market)
    assert server.market is market and server.rate == pytest.approx(20)
    with pytest.raises(ValueError):
        LoopbackWsExchange(market, rate=10)
    with pytest.raises(ValueError):
        LoopbackWsExchange(rate=0)


def test_connections_are_counted_and_stop_closes_them() -> None:
    server = LoopbackWsExchange(rate=50)
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018 - no port before start
    server.start()
    server.start()  # idempotent
    port = server.port
    with connect(server.raw_url("btcusdt@trade")) as ws:
        ws.recv(timeout=5)
        assert server.open_connections == 1 and server.connections_total == 1
        server.stop()
        server.stop()
        with pytest.raises(ConnectionClosedOK):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code == 1001  # going away
    with server:  # restarts on the same port, so URLs handed out stay valid
        assert server.port == port and server.open_connections == 0


def test_aiohttp_stop_closes_client_connections() -> None:
    server = LoopbackAiohttpWsExchange(rate=50).start()
    with connect(server.raw_url("btcusdt@trade")) as ws:
        ws.recv(timeout=5)
        server.stop()
        with pytest.raises(ConnectionClosedOK):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code == 1001


def test_ccxt_config_points_every_ws_entry_here(server: Any, stream_exchange: LoopbackExchange) -> None:
    config = server.ccxt_config()
    ws_urls = config["urls"]["api"]["ws"]
    assert ws_urls["spot"] == server.url + "/ws"
    assert all(url.startswith(server.url) for key, url in ws_urls.items() if key != "ws-api")
    assert config["urls"]["api"]["public"] == stream_exchange.api_url


@pytest.mark.asyncio
async def test_unmodified_ccxt_pro_streams_trades_and_the_order_book(
    server: Any, stream_exchange: LoopbackExchange,
) -> None:
    import ccxt.pro as ccxtpro

    # only the websocket URLs differ from the REST test client's config
    config = client_config(stream_exchange)
    config["urls"]["api"] = {**config["urls"]["api"], "ws": server.ccxt_urls()}
    client = ccxtpro.binance(config)
    try:
        seen: list[int] = []
        while len(seen) < 5:
            trades = await asyncio.wait_for(client.watch_trades("BTC/USDT"), 5)
            seen.extend(int(t["id"]) for t in trades if not seen or int(t["id"]) > seen[-1])
        assert seen == list(range(seen[0], seen[0] + len(seen)))
        nonces = []
        for _ in range(4):
            book = await asyncio.wait_for(client.watch_order_book("ETH/USDT"), 5)
            nonces.append(book["nonce"])
            assert book["bids"][0][0] < book["asks"][0][0]
        assert nonces == sorted(nonces) and nonces[-1] > nonces[0]
        # the book ccxt keeps from snapshot + diffs is the market's own
        market_book = stream_exchange.market.book("ETH/USDT", 5)
        assert abs(book["bids"][0][0] - float(market_book.bids[0][0])) < 5
    finally:
        await client.close()
    assert server.wait_for(lambda: server.open_connections == 0)
