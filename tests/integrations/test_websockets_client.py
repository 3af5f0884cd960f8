"""The websockets patch point: hygiene when imported after activation (and auto activation in
a fresh process), only the client classes wrapped, an in-process server left alone while its
client is faulted, the library's concurrency rule kept, and fail-safety."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from typing import Any

import pytest
import wrapt
from websockets.exceptions import ConcurrencyError, ConnectionClosedError

from chaos_shims.activation import activate, deactivate
from chaos_shims.core import runtime
from chaos_shims.integrations import websockets_client
from tests.exchange.ws_fixtures import TRADES, lateness_ms
from tests.patch_hygiene import assert_hygiene_when_imported_after, import_targets

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]



def _live(**keys: Any) -> None:
    activate(None, enabled=True, dry_run=False, burst_on_sec=0, seed=1, **keys)


def test_import_after_activation_patches_and_unpatches() -> None:
    assert_hygiene_when_imported_after("websockets_client")


def test_auto_activation_lags_a_client_imported_afterwards(ws_server: Any) -> None:
    """``import chaos_shims.auto`` first, websockets imported later: its client is lagged."""
    script = textwrap.dedent(f"""
        import json, sys, time
        import chaos_shims.auto
        assert "websockets" not in sys.modules
        import wrapt
        from websockets.sync.client import ClientConnection, connect
        assert isinstance(ClientConnection.__dict__["recv"], wrapt.FunctionWrapper)
        with connect({ws_server.raw_url(TRADES)!r}) as ws:
            event = json.loads(ws.recv(timeout=5))
        print(round(time.time() * 1000 - event["E"]))
    """)
    environ = {**os.environ, "CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_DRY_RUN": "0",
               "CHAOS_SHIMS_BURST_ON_SEC": "0", "CHAOS_SHIMS_WS_LAG_MS": "150"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False, env=environ)
    assert result.returncode == 0, result.stderr
    assert 149 <= int(result.stdout) < 200


def test_only_the_client_classes_are_wrapped() -> None:
    """Pins the patch points: the client classes and the server classes they share ``recv``
    with; a release that moves either makes this fail."""
    import_targets("websockets_client")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from websockets.asyncio import client as asyncio_client
        from websockets.asyncio import connection as asyncio_connection
        from websockets.asyncio.server import ServerConnection
        from websockets.legacy import client as legacy_client
        from websockets.legacy.protocol import WebSocketCommonProtocol
        from websockets.legacy.server import WebSocketServerProtocol
        from websockets.sync import client as sync_client
        from websockets.sync import connection as sync_connection
        from websockets.sync.server import ServerConnection as SyncServerConnection
    shared = {asyncio_client.ClientConnection: asyncio_connection.Connection.recv,
              sync_client.ClientConnection: sync_connection.Connection.recv,
              legacy_client.WebSocketClientProtocol: WebSocketCommonProtocol.recv}
    servers = [ServerConnection, SyncServerConnection, WebSocketServerProtocol]
    for cls in shared:
        assert "recv" not in cls.__dict__  # inherited: the wrap shadows it on the client
    _live(ws_lag_ms=1)
    for cls, base_recv in shared.items():
        current = cls.__dict__["recv"]
        assert isinstance(current, wrapt.FunctionWrapper) and current.__wrapped__ is base_recv
    for server_class in servers:
        assert not isinstance(inspect.getattr_static(server_class, "recv"), wrapt.FunctionWrapper)


@pytest.mark.asyncio
async def test_a_server_in_the_same_process_is_untouched() -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    received: list[tuple[str, float]] = []
    server_errors: list[BaseException] = []

    async def echo(connection: Any) -> None:
        try:
            async for message in connection:
                received.append((message, time.monotonic()))
                await connection.send(message)
        except ConnectionClosedError as exc:
            server_errors.append(exc)

    async with serve(echo, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        _live(ws_lag_ms=300)
        async with connect(url) as ws:
            sent_at = time.monotonic()
            for n in range(5):
                await ws.send(str(n))
            echoes = [await ws.recv() for _ in range(5)]
            echoed_at = time.monotonic()
        assert echoes == ["0", "1", "2", "3", "4"]
        assert echoed_at - sent_at >= 0.3  # the client's view lags
        assert [m for m, _ in received] == ["0", "1", "2", "3", "4"]
        assert max(t for _, t in received) - sent_at < 0.1  # the server's does not
        deactivate()
        received.clear()
        _live(ws_disconnect=1.0)
        async with connect(url) as ws:
            for n in range(3):
                await ws.send(str(n))
            with pytest.raises(ConnectionClosedError):
                await ws.recv()
        # every message reached the server, whose own recv then saw the client vanish
        assert [m for m, _ in received] == ["0", "1", "2"]
        for _ in range(100):
            if server_errors:
                break
            await asyncio.sleep(0.01)
        assert len(server_errors) == 1


@pytest.mark.asyncio
async def test_concurrent_recv_is_refused_as_the_library_does(ws_server: Any) -> None:
    from websockets.asyncio.client import connect

    _live(ws_lag_ms=200)
    async with connect(ws_server.raw_url(TRADES)) as ws:
        first = asyncio.create_task(ws.recv())
        await asyncio.sleep(0.05)  # the first recv holds a message now
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        assert lateness_ms(await first) >= 199


@pytest.mark.asyncio
async def test_internal_error_turns_chaos_off_and_the_message_goes_through(
    ws_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from websockets.asyncio.client import connect

    def broken(url: str) -> tuple[float, bool]:
        raise KeyError("bug inside chaos_shims")

    monkeypatch.setattr(websockets_client, "_decide", broken)
    _live(ws_lag_ms=200)
    with caplog.at_level("ERROR", logger="chaos_shims"):
        async with connect(ws_server.raw_url(TRADES)) as ws:
            ids = [json.loads(await ws.recv())["t"] for _ in range(3)]
    assert ids == list(range(ids[0], ids[0] + 3))
    assert runtime.active is None
    assert sum("internal error" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.asyncio
async def test_dormant_wrapper_hands_out_the_library_coroutine(ws_server: Any) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    _live(ws_lag_ms=200)
    deactivate(unpatch=False)
    assert isinstance(ClientConnection.__dict__["recv"], wrapt.FunctionWrapper)
    async with connect(ws_server.raw_url(TRADES)) as ws:
        pending = ws.recv()
        try:
            # not a coroutine of chaos_shims: the library's own, called straight through
            assert pending.cr_code is inspect.unwrap(ClientConnection.recv).__code__  # type: ignore[attr-defined]
        finally:
            raw = await pending
    assert lateness_ms(raw) < 50


@pytest.mark.asyncio
async def test_a_connection_dropped_with_held_messages_is_collected() -> None:
    """A held message and the library's error (whose traceback refers to the connection) are
    kept on the connection itself: dropped unread, they go with it."""
    import gc
    import weakref

    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def burst_then_close(connection: Any) -> None:
        for n in range(5):
            await connection.send(str(n))
        await connection.close()

    async with serve(burst_then_close, "127.0.0.1", 0) as server:
        _live(ws_lag_ms=100)
        ws = await connect(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        assert await ws.recv() == "0"  # meanwhile the others and the close were read ahead
        line = getattr(ws, websockets_client.LINE_ATTRIBUTE)
        assert line.ended and len(line.pending) == 5  # four messages, then the close
        await ws.close()
        gone = weakref.ref(ws)
        del ws, line
        gc.collect()
        assert gone() is None

