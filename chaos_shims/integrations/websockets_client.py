"""websockets clients: ``ws_lag_ms`` and ``ws_disconnect`` on ``recv`` of the three client
classes (so on ``async for`` / ``for`` too, which iterate through ``recv``).

* ``websockets.asyncio.client.ClientConnection`` (the new asyncio client),
* ``websockets.legacy.client.WebSocketClientProtocol`` (patched when the host imports it:
  importing it warns, so chaos_shims never does),
* ``websockets.sync.client.ClientConnection``.

``recv`` is inherited from a ``Connection`` base that the server classes share; the wrap sits on
the client class alone, so a server running in the same process is never faulted.

Each client connection gets a ``_Line``: a FIFO of messages between the library and the app.
Every message the library returns is one ``WS_MESSAGE`` event, decided at its arrival:

* lag: the message waits in the FIFO until arrival + lag. While the app waits for the head of
  the FIFO, later messages keep being read (asyncio: a read-ahead task; sync: the real ``recv``
  with a timeout) so each one is stamped when it really arrived, and order is kept. A message
  the library returned is in the FIFO before anything else can happen, so a ``recv`` cancelled
  during the lag loses nothing: the next ``recv`` gets it. The read-ahead only runs while the
  app is inside ``recv``, and is cancelled (safe: the library's ``recv`` is cancellation-safe)
  before ``recv`` returns. The lag is counted from when the message reached the application's
  side: a message the library buffered while the app was busy counts from the ``recv`` that
  found it.
* disconnect: the message and whatever arrives after it are lost with the connection; the
  transport is aborted (sync: ``socket.shutdown(SHUT_RDWR)``) and the real ``recv`` is called
  until the library raises its own ``ConnectionClosedError`` (code 1006, state CLOSED, socket
  closed), which the app gets after the messages that arrived before. Raising that error from
  here instead would leave a zombie: the connection stays OPEN and keeps delivering. A close
  frame the library had already parsed is lost too (``_lost_with_the_connection``).

Metrics, while chaos is active: ``mm_ws_gap_ms`` observes the gap between consecutive messages
handed to the app on one connection; ``mm_reconnect_attempts_total{kind="websockets"}``, see
``reconnects``. ``recv_streaming`` (fragment by fragment) is not faulted.

Turning chaos off leaves the wraps in place, dormant: messages still held are handed over in
order, then ``recv`` calls straight through. Unpatching (``deactivate(unpatch=True)``) while
messages are held drops them: the library's ``recv`` no longer knows about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from websockets.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
)

from chaos_shims.core import runtime
from chaos_shims.integrations.waiting import sleep_precisely
from chaos_shims.integrations.wrapping import ModuleWraps
from chaos_shims.integrations.ws_common import LINE_ATTRIBUTE, Line, ReconnectWatch, decide, turn_off

logger = logging.getLogger("chaos_shims")

ASYNCIO_MODULE = "websockets.asyncio.client"
SYNC_MODULE = "websockets.sync.client"
LEGACY_MODULE = "websockets.legacy.client"
#: the client class of each module whose ``recv`` is wrapped
CLIENT_CLASSES = {
    ASYNCIO_MODULE: "ClientConnection",
    SYNC_MODULE: "ClientConnection",
    LEGACY_MODULE: "WebSocketClientProtocol",
}
#: ``mm_reconnect_attempts_total{kind}`` label
KIND = "websockets"
#: the op of every event
OP = "recv"

_lock = threading.RLock()
_wraps = ModuleWraps()


@dataclass
class _Entry:
    """A message (or the error that ends the connection) and when the app may have it."""

    release_at: float
    message: Any = None
    error: BaseException | None = None


#: The rule for ``mm_reconnect_attempts_total{kind="websockets"}``: a URL (scheme, host, port
#: and path; no query) is lost when a client connection to it ends abnormally as the app sees
#: it (``recv`` raises ``ConnectionClosedError``: a network failure, an injected 1006, a server
#: error close; a clean close is not a loss). Each later client connection to a lost URL is one
#: reconnect attempt, counted at its first ``recv`` while chaos is active.
reconnects = ReconnectWatch(KIND)


class _Line(Line[_Entry]):
    """One client connection's messages between the library and the application."""

    def __init__(self, url: str) -> None:
        super().__init__(url, reconnects)
        #: asyncio: the task reading ahead while the app waits for the head of the FIFO
        self.reader: asyncio.Task[None] | None = None
        self.busy = False
        self.mutex = threading.Lock()  # sync client: one recv at a time, as the library
        #: the FIFO ends with the error that closed the connection: nothing more to read
        self.ended = False
        #: that error was handed over: the library's recv answers for itself from now on
        self.finished = False
        #: when the app learns of an injected disconnect (after the messages before it)
        self.failure_release = 0.0

    @property
    def idle(self) -> bool:
        return not self.pending and (self.reader is None or self.reader.done())

    @property
    def can_read_ahead(self) -> bool:
        return not self.ended and not self.failed

    def arrived(self, message: Any, now: float) -> bool:
        """File one message the library returned; False when a disconnect fires for it."""
        if self.failed:
            return True  # lost with the connection
        lag, disconnect = _decide(self.url)
        if disconnect:
            self.failed = True
            self.failure_release = max(self.tail_release(now), now + lag)
            return False
        self.pending.append(_Entry(now + lag, message))
        return True

    def received(self, message: Any, now: float, drop: Callable[[], None]) -> bool:
        """File one message the library returned and, when a disconnect fires for it, drop the
        connection (``drop``): then False, and the caller drains the library until it raises."""
        try:
            keep = self.arrived(message, now)
            if not keep:
                drop()
        except Exception as exc:  # chaos_shims' own bug: hand the message over untouched
            turn_off(exc)
            self.failed = False
            self.pending.append(_Entry(now, message))
            return True
        return keep

    def ended_with(self, error: BaseException, now: float) -> None:
        """The library raised: the app gets the error after the messages before it."""
        if self.failed:
            error = _lost_with_the_connection(error)
        release = self.failure_release if self.failed else self.tail_release(now)
        self.pending.append(_Entry(release, error=error))
        self.ended = True

    def hand_over(self, entry: _Entry) -> Any:
        """Give the app the head of the FIFO (already popped): return it or raise it."""
        if entry.error is not None:
            self.finished = True
            if isinstance(entry.error, ConnectionClosed) and not isinstance(
                    entry.error, ConnectionClosedOK):
                reconnects.lost(self.url)
            raise entry.error
        self.handed()
        return entry.message


def _lost_with_the_connection(error: BaseException) -> BaseException:
    """The error of a connection dropped by an injected disconnect, as the network would end it.

    A close frame the server sent after the message the disconnect fired on may already have
    been parsed by the library (a server that sends its last messages and closes at once):
    after the abort the library then reports a clean close (``ConnectionClosedOK``, or an error
    with the server's close frame), and ``async for`` ends quietly. That frame came after the
    fault, like the messages lost with the connection, so the app gets what the library raises
    when no close frame came: ``ConnectionClosedError(None, None)`` (1006). The connection's
    own ``close_code`` still tells what the library saw."""
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return ConnectionClosedError(None, None)
    return error


def _line_of(connection: Any) -> _Line | None:
    line: _Line | None = getattr(connection, LINE_ATTRIBUTE, None)
    return line


def _straight_through(line: _Line | None) -> bool:
    """Whether a recv goes straight to the library: chaos is off and nothing is held, or the
    connection's end was handed over already."""
    if line is None:
        return runtime.active is None
    return line.finished or (runtime.active is None and line.idle)


def _decide(url: str) -> tuple[float, bool]:
    """One event: no exchange, the op is always ``recv``."""
    return decide(None, OP, url)


def connection_url(connection: Any) -> str:
    """``ws://host:port/path`` of a client connection, without the query (keys live there)."""
    uri = getattr(getattr(connection, "protocol", None), "uri", None)
    if uri is not None:  # asyncio and sync clients
        secure, host, path = uri.secure, f"{uri.host}:{uri.port}", uri.path
    else:  # legacy client (its host, port and secure properties warn: the handshake has them)
        secure = connection.transport.get_extra_info("ssl_object") is not None
        host = connection.request_headers["Host"]
        path = str(connection.path).split("?", 1)[0]
    return f"{'wss' if secure else 'ws'}://{host}{path or '/'}"


def _line_for(connection: Any) -> _Line:
    line = _line_of(connection)
    if line is None:
        line = _Line(connection_url(connection))
        setattr(connection, LINE_ATTRIBUTE, line)
        if runtime.active is not None:
            reconnects.connected(line.url)
    return line


# -- asyncio clients (new and legacy) ---------------------------------------------------------

def _recv_async(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    # A plain function returning the library's own coroutine while dormant: no extra frame.
    if _straight_through(_line_of(instance)):
        return wrapped(*args, **kwargs)
    try:
        line = _line_for(instance)
    except Exception as exc:  # chaos_shims' own bug: turn off, let the call through
        turn_off(exc)
        return wrapped(*args, **kwargs)
    return _recv_async_held(line, wrapped, instance, args, kwargs)


async def _recv_async_held(line: _Line, wrapped: Callable[..., Any], connection: Any,
                           args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if line.busy:
        raise _concurrency_error(connection)
    line.busy = True
    try:
        await _settle_reader(line)
        loop = asyncio.get_running_loop()
        while True:
            if line.pending:
                head = line.pending[0]
                wait = head.release_at - loop.time()
                if wait <= 0:
                    line.pending.popleft()
                    return line.hand_over(head)
                if line.can_read_ahead:
                    line.reader = loop.create_task(
                        _read_ahead(line, wrapped, connection, args, kwargs))
                try:
                    await sleep_precisely(wait)
                finally:
                    if line.reader is not None:
                        line.reader.cancel()
                await _settle_reader(line)
            else:
                await _read_one(line, wrapped, connection, args, kwargs)
    finally:
        line.busy = False


async def _settle_reader(line: _Line) -> None:
    """Wait until a cancelled read-ahead has left the library's recv (else: ConcurrencyError)."""
    reader = line.reader
    if reader is not None:
        reader.cancel()
        await asyncio.wait({reader})
        line.reader = None


async def _read_ahead(line: _Line, wrapped: Callable[..., Any], connection: Any,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # Any error but the connection's end stops reading ahead: the app's own recv meets it.
    with contextlib.suppress(Exception):
        while line.can_read_ahead:
            await _read_one(line, wrapped, connection, args, kwargs)


async def _read_one(line: _Line, wrapped: Callable[..., Any], connection: Any,
                    args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """One message from the library into the FIFO, stamped in the same step it arrived."""
    loop = asyncio.get_running_loop()
    try:
        message = await wrapped(*args, **kwargs)
    except ConnectionClosed as exc:  # the end of the stream: after the messages before it
        line.ended_with(exc, loop.time())
        return
    if not line.received(message, loop.time(), lambda: connection.transport.abort()):
        await _drain_async(line, wrapped, args, kwargs)


async def _drain_async(line: _Line, wrapped: Callable[..., Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> None:
    """After the abort, frames the library still holds are lost; it then raises 1006."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await wrapped(*args, **kwargs)
        except Exception as exc:
            line.ended_with(exc, loop.time())
            return


def _concurrency_error(connection: Any) -> Exception:
    # what each library raises for two concurrent recv calls
    if type(connection).__module__.startswith("websockets.legacy"):
        return RuntimeError("cannot call recv while another coroutine is already waiting for "
                            "the next message")
    return ConcurrencyError("cannot call recv while another coroutine is already running recv "
                            "or recv_streaming")


# -- sync client ------------------------------------------------------------------------------

def _recv_sync(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    if _straight_through(_line_of(instance)):
        return wrapped(*args, **kwargs)
    try:
        timeout, decode = _sync_arguments(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)  # the library reports the bad call its own way
    try:
        line = _line_for(instance)
    except Exception as exc:
        turn_off(exc)
        return wrapped(*args, **kwargs)
    if not line.mutex.acquire(blocking=False):
        raise ConcurrencyError("cannot call recv while another thread is already running recv "
                               "or recv_streaming")
    try:
        return _recv_sync_held(line, wrapped, instance, timeout, decode)
    finally:
        line.mutex.release()


def _sync_arguments(timeout: float | None = None, decode: bool | None = None) -> tuple[
        float | None, bool | None]:
    return timeout, decode


def _recv_sync_held(line: _Line, wrapped: Callable[..., Any], connection: Any,
                    timeout: float | None, decode: bool | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    while True:
        now = time.monotonic()
        if line.pending:
            head = line.pending[0]
            wait = head.release_at - now
            if wait <= 0:
                line.pending.popleft()
                return line.hand_over(head)
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"timed out in {timeout:.1f}s")
            budget = wait if deadline is None else min(wait, deadline - now)
            if line.can_read_ahead:
                # read ahead in this thread while the head is held: later arrivals are stamped
                # when they come
                _read_one_sync(line, wrapped, connection, budget, decode, quiet_timeout=True)
            else:
                time.sleep(budget)
        else:
            remaining = None if deadline is None else max(0.0, deadline - now)
            _read_one_sync(line, wrapped, connection, remaining, decode, quiet_timeout=False)


def _shut_down(connection: Any) -> None:
    with contextlib.suppress(OSError):  # already gone: the library reports it below
        connection.socket.shutdown(socket.SHUT_RDWR)


def _read_one_sync(line: _Line, wrapped: Callable[..., Any], connection: Any,
                   timeout: float | None, decode: bool | None, *, quiet_timeout: bool) -> None:
    try:
        message = wrapped(timeout=timeout, decode=decode)
    except TimeoutError:
        if quiet_timeout:
            return  # nothing arrived while the head was held
        raise  # the app's own timeout, with nothing held back: as the library says it
    except ConnectionClosed as exc:  # the end of the stream: after the messages before it
        line.ended_with(exc, time.monotonic())
        return
    if not line.received(message, time.monotonic(), lambda: _shut_down(connection)):
        while True:
            try:
                wrapped(decode=decode)
            except Exception as exc:
                line.ended_with(exc, time.monotonic())
                return


# -- the integration surface ------------------------------------------------------------------

def _client_class(module: ModuleType) -> type:
    cls: type = getattr(module, CLIENT_CLASSES[module.__name__])
    return cls


def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    """``recv`` of the module's client class (inherited: the wrap shadows it on the class)."""
    return [(_client_class(module), "recv")]


def is_patched(module: ModuleType) -> bool:
    return _wraps.is_patched(module)


def patch(module: ModuleType) -> None:
    with _lock:
        wrapper = _recv_sync if module.__name__ == SYNC_MODULE else _recv_async
        _wraps.wrap(module, [(_client_class(module), "recv", wrapper)])


def unpatch(module: ModuleType) -> None:
    with _lock:
        _wraps.unwrap(module)
