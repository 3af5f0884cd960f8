"""A resilient market maker: two-sided quotes on one Binance spot symbol, kept up through faults.

What it shows, the practice a trading team expects of a bot before it goes live:

* **Market data from a websocket**, the order book kept locally from Binance's depth-diff
  stream and a REST snapshot (Binance's documented recipe), with a reconnect loop (exponential
  backoff with full jitter, reset once the book is in sync again) that resubscribes and
  resynchronises the book, a resync on a sequence gap (``U`` != previous ``u`` + 1), and a
  watchdog that treats a silent stream as a dead one.
* **Orders through ccxt.async_support**, in an order gateway: the loop decides, the gateway
  runs each order action as a task started right after the iteration. The loop never waits on
  the exchange, so a slow or failing exchange delays orders, not the loop. A replacement quote
  and the cancel of the old one go out together. Failures are handled as the exchange means
  them: ``InvalidNonce`` resyncs the clock (``load_time_difference``); a 429
  (``RateLimitExceeded``, ``DDoSProtection``) stops every request until its Retry-After
  (``exchange.last_response_headers``); other ``NetworkError``s back off with jitter, and an
  order whose answer was lost is *unknown*: it is looked up by its client order id before
  anything is sent again (no duplicate orders).
* **Reconciliation** of open orders and balances against its own books every second, and of
  the account at startup. When a read disagrees with the books, the bot reads again until
  three reads in a row agree (a lagging replica can serve the same stale copy twice): each
  read that said otherwise was wrong, and is reported with
  ``chaos_shims.report_discrepancy(kind)``; what the agreeing reads say and the books do not
  is news (a fill, an order that closed) and is adopted.
* **A cancel budget**: at most ``--cancel-budget`` cancels per 2 s, so errors never turn into a
  cancel storm; quotes are pulled when market data has been missing for a while.
* ``with chaos_shims.tick():`` around each loop iteration, ``chaos_shims.report_cancels(n)``.
  An iteration that cannot stand behind its quotes raises ``NotQuoting`` (the book is not in
  sync, or a side has been off its wanted price for longer than ``--quote-grace-ms`` because
  the exchange refused, failed or was slow): chaos_shims counts an error tick, the loop goes
  on. So the report's recovery means "quoting again", not merely "still running".

Against the embedded exchange (``chaos-shims demo`` writes the description file), under chaos:

    chaos-shims run --set ws_disconnect=0.05 --set dry_run=false -- \\
        python examples/market_maker.py --embedded chaos-demo/exchange.json --seconds 20

Standalone, with an embedded exchange of its own (in this process: clock faults reach it too):

    python examples/market_maker.py --loopback --seconds 10

Against Binance's spot testnet, by configuration alone (keys in EXCHANGE_API_KEY and
EXCHANGE_SECRET; the stream URL follows --sandbox, or give --ws-url):

    python examples/market_maker.py --exchange binance --sandbox --seconds 60

At the end it cancels its orders and prints one JSON line of what it did.

Left out to keep it readable: inventory limits and skew, the user-data stream (fills are
learnt from order answers and reconciliation), several symbols.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import random
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import ccxt
import ccxt.async_support as ccxt_async
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

import chaos_shims

log = logging.getLogger("market_maker")
T = TypeVar("T")

BUY, SELL = "buy", "sell"
SIDES = (BUY, SELL)
#: Binance's public streams, by (exchange, sandbox)
STREAM_URLS = {("binance", False): "wss://stream.binance.com:9443/ws",
               ("binance", True): "wss://stream.testnet.binance.vision/ws"}


@dataclass(frozen=True)
class Settings:
    symbol: str = "BTC/USDT"
    seconds: float = 20.0
    tick_hz: float = 10.0
    #: quotes at mid -/+ this many basis points
    half_spread_bps: float = 6.0
    #: a quote this far (bps) from its wanted price is replaced
    requote_bps: float = 3.0
    #: quote size in quote currency (rounded up to the market's minimums)
    notional: float = 20.0
    #: a side off its wanted price (or without a quote) for longer than this is "not quoting"
    quote_grace_s: float = 1.0
    #: the book is unusable when no diff was applied for this long (diffs come every 100 ms)
    max_book_age_s: float = 1.0
    #: quotes are cancelled when the book has been unusable for this long
    pull_quotes_after_s: float = 2.0
    #: a stream with no message for this long is treated as dead and reopened
    stream_silence_s: float = 3.0
    reconcile_every_s: float = 1.0
    time_sync_every_s: float = 30.0
    #: cancels allowed per CANCEL_WINDOW_S
    cancel_budget: int = 20
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    startup_timeout_s: float = 30.0


CANCEL_WINDOW_S = 2.0


class NotQuoting(Exception):
    """This iteration ended without quotes the bot stands behind (an error tick)."""


class BookNotInSync(NotQuoting):
    """No order book in sync with the exchange: connecting, resyncing or stale."""


class QuotesBehind(NotQuoting):
    """A side has been away from its wanted price for longer than the grace period."""


class StartupFailed(Exception):
    """The bot could not get ready (markets, balances, book) before the startup timeout."""


# -- small tools ------------------------------------------------------------------------------

class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog): a random delay in
    [0, min(cap, base * 2**attempt)], so clients that failed together do not retry together."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return self.rng.uniform(0.2 * ceiling, ceiling)  # a floor keeps a retry from being 0

    def reset(self) -> None:
        self.attempt = 0


class CancelBudget:
    """At most ``limit`` cancels in any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.sent: deque[float] = deque()

    def allows(self, now: float, count: int = 1) -> bool:
        while self.sent and now - self.sent[0] > self.window:
            self.sent.popleft()
        return len(self.sent) + count <= self.limit

    def spend(self, now: float, count: int = 1) -> None:
        self.sent.extend([now] * count)


def retry_after_seconds(exchange: Any) -> float | None:
    """Retry-After of the response ccxt handled last (read right after it raised)."""
    headers = exchange.last_response_headers or {}
    for name, value in headers.items():
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


# -- the local order book ---------------------------------------------------------------------

class DepthBook:
    """Binance's local order book: a REST snapshot, then depth diffs in update-id order."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_update_id = 0
        self.synced = False
        self.updated_at = -math.inf  # monotonic time of the last change
        self.lost_at: float | None = time.monotonic()  # when it last stopped being usable

    def invalidate(self) -> None:
        if self.synced:
            self.lost_at = time.monotonic()
        self.synced = False

    def load_snapshot(self, snapshot: dict[str, Any], buffered: list[dict[str, Any]]) -> bool:
        """Sync from a snapshot and the diffs buffered since subscribing. False when the
        snapshot is older than the first buffered diff (fetch another one)."""
        last = int(snapshot["nonce"])
        pending = [event for event in buffered if int(event["u"]) > last]
        if pending and int(pending[0]["U"]) > last + 1:
            return False
        self.bids = {float(p): float(q) for p, q, *_ in snapshot["bids"]}
        self.asks = {float(p): float(q) for p, q, *_ in snapshot["asks"]}
        self.last_update_id = last
        self.synced = True
        self.lost_at = None
        self.updated_at = time.monotonic()
        return all(self.apply(event) for event in pending)  # stops at a gap

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one diff; False on a sequence gap (the book must be resynced)."""
        first, last = int(event["U"]), int(event["u"])
        if last <= self.last_update_id:
            return True  # already in the snapshot
        if first > self.last_update_id + 1:
            return False
        for levels, changes in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price, qty in changes:
                if float(qty) == 0.0:
                    levels.pop(float(price), None)
                else:
                    levels[float(price)] = float(qty)
        self.last_update_id = last
        self.updated_at = time.monotonic()
        return True

    def usable(self, now: float, max_age: float) -> bool:
        return (self.synced and now - self.updated_at <= max_age
                and bool(self.bids) and bool(self.asks))

    def mid(self) -> float:
        return (max(self.bids) + min(self.asks)) / 2.0


# -- the bot's own books ----------------------------------------------------------------------

NEW, OPEN, CANCELLING, UNKNOWN, CLOSED = "new", "open", "cancelling", "unknown", "closed"


@dataclass
class OwnOrder:
    client_id: str
    side: str
    price: float
    amount: float
    id: str | None = None
    filled: float = 0.0
    #: new (sent) | open | cancelling | unknown (answer lost: look it up) | closed
    status: str = NEW


@dataclass
class Books:
    """What the bot believes: its orders and its balances (totals per currency)."""

    orders: dict[str, OwnOrder] = field(default_factory=dict)  # by client order id
    quote: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(SIDES))
    balances: dict[str, float] = field(default_factory=dict)
    base: str = ""
    quote_currency: str = ""

    def live(self, side: str) -> OwnOrder | None:
        client_id = self.quote[side]
        return None if client_id is None else self.orders.get(client_id)

    def apply_fill(self, order: OwnOrder, filled: float) -> float:
        """Move the balances by a fill the bot has just learnt of; returns the new amount."""
        delta = filled - order.filled
        if delta <= 0:
            return 0.0
        sign = 1.0 if order.side == BUY else -1.0
        self.balances[self.base] = self.balances.get(self.base, 0.0) + sign * delta
        self.balances[self.quote_currency] = (self.balances.get(self.quote_currency, 0.0)
                                              - sign * delta * order.price)
        order.filled = filled
        return delta

    def close(self, order: OwnOrder) -> None:
        order.status = CLOSED
        if self.quote[order.side] == order.client_id:
            self.quote[order.side] = None
        self.orders.pop(order.client_id, None)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _order_filled(order: dict[str, Any]) -> float:
    return float(order.get("filled") or 0.0)


# -- the bot ----------------------------------------------------------------------------------

@dataclass
class Counters:
    ticks: int = 0
    quoting_ticks: int = 0
    not_quoting: dict[str, int] = field(default_factory=dict)
    orders_sent: int = 0
    cancels_sent: int = 0
    fills: int = 0
    reconnects: int = 0
    resyncs: int = 0
    time_syncs: int = 0
    unknown_orders: int = 0
    discrepancies: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class MarketMaker:
    def __init__(self, exchange: Any, ws_url: str, settings: Settings, *, seed: int = 0) -> None:
        self.exchange = exchange
        self.ws_url = ws_url
        self.settings = settings
        self.rng = random.Random(seed)
        self.book = DepthBook()
        self.books = Books()
        self.counters = Counters()
        self.budget = CancelBudget(settings.cancel_budget, CANCEL_WINDOW_S)
        self.rest_backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s, self.rng)
        self.stream_backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s, self.rng)
        #: no request before this monotonic time (Retry-After, backoff)
        self.rest_not_before = 0.0
        self.time_sync: asyncio.Task[None] | None = None
        #: order actions under way, by side or client order id (None: starting)
        self.in_flight: dict[str, asyncio.Task[None] | None] = {}
        self.reconciling = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.off_since: dict[str, float] = {}
        self.client_prefix = f"mm{uuid.uuid4().hex[:8]}"
        self.next_client_id = 0
        self.amount = 0.0
        self.stream_name = ""
        self.buffered: list[dict[str, Any]] = []
        self.snapshot: asyncio.Task[Any] | None = None

    # -- REST plumbing ----------------------------------------------------------------------
    def rest_open(self, now: float) -> bool:
        return now >= self.rest_not_before and (self.time_sync is None or self.time_sync.done())

    async def rest_ready(self) -> None:
        """Wait until requests are allowed again (background work only: ticks never wait)."""
        while True:
            if self.time_sync is not None and not self.time_sync.done():
                await asyncio.wait([self.time_sync])
            delay = self.rest_not_before - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def rest_succeeded(self) -> None:
        self.rest_backoff.reset()

    def rest_failed(self, exc: BaseException) -> None:
        """Decide when the next request may go, from what the exchange said."""
        self.counters.count(self.counters.errors, type(exc).__name__)
        now = time.monotonic()
        if isinstance(exc, ccxt.InvalidNonce):
            self.resync_time()
            return
        if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
            wait = retry_after_seconds(self.exchange)
            if wait is None:
                wait = self.rest_backoff.next_delay()
            self.rest_not_before = max(self.rest_not_before, now + wait)
            log.warning("rate limited: no requests for %.2f s (Retry-After)", wait)
            return
        if isinstance(exc, ccxt.NetworkError):
            self.rest_not_before = max(self.rest_not_before, now + self.rest_backoff.next_delay())

    async def call(self, make: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
        """A read that may be retried: waits for the gate, backs off, honours Retry-After."""
        for attempt in range(attempts):
            await self.rest_ready()
            try:
                result = await make()
            except ccxt.NetworkError as exc:
                self.rest_failed(exc)
                if attempt == attempts - 1:
                    raise
                continue
            self.rest_succeeded()
            return result
        raise AssertionError("unreachable")

    def resync_time(self) -> None:
        """Measure the exchange clock again (single flight); requests wait for it."""
        if self.time_sync is not None and not self.time_sync.done():
            return

        async def sync() -> None:
            for _ in range(10):
                try:
                    offset = await self.exchange.load_time_difference()
                except ccxt.NetworkError as exc:
                    self.counters.count(self.counters.errors, type(exc).__name__)
                    await asyncio.sleep(self.rest_backoff.next_delay())
                    continue
                self.counters.time_syncs += 1
                log.info("clock resynced: local clock is %+d ms off the exchange's", offset)
                return

        self.time_sync = self.spawn(sync())

    def submit(self, key: str, action: Callable[[Any], Coroutine[Any, Any, None]],
               argument: Any) -> None:
        """Hand an order action to the gateway: ``key`` (a side, or a client order id) is
        taken now, the action starts as a task right after this iteration, so the loop
        itself never pays for starting it."""
        self.in_flight[key] = None
        asyncio.get_running_loop().call_soon(self._launch, key, action, argument)

    def _launch(self, key: str, action: Callable[[Any], Coroutine[Any, Any, None]],
                argument: Any) -> None:
        if key in self.in_flight:
            self.in_flight[key] = self.spawn(action(argument))

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.counters.count(self.counters.errors, type(exc).__name__)
            log.error("background task failed: %r", exc, exc_info=exc)

    # -- startup ----------------------------------------------------------------------------
    async def start(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        try:
            await asyncio.wait_for(self._prepare(), timeout=self.settings.startup_timeout_s)
        except (TimeoutError, asyncio.TimeoutError, ccxt.BaseError) as exc:
            raise StartupFailed(f"could not load markets, clock and balances: {exc!r}") from exc
        self.spawn(self.stream_book())
        self.spawn(self.reconcile_forever())
        while not self.book.synced:
            if time.monotonic() > deadline:
                raise StartupFailed(f"the order book did not sync within "
                                    f"{self.settings.startup_timeout_s:g} s ({self.ws_url})")
            await asyncio.sleep(0.02)

    async def _prepare(self) -> None:
        markets = await self.call(self.exchange.load_markets, attempts=20)
        market = markets[self.settings.symbol]
        self.books.base, self.books.quote_currency = market["base"], market["quote"]
        self.stream_name = f"{market['id'].lower()}@depth@100ms"
        await self.call(self.exchange.load_time_difference, attempts=20)
        # Start from a clean slate: orders left by an earlier run are cancelled. Startup reads
        # are reconciliation too: the books are built from reads that agree.
        symbol = self.settings.symbol
        listed, wrong = await self.agreed(lambda: self.exchange.fetch_open_orders(symbol),
                                          _orders_key, times=3)
        for read in wrong:
            for kind, detail in _list_differences(read, listed):
                self.discrepancy(kind, detail)
        for leftover in listed:
            with contextlib.suppress(ccxt.OrderNotFound):
                await self.call(partial(self.exchange.cancel_order, leftover["id"], symbol),
                                attempts=20)
        self.books.balances, wrong_totals = await self.agreed(self._read_totals, _balances_key,
                                                              times=3)
        for totals in wrong_totals:
            self.discrepancy("balance_changed", _differences(totals, self.books.balances))
        ticker = await self.call(lambda: self.exchange.fetch_order_book(self.settings.symbol, 5),
                                 attempts=20)
        price = (ticker["bids"][0][0] + ticker["asks"][0][0]) / 2.0
        limits = market.get("limits") or {}
        min_cost = float((limits.get("cost") or {}).get("min") or 0.0)
        min_amount = float((limits.get("amount") or {}).get("min") or 0.0)
        wanted = max(self.settings.notional, 2.0 * min_cost) / price
        step = float((market.get("precision") or {}).get("amount") or 0.0) or 1e-8
        self.amount = max(min_amount, math.ceil(wanted / step) * step)

    # -- market data ------------------------------------------------------------------------
    async def stream_book(self) -> None:
        """Keep the local book in sync: reconnect with backoff, resubscribe, resync."""
        first = True
        while not self.stopping.is_set():
            if not first:
                self.counters.reconnects += 1
            first = False
            try:
                await self._stream_session()
            except asyncio.CancelledError:
                raise
            except (ConnectionClosed, OSError, TimeoutError, asyncio.TimeoutError,
                    InvalidHandshake, InvalidURI, ccxt.BaseError, ValueError) as exc:
                self.counters.count(self.counters.errors, type(exc).__name__)
                log.info("depth stream lost (%s: %s); reconnecting", type(exc).__name__, exc)
            self.book.invalidate()
            if self.stopping.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.stream_backoff.next_delay())

    async def _stream_session(self) -> None:
        async with websockets.connect(self.ws_url, open_timeout=5, close_timeout=1,
                                      ping_interval=20, ping_timeout=20) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [self.stream_name],
                                      "id": 1}))
            self.buffered = []
            try:
                while not self.stopping.is_set():
                    # A silent stream is a dead stream: the watchdog reopens it.
                    raw = await asyncio.wait_for(ws.recv(), self.settings.stream_silence_s)
                    event = json.loads(raw)
                    if "result" in event or "error" in event:
                        if event.get("error"):
                            raise ValueError(f"subscription refused: {event['error']}")
                        self.fetch_snapshot()  # subscribed: diffs from here on are buffered
                        continue
                    if event.get("e") != "depthUpdate":
                        continue
                    if self.book.synced:
                        if self.book.apply(event):
                            continue
                        # A gap: diffs were lost. Resync from a new snapshot on this connection.
                        log.info("sequence gap at %s (U=%s): resyncing", self.book.last_update_id,
                                 event["U"])
                        self.counters.resyncs += 1
                        self.book.invalidate()
                        self.buffered = []
                        self.fetch_snapshot()
                    self.buffered.append(event)
                    del self.buffered[:-1000]
                    self.sync_from_snapshot()
            finally:
                if self.snapshot is not None:
                    self.snapshot.cancel()
                    self.snapshot = None

    def fetch_snapshot(self) -> None:
        """Binance's recipe: buffer the diffs, then take a REST snapshot (single flight)."""
        if self.snapshot is not None:
            return
        self.snapshot = self.spawn(self.call(
            lambda: self.exchange.fetch_order_book(self.settings.symbol, 1000), attempts=20))
        self.snapshot.add_done_callback(lambda task: self.sync_from_snapshot())

    def sync_from_snapshot(self) -> None:
        """Sync as soon as the snapshot is in: with the diffs buffered since subscribing."""
        task = self.snapshot
        if self.book.synced or task is None or not task.done():
            return
        self.snapshot = None
        if task.cancelled() or task.exception() is not None:
            self.fetch_snapshot()  # failed even after its retries: another one
            return
        if self.book.load_snapshot(task.result(), self.buffered):
            self.buffered = []
            self.stream_backoff.reset()
        else:
            self.book.invalidate()  # older than the first buffered diff: another one
            self.fetch_snapshot()

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        period = 1.0 / self.settings.tick_hz
        end = time.monotonic() + self.settings.seconds
        next_at = time.monotonic()
        gc.freeze()  # what was built at startup is never collected: shorter GC pauses
        while not self.stopping.is_set() and time.monotonic() < end:
            try:
                with chaos_shims.tick():
                    self.iterate(time.monotonic())
            except NotQuoting as exc:
                self.counters.count(self.counters.not_quoting, type(exc).__name__)
            except Exception as exc:  # a bug must cost one tick, not the bot
                self.counters.count(self.counters.errors, type(exc).__name__)
                log.exception("iteration failed")
            self.counters.ticks += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:  # far behind: do not burst to catch up
                next_at, delay = time.monotonic(), 0.0
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, delay))

    def iterate(self, now: float) -> None:
        """One iteration: quote around the mid, or say why not (raises NotQuoting)."""
        settings = self.settings
        if not self.book.usable(now, settings.max_book_age_s):
            lost_at = self.book.lost_at if self.book.lost_at is not None else self.book.updated_at
            if now - lost_at > settings.pull_quotes_after_s:
                self.pull_quotes(now)  # no market data for a while: do not quote blind
            raise BookNotInSync("the order book is not in sync with the exchange")
        mid = self.book.mid()
        wanted = {BUY: mid * (1 - settings.half_spread_bps / 1e4),
                  SELL: mid * (1 + settings.half_spread_bps / 1e4)}
        behind = []
        for side in SIDES:
            order = self.books.live(side)
            in_place = (order is not None and order.status == OPEN
                        and abs(order.price - wanted[side]) / mid * 1e4 < settings.requote_bps)
            if in_place:
                self.off_since.pop(side, None)
            else:
                since = self.off_since.setdefault(side, now)
                if now - since > settings.quote_grace_s:
                    behind.append(side)
                self.act(side, order, now)
        self.sweep(now)
        if behind:
            raise QuotesBehind(f"{' and '.join(behind)} quote(s) not in place for more than "
                               f"{settings.quote_grace_s * 1000:.0f} ms")
        self.counters.quoting_ticks += 1

    def act(self, side: str, order: OwnOrder | None, now: float) -> None:
        """Start what brings this side to its wanted price, if nothing holds it back."""
        if side in self.in_flight or self.reconciling or not self.rest_open(now):
            return
        if order is None:
            self.submit(side, self.place, side)
        elif order.status == OPEN:
            if not self.budget.allows(now):
                return  # the budget is spent: keep the quote rather than storm
            self.budget.spend(now)
            chaos_shims.report_cancels(1)
            self.submit(side, self.replace, order)
        elif order.status in (UNKNOWN, CANCELLING):
            self.submit(side, self.resolve, order)

    def sweep(self, now: float) -> None:
        """Orders that are no longer a side's quote but may still rest: cancel or look up."""
        if self.reconciling or not self.rest_open(now):
            return
        live = {self.books.quote[side] for side in SIDES}
        for order in list(self.books.orders.values()):
            if order.client_id in live or order.client_id in self.in_flight:
                continue
            if order.status == OPEN:
                if not self.budget.allows(now):
                    return
                self.budget.spend(now)
                chaos_shims.report_cancels(1)
                self.submit(order.client_id, self.cancel, order)
            elif order.status in (UNKNOWN, CANCELLING):
                self.submit(order.client_id, self.resolve, order)

    def wanted_price(self, side: str) -> float | None:
        if not self.book.usable(time.monotonic(), self.settings.max_book_age_s):
            return None
        factor = self.settings.half_spread_bps / 1e4
        return self.book.mid() * (1 - factor if side == BUY else 1 + factor)

    # -- order gateway ------------------------------------------------------------------------
    # Each action runs as a task under a key in ``in_flight`` (a side for its quote, a client
    # order id for an order that is no longer quoted), so one thing at a time happens to each.
    def _release(self, key: str) -> None:
        self.in_flight.pop(key, None)

    async def place(self, side: str) -> None:
        try:
            await self._place(side)
        finally:
            self._release(side)

    async def _place(self, side: str) -> None:
        wanted = self.wanted_price(side)
        if wanted is None:
            return
        symbol = self.settings.symbol
        price = float(self.exchange.price_to_precision(symbol, wanted))
        self.next_client_id += 1
        order = OwnOrder(f"{self.client_prefix}{self.next_client_id:06d}", side, price,
                         self.amount)
        self.books.orders[order.client_id] = order
        self.books.quote[side] = order.client_id
        self.counters.orders_sent += 1
        try:
            placed = await self.exchange.create_order(
                symbol, "limit", side, self.amount, price,
                {"postOnly": True, "newClientOrderId": order.client_id})
        except (ccxt.InvalidNonce, ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
            self.books.close(order)  # refused before it was processed: nothing was placed
            self.rest_failed(exc)
            return
        except ccxt.NetworkError as exc:
            order.status = UNKNOWN  # sent, answer lost: it may exist. Look it up, never resend.
            self.counters.unknown_orders += 1
            self.rest_failed(exc)
            return
        except ccxt.InsufficientFunds as exc:
            self.books.close(order)
            self.counters.count(self.counters.errors, type(exc).__name__)
            self.rest_not_before = time.monotonic() + 5.0
            log.error("insufficient funds for a %s quote: pausing 5 s", side)
            return
        except ccxt.ExchangeError as exc:
            self.books.close(order)  # e.g. post-only would take: the price moved, next tick
            self.counters.count(self.counters.errors, type(exc).__name__)
            return
        self.rest_succeeded()
        self.adopt(order, placed)

    def adopt(self, order: OwnOrder, state: dict[str, Any]) -> None:
        """Take the exchange's word for an order's state."""
        order.id = str(state["id"])
        if self.books.apply_fill(order, _order_filled(state)) > 0:
            self.counters.fills += 1
        if state.get("status") == "open":
            order.status = OPEN
        else:
            self.books.close(order)

    async def replace(self, order: OwnOrder) -> None:
        """The new quote and the cancel of the old one go together: never a gap in quoting."""
        try:
            self.books.quote[order.side] = None
            await asyncio.gather(self._place(order.side), self._cancel(order))
        finally:
            self._release(order.side)

    async def cancel(self, order: OwnOrder) -> None:
        try:
            await self._cancel(order)
        finally:
            self._release(order.client_id)

    async def _cancel(self, order: OwnOrder) -> None:
        order.status = CANCELLING
        self.counters.cancels_sent += 1
        try:
            cancelled = await self.exchange.cancel_order(order.id, self.settings.symbol)
        except ccxt.OrderNotFound:
            order.status = UNKNOWN  # filled or gone meanwhile: look it up
            return
        except ccxt.NetworkError as exc:
            self.rest_failed(exc)  # still CANCELLING: looked up, then cancelled again
            return
        except ccxt.ExchangeError as exc:
            order.status = OPEN
            self.counters.count(self.counters.errors, type(exc).__name__)
            return
        self.rest_succeeded()
        if self.books.apply_fill(order, _order_filled(cancelled)) > 0:
            self.counters.fills += 1
        self.books.close(order)

    async def resolve(self, order: OwnOrder) -> None:
        """Learn the state of an order whose last answer was lost (by id, or by client order
        id when even the id never came back)."""
        key = order.client_id if self.books.quote[order.side] != order.client_id else order.side
        symbol = self.settings.symbol
        try:
            if order.id is not None:
                read = partial(self.exchange.fetch_order, order.id, symbol)
            else:
                read = partial(self.exchange.fetch_order, None, symbol,
                               {"origClientOrderId": order.client_id})
            try:
                state, wrong = await self.agreed(read, _order_key)
            except ccxt.OrderNotFound:
                if order.id is None:
                    self.books.close(order)  # it never reached the exchange
                return
            except ccxt.NetworkError:
                return  # counted and backed off in call(); the next tick asks again
            for stale in wrong:
                self.discrepancy("fill_changed", f"order {order.client_id} read as "
                                 f"{_order_key(stale)}, is {_order_key(state)}")
            self.adopt(order, state)
        finally:
            self._release(key)

    def pull_quotes(self, now: float) -> None:
        """No market data for a while: take the quotes down (they become plain orders that
        the sweep cancels)."""
        for side in SIDES:
            if side not in self.in_flight:
                self.books.quote[side] = None
        self.sweep(now)

    # -- reconciliation -----------------------------------------------------------------------
    async def reconcile_forever(self) -> None:
        next_sync = time.monotonic() + self.settings.time_sync_every_s
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.reconcile_every_s)
            if self.stopping.is_set():
                return
            if time.monotonic() > next_sync:
                next_sync = time.monotonic() + self.settings.time_sync_every_s
                self.resync_time()
            # Quiet the gateway first: a reconciliation racing an order in flight would
            # see differences that are only timing.
            self.reconciling = True
            try:
                await asyncio.sleep(0)  # actions submitted by the last iteration start
                under_way = [task for task in self.in_flight.values() if task is not None]
                if under_way:
                    await asyncio.wait(under_way, timeout=2.0)
                await self.reconcile()
            except ccxt.NetworkError:
                pass  # counted in call(); the next pass tries again
            finally:
                self.reconciling = False

    def discrepancy(self, kind: str, detail: str) -> None:
        self.counters.count(self.counters.discrepancies, kind)
        chaos_shims.report_discrepancy(kind)
        log.warning("reconciliation: %s (%s)", kind, detail)

    async def agreed(self, read: Callable[[], Awaitable[T]], key: Callable[[T], Any],
                     first: T | None = None, *, times: int = 2) -> tuple[T, list[T]]:
        """Read until ``times`` reads in a row agree: (what they say, the earlier reads that
        said otherwise). One read can be stale (a lagging replica, a cache), even twice."""
        reads = [first if first is not None else await self.call(read)]
        while len(reads) < times + 4:
            if len(reads) >= times and all(key(r) == key(reads[-1]) for r in reads[-times:]):
                break
            reads.append(await self.call(read))
        truth = reads[-1]
        return truth, [r for r in reads if key(r) != key(truth)]

    async def reconcile(self) -> None:
        """Compare open orders and balances with the books; report reads that were wrong,
        adopt what is news."""
        symbol = self.settings.symbol
        first = await self.call(lambda: self.exchange.fetch_open_orders(symbol))
        if not _orders_agree(first, self.books):
            # The books are not what the exchange says: three reads must agree on what it says
            # before the bot believes it (two can be the same stale copy).
            truth, wrong = await self.agreed(lambda: self.exchange.fetch_open_orders(symbol),
                                             _orders_key, first, times=3)
            for read in wrong:
                for kind, detail in _list_differences(read, truth):
                    self.discrepancy(kind, detail)
            await self._adopt_orders(truth)
        await self._check_balances()

    async def _adopt_orders(self, listed: list[dict[str, Any]]) -> None:
        """The open orders the exchange agrees on, against the books."""
        by_id = {str(o["id"]): o for o in listed}
        by_client = {o.get("clientOrderId"): o for o in listed}
        for order in list(self.books.orders.values()):
            found = by_id.get(order.id) if order.id is not None else by_client.get(order.client_id)
            if found is not None:
                self.adopt(order, found)  # open: its fill may have moved
            elif order.id is not None:
                await self._look_up(order)  # gone from the list: filled or cancelled
            elif order.status == UNKNOWN:
                self.books.close(order)  # its answer was lost and it is not open: never placed
        owned = {o.id for o in self.books.orders.values()} | {
            o.client_id for o in self.books.orders.values()}
        for order_id, listed_order in by_id.items():
            if order_id not in owned and listed_order.get("clientOrderId") not in owned:
                await self._cancel_stranger(order_id)

    async def _look_up(self, order: OwnOrder) -> None:
        symbol = self.settings.symbol
        try:
            state, wrong = await self.agreed(lambda: self.exchange.fetch_order(order.id, symbol),
                                             _order_key, times=3)
        except ccxt.OrderNotFound:
            log.error("order %s is unknown to the exchange: dropped from the books", order.id)
            self.books.close(order)
            return
        for read in wrong:
            self.discrepancy("fill_changed", f"order {order.id} read as {_order_key(read)}, "
                             f"is {_order_key(state)}")
        self.adopt(order, state)

    async def _cancel_stranger(self, order_id: str) -> None:
        """A real open order of this account that the bot does not own: cancel it."""
        now = time.monotonic()
        if not self.budget.allows(now):
            return
        self.budget.spend(now)
        chaos_shims.report_cancels(1)
        self.counters.cancels_sent += 1
        with contextlib.suppress(ccxt.OrderNotFound):
            await self.call(lambda: self.exchange.cancel_order(order_id, self.settings.symbol))

    async def _check_balances(self) -> None:
        first = _totals(await self.call(self.exchange.fetch_balance))
        if _balances_agree(first, self.books.balances):
            return
        truth, wrong = await self.agreed(self._read_totals, _balances_key, first, times=3)
        for read in wrong:
            self.discrepancy("balance_changed", _differences(read, truth))
        if not _balances_agree(truth, self.books.balances):
            # Two reads agree on a change the books do not explain (a fill between the order
            # pass and now, a fee): the books take the exchange's totals.
            log.info("balances adopted from the exchange: %s",
                     _differences(truth, self.books.balances))
            self.books.balances = truth

    async def _read_totals(self) -> dict[str, float]:
        return _totals(await self.exchange.fetch_balance())

    # -- shutdown -----------------------------------------------------------------------------
    async def stop(self) -> None:
        self.stopping.set()
        pending = [t for t in self.tasks if t is not self.time_sync]
        if pending:
            await asyncio.wait(pending, timeout=3.0)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)
        deadline = time.monotonic() + 5.0
        for order in list(self.books.orders.values()):
            if order.id is None or order.status == CLOSED:
                continue
            while time.monotonic() < deadline:
                try:
                    await self.exchange.cancel_order(order.id, self.settings.symbol)
                except ccxt.OrderNotFound:
                    pass
                except ccxt.NetworkError as exc:
                    self.rest_failed(exc)
                    await asyncio.sleep(max(0.05, self.rest_not_before - time.monotonic()))
                    continue
                except ccxt.ExchangeError:
                    pass
                break

    def summary(self) -> dict[str, Any]:
        counters = self.counters
        return {"bot": "market_maker", "ticks": counters.ticks,
                "quoting_ticks": counters.quoting_ticks, "not_quoting": counters.not_quoting,
                "orders_sent": counters.orders_sent, "cancels_sent": counters.cancels_sent,
                "fills": counters.fills, "reconnects": counters.reconnects,
                "resyncs": counters.resyncs, "time_syncs": counters.time_syncs,
                "unknown_orders": counters.unknown_orders,
                "discrepancies_reported": counters.discrepancies, "errors": counters.errors}


def _totals(balance: dict[str, Any]) -> dict[str, float]:
    totals = balance.get("total") or {}
    return {str(code): float(value) for code, value in totals.items() if value is not None}


def _balances_key(totals: dict[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((code, round(value, 8)) for code, value in totals.items() if value))


def _order_key(order: dict[str, Any]) -> tuple[Any, float]:
    return order.get("status"), round(_order_filled(order), 10)


def _orders_key(orders: list[dict[str, Any]]) -> frozenset[tuple[str, float]]:
    return frozenset((str(o["id"]), round(_order_filled(o), 10)) for o in orders)


def _orders_agree(listed: list[dict[str, Any]], books: Books) -> bool:
    """Whether the open orders listed are exactly the books' open orders, fills included."""
    mine = {o.id: o.filled for o in books.orders.values() if o.status in (OPEN, CANCELLING)}
    return (not any(o.status in (NEW, UNKNOWN) for o in books.orders.values())
            and {str(o["id"]): round(_order_filled(o), 10) for o in listed}
            == {i: round(f, 10) for i, f in mine.items()})


def _list_differences(read: list[dict[str, Any]], truth: list[dict[str, Any]]
                      ) -> list[tuple[str, str]]:
    """What a wrong read of the open orders got wrong, as reconcile_mismatch names it."""
    said = {str(o["id"]): o for o in read}
    real = {str(o["id"]): o for o in truth}
    found = [("order_dropped", f"open order {i} missing from a read") for i in real
             if i not in said]
    found += [("phantom_order", f"order {i} listed but not open") for i in said if i not in real]
    found += [("fill_changed", f"order {i} read with filled {_order_filled(said[i])}, is "
               f"{_order_filled(real[i])}") for i in said
              if i in real and _order_key(said[i]) != _order_key(real[i])]
    return found


def _balances_agree(read: dict[str, float], books: dict[str, float]) -> bool:
    return all(math.isclose(read.get(code, 0.0), books.get(code, 0.0), rel_tol=1e-7,
                            abs_tol=1e-8) for code in set(read) | set(books))


def _differences(read: dict[str, float], books: dict[str, float]) -> str:
    return ", ".join(f"{code} {books.get(code, 0.0):g} -> {read.get(code, 0.0):g}"
                     for code in sorted(set(read) | set(books))
                     if not math.isclose(read.get(code, 0.0), books.get(code, 0.0),
                                         rel_tol=1e-7, abs_tol=1e-8))


# -- wiring -----------------------------------------------------------------------------------

def exchange_and_stream(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """(ccxt async exchange, depth stream base URL, an embedded exchange to stop or None)."""
    embedded = None
    if args.embedded:
        from chaos_shims.exchange.embedded import load_description

        description = load_description(args.embedded)
        config, ws_url = description["ccxt"], description["ws_url"]
    elif args.loopback:
        from chaos_shims.exchange.embedded import EmbeddedExchange

        embedded = EmbeddedExchange(seed=args.seed).start()
        config, ws_url = embedded.ccxt_config(), embedded.ws_url
    else:
        config = {"apiKey": os.environ.get("EXCHANGE_API_KEY"),
                  "secret": os.environ.get("EXCHANGE_SECRET")}
        ws_url = args.ws_url or STREAM_URLS.get((args.exchange, args.sandbox), "")
        if not ws_url:
            raise SystemExit(f"no known depth stream for {args.exchange}: give --ws-url")
    # A resilient bot does its own pacing and retrying: ccxt's throttle would only make
    # every request wait behind the others.
    config = {**config, "enableRateLimit": not (args.embedded or args.loopback),
              "timeout": args.timeout_ms,
              # Binance: "use a small recvWindow of 5000 or less" (ccxt sends 10000)
              "options": {**config.get("options", {}), "recvWindow": 5000}}
    exchange = getattr(ccxt_async, args.exchange)(config)
    if args.sandbox:
        exchange.set_sandbox_mode(True)
    return exchange, args.ws_url or ws_url, embedded


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--embedded", metavar="FILE",
                       help="trade on the embedded exchange described by FILE "
                            "(written by chaos-shims demo)")
    where.add_argument("--loopback", action="store_true",
                       help="start an embedded exchange in this process and trade on it")
    parser.add_argument("--exchange", default="binance", help="ccxt exchange id (binance)")
    parser.add_argument("--sandbox", action="store_true", help="use the exchange's testnet")
    parser.add_argument("--ws-url", default=None, help="the exchange's stream base URL")
    parser.add_argument("--symbol", default=Settings.symbol)
    parser.add_argument("--seconds", type=float, default=Settings.seconds)
    parser.add_argument("--tick-hz", type=float, default=Settings.tick_hz)
    parser.add_argument("--cancel-budget", type=int, default=Settings.cancel_budget,
                        help=f"cancels allowed per {CANCEL_WINDOW_S:g} s")
    parser.add_argument("--quote-grace-ms", type=float, default=Settings.quote_grace_s * 1000)
    parser.add_argument("--timeout-ms", type=int, default=3000,
                        help="ccxt request timeout (ccxt's default, 10 s, is an eternity)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the jitter")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    settings = Settings(symbol=args.symbol, seconds=args.seconds, tick_hz=args.tick_hz,
                        cancel_budget=args.cancel_budget,
                        quote_grace_s=args.quote_grace_ms / 1000.0)
    exchange, ws_url, embedded = exchange_and_stream(args)
    bot = MarketMaker(exchange, ws_url, settings, seed=args.seed)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, bot.stopping.set)
    status = 0
    try:
        await bot.start()
        await bot.run()
    except StartupFailed as exc:
        print(f"market_maker: {exc}", file=sys.stderr)
        status = 3
    finally:
        await bot.stop()
        await exchange.close()
        if embedded is not None:
            embedded.stop()
    print(json.dumps(bot.summary()), flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
