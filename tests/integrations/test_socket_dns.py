"""The socket.getaddrinfo patch point: the error a real temporary resolver failure raises, the
clients that resolve through it (asyncio's default loop, websockets asyncio and sync, requests
and its warm pool), hygiene when socket is imported after activation, restoring only what is
ours, and fail-safety."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import pytest_asyncio
import wrapt

from chaos_shims.activation import activate
from chaos_shims.core import runtime
from chaos_shims.integrations import PATCH_POINTS, socket_dns
from tests.dns_support import HOST_NAME, flap
from tests.patch_hygiene import assert_hygiene_when_imported_after

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

def assert_temporary_failure(error: BaseException) -> None:
    libc = ctypes.CDLL(None)
    libc.gai_strerror.restype = ctypes.c_char_p
    assert type(error) is socket.gaierror
    assert error.errno == socket.EAI_AGAIN
    assert error.strerror == libc.gai_strerror(socket.EAI_AGAIN).decode()
    assert str(error) == f"[Errno {socket.EAI_AGAIN}] {error.strerror}"


def test_the_error_is_the_resolvers_own_eai_again() -> None:
    flap()
    with pytest.raises(socket.gaierror) as raised:
        socket.getaddrinfo(HOST_NAME, 443, type=socket.SOCK_STREAM)
    assert_temporary_failure(raised.value)
    with pytest.raises(socket.gaierror) as raised:  # keyword arguments too
        socket.getaddrinfo(host=HOST_NAME, port=443, flags=socket.AI_ADDRCONFIG)
    assert_temporary_failure(raised.value)


def test_dormant_and_dry_run_resolve_for_real() -> None:
    injector = flap(dry_run=True)
    assert socket.getaddrinfo(HOST_NAME, 80)
    assert injector.count("dns_flap", "dry_run") == 1
    activate(None, enabled=False)
    assert socket.getaddrinfo(HOST_NAME, 80)


@pytest.mark.asyncio
async def test_asyncio_default_loop_getaddrinfo_is_reached_once() -> None:
    injector = flap()
    loop = asyncio.get_running_loop()
    with pytest.raises(socket.gaierror) as raised:
        await loop.getaddrinfo(HOST_NAME, 80)
    assert_temporary_failure(raised.value)
    with pytest.raises(socket.gaierror):
        await asyncio.open_connection(HOST_NAME, 80)
    assert injector.count("dns_flap") == 2


# -- websockets --------------------------------------------------------------------------------

@pytest_asyncio.fixture
async def echo_port() -> AsyncIterator[int]:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:  # an IP literal: the server never flaps
        yield next(iter(server.sockets)).getsockname()[1]


@pytest.mark.asyncio
async def test_websockets_asyncio_client_gets_a_raw_gaierror(echo_port: int) -> None:
    from websockets.asyncio.client import connect

    injector = flap(dry_run=True)
    async with connect(f"ws://{HOST_NAME}:{echo_port}") as connection:
        await connection.send("ping")
        assert await connection.recv() == "ping"
    flap()
    with pytest.raises(socket.gaierror) as raised:
        await connect(f"ws://{HOST_NAME}:{echo_port}", open_timeout=5)
    assert_temporary_failure(raised.value)
    assert injector.count("dns_flap", "dry_run") == 1


@pytest.mark.asyncio
async def test_websockets_sync_client_gets_a_raw_gaierror(echo_port: int) -> None:
    from websockets.sync.client import connect

    flap()
    # the sync client resolves through socket.create_connection: in a thread, as a bot would
    with pytest.raises(socket.gaierror) as raised:
        await asyncio.to_thread(connect, f"ws://{HOST_NAME}:{echo_port}", open_timeout=5)
    assert_temporary_failure(raised.value)


# -- requests: a warm pool hides a flap ----------------------------------------------------------

class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open, as real exchanges do

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def keep_alive_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://{HOST_NAME}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_requests_warm_pool_hides_a_flap_a_new_connection_sees_it(keep_alive_url: str) -> None:
    requests = pytest.importorskip("requests")
    with requests.Session() as warm:
        assert warm.get(keep_alive_url, timeout=5).text == "ok"
        injector = flap()
        # the pooled connection is reused: nothing is resolved, as in a real outage
        assert warm.get(keep_alive_url, timeout=5).text == "ok"
        assert injector.count("dns_flap") == 0
        with requests.Session() as cold, pytest.raises(requests.ConnectionError) as raised:
            cold.get(keep_alive_url, timeout=5)
    assert socket_dns.eai_again_message() in str(raised.value)  # NameResolutionError's text
    assert injector.count("dns_flap") == 1


# -- hygiene ----------------------------------------------------------------------------------

def test_import_after_activation_patches_and_unpatches() -> None:
    # the shared helper imports wrapt (which imports socket) only after the targets: socket is
    # genuinely imported last
    assert_hygiene_when_imported_after("socket_dns")


def test_unpatch_leaves_a_replacement_made_by_someone_else(monkeypatch: pytest.MonkeyPatch) -> None:
    point = PATCH_POINTS["socket_dns"]
    original = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", original)  # put back whatever happens below
    point.enable()
    ours = socket.getaddrinfo
    assert isinstance(ours, wrapt.FunctionWrapper) and ours.__wrapped__ is original

    def guard(*args: Any, **kwargs: Any) -> Any:  # e.g. pytest-socket's, which does not call ours
        return original(*args, **kwargs)

    socket.getaddrinfo = guard  # type: ignore[assignment]
    assert not point.is_patched()
    point.disable()
    assert socket.getaddrinfo is guard
    socket.getaddrinfo = original  # type: ignore[assignment]
    point.enable()  # patches afresh, once
    assert isinstance(socket.getaddrinfo, wrapt.FunctionWrapper)
    assert socket.getaddrinfo.__wrapped__ is original
    point.disable()
    assert socket.getaddrinfo is original


def test_unpatch_under_a_plain_wrapper_keeps_ours_dormant(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    point = PATCH_POINTS["socket_dns"]
    original = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", original)
    point.enable()
    ours = socket.getaddrinfo

    @functools.wraps(ours)
    def theirs(*args: Any, **kwargs: Any) -> Any:
        return ours(*args, **kwargs)

    socket.getaddrinfo = theirs  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="chaos_shims"):
        point.disable()
    assert socket.getaddrinfo is theirs  # theirs calls ours: neither is undone
    assert any("patched over" in r.getMessage() for r in caplog.records)
    point.enable()  # ours is still known: no second wrapper
    assert theirs.__wrapped__ is ours  # type: ignore[attr-defined]
    assert socket.getaddrinfo(HOST_NAME, 80)  # dormant: calls straight through
    socket.getaddrinfo = ours  # type: ignore[assignment]
    point.disable()
    assert socket.getaddrinfo is original


def test_internal_error_turns_chaos_off_and_the_lookup_goes_through(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(host: Any, flags: int = 0) -> Any:
        raise KeyError("bug inside chaos_shims")

    monkeypatch.setattr(socket_dns, "lookup_target", broken)
    flap()
    with caplog.at_level("ERROR", logger="chaos_shims"):
        assert socket.getaddrinfo(HOST_NAME, 80)
        assert socket.getaddrinfo(HOST_NAME, 80)
    assert runtime.active is None
    assert sum("internal error" in r.getMessage() for r in caplog.records) == 1
