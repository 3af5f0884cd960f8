"""No leaks: after thousands of injected websocket disconnects and DNS failures, the process
holds no more open descriptors (``/proc/self/fd``), threads or asyncio tasks than the bot's own,
and nothing was left for the garbage collector to warn about (``ResourceWarning`` fails).

Each test is a bot's reconnect loop against a real server on 127.0.0.1 with the fault live:

* websockets: the asyncio client (``async for ws in connect(...)``, the library's own
  reconnect idiom), the legacy client and the sync client (its reader thread per connection),
  against ``BurstServer`` (a child process: a burst of messages, then a close, at once or a
  little later, so an injected disconnect meets both a close frame already buffered and one
  not yet sent);
  ccxt.pro ``watch_trades`` against the loopback stream server;
* DNS (``dns_flap`` at 0.9: most lookups fail, the others connect for real): requests (sync
  ccxt's client) and asyncio's default ``loop.getaddrinfo`` through ``socket.getaddrinfo``,
  and aiohttp sessions with the ThreadedResolver and the AsyncResolver (aiodns, given a silent
  loopback name server so that nothing leaves the machine; ``localhost`` is answered from the
  hosts file).

How a leak is measured: the bot runs once for warm-up (libraries start their own global
threads and caches then: pycares' shutdown thread, the loopback servers' state), then the
resources are taken (``Resources.now``), then the loop runs with chaos live, the bot closes what
it opened, and the resources must come back to what they were (``assert_nothing_left``, which
waits a few seconds for servers in other threads to see their clients go). Inside the event
loop, before it closes, no task but the bot's own may be pending (``assert_only_this_task``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chaos_shims.activation import activate
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.exchange import LoopbackExchange
from tests.dns_support import HOST_NAME, flap

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("error::ResourceWarning")]

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosedError  # noqa: E402

#: injected failures per test (each costs a connection or a lookup: about 1 ms of CPU)
ASYNCIO_DISCONNECTS = 2000
LEGACY_DISCONNECTS = 200
SYNC_DISCONNECTS = 300
PRO_DISCONNECTS = 300
DNS_FAILURES = 1000  # requests, and as many through asyncio's loop.getaddrinfo
AIOHTTP_DNS_FAILURES = 500  # per resolver
#: streams an asyncio bot follows at once (a market maker watches several symbols)
STREAMS = 8
#: how long the other side (a server's threads, a child process) may take to see a client go
SETTLE_S = 5.0
#: the websockets clients' options: what is cheap and irrelevant to leaks is off (compression,
#: keepalive pings, the proxy lookup in the environment)
CLIENT_OPTIONS: dict[str, Any] = {"compression": None, "proxy": None, "open_timeout": 10}


# -- measuring -----------------------------------------------------------------------------------

def open_descriptors() -> dict[int, str]:
    """The process's open file descriptors and what each is (``socket:[...]``, a path...)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def _kind(target: str) -> str:
    # "socket:[123]" -> "socket" (a closed socket and a new one are one of a kind); anything
    # else, "anon_inode:[eventpoll]" or a path, is its own kind
    return target.split(":[", 1)[0] if target.startswith(("socket:[", "pipe:[")) else target


@dataclass(frozen=True)
class Resources:
    descriptors: dict[int, str]
    threads: frozenset[threading.Thread]

    @classmethod
    def now(cls) -> Resources:
        return cls(open_descriptors(), frozenset(threading.enumerate()))

    def more_than(self, before: Resources) -> list[str]:
        """What is open now that was not before: descriptors by kind, threads."""
        now, then = (Counter(map(_kind, r.descriptors.values())) for r in (self, before))
        extra = [f"{count} more {kind}" for kind, count in (now - then).items()]
        return extra + [f"thread {thread.name}" for thread in self.threads - before.threads
                        if thread.is_alive()]


def assert_nothing_left(before: Resources) -> Resources:
    """The process holds no more than ``before`` (descriptors by kind, threads): waits up to
    SETTLE_S for the other side of each connection to close."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        gc.collect()
        now = Resources.now()
        extra = now.more_than(before)
        if not extra:
            return now
        if time.monotonic() >= deadline:
            raise AssertionError(f"left open: {extra}")
        time.sleep(0.05)


async def assert_only_this_task() -> None:
    """No task but the caller's is pending (tasks finishing their close get a moment)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if not others:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"tasks left: {sorted(map(repr, others))[:5]}")
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def resource_warnings_fail() -> Iterator[None]:
    """ResourceWarnings are raised in ``__del__``, where an error is only printed: record
    them (and any exception ignored in a finaliser) around the block and a full collection,
    and fail on any."""
    ignored: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = ignored.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            yield
            gc.collect()
    finally:
        sys.unraisablehook = previous
    problems = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    problems += [f"{hook.exc_value!r} in {hook.object!r}" for hook in ignored]
    assert not problems, problems[:5]


def live(registry: Any, **keys: Any) -> ChaosInjector:
    injector = activate(None, registry=registry, enabled=True, dry_run=False, burst_on_sec=0,
                        seed=11, **keys)
    assert injector is not None
    return injector


def instances(type_: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is type_)


# -- a websocket server that pushes and hangs up ---------------------------------------------------

_BURST_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

BURST, LINGER_S = int(sys.argv[1]), float(sys.argv[2])
counts = {"open": 0, "total": 0}

async def handle(connection):
    counts["open"] += 1
    counts["total"] += 1
    linger = counts["total"] % 2 == 0
    try:
        for number in range(BURST):
            await connection.send(str(number))
        if linger:
            await asyncio.sleep(LINGER_S)
        await connection.close()
    except ConnectionClosed:
        pass  # the client dropped first: what a server sees of a network failure
    finally:
        counts["open"] -= 1

async def main():
    loop = asyncio.get_running_loop()
    async with serve(handle, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.readline():  # each line asks for the counts; EOF stops the server
            print(counts["open"], counts["total"], flush=True)

asyncio.run(main())
"""


_PUSH_AND_CLOSE_SERVER = """
import asyncio, sys
from websockets.frames import Close, Frame, Opcode
from websockets.utils import accept_key

BURST = int(sys.argv[1])
#: the messages and the close frame in ONE write: the client reads and parses them together
PUSH = b"".join(Frame(Opcode.TEXT, str(n).encode()).serialize(mask=False, extensions=[])
                for n in range(BURST))
PUSH += Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=False, extensions=[])
counts = {"open": 0, "total": 0}

async def handle(reader, writer):
    counts["open"] += 1
    counts["total"] += 1
    try:
        request = await reader.readuntil(b"\\r\\n\\r\\n")
        headers = dict(line.split(": ", 1) for line in request.decode().split("\\r\\n")[1:] if line)
        key = next(v for k, v in headers.items() if k.lower() == "sec-websocket-key")
        writer.write(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n"
                     b"Connection: Upgrade\\r\\nSec-WebSocket-Accept: "
                     + accept_key(key).encode() + b"\\r\\n\\r\\n")
        if b"/answer" in request.split(b"\\r\\n", 1)[0]:
            await reader.read(65536)  # a client that speaks first (ccxt.pro subscribes)
        writer.write(PUSH)
        await reader.read()  # until the client goes
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        counts["open"] -= 1

async def main():
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(counts["open"], counts["total"], flush=True)
    server.close()

asyncio.run(main())
"""


class BurstServer:
    """A websockets server on 127.0.0.1 in a child process (its CPU on the other core, its
    descriptors not counted here): each connection gets ``burst`` messages at once, then a
    clean close, at once (every other connection) or after ``linger_s``, so that an injected
    disconnect meets both a close frame already buffered and one not sent yet."""

    def __init__(self, burst: int = 4, linger_s: float = 0.02, *,
                 script: str = _BURST_SERVER) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", script, str(burst), str(linger_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None and self._process.stdin is not None
        self._requests, self._answers = self._process.stdin, self._process.stdout
        self.port = int(self._answers.readline())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def counts(self) -> tuple[int, int]:
        """(connections open now, connections so far)."""
        self._requests.write("\n")
        self._requests.flush()
        open_now, total = map(int, self._answers.readline().split())
        return open_now, total

    def wait_idle(self) -> bool:
        """Whether the server sees no client connected (each dropped one went away)."""
        deadline = time.monotonic() + SETTLE_S
        while self.counts()[0]:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._requests.close()
        try:
            self._process.wait(10)
        finally:
            self._answers.close()

    def __enter__(self) -> BurstServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture
def burst_server() -> Iterator[BurstServer]:
    with BurstServer() as server:
        yield server


@dataclass
class Tally:
    """What a reconnecting bot saw."""

    connections: int = 0
    messages: int = 0
    dropped: int = 0  # ConnectionClosedError: the injected disconnects
    closed: int = 0  # clean closes by the server
    #: reconnect loops that stopped right after a drop (no reconnect followed it)
    ended_with_a_drop: int = 0


def run_bot_twice(bot: Callable[[int], Coroutine[Any, Any, Tally]], failures: int,
                  live_keys: Callable[[], ChaosInjector]) -> tuple[Tally, ChaosInjector]:
    """Warm-up (chaos off), take the resources, then the bot with chaos live until
    ``failures``; each in a fresh event loop, which closes before the resources are compared."""
    asyncio.run(bot(3))
    before = Resources.now()
    with resource_warnings_fail():
        injector = live_keys()
        started, cpu = time.perf_counter(), time.process_time()
        tally = asyncio.run(bot(failures))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{tally.dropped} dropped, {tally.connections} connections, {tally.messages} "
          f"messages in {elapsed:.1f} s ({cpu:.1f} s of CPU)")
    assert_nothing_left(before)
    return tally, injector


# -- websockets ------------------------------------------------------------------------------------

def _asyncio_bot(url: str, connect: Any, *, legacy: bool = False,
                 streams: int = 1) -> Callable[[int], Coroutine[Any, Any, Tally]]:
    """A bot following ``streams`` streams (one URL each), each in the library's own reconnect
    loop, until ``failures`` drops in all."""
    async def follow(path: str, tally: Tally, failures: int) -> None:
        if legacy:  # the legacy client's reconnect loop is the same idiom
            reconnecting = connect(url + path, compression=None, open_timeout=10)
        else:
            reconnecting = connect(url + path, **CLIENT_OPTIONS)
        iterator = reconnecting.__aiter__()
        try:
            async for ws in iterator:
                tally.connections += 1
                try:
                    async for _ in ws:
                        tally.messages += 1
                except ConnectionClosedError:
                    tally.dropped += 1
                    dropped_last = True
                else:
                    tally.closed += 1
                    dropped_last = False
                if tally.dropped >= failures or tally.connections >= failures * 3:
                    tally.ended_with_a_drop += dropped_last
                    break
        finally:
            await iterator.aclose()  # closes the last connection

    async def bot(failures: int) -> Tally:
        tally = Tally()
        await asyncio.gather(*(follow(f"/{number}", tally, failures)
                               for number in range(streams)))
        await assert_only_this_task()
        return tally
    return bot


def _assert_every_drop_was_injected(tally: Tally, injector: ChaosInjector, registry: Any,
                                    failures: int) -> None:
    assert failures <= tally.dropped < failures + 10  # streams still running may add a few
    # each injected disconnect reached the bot as a ConnectionClosedError, none as a clean close
    assert injector.count("ws_disconnect", "live") == tally.dropped
    # every connection after a drop (to that stream's URL) is one reconnect attempt; a stream
    # whose last connection dropped did not reconnect
    assert registry.get_sample_value("mm_reconnect_attempts_total", {"kind": "websockets"}) == (
        tally.dropped - tally.ended_with_a_drop)


def test_websockets_asyncio_client_thousands_of_disconnects(
        burst_server: BurstServer, registry: Any) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    tally, injector = run_bot_twice(
        _asyncio_bot(burst_server.url, connect, streams=STREAMS), ASYNCIO_DISCONNECTS,
        lambda: live(registry, ws_disconnect=0.5, ws_lag_ms=1))
    _assert_every_drop_was_injected(tally, injector, registry, ASYNCIO_DISCONNECTS)
    assert tally.closed > 0 and tally.messages > 0  # some connections ran to the server's close
    assert burst_server.wait_idle()  # the server saw every client go: no zombie
    assert instances(ClientConnection) == 0


def test_websockets_legacy_client_disconnects(burst_server: BurstServer, registry: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from websockets.legacy.client import WebSocketClientProtocol, connect

    tally, injector = run_bot_twice(
        _asyncio_bot(burst_server.url, connect, legacy=True, streams=STREAMS), LEGACY_DISCONNECTS,
        lambda: live(registry, ws_disconnect=0.5, ws_lag_ms=1))
    _assert_every_drop_was_injected(tally, injector, registry, LEGACY_DISCONNECTS)
    assert burst_server.wait_idle()
    assert instances(WebSocketClientProtocol) == 0


def test_websockets_sync_client_disconnects(burst_server: BurstServer, registry: Any) -> None:
    """The sync client reads in a thread of its own per connection: none may outlive it."""
    from websockets.sync.client import ClientConnection, connect

    def bot(failures: int) -> Tally:
        tally = Tally()
        while tally.dropped < failures and tally.connections < failures * 3:
            tally.connections += 1
            with connect(burst_server.url, **CLIENT_OPTIONS) as ws:
                try:
                    for _ in ws:
                        tally.messages += 1
                except ConnectionClosedError:
                    tally.dropped += 1
                else:
                    tally.closed += 1
        tally.ended_with_a_drop = int(tally.dropped >= failures)  # it stops right after one
        return tally

    bot(3)
    before = Resources.now()
    with resource_warnings_fail():
        injector = live(registry, ws_disconnect=0.5, ws_lag_ms=1)
        tally = bot(SYNC_DISCONNECTS)
    print(tally)
    assert_nothing_left(before)
    _assert_every_drop_was_injected(tally, injector, registry, SYNC_DISCONNECTS)
    assert burst_server.wait_idle()
    assert instances(ClientConnection) == 0


async def _read_after_a_moment(connect: Any, url: str, **options: Any) -> list[Any]:
    ws = await connect(url, **options)
    await asyncio.sleep(0.05)  # every frame, the close too, has arrived by now
    seen: list[Any] = []
    try:
        async for message in ws:
            seen.append(message)
    except ConnectionClosedError as exc:
        seen.append(exc)
    await ws.close()
    return seen


def _first_watch_error(url: str, exchange: LoopbackExchange) -> str:
    """The error ccxt.pro's watch_trades gets from a server that pushes and closes."""
    ccxt = pytest.importorskip("ccxt")
    import ccxt.pro as ccxtpro

    from tests.conftest import client_config

    config = client_config(exchange)
    config["urls"]["api"] = {**config["urls"]["api"],
                             "ws": dict.fromkeys(("spot", "margin", "future", "delivery"), url)}

    async def watch() -> str:
        client = ccxtpro.binance(config)
        try:
            await client.load_markets()
            await asyncio.wait_for(client.watch_trades("BTC/USDT"), 5)
        except ccxt.NetworkError as exc:
            return str(exc)
        finally:
            await client.close()
        return "no error"

    return asyncio.run(watch())


@pytest.mark.parametrize("client", ["asyncio", "legacy", "sync", "ccxt.pro"])
def test_an_injected_disconnect_is_abnormal_even_after_the_server_closed(
        client: str, exchange: LoopbackExchange) -> None:
    """The server sends its messages and its close frame at once (one write): the close frame
    is parsed by the library before the app reads the first message. A disconnect injected on that message
    loses the close frame with the connection (it came after): the app sees a network failure
    (1006), never a clean close. Without it a bot's ``async for`` simply ends, and ccxt.pro
    reports code 1000."""
    with BurstServer(burst=3, script=_PUSH_AND_CLOSE_SERVER) as server:
        activate(None, enabled=True, dry_run=False, burst_on_sec=0, seed=1, ws_disconnect=1.0)
        if client == "ccxt.pro":
            assert _first_watch_error(server.url + "/answer", exchange).endswith(
                "closing code 1006")
            return
        if client == "asyncio":
            from websockets.asyncio.client import connect

            seen = asyncio.run(_read_after_a_moment(connect, server.url, **CLIENT_OPTIONS))
        elif client == "legacy":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                from websockets.legacy.client import connect as legacy_connect
            seen = asyncio.run(_read_after_a_moment(legacy_connect, server.url,
                                                    compression=None))
        else:
            from websockets.sync.client import connect as sync_connect

            seen = []
            with sync_connect(server.url, **CLIENT_OPTIONS) as ws:
                time.sleep(0.05)
                try:
                    seen.extend(ws)
                except ConnectionClosedError as exc:
                    seen.append(exc)
    # the first message fired: it and everything after it are lost; no close frame came
    assert [type(item) for item in seen] == [ConnectionClosedError], seen
    assert (seen[0].rcvd, seen[0].sent) == (None, None)


# -- ccxt.pro ----------------------------------------------------------------------------------------

def test_ccxt_pro_thousands_of_disconnects(ws_server: Any, stream_exchange: LoopbackExchange,
                                           registry: Any) -> None:
    ccxt = pytest.importorskip("ccxt")
    import ccxt.pro as ccxtpro
    from ccxt.async_support.base.ws.client import Client

    from tests.conftest import client_config

    config = client_config(stream_exchange)
    config["urls"]["api"] = {**config["urls"]["api"], "ws": ws_server.ccxt_urls()}

    async def bot(failures: int) -> Tally:
        tally = Tally()
        exchange = ccxtpro.binance(config)
        try:
            await exchange.load_markets()
            while tally.dropped < failures and tally.connections < failures * 3:
                tally.connections += 1
                try:
                    trades = await asyncio.wait_for(exchange.watch_trades("BTC/USDT"), 5)
                    tally.messages += len(trades)
                except ccxt.NetworkError:
                    tally.dropped += 1  # the next watch_trades opens a new connection
        finally:
            await exchange.close()
        await assert_only_this_task()
        return tally

    tally, injector = run_bot_twice(bot, PRO_DISCONNECTS,
                                    lambda: live(registry, ws_disconnect=1.0))
    assert tally.dropped == PRO_DISCONNECTS == injector.count("ws_disconnect", "live")
    assert registry.get_sample_value("mm_reconnect_attempts_total",
                                     {"kind": "ccxt.pro"}) == PRO_DISCONNECTS - 1
    assert ws_server.wait_for(lambda: ws_server.open_connections == 0)
    assert instances(Client) == 0


# -- DNS ---------------------------------------------------------------------------------------------

def _failures(injector: ChaosInjector) -> int:
    return injector.count("dns_flap", "live")


def _active() -> ChaosInjector | None:
    from chaos_shims.core import runtime

    return runtime.active


def test_dns_flaps_through_socket_getaddrinfo(exchange: LoopbackExchange, registry: Any) -> None:
    """requests (sync ccxt's client), a new connection per request as after a server's close,
    and asyncio's default ``loop.getaddrinfo`` (executor threads, shut down with the loop)."""
    requests = pytest.importorskip("requests")
    url = f"http://{HOST_NAME}:{exchange.port}/api/v3/ping"

    def sync_bot(failures: int) -> int:
        reached = 0
        with requests.Session() as session:
            for _ in range(failures * 3):
                if (injector := _active()) is not None and _failures(injector) >= failures:
                    break
                try:
                    session.get(url, headers={"Connection": "close"}, timeout=5).raise_for_status()
                    reached += 1
                except requests.ConnectionError:
                    pass
        return reached

    async def asyncio_bot(failures: int) -> int:
        reached = 0
        for _ in range(failures * 3):
            if (injector := _active()) is not None and _failures(injector) >= failures:
                break
            try:
                _, writer = await asyncio.open_connection(HOST_NAME, exchange.port)
            except socket.gaierror:
                continue
            writer.close()
            await writer.wait_closed()
            reached += 1
        await assert_only_this_task()
        return reached

    sync_bot(2)
    asyncio.run(asyncio_bot(2))
    before = Resources.now()
    with resource_warnings_fail():
        injector = flap(dns_flap=0.9, registry=registry)
        reached = sync_bot(DNS_FAILURES)
        assert _failures(injector) == DNS_FAILURES and reached > 0
        injector = flap(dns_flap=0.9, registry=registry)
        reached = asyncio.run(asyncio_bot(DNS_FAILURES))
        assert _failures(injector) == DNS_FAILURES and reached > 0
    assert_nothing_left(before)


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    """A loopback UDP socket as c-ares' only DNS server: a lookup the hosts file cannot answer
    goes nowhere else."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    host, port = udp.getsockname()
    yield f"{host}:{port}"
    udp.close()


@pytest.mark.parametrize("resolver_name", ["ThreadedResolver", "AsyncResolver"])
def test_dns_flaps_through_aiohttp_resolvers(resolver_name: str, exchange: LoopbackExchange,
                                              silent_nameserver: str, registry: Any) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import resolver as resolvers

    url = f"http://{HOST_NAME}:{exchange.port}/api/v3/ping"

    def make_resolver() -> Any:
        if resolver_name == "AsyncResolver":
            pytest.importorskip("aiodns")
            return resolvers.AsyncResolver(nameservers=[silent_nameserver], timeout=0.2, tries=1)
        return resolvers.ThreadedResolver()

    async def bot(failures: int) -> int:
        reached = 0
        resolver = make_resolver()
        # no DNS cache and a new connection per request: every request asks the resolver
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False,
                                         force_close=True)
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(failures * 3):
                    if (injector := _active()) is not None and _failures(injector) >= failures:
                        break
                    try:
                        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                            await response.read()
                            reached += 1
                    except aiohttp.ClientConnectorDNSError:
                        pass
        finally:
            await resolver.close()  # a resolver given to the connector is the bot's to close
        await assert_only_this_task()
        return reached

    asyncio.run(bot(2))
    before = Resources.now()
    with resource_warnings_fail():
        injector = flap(dns_flap=0.9, registry=registry)
        started = time.perf_counter()
        reached = asyncio.run(bot(AIOHTTP_DNS_FAILURES))
        print(f"{resolver_name}: {_failures(injector)} failures, {reached} requests reached "
              f"the server in {time.perf_counter() - started:.1f} s")
    assert _failures(injector) == AIOHTTP_DNS_FAILURES and reached > 0
    assert_nothing_left(before)
