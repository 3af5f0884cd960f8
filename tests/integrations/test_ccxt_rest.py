"""The ccxt REST patch point: exchange-faithful errors across exchanges, request labelling,
the failure-rate gauge, hygiene when ccxt is imported after activation, and fail-safety."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chaos_shims.activation import activate, deactivate
from chaos_shims.core import runtime
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.integrations import ccxt_rest
from tests.conftest import client_config
from tests.patch_hygiene import assert_hygiene_when_imported_after

ccxt = pytest.importorskip("ccxt")
import ccxt.async_support as ccxt_async  # noqa: E402

#: Exchanges whose error handling differs; each must get from chaos exactly what a real
#: response with that status makes its own ccxt code raise.
EXCHANGES = ["binance", "kraken", "okx", "bybit", "coinbase", "kucoin", "bitfinex", "gate",
             "htx", "bitget", "mexc", "deribit", "cryptocom", "hyperliquid"]
STATUSES = [429, 500, 502, 503, 504]


class _StatusHandler(BaseHTTPRequestHandler):
    """Answers /status/N with status N, a Retry-After header and an empty body."""

    def do_GET(self) -> None:
        status = int(self.path.rsplit("/", 1)[-1])
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def status_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/status"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _error_class(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


async def _async_error_class(call: Any) -> str:
    try:
        await call()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def _live(**keys: Any) -> None:
    activate(None, enabled=True, dry_run=False, burst_on_sec=0, seed=1, **keys)


def _chaos_key(status: int) -> dict[str, Any]:
    return {"exch_429": 1.0} if status == 429 else {"exch_5xx": 1.0}


@pytest.mark.parametrize("exchange_id", EXCHANGES)
def test_sync_errors_are_what_the_exchange_raises_for_a_real_response(
    exchange_id: str, status_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = getattr(ccxt, exchange_id)({"enableRateLimit": False})
    for status in STATUSES:
        url = f"{status_server}/{status}"
        real = _error_class(lambda url=url: client.fetch(url, "GET"))
        # make the 5xx scenario pick this status
        monkeypatch.setattr("chaos_shims.scenarios.exch_5xx.STATUSES", (status,))
        _live(**_chaos_key(status))
        injected = _error_class(lambda url=url: client.fetch(url, "GET"))
        deactivate()
        assert injected == real, (exchange_id, status)


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_async_errors_are_what_the_exchange_raises_for_a_real_response(
    exchange_id: str, status_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = getattr(ccxt_async, exchange_id)({"enableRateLimit": False})
    try:
        for status in STATUSES:
            url = f"{status_server}/{status}"
            real = await _async_error_class(lambda url=url: client.fetch(url, "GET"))
            monkeypatch.setattr("chaos_shims.scenarios.exch_5xx.STATUSES", (status,))
            _live(**_chaos_key(status))
            injected = await _async_error_class(lambda url=url: client.fetch(url, "GET"))
            deactivate()
            assert injected == real, (exchange_id, status)
    finally:
        await client.close()


def test_import_after_activation_patches_and_unpatches() -> None:
    assert_hygiene_when_imported_after("ccxt_rest")


def test_labels_are_removed_on_unpatch(exchange: LoopbackExchange) -> None:
    original = ccxt.binance.__dict__["fetch_order_book"]
    inherited = "load_markets" not in ccxt.binance.__dict__
    _live(lat_spike_ms=1)
    client = ccxt.binance(client_config(exchange))
    assert type(client) in ccxt_rest.labelled_classes()
    labelled = ccxt.binance.__dict__["fetch_order_book"]
    assert getattr(labelled, ccxt_rest.LABEL_MARK) and labelled.__wrapped__ is original
    deactivate()
    assert ccxt_rest.labelled_classes() == []
    assert ccxt.binance.__dict__["fetch_order_book"] is original
    assert ("load_markets" not in ccxt.binance.__dict__) is inherited


def test_camelcase_copies_follow_labelling_and_unlabelling(exchange: LoopbackExchange) -> None:
    """ccxt copies each snake_case method to its camelCase name at every instance: the copy
    made by the first instance (before labelling) is labelled too, and unpatching restores it."""
    class Venue(ccxt.binance):  # type: ignore[misc]  # a class no other test has labelled
        pass

    original = ccxt.binance.__dict__["fetch_order_book"]
    _live(lat_spike_ms=1)
    Venue(client_config(exchange))
    labelled = Venue.__dict__["fetch_order_book"]
    assert getattr(labelled, ccxt_rest.LABEL_MARK) and labelled.__wrapped__ is original
    assert Venue.__dict__["fetchOrderBook"] is labelled
    deactivate()
    assert Venue.__dict__["fetchOrderBook"] is original


def test_sync_requests_are_labelled_with_the_outermost_unified_method(
    exchange: LoopbackExchange,
) -> None:
    _live(lat_spike_ms=1)
    client = ccxt.binance(client_config(exchange))  # created after activation: labelled
    # create_order loads the markets itself: those requests belong to create_order
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 40000)
    client.fetch_order_book("ETH/USDT")
    client.public_get_time()  # an implicit endpoint called directly
    injector = runtime.active
    assert injector is not None
    ops = [(r.op, r.target.rsplit("/", 1)[-1]) for r in injector.records()]  # type: ignore[union-attr]
    assert ops == [("create_order", "exchangeInfo"), ("create_order", "order"),
                   ("fetch_order_book", "depth"), ("request", "time")]
    assert {r.exchange for r in injector.records()} == {"binance"}


@pytest.mark.asyncio
async def test_async_requests_are_labelled_under_gather(exchange: LoopbackExchange) -> None:
    _live(lat_spike_ms=1)
    client = ccxt_async.binance(client_config(exchange))
    try:
        await client.load_markets()
        await asyncio.gather(client.fetch_order_book("BTC/USDT"), client.fetch_balance(),
                             client.fetch_open_orders("BTC/USDT"), client.fetch_ticker("ETH/USDT"))
    finally:
        await client.close()
    injector = runtime.active
    assert injector is not None
    by_target = {r.target.rsplit("/", 1)[-1]: r.op for r in injector.records()}  # type: ignore[union-attr]
    assert by_target == {"exchangeInfo": "load_markets", "depth": "fetch_order_book",
                         "account": "fetch_balance", "openOrders": "fetch_open_orders",
                         "24hr": "fetch_ticker"}


def test_partial_fail_rate_gauge(binance: Any, registry: Any) -> None:
    activate(None, registry=registry, enabled=True, dry_run=False, burst_on_sec=0, seed=4,
             exch_5xx=0.5)
    results = [_error_class(lambda: binance.fetch_ticker("BTC/USDT")) for _ in range(40)]
    failed = sum(result != "ok" for result in results)
    assert 0 < failed < 40
    assert registry.get_sample_value(
        "mm_partial_fail_rate", {"op": "fetch_ticker", "exchange": "binance"}) == failed / 40


def test_internal_error_turns_chaos_off_and_the_call_goes_through(
    binance: Any, exchange: LoopbackExchange, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bug inside chaos_shims")

    monkeypatch.setattr(ccxt_rest, "_error_for", broken)
    _live(exch_429=1.0)
    with caplog.at_level("ERROR", logger="chaos_shims"):
        book = binance.fetch_order_book("BTC/USDT")
        binance.fetch_order_book("BTC/USDT")
    assert book["bids"]
    assert exchange.request_count("/api/v3/depth") == 2
    assert runtime.active is None
    assert sum("internal error" in r.getMessage() for r in caplog.records) == 1


def test_ccxt_retries_an_injected_fault_like_a_real_one(exchange: LoopbackExchange) -> None:
    _live(net_loss=1.0)
    client = ccxt.binance(client_config(exchange, options={
        **exchange.ccxt_config()["options"], "maxRetriesOnFailure": 2}))  # type: ignore[dict-item]
    client.markets = None
    with pytest.raises(ccxt.NetworkError):
        client.fetch_time()
    injector = runtime.active
    assert injector is not None and injector.count("net_loss") == 3
