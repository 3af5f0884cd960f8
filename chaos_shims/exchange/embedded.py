"""The embedded exchange: Binance-spot REST and websocket streams on one moving market.

``EmbeddedExchange`` starts, on 127.0.0.1, the REST server (``rest.LoopbackExchange``) and the
websocket streams (``ws.LoopbackWsExchange``, a ``websockets`` server) over one seeded
``market.Market`` stepped by a ticker thread, so what a bot reads on REST and on the streams
agrees: a depth diff's ``U`` continues the REST snapshot's ``lastUpdateId``, resting orders fill
as the walk goes through them. Ports are chosen by the OS unless given; a port already in use
is refused with ``PortInUse`` naming it.

Clients need nothing but URLs:

* ``ccxt_config()``: constructor config for ``ccxt.binance``, ``ccxt.async_support.binance``
  and ``ccxt.pro.binance`` (REST and websocket URLs, keys, options that keep ccxt on the
  endpoints served here);
* ``ws_url`` (``ws://HOST:PORT/ws``; subscribe by message) and ``stream_url(*streams)``
  (``/ws/btcusdt@depth`` style) for a plain ``websockets`` client;
* ``describe()`` / ``write_description(path)``: all of it as JSON for a bot in another
  process (``examples/market_maker.py --embedded FILE``).

``url_host`` is the host name written into those URLs (the servers still listen on ``host``).
The default is the address itself; ``"localhost"`` makes clients resolve a name, so a DNS
fault (``dns_flap``) has lookups to act on, as against a real exchange's host name.

Run the exchange in another process than the bot under test: ``clock_skew_ms`` shifts the
wall clock of the bot's process, and the exchange must keep the true time to answer -1021.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from chaos_shims.exchange.market import Market
from chaos_shims.exchange.rest import LoopbackExchange
from chaos_shims.exchange.ws import LoopbackWsExchange

__all__ = ["DESCRIPTION_SCHEMA", "EmbeddedExchange", "EmbeddedExchangeError", "PortInUse",
           "load_description"]

#: the ``schema`` of ``describe()``, so a reader can tell what it was given
DESCRIPTION_SCHEMA = "chaos_shims.embedded_exchange/1"


class EmbeddedExchangeError(RuntimeError):
    """The embedded exchange could not start; the message says why, for a person."""


class PortInUse(EmbeddedExchangeError):
    """A port given for the embedded exchange is already taken."""

    def __init__(self, service: str, host: str, port: int) -> None:
        super().__init__(f"cannot start the embedded exchange: {host}:{port} ({service}) is "
                         "already in use; stop what listens there or choose another port "
                         "(0 lets the system pick a free one)")
        self.service = service
        self.host = host
        self.port = port


def _in_use(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is an address-in-use refusal."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class EmbeddedExchange:
    """REST + websocket streams of one seeded market, served together on loopback.

    ``seed`` fixes the market's walk (prices, book, update ids, crowd trades); ``interval`` is
    the market's step in seconds (one depth diff and one trade per instrument per step);
    ``volatility_bps`` the standard deviation of the mid's move over one second. Use as a
    context manager, or ``start()`` / ``stop()`` (both idempotent).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        ws_port: int = 0,
        url_host: str | None = None,
        seed: int | str = 0,
        symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"),
        interval: float = 0.1,
        volatility_bps: float = 5.0,
        initial_balances: Mapping[str, float] | None = None,
        recv_window_ms: int = 5000,
    ) -> None:
        self._host = host
        self._url_host = url_host or host
        self._requested = {"REST": rest_port, "websocket": ws_port}
        self._market = Market(symbols, seed=seed, balances=initial_balances, interval=interval,
                              volatility_bps=volatility_bps)
        self._rest = LoopbackExchange(host, rest_port, market=self._market,
                                      tick_rate=1.0 / interval, recv_window_ms=recv_window_ms)
        self._ws = LoopbackWsExchange(self._rest, host=host, port=ws_port)
        self._lock = threading.Lock()
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> EmbeddedExchange:
        """Start both servers and the market's ticker; ``PortInUse`` when a given port is
        taken, ``EmbeddedExchangeError`` for any other failure (nothing is left running)."""
        with self._lock:
            if self._running:
                return self
            try:
                self._rest.start()
            except OSError as exc:
                raise self._start_error("REST", self._requested["REST"], exc) from exc
            try:
                self._ws.start()
            except (OSError, RuntimeError) as exc:
                self._rest.stop()
                raise self._start_error("websocket", self._requested["websocket"], exc) from exc
            self._running = True
            return self

    def _start_error(self, service: str, port: int, exc: BaseException) -> EmbeddedExchangeError:
        if _in_use(exc):
            return PortInUse(service, self._host, port)
        cause = exc.__cause__ or exc
        return EmbeddedExchangeError(f"cannot start the embedded exchange's {service} server on "
                                     f"{self._host}:{port}: {cause}")

    def stop(self) -> None:
        """Close the streams (clients see 1001, going away), the REST server and the ticker."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._ws.stop()
            self._rest.stop()

    def __enter__(self) -> EmbeddedExchange:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # -- the parts ----------------------------------------------------------------------------
    @property
    def market(self) -> Market:
        """The market both servers show."""
        return self._market

    @property
    def rest(self) -> LoopbackExchange:
        """The REST server (its request log, balances, open orders...)."""
        return self._rest

    @property
    def streams(self) -> LoopbackWsExchange:
        """The websocket stream server (its connection counts, subscribe requests...)."""
        return self._ws

    # -- addresses ----------------------------------------------------------------------------
    @property
    def rest_port(self) -> int:
        return self._rest.port

    @property
    def ws_port(self) -> int:
        return self._ws.port

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT``; the spot API is under ``/api/v3``."""
        return f"http://{self._url_host}:{self.rest_port}"

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/ws``: a connection that subscribes by message, as ccxt.pro does."""
        return f"ws://{self._url_host}:{self.ws_port}/ws"

    def stream_url(self, *streams: str) -> str:
        """``ws://HOST:PORT/ws/<stream>/...``: raw events of these streams (Binance's form)."""
        return "/".join([self.ws_url, *streams])

    def ccxt_config(self) -> dict[str, Any]:
        """Constructor config for ccxt's binance, sync, async and pro: every REST and
        websocket URL points here (in ``api``, ``test`` and ``demo``, so sandbox mode stays
        here too), with the loopback keys. Add ``enableRateLimit: False`` for tests."""
        config = self._ws.ccxt_config(self._rest)
        if self._url_host != self._host:
            config["urls"] = _rehost(config["urls"], self._host, self._url_host)
        return config

    def describe(self) -> dict[str, Any]:
        """Everything a client in another process needs, as JSON-ready data."""
        return {
            "schema": DESCRIPTION_SCHEMA,
            "exchange": "binance",
            "ccxt": self.ccxt_config(),
            "rest_url": self.rest_url,
            "ws_url": self.ws_url,
            "symbols": [instrument.symbol for instrument in self._market.instruments()],
            "market": {"seed": self._market.seed, "interval": self._market.interval,
                       "volatility_bps": self._market.volatility_bps},
        }

    def write_description(self, path: str | os.PathLike[str]) -> Path:
        """Write ``describe()`` to ``path`` (readable by the owner only: it holds the keys)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(self.describe(), handle, indent=1)
        return target


def _rehost(value: Any, host: str, url_host: str) -> Any:
    """``value`` with ``//host:`` replaced by ``//url_host:`` in every URL string in it."""
    if isinstance(value, str):
        return value.replace(f"//{host}:", f"//{url_host}:")
    if isinstance(value, dict):
        return {key: _rehost(item, host, url_host) for key, item in value.items()}
    return value


def load_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A description written by ``write_description``; ValueError when it is not one."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or data.get("schema") != DESCRIPTION_SCHEMA:
        raise ValueError(f"{path} is not an embedded exchange description "
                         f"(expected schema {DESCRIPTION_SCHEMA})")
    return data
