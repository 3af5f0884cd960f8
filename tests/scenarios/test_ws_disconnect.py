"""ws_disconnect on the websockets clients: the contract (through the sync client), then on each
client: the library's own ConnectionClosedError 1006, state CLOSED, the socket really closed
and seen gone by the server, no zombie, messages before the failure kept in order, and
reconnects counted. ccxt.pro: tests/integrations/test_ccxt_pro.py."""

from __future__ import annotations

import asyncio
import json
import socket
import warnings
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.protocol import State
from websockets.sync.client import connect as sync_connect

from tests.exchange.ws_fixtures import TRADES, lateness_ms
from tests.scenarios.contract import ScenarioContract

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]



class TestWsDisconnect(ScenarioContract):
    key = "ws_disconnect"
    live_keys = {"ws_disconnect": 1.0}
    partial_keys = {"ws_disconnect": 0.5}
    live_outcome = "ConnectionClosedError"

    @pytest.fixture
    def scenario_target(self, ws_server: Any) -> str:
        return str(ws_server.raw_url(TRADES))

    def provoke(self, target: Any) -> str:
        """One message on a fresh sync connection: handed over, or the connection drops."""
        with sync_connect(target) as ws:
            try:
                ws.recv(timeout=5)
            except ConnectionClosed as exc:
                return type(exc).__name__
        return "ok"


def _closed_abnormally(exc: ConnectionClosedError, ws: Any) -> None:
    """What a real network failure gives: no close frame either way, 1006, CLOSED."""
    assert (exc.rcvd, exc.sent) == (None, None)  # websockets' own form of 1006
    assert str(exc) == "no close frame received or sent"
    assert ws.close_code == 1006
    assert ws.state is State.CLOSED


async def _asyncio_disconnect(connect: Any, server: Any) -> None:
    before = server.open_connections
    async with connect(server.raw_url(TRADES)) as ws:
        assert server.wait_for(lambda: server.open_connections == before + 1)
        with pytest.raises(ConnectionClosedError) as raised:
            await ws.recv()
        _closed_abnormally(raised.value, ws)
        assert ws.transport.is_closing()
        # no zombie: the connection stays dead, and the server saw the client go away
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert server.wait_for(lambda: server.open_connections == before)
    await asyncio.sleep(0.01)  # the library's keepalive task finishes its cancellation
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.mark.asyncio
async def test_asyncio_client_gets_the_library_own_1006(ws_server: Any) -> None:
    from websockets.asyncio.client import connect

    TestWsDisconnect().activate()
    await _asyncio_disconnect(connect, ws_server)


@pytest.mark.asyncio
async def test_legacy_client_gets_the_library_own_1006(ws_server: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from websockets.legacy.client import connect

    TestWsDisconnect().activate()
    await _asyncio_disconnect(connect, ws_server)


def test_sync_client_gets_the_library_own_1006(ws_server: Any) -> None:
    TestWsDisconnect().activate()
    before = ws_server.open_connections
    with sync_connect(ws_server.raw_url(TRADES)) as ws:
        with pytest.raises(ConnectionClosedError) as raised:
            ws.recv(timeout=5)
        _closed_abnormally(raised.value, ws)
        assert ws.socket.fileno() == -1  # the library closed the socket itself
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=5)
    assert ws_server.wait_for(lambda: ws_server.open_connections == before)


@pytest.mark.asyncio
async def test_messages_before_the_failure_arrive_in_order_then_1006(ws_server: Any) -> None:
    from websockets.asyncio.client import connect

    # with a lag, several messages are held when the failure hits: they still come first
    # seed 3's stream: the fifth message is the first to fire at 0.1
    TestWsDisconnect().activate(ws_disconnect=0.1, ws_lag_ms=100, seed=3)
    ids: list[int] = []
    async with connect(ws_server.raw_url(TRADES)) as ws:
        with pytest.raises(ConnectionClosedError):
            async for raw in ws:
                ids.append(json.loads(raw)["t"])
                assert lateness_ms(raw) >= 99
    assert ws.close_code == 1006
    assert len(ids) == 4 and ids == list(range(ids[0], ids[0] + 4))


@pytest.mark.asyncio
async def test_reconnects_are_counted(ws_server: Any, registry: Any) -> None:
    from websockets.asyncio.client import connect

    TestWsDisconnect().activate(registry, ws_disconnect=0.3, seed=2)
    url = ws_server.raw_url(TRADES)
    sessions: list[int] = []  # messages each connection handed over before it dropped
    async for ws in connect(url):  # the library's own reconnecting iterator
        received = 0
        try:
            async for _raw in ws:
                received += 1
        except ConnectionClosedError:
            sessions.append(received)
            if len(sessions) == 4:
                break
    # every connection after the first reopened a lost URL
    assert registry.get_sample_value("mm_reconnect_attempts_total", {"kind": "websockets"}) == 3
    assert registry.get_sample_value(
        "mm_chaos_injections_total", {"scenario": "ws_disconnect", "mode": "live"}) == 4


def test_clean_close_is_not_a_loss(ws_server: Any, registry: Any) -> None:
    TestWsDisconnect().activate(registry, ws_disconnect=0.0001, ws_lag_ms=1)
    for _ in range(2):
        with sync_connect(ws_server.raw_url(TRADES)) as ws:
            ws.recv(timeout=5)
    assert registry.get_sample_value("mm_reconnect_attempts_total", {"kind": "websockets"}) is None


def test_shutdown_is_what_a_sync_disconnect_does(ws_server: Any, monkeypatch: Any) -> None:
    """Pin: the sync client's socket is where the library reads; shutting it down is seen."""
    calls: list[int] = []
    real_shutdown = socket.socket.shutdown

    def spy(self: socket.socket, how: int) -> None:
        calls.append(how)
        real_shutdown(self, how)

    monkeypatch.setattr(socket.socket, "shutdown", spy)
    TestWsDisconnect().activate()
    with sync_connect(ws_server.raw_url(TRADES)) as ws, pytest.raises(ConnectionClosedError):
        ws.recv(timeout=5)
    assert calls[0] == socket.SHUT_RDWR
