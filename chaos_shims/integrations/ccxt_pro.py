"""ccxt.pro: ``ws_lag_ms`` and ``ws_disconnect`` on ``ccxt.async_support.base.ws.client.Client``.

Why ``handle_message`` and not ``receive``: ccxt's ``receive_loop`` first drains aiohttp's buffer
straight into ``handle_message``, bypassing ``receive`` (a lag on ``receive`` measured 18 ms for
a 200 ms target). Every frame ccxt handles goes through ``handle_message``.

Each client gets a ``_ClientLine``: a FIFO of frames between aiohttp and ccxt. Every data frame
(text or binary) is one ``WS_MESSAGE`` event, decided when it arrives:

* lag: the frame is held until arrival + lag and then handed to ccxt's own ``handle_message``
  from a ``loop.call_at`` callback; control frames (ping, pong, close) and ccxt's ``on_close``
  wait behind held frames, so nothing overtakes anything (the close of a lagging connection is
  seen after its last messages, as on a slow network).
* disconnect: the frame and every later frame from the server (a close frame aiohttp had
  already read too) are lost; when the frames before it have been handed over, the
  transport is aborted. ccxt then notices by itself, as for a real
  network failure: its watchers are rejected with ``NetworkError('Connection closed by remote
  server, closing code 1006')`` and the next ``watch_*`` opens a new connection (ccxt.pro has
  no automatic reconnect). Raising from a ``receive`` wrapper instead would leave a zombie.

The op of an event is the ccxt.pro method that opened the client (the outermost method of the
exchange on the stack when the ``Client`` was made, e.g. ``watch_trades``; binance's
``watch_order_book`` delegates to ``watch_order_book_for_symbols``, which is what is seen);
``watch`` for a client made before chaos was active. Imported only once ccxt.pro is.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any

from aiohttp import WSMsgType
from ccxt.base.errors import NetworkError

from chaos_shims.core import runtime
from chaos_shims.integrations.wrapping import ModuleWraps
from chaos_shims.integrations.ws_common import LINE_ATTRIBUTE, Line, ReconnectWatch, decide, turn_off

logger = logging.getLogger("chaos_shims")

MODULE = "ccxt.async_support.base.ws.client"
#: ``mm_reconnect_attempts_total{kind}`` label
KIND = "ccxt.pro"
#: op of a client made before chaos was active (its opening method is unknown)
UNLABELLED = "watch"
PATCHED = ("__init__", "handle_message", "on_close")
_DATA = frozenset({WSMsgType.TEXT, WSMsgType.BINARY})
#: frames the server sent (not aiohttp's own notices of the connection's end: CLOSING, CLOSED,
#: ERROR): after an injected disconnect, they are lost with the connection
_FROM_SERVER = _DATA | {WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG}
#: a ``call_at`` callback may run this much before its time (the loop's clock resolution)
_EARLY_S = 1e-4

_lock = threading.RLock()
_wraps = ModuleWraps()


#: The rule for ``mm_reconnect_attempts_total{kind="ccxt.pro"}``: a URL (without query) is lost
#: when a ccxt.pro client connected to it closes without ccxt having closed it on purpose:
#: ``on_close`` runs and either ccxt recorded a network error on the client (``client.error``:
#: an error frame, a keepalive timeout, an injected failure...) or the close did not start on
#: our side (aiohttp hands ccxt a CLOSING frame when ``exchange.close()`` / ``client.close()``
#: starts; an aborted transport or the server's close frame come without one). Each later
#: ``Client`` made for a lost URL while chaos is active is one reconnect attempt.
reconnects = ReconnectWatch(KIND)


@dataclass
class _Held:
    """A frame (or ccxt's ``on_close``, or the abort of a failed connection) waiting its turn."""

    release_at: float
    run: Callable[..., Any]
    argument: Any
    data: bool = False


class _ClientLine(Line[_Held]):
    """One ccxt.pro client's frames between aiohttp and ccxt."""

    def __init__(self, url: str, exchange: str | None, op: str) -> None:
        super().__init__(url, reconnects)
        self.exchange = exchange
        self.op = op
        self.timer: asyncio.TimerHandle | None = None
        #: aiohttp handed ccxt a CLOSING frame: the close started on our side
        self.closing_seen = False
        #: a held entry is being handed over: what it calls (on_close) runs at once
        self.releasing = False

    def hold(self, entry: _Held, loop: asyncio.AbstractEventLoop) -> None:
        self.pending.append(entry)
        if self.timer is None:
            self.timer = loop.call_at(self.pending[0].release_at, self.release, loop)

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand over, in order, every held entry whose time has come; then wait for the next."""
        self.timer = None
        while self.pending and self.pending[0].release_at <= loop.time() + _EARLY_S:
            entry = self.pending.popleft()
            self.releasing = True
            try:
                if entry.data:
                    self.handed()
                entry.run(entry.argument)
            except Exception as exc:
                # what the loop does with an exception from ccxt's own receive callback
                loop.call_exception_handler({
                    "message": "exception in ccxt.pro handle_message (held by chaos_shims)",
                    "exception": exc})
            finally:
                self.releasing = False
        if self.pending:
            self.timer = loop.call_at(self.pending[0].release_at, self.release, loop)


def _line_of(client: Any) -> _ClientLine | None:
    line: _ClientLine | None = getattr(client, LINE_ATTRIBUTE, None)
    return line


def _exchange_of(client: Any) -> Any:
    # Exchange.client() passes the exchange's bound methods as the client's callbacks
    return getattr(getattr(client, "on_message_callback", None), "__self__", None)


def _line_for(client: Any, op: str = UNLABELLED) -> _ClientLine:
    line = _line_of(client)
    if line is None:
        exchange = _exchange_of(client)
        line = _ClientLine(str(client.url).split("?", 1)[0],
                           getattr(exchange, "id", None), op)
        setattr(client, LINE_ATTRIBUTE, line)
    return line


def _opening_method(exchange: Any, frame: FrameType | None) -> str:
    """The outermost method of ``exchange`` on the stack: the ccxt.pro method opening a client."""
    found = UNLABELLED
    while frame is not None:
        if exchange is not None and frame.f_locals.get("self") is exchange:
            found = frame.f_code.co_name
        frame = frame.f_back
    return found


def _decide(line: _ClientLine) -> tuple[float, bool]:
    """One event, labelled with the client's exchange and opening method."""
    return decide(line.exchange, line.op, line.url)


def _abort(client: Any) -> None:
    """Drop the connection as the network would: the socket closes, no close frame is sent."""
    if client.closed():
        return
    transport = getattr(getattr(client.connection, "_conn", None), "transport", None)
    if transport is not None:
        transport.abort()
        return
    # aiohttp moved its connection: fail the client the way ccxt fails it on a network error
    logger.warning("chaos_shims: no transport to abort on a ccxt.pro client; failing it "
                   "through on_error")
    client.on_error(NetworkError(f"Connection to {client.url} lost, closing code 1006"))


# -- wrappers ---------------------------------------------------------------------------------

def _init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    if runtime.active is None:
        return
    try:
        op = _opening_method(_exchange_of(instance), sys._getframe(1))
        line = _line_for(instance, op)
        reconnects.connected(line.url)
    except Exception as exc:  # chaos_shims' own bug: turn off, the client is made already
        turn_off(exc)


def _handle_message(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    injector = runtime.active
    line = _line_of(instance)
    if injector is None and (line is None or not (line.pending or line.failed)):
        return wrapped(*args, **kwargs)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # called outside ccxt's receive loop: nothing to hold it on
        return wrapped(*args, **kwargs)
    try:
        message = args[0] if args else kwargs["message"]
        line = _line_for(instance)
        now = loop.time()
        if message.type is WSMsgType.CLOSING:
            line.closing_seen = True
        if line.failed and message.type in _FROM_SERVER:
            # Lost with the connection, a close frame too: one the server sent right after the
            # frame the disconnect fired on may already be in aiohttp's buffer, and ccxt would
            # report that clean close (code 1000) instead of the network failure (1006).
            return None
        if message.type in _DATA:
            lag, disconnect = _decide(line)
            if disconnect:
                line.failed = True
                if line.pending or lag > 0:
                    # the failure is seen after the frames that arrived before it
                    line.hold(_Held(line.tail_release(now + lag), _abort, instance), loop)
                else:
                    _abort(instance)
                return None
            release_at = now + lag
            if line.pending or release_at > now:
                line.hold(_Held(release_at, wrapped, message, data=True), loop)
                return None
            line.handed()
        elif line.pending:
            # a control frame never overtakes the data before it
            line.hold(_Held(line.tail_release(now), wrapped, message), loop)
            return None
    except Exception as exc:
        turn_off(exc)
    return wrapped(*args, **kwargs)


def _on_close(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
    line = _line_of(instance)
    if line is None:
        return wrapped(*args, **kwargs)
    try:
        if getattr(instance, "error", None) is not None or not line.closing_seen:
            reconnects.lost(line.url)
        if line.pending and not line.releasing:
            loop = asyncio.get_running_loop()
            code = args[0] if args else kwargs.get("code")
            line.hold(_Held(line.tail_release(loop.time()), wrapped, code), loop)
            return None
    except Exception as exc:
        turn_off(exc)
    return wrapped(*args, **kwargs)


_WRAPPERS: dict[str, Callable[..., Any]] = {
    "__init__": _init,
    "handle_message": _handle_message,
    "on_close": _on_close,
}


# -- the integration surface ------------------------------------------------------------------

def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    return [(module.Client, name) for name in PATCHED]


def is_patched(module: ModuleType) -> bool:
    return _wraps.is_patched(module)


def patch(module: ModuleType) -> None:
    with _lock:
        _wraps.wrap(module, [(module.Client, name, _WRAPPERS[name]) for name in PATCHED])


def unpatch(module: ModuleType) -> None:
    with _lock:
        _wraps.unwrap(module)
