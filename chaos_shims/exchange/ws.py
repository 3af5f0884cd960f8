"""Loopback websocket market-data streams shaped like Binance spot.

Two servers stream the same thing, each in a background thread with its own event loop:
``LoopbackWsExchange`` is a ``websockets`` server, ``LoopbackAiohttpWsExchange`` an
``aiohttp.web`` one. An unmodified ``ccxt.pro.binance`` streams from either with its
``urls['api']['ws']`` pointed at them (``ccxt_urls()`` / ``ccxt_config()``), and a bot using
``websockets`` connects to ``url``. The server libraries are imported only when a server starts.

The streams are views of a ``chaos_shims.exchange.market.Market``, the same one the REST
``LoopbackExchange`` serves when the server is built on it (``LoopbackWsExchange(rest)``): a
depth diff's ``U``..``u`` continue the REST book's ``lastUpdateId``, so ccxt.pro's
snapshot-and-diffs order book (``watch_order_book``) syncs exactly as against Binance, and the
trades are the market's. Built on nothing, a server makes its own market and steps it ``rate``
times a second while it runs; a market given is stepped by its owner (``LoopbackExchange(
tick_rate=...)``, ``market.start_ticker``, or ``market.advance`` in a test), whose interval sets
the rate of events.

What is served, as Binance spot does it:

* ``/ws/<stream>[/<stream>...]``: raw events; path parts that are not stream names are ignored
  (ccxt.pro connects to ``/ws/<n>`` and subscribes by message).
* ``/stream?streams=<a>/<b>``: the combined form, each event wrapped as
  ``{"stream": name, "data": event}``.
* ``{"method": "SUBSCRIBE" | "UNSUBSCRIBE" | "LIST_SUBSCRIPTIONS", "params": [...], "id": n}``
  on either, answered ``{"result": null | [...], "id": n}`` (or ``{"error": {...}, "id": n}``)
  before any event of a new subscription.
* Streams, for every instrument of the market (default BTCUSDT, ETHUSDT): ``<symbol>@trade``
  (``"e": "trade"``) and ``<symbol>@depth`` (also ``@depth@100ms`` / ``@depth@1000ms``, which
  here deliver every diff as it happens) with ``"e": "depthUpdate"``, ``U``, ``u``, ``b``, ``a``;
  each diff's ``U`` is the previous one's ``u`` + 1, the first one's is the book's update id at
  subscription + 1. Spot diffs carry no ``pu`` (that is the futures streams' field).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, Union
from urllib.parse import parse_qs, urlsplit

from chaos_shims.exchange.market import DepthDiff, Market, MarketEvent, Subscription, Trade
from chaos_shims.exchange.rest import LoopbackExchange

__all__ = ["LoopbackAiohttpWsExchange", "LoopbackWsExchange", "StreamRequest"]

Json = Any
Send = Callable[[str], Awaitable[None]]
_Server = TypeVar("_Server", bound="_StreamServer")
Source = Union[LoopbackExchange, Market, None]  # noqa: UP007 (a runtime alias, read on 3.10)

DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT")
#: events per second on each stream of a server's own market
DEFAULT_RATE = 20.0
_DEPTH_SPEEDS = ("", "@100ms", "@1000ms")
#: the ``urls['api']['ws']`` entries of ccxt 4.5.90's binance (spot market data uses
#: ``spot``); ccxt_urls() points every one here so nothing can leave the machine.
_CCXT_WS_ENTRIES = ("spot", "margin", "linear", "inverse", "stock", "option", "optionMarket",
                    "optionPrivate", "papi")


@dataclass(frozen=True)
class StreamRequest:
    """One JSON request a client sent (SUBSCRIBE and friends), as the server received it."""

    path: str
    method: str
    params: tuple[str, ...]
    id: Json
    ts: float


@dataclass
class _Session:
    """One client connection, whichever server library carries it. Everything sent to the
    client goes through ``outbox`` (one sender task), so replies and events keep their order."""

    path: str
    combined: bool
    outbox: asyncio.Queue[str]
    loop: asyncio.AbstractEventLoop
    subscriptions: dict[str, Subscription] = field(default_factory=dict)

    def post(self, text: str) -> None:
        """From any thread (the market's ticker): queue a message for the client."""
        with contextlib.suppress(RuntimeError):  # the server's loop is closing: dropped
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, text)

    def close(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.close()
        self.subscriptions.clear()


class _StreamServer:
    """The stream logic and the thread that runs a server's event loop; subclasses bind a
    server library to it (``_open`` / ``_close`` inside the loop)."""

    scheme = "ws"

    def __init__(
        self,
        source: Source = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = None,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        seed: int | str | None = None,
    ) -> None:
        self._rest = source if isinstance(source, LoopbackExchange) else None
        #: steps per second of the server's own market's ticker (None: the market is given)
        self._ticks: float | None = None
        if source is None:
            rate = DEFAULT_RATE if rate is None else rate
            if not rate > 0:
                raise ValueError(f"rate must be > 0 events per second, got {rate!r}")
            self._market = Market(symbols, seed=seed, interval=1.0 / rate)
            self._ticks = rate
        else:
            if rate is not None or seed is not None:
                raise ValueError("a market given sets its own rate (its interval) and seed")
            self._market = source.market if isinstance(source, LoopbackExchange) else source
        self._streams = {instrument.id.lower(): instrument.id
                         for instrument in self._market.instruments()}
        self._host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._lock = threading.Lock()  # guards the counters read from other threads
        self._open_connections = 0
        self._connections_total = 0
        self._requests: list[StreamRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def market(self) -> Market:
        """The market the streams show."""
        return self._market

    @property
    def rate(self) -> float:
        """Events per second on each stream (one diff and one trade per market interval)."""
        return 1.0 / self._market.interval

    # -- lifecycle ------------------------------------------------------------------------
    def start(self: _Server) -> _Server:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, ready, failure),
                                        name=f"loopback-ws:{type(self).__name__}", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if failure or not ready.is_set():
            self._thread.join(timeout=5)
            self._thread = self._loop = None
            raise RuntimeError(f"{type(self).__name__} did not start") from (
                failure[0] if failure else None)
        if self._ticks is not None:
            self._market.start_ticker(self._ticks)
        return self

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event,
             failure: list[BaseException]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready, failure))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._stopping = asyncio.Event()
        port = self._bound_port if self._bound_port is not None else self._requested_port
        try:
            self._bound_port = await self._open(self._host, port)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self._close()

    def stop(self) -> None:
        """Close every client connection (1001, going away) and the server; idempotent. A
        ``start()`` afterwards listens on the same port again."""
        loop, thread, stopping = self._loop, self._thread, self._stopping
        if thread is None or loop is None:
            return
        if self._ticks is not None:
            self._market.stop_ticker()
        if stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = self._loop = self._stopping = None

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def _open(self, host: str, port: int) -> int:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    # -- addresses ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError(f"{type(self).__name__} has no port yet: call start() first")
        return self._bound_port

    @property
    def url(self) -> str:
        """The server's base URL: ``ws://127.0.0.1:PORT``."""
        return f"{self.scheme}://{self._host}:{self.port}"

    def raw_url(self, *streams: str) -> str:
        """``/ws/<stream>/...``: raw events of these streams (none: subscribe by message)."""
        return "/".join([self.url + "/ws", *streams])

    def combined_url(self, *streams: str) -> str:
        """``/stream?streams=a/b``: events wrapped as ``{"stream", "data"}``."""
        return f"{self.url}/stream?streams={'/'.join(streams)}"

    def ccxt_urls(self) -> dict[str, Any]:
        """``urls['api']['ws']`` for ccxt.pro binance: every entry points here."""
        base = self.url + "/ws"
        urls: dict[str, Any] = dict.fromkeys(_CCXT_WS_ENTRIES, base)
        urls["ws-api"] = {"spot": base, "linear": base, "inverse": base}
        return urls

    def ccxt_config(self, rest: LoopbackExchange | None = None) -> dict[str, Any]:
        """Constructor config for ``ccxt.pro.binance``: the REST exchange's config (``rest``,
        or the one this server was built on) with ``urls['api']['ws']`` pointed here."""
        rest = rest if rest is not None else self._rest
        config: dict[str, Any] = rest.ccxt_config() if rest is not None else {"urls": {}}
        for variant in ("api", "test", "demo"):
            config["urls"][variant] = {**config["urls"].get(variant, {}), "ws": self.ccxt_urls()}
        return config

    # -- inspection -----------------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        """Client connections the server holds open right now."""
        with self._lock:
            return self._open_connections

    @property
    def connections_total(self) -> int:
        with self._lock:
            return self._connections_total

    def requests(self) -> list[StreamRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``condition`` (e.g. ``lambda: server.open_connections == 0``) until it holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    # -- one connection, whatever the library ---------------------------------------------
    def _accepts(self, path: str) -> bool:
        route = urlsplit(path).path
        return route in ("/ws", "/stream") or route.startswith("/ws/")

    def _session_for(self, path: str) -> _Session:
        split = urlsplit(path)
        combined = split.path == "/stream"
        if combined:
            names = [n for value in parse_qs(split.query).get("streams", []) for n in value.split("/")]
        else:
            names = split.path.split("/")[2:]
        session = _Session(path, combined, asyncio.Queue(), asyncio.get_running_loop())
        for name in names:
            if self._parse(name) is not None:
                self._subscribe(session, name)
        with self._lock:
            self._open_connections += 1
            self._connections_total += 1
        return session

    def _session_closed(self, session: _Session) -> None:
        session.close()
        with self._lock:
            self._open_connections -= 1

    async def _send_outbox(self, session: _Session, send: Send) -> None:
        """The one sender of a connection: replies and events, in the order they were made."""
        while True:
            await send(await session.outbox.get())

    def _answer(self, session: _Session, raw: str | bytes) -> None:
        """Queue the reply to one client message (before any event of what it subscribes)."""
        try:
            request = json.loads(raw)
            method = request["method"]
            params = request.get("params", [])
            request_id = request.get("id")
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise ValueError("params must be a list of stream names")
        except (ValueError, KeyError, TypeError):
            session.outbox.put_nowait(json.dumps({
                "error": {"code": 3, "msg": "Invalid JSON: expected a request with method, "
                          "params and id"}, "id": None}))
            return
        with self._lock:
            self._requests.append(StreamRequest(session.path, str(method), tuple(params),
                                                request_id, time.time()))
        reply: dict[str, Json]
        if method == "SUBSCRIBE":
            unknown = [name for name in params if self._parse(name) is None]
            if unknown:
                reply = {"error": {"code": 2, "msg": f"Invalid request: unknown stream "
                                   f"{unknown[0]!r}"}, "id": request_id}
            else:
                # queued in this same step: the market's events come through the loop later
                reply = {"result": None, "id": request_id}
                for name in params:
                    self._subscribe(session, name)
        elif method == "UNSUBSCRIBE":
            for name in params:
                subscription = session.subscriptions.pop(name, None)
                if subscription is not None:
                    subscription.close()
            reply = {"result": None, "id": request_id}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": list(session.subscriptions), "id": request_id}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                     "id": request_id}
        session.outbox.put_nowait(json.dumps(reply))

    # -- streams --------------------------------------------------------------------------
    def _parse(self, name: str) -> tuple[str, type[Trade] | type[DepthDiff]] | None:
        """(exchange id, event class) of a stream name, or None when it is not one."""
        symbol, _, channel = name.partition("@")
        market_id = self._streams.get(symbol)
        if market_id is None:
            return None
        if channel == "trade":
            return market_id, Trade
        if channel.startswith("depth") and channel[len("depth"):] in _DEPTH_SPEEDS:
            return market_id, DepthDiff
        return None

    def _subscribe(self, session: _Session, name: str) -> None:
        if name in session.subscriptions:
            return
        parsed = self._parse(name)
        assert parsed is not None
        market_id, kind = parsed
        combined = session.combined

        def forward(event: MarketEvent) -> None:
            # runs on the market's thread, under its lock: queue and return
            if isinstance(event, kind):
                payload = event.as_binance_event()
                session.post(json.dumps({"stream": name, "data": payload} if combined
                                        else payload))

        session.subscriptions[name] = self._market.subscribe(forward, [market_id])


class LoopbackWsExchange(_StreamServer):
    """The streams on a ``websockets`` (asyncio) server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server: Any = None

    async def _open(self, host: str, port: int) -> int:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, host, port, process_request=self._check_path,
                                   ping_interval=None)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    def _check_path(self, connection: Any, request: Any) -> Any:
        import http

        if not self._accepts(request.path):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no such stream endpoint\n")
        return None

    async def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        session = self._session_for(connection.request.path)
        sender = asyncio.create_task(self._send_outbox(session, connection.send))
        try:
            async for raw in connection:
                self._answer(session, raw)
        except ConnectionClosed:
            pass  # the client went away: what a server sees of a client's network failure
        finally:
            self._session_closed(session)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender


class LoopbackAiohttpWsExchange(_StreamServer):
    """The streams on an ``aiohttp.web`` server (the library ccxt.pro's own client uses)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runner: Any = None
        self._sockets: set[Any] = set()

    async def _open(self, host: str, port: int) -> int:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{route:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        return int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        from aiohttp import WSCloseCode

        for socket in list(self._sockets):
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        await self._runner.cleanup()
        self._runner = None

    async def _handle(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        if not self._accepts(request.path_qs):
            raise web.HTTPNotFound(text="no such stream endpoint\n")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.add(socket)
        session = self._session_for(request.path_qs)
        sender = asyncio.create_task(self._send_outbox(session, socket.send_str))
        try:
            async for message in socket:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._answer(session, message.data)
        finally:
            self._session_closed(session)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await sender
            self._sockets.discard(socket)
        return socket
