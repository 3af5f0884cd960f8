"""dns_flap: the scenario contract on one name resolution, then what a bot sees through real
ccxt (sync, async, ccxt.pro) talking to the loopback exchange by host name, and what is never
an event (IP literals)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims.exchange import LoopbackExchange
from tests.conftest import client_config
from tests.dns_support import HOST_NAME
from tests.scenarios.contract import SYMBOL, ScenarioContract, async_outcome, outcome

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")
import ccxt.async_support as ccxt_async  # noqa: E402

LOOPBACK_IP = "127.0.0.1"


def resolve_host_name() -> str:
    try:
        socket.getaddrinfo(HOST_NAME, 80, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return "EAI_AGAIN" if exc.errno == socket.EAI_AGAIN else f"gaierror {exc.errno}"
    return "ok"


def by_host_name(value: Any) -> Any:
    """The exchange config with every URL naming ``localhost`` instead of 127.0.0.1."""
    if isinstance(value, dict):
        return {key: by_host_name(item) for key, item in value.items()}
    if isinstance(value, str):
        return value.replace(f"//{LOOPBACK_IP}:", f"//{HOST_NAME}:")
    return value


def causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


class TestDnsFlap(ScenarioContract):
    key = "dns_flap"
    live_keys = {"dns_flap": 1.0}
    partial_keys = {"dns_flap": 0.5}
    live_outcome = "EAI_AGAIN"

    def provoke(self, target: Any) -> str:
        return resolve_host_name()

    def test_each_resolution_is_one_recorded_event(self) -> None:
        injector = self.activate()
        assert [resolve_host_name() for _ in range(3)] == ["EAI_AGAIN"] * 3
        records = injector.records("dns_flap")
        assert [(r.mode, r.reason_code, r.target, r.exchange, r.op) for r in records] == \
            [("live", "dns_eai_again", HOST_NAME, None, None)] * 3

    def test_ip_literals_are_never_events(self) -> None:
        # The C library and aiohttp answer literals without asking any resolver: a DNS outage
        # cannot touch them, so neither does the flap.
        injector = self.activate()
        for host in (LOOPBACK_IP, "127.1", "2130706433", "::1", b"127.0.0.1"):
            assert socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM), host
        assert socket.getaddrinfo(None, 80, flags=socket.AI_PASSIVE)
        assert socket.getaddrinfo(LOOPBACK_IP, 80, flags=socket.AI_NUMERICHOST)
        assert injector.count("dns_flap") == 0
        with pytest.raises(socket.gaierror):  # a name given as bytes is still a lookup
            socket.getaddrinfo(b"localhost", 80)
        assert injector.count("dns_flap") == 1

    def test_ccxt_at_an_ip_literal_is_untouched(self, binance: Any, exchange: LoopbackExchange) -> None:
        injector = self.activate()
        assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == "ok"
        assert injector.count("dns_flap") == 0

    def test_sync_ccxt_by_host_name_gets_network_error(self, exchange: LoopbackExchange) -> None:
        client = ccxt.binance(client_config(exchange, urls=by_host_name(exchange.ccxt_config()["urls"])))
        injector = self.activate()
        with pytest.raises(ccxt.NetworkError) as raised:
            client.fetch_order_book(SYMBOL)
        # requests -> NameResolutionError -> ConnectionError -> ccxt's NetworkError, exactly
        assert type(raised.value) is ccxt.NetworkError
        [gaierror] = [e for e in causes(raised.value) if isinstance(e, socket.gaierror)]
        assert gaierror.errno == socket.EAI_AGAIN
        assert exchange.request_count() == 0
        assert injector.records("dns_flap")[0].target == HOST_NAME
        # and the same client recovers once the flap is over
        self.activate(dns_flap=0.0)
        assert outcome(lambda: client.fetch_order_book(SYMBOL)) == "ok"

    @pytest.mark.asyncio
    async def test_async_ccxt_by_host_name_gets_exchange_not_available(
            self, exchange: LoopbackExchange) -> None:
        # whichever resolver aiohttp uses here: AsyncResolver with aiodns, else ThreadedResolver
        client = ccxt_async.binance(
            client_config(exchange, urls=by_host_name(exchange.ccxt_config()["urls"])))
        try:
            injector = self.activate()
            assert await async_outcome(lambda: client.fetch_order_book(SYMBOL)) \
                == "ExchangeNotAvailable"
            assert exchange.request_count() == 0
            assert injector.count("dns_flap", "live") == 1  # one lookup, one decision
        finally:
            await client.close()

    @pytest.mark.asyncio
    async def test_ccxt_pro_websocket_by_host_name_gets_network_error(
            self, exchange: LoopbackExchange) -> None:
        import ccxt.pro as ccxt_pro

        client = ccxt_pro.binance(client_config(exchange))
        # REST stays on the IP literal (never an event); the stream names a host. Port 9
        # (discard) is never connected to: the lookup fails first.
        client.urls["api"]["ws"] = {
            name: (f"ws://{HOST_NAME}:9/ws" if isinstance(url, str) else url)
            for name, url in client.urls["api"]["ws"].items()}
        try:
            await client.load_markets()
            injector = self.activate()
            with pytest.raises(ccxt.NetworkError) as raised:
                await asyncio.wait_for(client.watch_ticker(SYMBOL), 10)
            assert type(raised.value) is ccxt.NetworkError
            assert f"Cannot connect to host {HOST_NAME}:9" in str(raised.value)
            assert [r.target for r in injector.records("dns_flap")] == [HOST_NAME]
        finally:
            await client.close()
