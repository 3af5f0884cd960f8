"""LoopbackExchange driven by the real ccxt binance classes (sync and async)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.exchange import LoopbackExchange, RecordedRequest

ccxt = pytest.importorskip("ccxt")
ccxt_async = pytest.importorskip("ccxt.async_support")

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("error::ResourceWarning")]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loopback_exchange() -> Iterator[LoopbackExchange]:
    with LoopbackExchange() as exchange:
        yield exchange


def make_client(exchange: LoopbackExchange, **overrides: Any) -> Any:
    # ccxt's client-side throttle only slows the tests down; the server is local.
    return ccxt.binance(
        {**exchange.ccxt_config(), "enableRateLimit": False, **overrides}
    )


def make_async_client(exchange: LoopbackExchange, **overrides: Any) -> Any:
    return ccxt_async.binance(
        {**exchange.ccxt_config(), "enableRateLimit": False, **overrides}
    )


def raw_request(
    exchange: LoopbackExchange,
    method: str,
    path: str,
    query: str = "",
    body: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """Plain stdlib HTTP, for what ccxt can't be made to send."""
    url = exchange.base_url + path + ("?" + query if query else "")
    request = urllib.request.Request(
        url, data=body.encode() if body else None, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------- config


def test_package_imports_without_network_clients() -> None:
    # Make ccxt & co. unimportable, then import the exchange package in a fresh interpreter.
    code = (
        "import sys\n"
        "for name in ('ccxt', 'requests', 'aiohttp', 'websockets'):\n"
        "    sys.modules[name] = None\n"
        "from chaos_shims.exchange import LoopbackExchange\n"
        "with LoopbackExchange() as ex:\n"
        "    assert ex.port > 0\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr


def test_ccxt_config_points_every_binance_url_at_loopback(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = ccxt.binance(loopback_exchange.ccxt_config())
    for section in ("api", "test", "demo"):
        escaped = {
            name: url
            for name, url in client.urls[section].items()
            if isinstance(url, str) and not url.startswith(loopback_exchange.base_url)
        }
        assert escaped == {}, f"urls[{section!r}] would leave loopback"
    assert client.urls["api"]["public"] == loopback_exchange.api_url
    assert client.urls["api"]["private"] == loopback_exchange.api_url
    assert loopback_exchange.base_url == f"http://127.0.0.1:{loopback_exchange.port}"


def test_stray_sapi_call_stays_on_loopback(loopback_exchange: LoopbackExchange) -> None:
    client = make_client(loopback_exchange)
    with pytest.raises(ccxt.ExchangeNotAvailable):  # binance maps HTTP 404 this way
        client.sapiGetSystemStatus()
    assert loopback_exchange.request_count("/sapi/v1/system/status") == 1


# ----------------------------------------------------------------- sync ccxt


def test_load_markets_takes_precision_from_filters(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = ccxt.binance(loopback_exchange.ccxt_config())  # config exactly as returned
    markets = client.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets["BTC/USDT"]
    assert btc["id"] == "BTCUSDT"
    assert btc["spot"] is True
    assert btc["active"] is True
    assert btc["precision"]["price"] == 0.01  # PRICE_FILTER tickSize
    assert btc["precision"]["amount"] == 0.00001  # LOT_SIZE stepSize
    assert markets["ETH/USDT"]["precision"]["amount"] == 0.0001
    assert btc["limits"]["cost"]["min"] == 5
    # Only exchangeInfo: no sapi currencies, margin pairs, futures markets or /time.
    assert [r.path for r in loopback_exchange.requests()] == ["/api/v3/exchangeInfo"]


def test_fetch_order_book_respects_limit(loopback_exchange: LoopbackExchange) -> None:
    client = make_client(loopback_exchange)
    book = client.fetch_order_book("BTC/USDT", limit=5)
    assert len(book["bids"]) == len(book["asks"]) == 5
    best_bid, best_ask = book["bids"][0][0], book["asks"][0][0]
    assert best_bid < 50_000 < best_ask
    assert [level[0] for level in book["bids"]] == sorted(
        (level[0] for level in book["bids"]), reverse=True
    )
    assert loopback_exchange.request_count("/api/v3/depth") == 1
    assert loopback_exchange.requests()[-1].query["limit"] == "5"


def test_limit_order_rests_until_cancelled(loopback_exchange: LoopbackExchange) -> None:
    client = make_client(loopback_exchange)
    client.load_markets()
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 40_000)
    assert order["status"] == "open"
    assert order["filled"] == 0

    assert [o["id"] for o in client.fetch_open_orders("BTC/USDT")] == [order["id"]]
    fetched = client.fetch_order(order["id"], "BTC/USDT")
    assert fetched["status"] == "open"
    assert fetched["price"] == 40_000
    assert fetched["amount"] == 0.01
    assert fetched["clientOrderId"] == order["clientOrderId"]
    assert loopback_exchange.balances()["USDT"]["locked"] == 400.0
    assert len(loopback_exchange.open_orders()) == 1

    cancelled = client.cancel_order(order["id"], "BTC/USDT")
    assert cancelled["status"] == "canceled"
    assert client.fetch_open_orders("BTC/USDT") == []
    assert loopback_exchange.balances()["USDT"] == {
        "free": 100_000.0,
        "locked": 0.0,
        "total": 100_000.0,
    }
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.cancel_order(order["id"], "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        client.fetch_order("987654", "BTC/USDT")


def test_market_orders_fill_and_move_balances(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = make_client(loopback_exchange)
    client.load_markets()
    before = client.fetch_balance()
    assert before["USDT"]["free"] == 100_000
    assert before["BTC"]["free"] == 10

    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["status"] == "closed"
    assert order["filled"] == 0.01
    assert order["average"] == 50_005  # best ask of the synthetic book
    after = client.fetch_balance()
    assert after["BTC"]["total"] == pytest.approx(10.01)
    assert after["USDT"]["total"] == pytest.approx(100_000 - 500.05)

    # A market buy by cost is sent as quoteOrderQty.
    by_cost = client.create_market_buy_order_with_cost("ETH/USDT", 300)
    assert by_cost["status"] == "closed"
    assert loopback_exchange.requests()[-1].query["quoteOrderQty"] == "300"

    sell = client.create_order("BTC/USDT", "market", "sell", 0.01)
    assert sell["average"] == 49_995  # best bid

    trades = client.fetch_my_trades("BTC/USDT")
    assert [(t["side"], t["amount"], t["order"]) for t in trades] == [
        ("buy", 0.01, order["id"]),
        ("sell", 0.01, sell["id"]),
    ]
    assert trades[0]["price"] == 50_005
    assert trades[0]["cost"] == pytest.approx(500.05)


def test_order_rejections_map_to_ccxt_errors(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = make_client(loopback_exchange)
    client.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", 11)
    with pytest.raises(ccxt.InvalidOrder):  # LOT_SIZE: ccxt's own rounding bypassed
        client.privatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "MARKET",
                "quantity": "0.000011",
            }
        )
    assert loopback_exchange.open_orders() == []


def test_wrong_secret_raises_authentication_error(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = make_client(loopback_exchange, secret="not-the-secret")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        client.fetch_balance()


def test_wrong_api_key_raises_authentication_error(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = make_client(loopback_exchange, apiKey="someone-else")
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        client.fetch_balance()


@pytest.mark.parametrize("clock_error_ms", [60_000, -5_000], ids=["stale", "future"])
def test_timestamp_outside_recv_window_raises_invalid_nonce(
    loopback_exchange: LoopbackExchange, clock_error_ms: int
) -> None:
    client = make_client(loopback_exchange)
    # ccxt's binance nonce() is milliseconds() - options['timeDifference'].
    client.options["timeDifference"] = clock_error_ms
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        client.fetch_balance()


def test_request_log_and_weight_header(loopback_exchange: LoopbackExchange) -> None:
    # The weight counter resets each wall-clock minute, like Binance's; don't straddle one.
    seconds_into_minute = time.time() % 60
    if seconds_into_minute > 57:
        time.sleep(60.1 - seconds_into_minute)
    client = make_client(loopback_exchange)
    client.load_markets()
    loopback_exchange.clear_requests()
    client.fetch_time()
    client.fetch_order_book("ETH/USDT", limit=10)
    client.fetch_balance()

    log = loopback_exchange.requests()
    assert all(isinstance(r, RecordedRequest) for r in log)
    assert [(r.method, r.path) for r in log] == [
        ("GET", "/api/v3/time"),
        ("GET", "/api/v3/depth"),
        ("GET", "/api/v3/account"),
    ]
    assert log[1].query == {"symbol": "ETHUSDT", "limit": "10"}
    assert log[2].headers["x-mbx-apikey"] == "loopback-key"
    assert "signature" in log[2].query
    assert log[0].ts <= log[1].ts <= log[2].ts
    assert loopback_exchange.request_count() == 3
    assert loopback_exchange.request_count("/api/v3/depth") == 1

    # Weights: exchangeInfo 20 (load_markets) + time 1 + depth(limit<=100) 5 + account 20.
    assert client.last_response_headers["x-mbx-used-weight-1m"] == "46"
    loopback_exchange.clear_requests()
    assert loopback_exchange.requests() == []


# ------------------------------------------------------------- raw HTTP edges


def test_unknown_path_is_json_404(loopback_exchange: LoopbackExchange) -> None:
    status, headers, payload = raw_request(loopback_exchange, "GET", "/api/v3/nope")
    assert status == 404
    assert "nope" in payload["msg"]
    assert "x-mbx-used-weight-1m" in {name.lower() for name in headers}


def test_handler_exception_is_json_500_and_server_survives(
    loopback_exchange: LoopbackExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_handler(params: dict[str, str]) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(loopback_exchange, "_depth", broken_handler)
    status, _, payload = raw_request(
        loopback_exchange, "GET", "/api/v3/depth", "symbol=BTCUSDT"
    )
    assert (status, payload["code"]) == (500, -1000)
    assert [str(e) for e in loopback_exchange.handler_errors()] == ["boom"]
    client = make_client(loopback_exchange)
    with pytest.raises(ccxt.OperationFailed):  # binance's mapping of code -1000
        client.fetch_order_book("BTC/USDT")
    status, _, payload = raw_request(loopback_exchange, "GET", "/api/v3/ping")
    assert (status, payload) == (200, {})


def test_signed_params_accepted_in_query_string_and_key_required(
    loopback_exchange: LoopbackExchange,
) -> None:
    params = (
        "symbol=ETHUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.5&price=4000"
        f"&timestamp={int(time.time() * 1000)}"
    )
    query = params + "&signature=" + sign(loopback_exchange.secret, params)
    headers = {"X-MBX-APIKEY": loopback_exchange.api_key}
    status, _, payload = raw_request(
        loopback_exchange, "POST", "/api/v3/order", query, "", headers
    )
    assert status == 200, payload
    assert payload["status"] == "NEW"
    assert loopback_exchange.balances()["ETH"]["locked"] == 0.5

    status, _, payload = raw_request(loopback_exchange, "GET", "/api/v3/account", query)
    assert (status, payload["code"]) == (401, -2014)


def test_start_stop_are_idempotent_and_restart_keeps_port() -> None:
    exchange = LoopbackExchange()
    assert exchange.start() is exchange.start()
    port = exchange.port
    exchange.stop()
    exchange.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exchange.api_url + "/ping", timeout=2)
    with exchange:
        assert exchange.port == port
        assert raw_request(exchange, "GET", "/api/v3/ping")[0] == 200
    assert not exchange.running


# ---------------------------------------------------------------- async ccxt


@pytest.mark.asyncio
async def test_async_client_trades_against_loopback(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = make_async_client(loopback_exchange)
    try:
        markets = await client.load_markets()
        assert markets["ETH/USDT"]["precision"]["price"] == 0.01

        book = await client.fetch_order_book("ETH/USDT", limit=3)
        assert len(book["asks"]) == 3

        resting = await client.create_order("ETH/USDT", "limit", "sell", 1, 3500)
        assert resting["status"] == "open"
        assert [o["id"] for o in await client.fetch_open_orders("ETH/USDT")] == [
            resting["id"]
        ]
        assert (await client.fetch_order(resting["id"], "ETH/USDT"))["status"] == "open"
        assert (await client.cancel_order(resting["id"], "ETH/USDT"))[
            "status"
        ] == "canceled"

        filled = await client.create_order("ETH/USDT", "market", "buy", 1)
        assert filled["status"] == "closed"
        balance = await client.fetch_balance()
        assert balance["ETH"]["total"] == pytest.approx(11)
        assert balance["USDT"]["total"] == pytest.approx(100_000 - 3000.3)
        trades = await client.fetch_my_trades("ETH/USDT")
        assert [t["order"] for t in trades] == [filled["id"]]
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_async_auth_and_clock_errors(loopback_exchange: LoopbackExchange) -> None:
    wrong_secret = make_async_client(loopback_exchange, secret="not-the-secret")
    skewed = make_async_client(loopback_exchange)
    skewed.options["timeDifference"] = 60_000
    try:
        with pytest.raises(ccxt.AuthenticationError):
            await wrong_secret.fetch_balance()
        with pytest.raises(ccxt.InvalidNonce):
            await skewed.fetch_balance()
    finally:
        await wrong_secret.close()
        await skewed.close()
    assert loopback_exchange.request_count("/api/v3/account") == 2


# ------------------------------------------------------------ a moving market


def walk_until(exchange: LoopbackExchange, done: Any, seconds: float = 300) -> None:
    """Step the (seeded, so deterministic) market 0.1 s at a time until ``done()``."""
    for _ in range(int(seconds * 10)):
        if done():
            return
        exchange.market.advance(0.1)
    pytest.fail(f"the market did not get there in {seconds} s")


def test_order_book_nonce_follows_the_market(loopback_exchange: LoopbackExchange) -> None:
    client = make_client(loopback_exchange)
    first = client.fetch_order_book("BTC/USDT", limit=5)
    assert client.fetch_order_book("BTC/USDT", limit=5)["nonce"] == first["nonce"]  # still
    nonces = [first["nonce"]]
    for _ in range(5):
        loopback_exchange.market.advance(1.0)
        book = client.fetch_order_book("BTC/USDT", limit=5)
        nonces.append(book["nonce"])
        assert book["nonce"] == loopback_exchange.market.last_update_id("BTC/USDT")
        mid = loopback_exchange.mid_price("BTC/USDT")
        assert book["bids"][0][0] == mid - 5 and book["asks"][0][0] == mid + 5
    assert nonces == sorted(nonces) and len(set(nonces)) == 6
    ticker = client.fetch_ticker("BTC/USDT")
    stats = loopback_exchange.market.stats("BTC/USDT")
    assert ticker["last"] == float(stats.last_price)
    assert (ticker["bid"], ticker["ask"]) == (book["bids"][0][0], book["asks"][0][0])
    assert ticker["baseVolume"] == pytest.approx(float(stats.volume))


def test_resting_limit_buy_fills_as_the_market_walks_through_it(
    loopback_exchange: LoopbackExchange,
) -> None:
    client = make_client(loopback_exchange)
    client.load_markets()
    bid = client.fetch_order_book("BTC/USDT", limit=5)["bids"][0][0]
    price = bid - 5  # one level below the best bid
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, price)
    assert order["status"] == "open"
    assert client.fetch_balance()["USDT"]["used"] == pytest.approx(price * 0.01)

    walk_until(loopback_exchange, lambda: not loopback_exchange.open_orders())
    fetched = client.fetch_order(order["id"], "BTC/USDT")
    assert (fetched["status"], fetched["filled"], fetched["remaining"]) == ("closed", 0.01, 0)
    assert fetched["average"] == price
    [trade] = client.fetch_my_trades("BTC/USDT")
    assert (trade["order"], trade["side"], trade["price"], trade["amount"]) == \
        (order["id"], "buy", price, 0.01)
    assert trade["takerOrMaker"] == "maker"
    assert client.fetch_open_orders("BTC/USDT") == []
    balance = client.fetch_balance()
    assert balance["BTC"]["total"] == pytest.approx(10.01)
    assert balance["USDT"]["total"] == pytest.approx(100_000 - price * 0.01)
    assert balance["USDT"]["used"] == 0


def test_a_large_order_fills_in_parts(loopback_exchange: LoopbackExchange) -> None:
    client = make_client(loopback_exchange)
    client.load_markets()
    ask = client.fetch_order_book("ETH/USDT", limit=5)["asks"][0][0]
    price = round(ask + 0.3, 2)  # one level above the best ask
    order = client.create_order("ETH/USDT", "limit", "sell", 8, price)
    walk_until(loopback_exchange, lambda: loopback_exchange.trades() != [])
    partial = client.fetch_order(order["id"], "ETH/USDT")
    assert partial["status"] == "open"
    assert 0 < partial["filled"] < 8
    assert partial["remaining"] == pytest.approx(8 - partial["filled"])
    assert client.fetch_balance()["ETH"]["used"] == pytest.approx(partial["remaining"])

    cancelled = client.cancel_order(order["id"], "ETH/USDT")
    filled = client.fetch_order(order["id"], "ETH/USDT")["filled"]  # it may have filled on
    assert cancelled["status"] == "canceled"
    trades = client.fetch_my_trades("ETH/USDT")
    assert sum(t["amount"] for t in trades) == pytest.approx(filled)
    assert all(t["price"] == price for t in trades)
    balance = client.fetch_balance()
    assert balance["ETH"] == {"free": pytest.approx(10 - filled), "used": 0,
                              "total": pytest.approx(10 - filled)}
    assert balance["USDT"]["total"] == pytest.approx(100_000 + filled * price)


def test_post_only_through_the_book_is_rejected(loopback_exchange: LoopbackExchange) -> None:
    client = make_client(loopback_exchange)
    client.load_markets()
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        client.create_order("BTC/USDT", "limit", "sell", 0.01, 49_995, {"postOnly": True})
    taker = client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_100)
    assert (taker["status"], taker["average"]) == ("closed", 50_005)  # at the best ask
    assert loopback_exchange.requests()[-1].query["type"] == "LIMIT"


@pytest.mark.asyncio
async def test_async_orders_fill_while_the_ticker_runs() -> None:
    # A fast, volatile market: one of two orders 20 levels either side of the mid is reached
    # within a second or so, and staying inside the band for 8 s has odds under 1e-4.
    with LoopbackExchange(tick_rate=50, volatility_bps=20, seed=3) as exchange:
        assert exchange.market.ticker_running
        client = make_async_client(exchange)
        try:
            await client.load_markets()
            book = await client.fetch_order_book("BTC/USDT", limit=5)
            mid = exchange.mid_price("BTC/USDT")
            buy = await client.create_order("BTC/USDT", "limit", "buy", 0.01, mid - 100)
            sell = await client.create_order("BTC/USDT", "limit", "sell", 0.01, mid + 100)
            deadline = time.monotonic() + 8
            while len(await client.fetch_open_orders("BTC/USDT")) == 2:
                assert time.monotonic() < deadline, "neither order filled"
                await asyncio.sleep(0.05)
            later = await client.fetch_order_book("BTC/USDT", limit=5)
            assert later["nonce"] > book["nonce"]
            [filled] = [
                o
                for o in [await client.fetch_order(buy["id"], "BTC/USDT"),
                          await client.fetch_order(sell["id"], "BTC/USDT")]
                if o["status"] == "closed"
            ]
            assert filled["filled"] == 0.01
            [trade] = await client.fetch_my_trades("BTC/USDT")
            assert (trade["order"], trade["takerOrMaker"], trade["price"]) == \
                (filled["id"], "maker", filled["price"])
            balance = await client.fetch_balance()
            sign = 1 if filled["side"] == "buy" else -1
            assert balance["BTC"]["total"] == pytest.approx(10 + sign * 0.01)
            assert balance["USDT"]["total"] == pytest.approx(100_000 - sign * filled["price"] * 0.01)
        finally:
            await client.close()
    assert not exchange.market.ticker_running
