"""The aiohttp resolver patch point: ThreadedResolver on asyncio's loop (decided once, by the
socket wrapper) and on uvloop (decided here), AsyncResolver/aiodns (decided here, failing as a
real c-ares timeout fails, never leaving loopback), the connector's DNS cache hiding a flap,
and hygiene when aiohttp is imported after activation."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims.activation import activate
from chaos_shims.core import runtime
from chaos_shims.exchange import LoopbackExchange
from tests.dns_support import HOST_NAME, flap
from tests.patch_hygiene import assert_hygiene_when_imported_after

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

aiohttp = pytest.importorskip("aiohttp")
from aiohttp.resolver import AsyncResolver, ThreadedResolver  # noqa: E402


@pytest.fixture
def ping_url(exchange: LoopbackExchange) -> str:
    return f"http://{HOST_NAME}:{exchange.port}/api/v3/ping"


async def fetch(connector: Any, url: str) -> Any:
    """``"ok"``, or the OSError behind the connector's ClientConnectorDNSError."""
    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                await response.read()
                return "ok"
        except aiohttp.ClientConnectorDNSError as exc:
            return exc.os_error


async def fetch_with(resolver: Any, url: str, *, use_dns_cache: bool = False) -> Any:
    # force_close: every request opens (and so resolves for) a new connection
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=use_dns_cache,
                                     force_close=True)
    try:
        return await fetch(connector, url)
    finally:
        await connector.close()


def assert_eai_again(error: Any) -> None:
    from chaos_shims.integrations.socket_dns import eai_again_message

    assert type(error) is socket.gaierror
    assert (error.errno, error.strerror) == (socket.EAI_AGAIN, eai_again_message())


# -- ThreadedResolver ---------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_threaded_resolver_on_asyncio_loop_one_lookup_one_decision(ping_url: str) -> None:
    injector = flap(dry_run=True)
    resolver = ThreadedResolver()
    assert await fetch_with(resolver, ping_url) == "ok"
    assert injector.count("dns_flap", "dry_run") == 1
    injector = flap()
    for _ in range(3):
        assert_eai_again(await fetch_with(resolver, ping_url))
    # decided by the socket wrapper in the executor; the resolver wrapper stood aside
    assert injector.count("dns_flap", "live") == 3


def test_threaded_resolver_on_uvloop_is_decided_by_the_resolver(ping_url: str) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> tuple[Any, Any, int]:
        # uvloop resolves inside libuv: socket.getaddrinfo is never called
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        resolver = ThreadedResolver()
        flap(dry_run=True)
        unharmed = await fetch_with(resolver, ping_url)
        injector = flap()
        return unharmed, await fetch_with(resolver, ping_url), injector.count("dns_flap")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        unharmed, error, decisions = runner.run(run())
    assert unharmed == "ok"
    assert_eai_again(error)  # uvloop's own form for a failed lookup
    assert decisions == 1


@pytest.mark.asyncio
async def test_dns_cache_hides_a_flap_until_it_expires(ping_url: str) -> None:
    connector = aiohttp.TCPConnector(resolver=ThreadedResolver(), use_dns_cache=True,
                                     force_close=True)
    try:
        assert await fetch(connector, ping_url) == "ok"  # resolved and cached
        injector = flap()
        assert await fetch(connector, ping_url) == "ok"  # answered from the cache
        assert injector.count("dns_flap") == 0
        connector.clear_dns_cache()  # as when the 10 s ttl_dns_cache runs out
        assert_eai_again(await fetch(connector, ping_url))
        assert injector.count("dns_flap") == 1
    finally:
        await connector.close()


# -- AsyncResolver (aiodns / c-ares) --------------------------------------------------------------

@pytest.fixture
def silent_nameserver() -> Iterator[socket.socket]:
    """A loopback UDP socket given to c-ares as its only DNS server; it never answers, and
    shows whether any query was sent at all."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    yield udp
    udp.close()


def queries(udp: socket.socket) -> int:
    seen = 0
    while True:
        try:
            udp.recv(4096)
        except BlockingIOError:
            return seen
        seen += 1


def async_resolver(udp: socket.socket) -> Any:
    pytest.importorskip("aiodns")
    host, port = udp.getsockname()
    return AsyncResolver(nameservers=[f"{host}:{port}"], timeout=0.2, tries=1)


@pytest.mark.asyncio
async def test_async_resolver_fails_as_a_real_c_ares_timeout(
        ping_url: str, silent_nameserver: socket.socket) -> None:
    resolver = async_resolver(silent_nameserver)
    try:
        # a real failure, for reference: a name only the silent loopback server could answer
        with pytest.raises(OSError) as real:
            await resolver.resolve("chaos-shims.test", 80)
        assert queries(silent_nameserver) >= 1
        injector = flap()
        injected = await fetch_with(resolver, ping_url)
        assert type(injected) is OSError
        assert injected.args == real.value.args == (None, "Timeout while contacting DNS servers")
        assert type(injected.__cause__) is type(real.value.__cause__)
        assert injected.__cause__.args == real.value.__cause__.args  # DNSError(ARES_ETIMEOUT, ..)
        assert injector.count("dns_flap", "live") == 1
        assert queries(silent_nameserver) == 0  # the flap fails before any query
    finally:
        await resolver.close()


@pytest.mark.asyncio
async def test_async_resolver_resolves_localhost_without_leaving_the_machine(
        ping_url: str, silent_nameserver: socket.socket) -> None:
    resolver = async_resolver(silent_nameserver)
    try:
        injector = flap(dry_run=True)
        assert await fetch_with(resolver, ping_url) == "ok"
        assert injector.count("dns_flap", "dry_run") == 1
        flap()
        # an IP literal is answered by c-ares itself: no lookup, no event
        assert await resolver.resolve("127.0.0.1", 80)
        assert queries(silent_nameserver) == 0  # localhost came from the hosts file
    finally:
        await resolver.close()


@pytest.mark.asyncio
async def test_disabled_is_dormant(ping_url: str, silent_nameserver: socket.socket) -> None:
    resolver = async_resolver(silent_nameserver)
    try:
        flap()
        activate(None, enabled=False)
        assert await fetch_with(resolver, ping_url) == "ok"
        assert await fetch_with(ThreadedResolver(), ping_url) == "ok"
    finally:
        await resolver.close()


@pytest.mark.asyncio
async def test_internal_error_turns_chaos_off_and_the_lookup_goes_through(
        ping_url: str, silent_nameserver: socket.socket, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from chaos_shims.integrations import aiohttp_resolver

    def broken(module: Any) -> OSError:
        raise KeyError("bug inside chaos_shims")

    monkeypatch.setattr(aiohttp_resolver, "c_ares_temporary_failure", broken)
    resolver = async_resolver(silent_nameserver)
    try:
        flap()
        with caplog.at_level("ERROR", logger="chaos_shims"):
            assert await fetch_with(resolver, ping_url) == "ok"
            assert await fetch_with(resolver, ping_url) == "ok"
        assert runtime.active is None
        assert sum("internal error" in r.getMessage() for r in caplog.records) == 1
    finally:
        await resolver.close()


def test_import_after_activation_patches_and_unpatches() -> None:
    assert_hygiene_when_imported_after("aiohttp_resolver")
