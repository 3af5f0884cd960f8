"""What the websocket integrations (``websockets_client``, ``ccxt_pro``) share: deciding one
``WS_MESSAGE`` event, the per-connection FIFO bookkeeping (arrival stamps, the gap metric), the
reconnect watch, and turning chaos off on chaos_shims' own bug. Each integration keeps what is
specific to its library: where frames are held, how a connection is dropped, and its rule for
when a URL is lost.

Imported only by those integrations, so only once a websocket library has been imported.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from typing import Any, Generic, Protocol, TypeVar

from chaos_shims.core import runtime
from chaos_shims.core.faults import Delay, Fault
from chaos_shims.core.registry import WS_MESSAGE
from chaos_shims.scenarios.ws_disconnect import AbnormalClosure

#: the connection's attribute holding its line. On the connection itself, not in a weak
#: dictionary: held entries (and a held error's traceback) refer back to the connection, and
#: that cycle must stay collectable with it.
LINE_ATTRIBUTE = "_chaos_shims_line"


def decide(exchange: str | None, op: str, url: str) -> tuple[float, bool]:
    """One event: (lag in seconds, disconnect?) from the live faults of the armed scenarios."""
    injector = runtime.active
    if injector is None:
        return 0.0, False
    faults: tuple[Fault, ...] = injector.plan(WS_MESSAGE, exchange, op, url)
    lag = 0.0
    disconnect = False
    for fault in faults:
        if isinstance(fault, Delay):
            lag += fault.ms / 1000.0
        elif isinstance(fault, AbnormalClosure):
            disconnect = True
    return lag, disconnect


def turn_off(exc: BaseException) -> None:
    """chaos_shims' own bug: chaos turns itself off, the library's call goes on."""
    injector = runtime.active
    if injector is not None:
        injector.fail(exc)


class ReconnectWatch:
    """``mm_reconnect_attempts_total{kind}`` for one integration.

    The integration says when a URL (without query) is *lost* (its own rule: see its module) and
    when a new connection to a URL is made; each connection to a lost URL made while chaos is
    active is one reconnect attempt. The URL stops being lost when a connection to it hands a
    message over, so every attempt of a failing reconnect loop counts and a recovered stream
    stops counting. Losses are remembered within one activation (one injector).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._lost: set[str] = set()
        self._owner: weakref.ref[Any] | None = None
        self._lock = threading.Lock()

    def _lost_urls(self) -> set[str] | None:
        """The lost URLs of the active injector (losses of an earlier activation are not
        remembered); None while chaos is off, when nothing is tracked. Under the lock."""
        injector = runtime.active
        if injector is None:
            return None
        if self._owner is None or self._owner() is not injector:
            self._lost = set()
            self._owner = weakref.ref(injector)
        return self._lost

    def lost(self, url: str) -> None:
        with self._lock:
            lost = self._lost_urls()
            if lost is not None:
                lost.add(url)

    def connected(self, url: str) -> None:
        with self._lock:
            lost = self._lost_urls()
            if lost is None or url not in lost:
                return
        injector = runtime.active
        metrics = injector.metrics if injector is not None else None
        if metrics is not None:
            metrics.count_reconnect(self.kind)

    def recovered(self, url: str) -> None:
        if not self._lost:  # the common case, without the lock: nothing is lost
            return
        with self._lock:
            lost = self._lost_urls()
            if lost is not None:
                lost.discard(url)


class Timed(Protocol):
    """A held entry: it may be handed over from ``release_at`` (the loop's or monotonic time)."""

    release_at: float


EntryT = TypeVar("EntryT", bound=Timed)


class Line(Generic[EntryT]):
    """One connection's held entries, in arrival order, and what is measured as they go."""

    def __init__(self, url: str, reconnects: ReconnectWatch) -> None:
        self.url = url
        self.reconnects = reconnects
        self.pending: deque[EntryT] = deque()
        #: a disconnect was injected: data still arriving is lost with the connection
        self.failed = False
        self.last_handed: float | None = None

    def tail_release(self, now: float) -> float:
        """When something arriving now may be handed over: never before what is held."""
        return max(now, self.pending[-1].release_at) if self.pending else now

    def handed(self) -> None:
        """A message reaches the app: the gap since the previous one, and a recovered URL."""
        now = time.monotonic()
        injector = runtime.active
        if injector is not None:
            metrics = injector.metrics
            if metrics is not None and self.last_handed is not None:
                metrics.observe_ws_gap((now - self.last_handed) * 1000.0)
            self.reconnects.recovered(self.url)
        self.last_handed = now
