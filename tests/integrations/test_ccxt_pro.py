"""The ccxt.pro patch point, with an unmodified ``ccxt.pro.binance`` streaming from the loopback
servers (websockets and aiohttp) through ``urls['api']['ws']``: lag exactness and order on
``watch_trades`` and ``watch_order_book``, disconnects as ccxt's own NetworkError 1006 with a
real socket close and a counted reconnect, a server close never overtaking held frames, labels,
hygiene and fail-safety."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from chaos_shims.activation import activate, deactivate
from chaos_shims.core import runtime
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.exchange.ws import LoopbackWsExchange
from chaos_shims.integrations import ccxt_pro
from tests.conftest import client_config
from tests.loop_watch import watched
from tests.patch_hygiene import assert_hygiene_when_imported_after, assert_hygiene_when_imported_first

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")
import ccxt.pro as ccxtpro  # noqa: E402

LAG_MS = 200


@pytest.fixture(params=["websockets", "aiohttp"])
def stream_server(request: pytest.FixtureRequest) -> Any:
    """Each test runs against both servers."""
    return request.getfixturevalue("ws_server" if request.param == "websockets"
                                   else "aiohttp_ws_server")


def _pro_client(server: Any, exchange: LoopbackExchange) -> Any:
    """An unmodified ccxt.pro binance: the REST test config with its ws URLs on ``server``."""
    config = client_config(exchange)
    config["urls"]["api"] = {**config["urls"]["api"], "ws": server.ccxt_urls()}
    return ccxtpro.binance(config)


@pytest_asyncio.fixture
async def pro(stream_server: Any, stream_exchange: LoopbackExchange) -> AsyncIterator[Any]:
    client = _pro_client(stream_server, stream_exchange)
    try:
        await client.load_markets()
        yield client
    finally:
        await client.close()


def _live(registry: Any = None, **keys: Any) -> None:
    activate(None, registry=registry, **{"enabled": True, "dry_run": False, "burst_on_sec": 0,
                                         "seed": 1, **keys})


async def _trades(client: Any, count: int) -> tuple[list[float], list[int]]:
    """(lateness in ms, trade id) of the next ``count`` trades, each seen once."""
    late: list[float] = []
    ids: list[int] = []
    while len(ids) < count:
        for trade in await asyncio.wait_for(client.watch_trades("BTC/USDT"), 5):
            if ids and int(trade["id"]) <= ids[-1]:
                continue
            ids.append(int(trade["id"]))
            late.append(time.time() * 1000 - trade["timestamp"])
    return late, ids


def _contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


# -- hygiene ----------------------------------------------------------------------------------

def test_patch_hygiene_when_imported_first() -> None:
    assert_hygiene_when_imported_first("ccxt_pro")


def test_import_after_activation_patches_and_unpatches() -> None:
    assert_hygiene_when_imported_after("ccxt_pro")


def test_what_the_wrappers_rely_on_is_still_there() -> None:
    """Pins ccxt's client: a release that renames or moves these makes this fail."""
    from ccxt.async_support.base.ws.client import Client

    for name in ("__init__", "handle_message", "on_close", "receive_loop", "closed", "on_error"):
        assert name in Client.__dict__, name
    receive_loop = Client.__dict__["receive_loop"].__code__.co_names
    assert "handle_message" in receive_loop and "buffer" in receive_loop


# -- lag ----------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_watch_trades_lag_is_exact_in_order_and_leaves_the_loop_free(pro: Any) -> None:
    await _trades(pro, 2)  # connected and subscribed before the lag starts
    _live(ws_lag_ms=LAG_MS)
    await _trades(pro, 12)  # whatever arrived before activation has been handed over
    (late, ids), elapsed, ticks = await watched(_trades(pro, 30))
    print(f"ccxt.pro watch_trades, 200 ms lag: median {statistics.median(late):.1f} ms, "
          f"min {min(late):.1f}, max {max(late):.1f}")
    assert abs(statistics.median(late) - LAG_MS) <= LAG_MS * 0.05
    assert _contiguous(ids)
    assert ticks >= elapsed / 0.005 * 0.5


@pytest.mark.asyncio
async def test_watch_order_book_lag_is_exact_and_keeps_the_book_in_sync(pro: Any) -> None:
    _live(ws_lag_ms=LAG_MS)
    late: list[float] = []
    nonces: list[int] = []
    for _ in range(15):
        # a diff handed out of order would break U == previous u + 1: ChecksumError
        book = await asyncio.wait_for(pro.watch_order_book("ETH/USDT"), 5)
        if book["timestamp"] is not None:
            late.append(time.time() * 1000 - book["timestamp"])
        nonces.append(book["nonce"])
    print(f"ccxt.pro watch_order_book, 200 ms lag: median {statistics.median(late):.1f} ms")
    assert abs(statistics.median(late) - LAG_MS) <= LAG_MS * 0.05
    assert nonces == sorted(nonces) and nonces[-1] > nonces[0]
    injector = runtime.active
    assert injector is not None
    assert {(r.exchange, r.op) for r in injector.records("ws_lag_ms")} == {
        ("binance", "watch_order_book_for_symbols")}


@pytest.mark.asyncio
async def test_a_server_close_never_overtakes_held_frames(stream_exchange: LoopbackExchange) -> None:
    with LoopbackWsExchange(stream_exchange) as server:
        client = _pro_client(server, stream_exchange)
        try:
            await _trades(client, 2)
            _live(ws_lag_ms=300)
            await _trades(client, 20)  # 300 ms worth of frames are held from now on
            stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
            await asyncio.sleep(0.05)  # the server has sent its close frame
            after_close: list[int] = []
            with pytest.raises(ccxt.NetworkError):
                while True:
                    for trade in await asyncio.wait_for(client.watch_trades("BTC/USDT"), 5):
                        after_close.append(int(trade["id"]))
            await stopping
        finally:
            await client.close()
    # the frames held when the server closed still reached ccxt, in order, before the close
    assert len(after_close) >= 8
    assert after_close == sorted(after_close)


# -- disconnect ---------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_disconnect_is_ccxt_own_network_error_and_the_next_watch_reconnects(
    stream_server: Any, pro: Any, registry: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    await _trades(pro, 2)
    open_before = stream_server.open_connections
    total_before = stream_server.connections_total
    # seed 5's stream at 0.03: the first frame fires, the next six do not
    _live(registry, ws_disconnect=0.03, seed=5)
    started = time.perf_counter()
    with pytest.raises(ccxt.NetworkError) as raised:
        for _ in range(50):
            await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 5)
    assert str(raised.value) == "Connection closed by remote server, closing code 1006"
    assert time.perf_counter() - started < 0.5
    # pins aiohttp's transport path: a release that moves it would fall back, and warn
    assert not [r for r in caplog.records if "no transport to abort" in r.getMessage()]
    # the socket really closed: the server saw its client go
    assert stream_server.wait_for(lambda: stream_server.open_connections == open_before - 1)
    injector = runtime.active
    assert injector is not None
    [record] = injector.records("ws_disconnect")
    assert (record.exchange, record.op, record.target) == (
        "binance", "watch", stream_server.url + "/ws/0")
    await _trades(pro, 2)  # the next watch opened a new connection
    assert stream_server.connections_total == total_before + 1
    assert registry.get_sample_value("mm_reconnect_attempts_total", {"kind": "ccxt.pro"}) == 1
    assert registry.get_sample_value("mm_ws_gap_ms_count") >= 1


@pytest.mark.asyncio
async def test_frames_before_a_disconnect_reach_ccxt_first(pro: Any) -> None:
    await _trades(pro, 2)
    # seed 3's stream: the fifth frame is the first to fire at 0.1
    _live(ws_lag_ms=100, ws_disconnect=0.1, seed=3)
    ids: list[int] = []
    with contextlib.suppress(ccxt.NetworkError):
        # ccxt rejects the watcher with NetworkError, unless the failure lands between two
        # watch_trades calls: then the next call just reconnects (ccxt.pro's own behaviour)
        while len(ids) < 30:
            for trade in await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 5):
                if not ids or int(trade["id"]) > ids[-1]:
                    ids.append(int(trade["id"]))
    gap = next((i for i in range(1, len(ids)) if ids[i] != ids[i - 1] + 1), len(ids))
    # every frame before the failure reached ccxt, in order; the failed one and those behind
    # it on the dead connection are lost
    assert gap >= 4
    injector = runtime.active
    assert injector is not None and injector.count("ws_disconnect", "live") >= 1


@pytest.mark.asyncio
async def test_the_opening_method_labels_the_events(
    ws_server: Any, stream_exchange: LoopbackExchange, registry: Any,
) -> None:
    _live(registry, ws_disconnect=1.0)
    client = _pro_client(ws_server, stream_exchange)
    try:
        with pytest.raises(ccxt.NetworkError):
            await asyncio.wait_for(client.watch_trades("BTC/USDT"), 5)
    finally:
        await client.close()
    injector = runtime.active
    assert injector is not None
    [record] = injector.records("ws_disconnect")
    assert (record.exchange, record.op) == ("binance", "watch_trades")
    # a first connection, and an app-initiated close: no reconnect, no loss
    assert registry.get_sample_value("mm_reconnect_attempts_total", {"kind": "ccxt.pro"}) is None


@pytest.mark.asyncio
async def test_an_app_close_is_not_a_loss(ws_server: Any, stream_exchange: LoopbackExchange,
                                          registry: Any) -> None:
    _live(registry, ws_lag_ms=1)
    for _ in range(2):
        client = _pro_client(ws_server, stream_exchange)
        try:
            await _trades(client, 1)
        finally:
            await client.close()
    assert registry.get_sample_value("mm_reconnect_attempts_total", {"kind": "ccxt.pro"}) is None


@pytest.mark.asyncio
async def test_dry_run_and_dormant_leave_ccxt_untouched(pro: Any) -> None:
    await _trades(pro, 2)
    activate(None, enabled=True, dry_run=True, burst_on_sec=0, seed=1, ws_lag_ms=LAG_MS,
             ws_disconnect=1.0)
    late, ids = await _trades(pro, 5)
    assert max(late) < 50 and _contiguous(ids)
    injector = runtime.active
    assert injector is not None and injector.count("ws_disconnect", "dry_run") >= 1
    # both decided for every frame, neither applied
    assert injector.count("ws_lag_ms", "dry_run") == injector.count("ws_disconnect", "dry_run")
    assert injector.count(mode="live") == 0
    deactivate(unpatch=False)
    late, _ = await _trades(pro, 5)
    assert max(late) < 50


@pytest.mark.asyncio
async def test_internal_error_turns_chaos_off_and_frames_go_through(
    pro: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(line: Any) -> tuple[float, bool]:
        raise KeyError("bug inside chaos_shims")

    await _trades(pro, 2)
    monkeypatch.setattr(ccxt_pro, "_decide", broken)
    _live(ws_lag_ms=LAG_MS)
    with caplog.at_level("ERROR", logger="chaos_shims"):
        late, ids = await _trades(pro, 4)
    assert _contiguous(ids) and max(late) < 50
    assert runtime.active is None
    assert sum("internal error" in r.getMessage() for r in caplog.records) == 1
