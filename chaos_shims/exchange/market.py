"""The embedded exchange's market: moving prices, a book with update ids, orders that fill.

One ``Market`` holds, per instrument (``BTC/USDT``...), a mid price that follows a seeded
random walk, an order book around it whose every change is published as a Binance depth diff,
and the account's orders and balances. The REST server (``rest.LoopbackExchange``) and the
websocket streams serve views of the same ``Market``, so what a bot sees on either agrees.
Standard library only.

Time. The market moves in whole *intervals* (``interval`` seconds, default 0.1) on its own
timeline, which starts at ``clock()`` when the market is built. ``step(now)`` walks every whole
interval between the timeline's start and ``now`` that has not been walked yet (at most
``max_catch_up`` at once: older time is skipped, so a long pause costs one bounded burst);
``advance(seconds)`` is ``step(now + seconds)``. A test drives the market with ``advance``;
``start_ticker(rate)`` runs a daemon thread calling ``step(clock())`` ``rate`` times a second.
Don't mix the two on one market: ``advance`` moves the timeline ahead of ``clock()``, and the
ticker then has nothing to walk until the real clock catches up.

Determinism. Each instrument draws from its own ``random.Random`` seeded from ``(seed, id)``,
and a fixed number of draws per interval (plus one per book level that appears): the same
seed and the same sequence of steps give the same prices, books, update ids and trades, and
the account's own orders never shift the random stream. Event timestamps come from
``wall_clock_ms`` and are the one thing that differs between runs.

The walk. Every interval the *fair* price is multiplied by ``exp(z * sigma)`` with ``z`` a
standard normal draw and ``sigma = volatility_bps * sqrt(interval) / 10_000`` (so
``volatility_bps`` is the standard deviation of the move over one second, in basis points).
The mid is the fair price rounded to the instrument's level grid (``Instrument.level_gap``,
about 1 bp of the initial mid, never under the tick size).

The book. ``book_depth`` levels a side, one grid gap apart, the mid itself empty: bids at
``mid - k * gap``, asks at ``mid + k * gap`` for ``k = 1..book_depth`` (only positive
prices). A level that appears gets a random quantity of 1..5 ``Instrument.level_unit``
(about 1,000 quote of the initial mid) and keeps it while it stays in the book; each interval
one random level among the five best of a random side is resized. Every change is applied
under one new update id per changed level and published as one ``DepthDiff`` per instrument
and interval: ``first_update_id`` (Binance ``U``) is the previous diff's ``last_update_id``
(``u``) + 1, levels carry the new total quantity, 0 removes the level. ``book()`` gives the
snapshot with its ``last_update_id`` (Binance ``lastUpdateId``), always on a diff boundary.
The account's resting orders are *not* shown in the book (as if they were icebergs), so the
book depends only on the seed and the steps.

Trades. Every interval each instrument prints one trade of the anonymous *crowd*: when the
mid rose, a buyer took the ask levels up to the new mid (one trade at the new mid, the size
of the level taken, maker side SELL); when it fell, the mirror image (maker side BUY); when it
did not move, a taker buy at the best ask or sell at the best bid (even odds) of a random part
of that level. Trade ids count up per instrument.

Fill rule for the account's orders (the counterparty is always the crowd):

* MARKET orders, and LIMIT orders whose price reaches the opposite best price when placed
  (a buy at or above the best ask, a sell at or below the best bid), fill at once and in full
  at that best price, as taker. The book is not consumed (the crowd replenishes it).
  LIMIT_MAKER orders that would do so are rejected (``WOULD_TAKE``); IOC/FOK limit orders
  that would not are EXPIRED.
* A resting order fills, as maker and at its own limit price, in each interval that ends with
  the market through it: a buy when the best ask is at or below its price, a sell when the
  best bid is at or above it. Each such interval fills ``min(remaining, the displayed
  quantity of the opposite levels at or better than its price)``: small orders fill at once,
  large ones over several intervals (PARTIALLY_FILLED in between). Orders do not share that
  liquidity and it is not consumed.
* No fees: balances move by exactly ``price * qty`` of quote against ``qty`` of base.

Balances. The account's ``free``/``locked`` per asset; a resting buy locks ``price * qty`` of
quote, a resting sell ``qty`` of base; fills and cancels release exactly what was locked. The
crowd's side of every account trade goes to ``counterparty_balances()`` (it starts at zero and
may go negative), so for every asset ``account total + counterparty`` never changes: no money
is created or destroyed (``set_balance`` is an outside deposit, and is the exception).

Events. ``subscribe(callback)`` delivers every ``DepthDiff`` and ``Trade`` in the order they
happened. Callbacks run on the thread that changed the market (the ticker, a REST handler, a
test) *while the market's lock is held*, so they see events in update-id order and may read
the market; they must be quick and must not block (hand the event to your own loop, e.g.
``loop.call_soon_threadsafe(queue.put_nowait, event)``). A callback that raises is logged
once and kept.

Memory is bounded: the last ``event_history`` diffs and trades per instrument
(``diffs_since``, ``recent_trades``), and the last ``history_limit`` closed orders and account
trades; open orders are always kept.

Thread safety: every public method takes the market's reentrant ``lock``; hold ``lock``
yourself to read several things as one consistent view.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from enum import Enum
from types import TracebackType
from typing import Any, Union

__all__ = [
    "BUY",
    "OPEN_STATUSES",
    "SELL",
    "Balance",
    "BookSnapshot",
    "DepthDiff",
    "Instrument",
    "Market",
    "MarketError",
    "MarketEvent",
    "Order",
    "OrderRejected",
    "RejectReason",
    "Subscription",
    "TickerStats",
    "Trade",
    "UnknownOrder",
]

logger = logging.getLogger("chaos_shims.exchange.market")

BUY = "BUY"
SELL = "SELL"
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET")
TIMES_IN_FORCE = ("GTC", "IOC", "FOK")
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
#: the first book's lastUpdateId; any number works, a large one looks like Binance's
FIRST_UPDATE_ID = 1_000_000
#: a level's quantity is 1..MAX_LEVEL_UNITS level units
MAX_LEVEL_UNITS = 5
#: the interval's resized level is one of this many best levels
RESIZED_LEVELS = 5
#: the mid never goes below this many grid gaps, so there is always a positive bid
MIN_MID_GAPS = 2

_ZERO = Decimal(0)
_DEFAULT_MIDS = {"BTC": Decimal(50000), "ETH": Decimal(3000)}
_DEFAULT_STEPS = {"BTC": Decimal("0.00001"), "ETH": Decimal("0.0001")}
_DEFAULT_QUOTE_BALANCE = Decimal(100_000)
_DEFAULT_BASE_BALANCE = Decimal(10)


def _fmt(value: Decimal) -> str:
    """Binance renders amounts as strings with 8 decimals, e.g. "0.10000000"."""
    return f"{value.quantize(Decimal('0.00000001')):f}"


def _floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step == 0 or value % step == 0


def _opposite(side: str) -> str:
    return SELL if side == BUY else BUY


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Instrument:
    """One spot market: its symbols, trading filters and starting mid price."""

    symbol: str  # unified, e.g. "BTC/USDT"
    id: str  # exchange id, e.g. "BTCUSDT"
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal
    initial_mid: Decimal

    @classmethod
    def from_symbol(cls, symbol: str, initial_mid: Decimal | float | str | None = None) -> Instrument:
        """Defaults by base asset: BTC 50,000 and step 0.00001, ETH 3,000 and 0.0001, any
        other 100 and 0.001; tick 0.01 and minimum notional 5 for all."""
        base, _, quote = symbol.partition("/")
        if not base or not quote:
            raise ValueError(f"symbol must look like 'BASE/QUOTE', got {symbol!r}")
        mid = (_DEFAULT_MIDS.get(base, Decimal(100)) if initial_mid is None
               else Decimal(str(initial_mid)))
        if not mid.is_finite() or mid <= 0:
            raise ValueError(f"initial_mid must be a positive price, got {initial_mid!r}")
        return cls(symbol=symbol, id=base + quote, base=base, quote=quote,
                   tick_size=Decimal("0.01"), step_size=_DEFAULT_STEPS.get(base, Decimal("0.001")),
                   min_notional=Decimal(5), initial_mid=mid)

    @property
    def level_gap(self) -> Decimal:
        """The price distance between book levels: 1 bp of the initial mid, on the tick grid."""
        return max(self.tick_size, _floor_to_step(self.initial_mid / 10_000, self.tick_size))

    @property
    def level_unit(self) -> Decimal:
        """The quantity unit of book levels: about 1,000 quote at the initial mid."""
        return max(self.step_size, _floor_to_step(Decimal(1000) / self.initial_mid, self.step_size))


@dataclass(frozen=True)
class Trade:
    """One trade, public (``Market.recent_trades``) and, if the account took part, the
    account's (``Market.account_trades``, and its order's ``fills``).

    ``maker_side`` is the side of the resting order (Binance's ``m``, "is the buyer the
    maker", is ``maker_side == BUY``). ``buyer_order_id`` / ``seller_order_id`` name the
    account's order on that side; None is the crowd. At most one of them is set.
    """

    symbol: str  # exchange id
    trade_id: int
    price: Decimal
    qty: Decimal
    maker_side: str
    time_ms: int
    buyer_order_id: int | None = None
    seller_order_id: int | None = None

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty

    @property
    def is_buyer_maker(self) -> bool:
        return self.maker_side == BUY

    @property
    def account_order_id(self) -> int | None:
        return self.buyer_order_id if self.buyer_order_id is not None else self.seller_order_id

    @property
    def account_side(self) -> str | None:
        """BUY or SELL for the account's side of this trade; None for a crowd-only trade."""
        if self.buyer_order_id is not None:
            return BUY
        return SELL if self.seller_order_id is not None else None

    @property
    def account_is_maker(self) -> bool:
        return self.account_side == self.maker_side

    def as_binance_event(self) -> dict[str, Any]:
        """The ``<symbol>@trade`` stream payload."""
        return {"e": "trade", "E": self.time_ms, "s": self.symbol, "t": self.trade_id,
                "p": _fmt(self.price), "q": _fmt(self.qty), "T": self.time_ms,
                "m": self.is_buyer_maker, "M": True}


Level = tuple[Decimal, Decimal]  # (price, quantity)


@dataclass(frozen=True)
class DepthDiff:
    """The book changes of one instrument in one step, under update ids
    ``first_update_id..last_update_id`` (Binance ``U``..``u``; one id per changed level).
    Levels carry the new total quantity at that price; 0 removes the level. Bids are sorted
    best (highest) first, asks best (lowest) first; a price that moved from one side to the
    other appears as a removal on one and an addition on the other."""

    symbol: str  # exchange id
    first_update_id: int
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    time_ms: int

    def as_binance_event(self) -> dict[str, Any]:
        """The ``<symbol>@depth`` stream payload."""
        return {"e": "depthUpdate", "E": self.time_ms, "s": self.symbol,
                "U": self.first_update_id, "u": self.last_update_id,
                "b": [[_fmt(p), _fmt(q)] for p, q in self.bids],
                "a": [[_fmt(p), _fmt(q)] for p, q in self.asks]}


MarketEvent = Union[DepthDiff, Trade]  # noqa: UP007 (a runtime alias, read on Python 3.10)


@dataclass(frozen=True)
class BookSnapshot:
    """The book at ``last_update_id``: bids best first, asks best first."""

    symbol: str  # exchange id
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def as_binance(self) -> dict[str, Any]:
        """The GET /api/v3/depth payload."""
        return {"lastUpdateId": self.last_update_id,
                "bids": [[_fmt(p), _fmt(q)] for p, q in self.bids],
                "asks": [[_fmt(p), _fmt(q)] for p, q in self.asks]}


@dataclass(frozen=True)
class Order:
    """An account order as it stands (a copy: the market's own record moves on)."""

    order_id: int
    client_order_id: str
    symbol: str  # exchange id
    side: str  # BUY / SELL
    type: str  # LIMIT / LIMIT_MAKER / MARKET
    time_in_force: str  # GTC / IOC / FOK
    price: Decimal  # 0 for MARKET
    orig_qty: Decimal
    orig_quote_qty: Decimal  # the quoteOrderQty of a MARKET order by cost, else 0
    executed_qty: Decimal
    cumulative_quote_qty: Decimal
    status: str  # NEW / PARTIALLY_FILLED / FILLED / CANCELED / EXPIRED
    time_ms: int
    update_time_ms: int
    fills: tuple[Trade, ...]

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining_qty(self) -> Decimal:
        return self.orig_qty - self.executed_qty


@dataclass(frozen=True)
class Balance:
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True)
class TickerStats:
    """Trading statistics of one instrument since the market was built (not a rolling 24 h):
    prices of trades, the mid while nothing has traded."""

    symbol: str  # exchange id
    open_price: Decimal
    high_price: Decimal
    low_price: Decimal
    last_price: Decimal
    last_qty: Decimal
    volume: Decimal
    quote_volume: Decimal
    count: int
    first_trade_id: int  # -1 while nothing has traded
    last_trade_id: int
    open_time_ms: int


class MarketError(Exception):
    """Base of the market's refusals."""


class UnknownOrder(MarketError):
    """No such order (or, to cancel, no such *open* order)."""


class RejectReason(str, Enum):
    INSUFFICIENT_BALANCE = "insufficient_balance"
    PRICE_FILTER = "price_filter"  # price not a multiple of the tick size
    LOT_SIZE = "lot_size"  # quantity under the step size or not a multiple of it
    NOTIONAL = "notional"  # price * quantity under the minimum notional
    WOULD_TAKE = "would_take"  # a LIMIT_MAKER order that would trade at once
    DUPLICATE_ORDER = "duplicate_order"  # the client order id of an open order


class OrderRejected(MarketError):
    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason


class Subscription:
    """A listener registered with ``Market.subscribe``. ``last_update_ids`` holds each
    subscribed instrument's book update id at the moment of subscribing: the first
    ``DepthDiff`` delivered for an instrument has ``first_update_id == last_update_ids[id] + 1``.
    """

    def __init__(self, market: Market, callback: Callable[[MarketEvent], object],
                 symbols: frozenset[str] | None, last_update_ids: dict[str, int]) -> None:
        self.callback = callback
        self.symbols = symbols  # exchange ids, None for all
        self.last_update_ids = last_update_ids
        self.errors = 0  # how many times the callback raised
        self._market = market
        self._active = True

    @property
    def active(self) -> bool:
        return self._active

    def close(self) -> None:
        """Stop delivering events. Idempotent; callable from inside the callback."""
        if self._active:
            self._active = False
            self._market._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# ------------------------------------------------------------------------- internals


@dataclass(eq=False)
class _LiveOrder:
    """The market's own, mutable record of an order."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    executed_qty: Decimal = _ZERO
    cumulative_quote_qty: Decimal = _ZERO
    status: str = "NEW"
    update_time_ms: int = 0
    fills: list[Trade] = field(default_factory=list)

    @property
    def remaining_qty(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def freeze(self) -> Order:
        return Order(order_id=self.order_id, client_order_id=self.client_order_id,
                     symbol=self.symbol, side=self.side, type=self.type,
                     time_in_force=self.time_in_force, price=self.price, orig_qty=self.orig_qty,
                     orig_quote_qty=self.orig_quote_qty, executed_qty=self.executed_qty,
                     cumulative_quote_qty=self.cumulative_quote_qty, status=self.status,
                     time_ms=self.time_ms, update_time_ms=self.update_time_ms,
                     fills=tuple(self.fills))


class _Book:
    """One instrument's walk, book, ids and histories. Levels are keyed by grid index
    (price = index * gap), so the two sides are the contiguous index ranges around ``mid``."""

    def __init__(self, instrument: Instrument, rng: random.Random, depth: int, history: int,
                 opened_ms: int) -> None:
        self.instrument = instrument
        self.rng = rng
        self.depth = depth
        self.gap = instrument.level_gap
        self.unit = instrument.level_unit
        self.mid = max(MIN_MID_GAPS, int((instrument.initial_mid / self.gap)
                                         .to_integral_value()))
        self.fair = float(self.mid * self.gap)
        self.bids: dict[int, Decimal] = {}
        self.asks: dict[int, Decimal] = {}
        for index in self.bid_range(self.mid):
            self.bids[index] = self.random_level_qty()
        for index in self.ask_range(self.mid):
            self.asks[index] = self.random_level_qty()
        self.last_update_id = FIRST_UPDATE_ID
        self.next_trade_id = 1
        self.diffs: deque[DepthDiff] = deque(maxlen=history)
        self.trades: deque[Trade] = deque(maxlen=history)
        self.open_orders: dict[int, _LiveOrder] = {}  # by order id, oldest first
        # statistics since the market was built
        self.open_price = self.mid_price
        self.high_price = self.low_price = self.last_price = self.open_price
        self.last_qty = _ZERO
        self.volume = self.quote_volume = _ZERO
        self.trade_count = 0
        self.first_trade_id = -1
        self.opened_ms = opened_ms

    def bid_range(self, mid: int) -> range:
        return range(max(1, mid - self.depth), mid)

    def ask_range(self, mid: int) -> range:
        return range(mid + 1, mid + self.depth + 1)

    def random_level_qty(self) -> Decimal:
        return self.unit * self.rng.randint(1, MAX_LEVEL_UNITS)

    @property
    def mid_price(self) -> Decimal:
        return self.mid * self.gap

    @property
    def best_bid(self) -> Decimal:
        return (self.mid - 1) * self.gap

    @property
    def best_ask(self) -> Decimal:
        return (self.mid + 1) * self.gap

    def snapshot(self, limit: int | None) -> BookSnapshot:
        bid_indices: Iterable[int] = reversed(self.bid_range(self.mid))
        ask_indices: Iterable[int] = self.ask_range(self.mid)
        if limit is not None:
            bid_indices = itertools.islice(bid_indices, limit)
            ask_indices = itertools.islice(ask_indices, limit)
        return BookSnapshot(
            symbol=self.instrument.id, last_update_id=self.last_update_id,
            bids=tuple((i * self.gap, self.bids[i]) for i in bid_indices),
            asks=tuple((i * self.gap, self.asks[i]) for i in ask_indices))

    def level_taken_by_move_to(self, mid: int) -> Decimal:
        """The size of the level at the new mid before the move: what the crowd takes when
        the mid moves there (a level beyond the book counts one unit)."""
        levels = self.asks if mid > self.mid else self.bids
        return levels.get(mid, self.unit)

    def move_to(self, mid: int, bid_changes: dict[int, Decimal],
                ask_changes: dict[int, Decimal]) -> None:
        """Shift the book to a new mid: levels that leave are removed, levels that appear
        get random quantities (drawn in price order, so the draws are deterministic)."""
        if mid == self.mid:
            return
        self.mid = mid
        for levels, wanted, changes in ((self.bids, self.bid_range(mid), bid_changes),
                                        (self.asks, self.ask_range(mid), ask_changes)):
            leaving = [index for index in levels if index not in wanted]
            for index in leaving:
                del levels[index]
                changes[index] = _ZERO
            for index in wanted:
                if index not in levels:
                    levels[index] = changes[index] = self.random_level_qty()


# ---------------------------------------------------------------------------- market


class Market:
    """The embedded exchange's market (see the module docstring for the model).

    ``instruments``: unified symbols or ``Instrument``s. ``seed``: any int or str (default
    0, so runs repeat unless asked otherwise; None: a random one, readable as ``.seed``).
    ``balances``: the account's starting free balances (default 100,000 of each quote asset
    and 10 of each base asset). ``interval``: seconds per walk step. ``volatility_bps``:
    standard deviation of the mid's move over one second, in basis points (0: the mid never
    moves, the book and crowd trades still do). ``book_depth``: levels per side.
    ``event_history``: diffs and public trades kept per instrument. ``history_limit``:
    closed orders and account trades kept. ``max_catch_up``: the most intervals one ``step``
    walks. ``clock``: the timeline's clock (seconds). ``wall_clock_ms``: event and order
    timestamps (default ``time.time()`` in ms, read at each call).
    """

    def __init__(
        self,
        instruments: Sequence[str | Instrument] = ("BTC/USDT", "ETH/USDT"),
        *,
        seed: int | str | None = 0,
        balances: Mapping[str, Decimal | float | int | str] | None = None,
        interval: float = 0.1,
        volatility_bps: float = 5.0,
        book_depth: int = 100,
        event_history: int = 1_000,
        history_limit: int = 10_000,
        max_catch_up: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if not volatility_bps >= 0:
            raise ValueError(f"volatility_bps must be >= 0, got {volatility_bps!r}")
        for name, value in (("book_depth", book_depth), ("event_history", event_history),
                            ("history_limit", history_limit), ("max_catch_up", max_catch_up)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        self.seed: int | str = random.randrange(2**63) if seed is None else seed
        self.interval = float(interval)
        self.volatility_bps = float(volatility_bps)
        self._sigma = self.volatility_bps * math.sqrt(self.interval) / 10_000
        self._max_catch_up = max_catch_up
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms or (lambda: int(time.time() * 1000))
        self._lock = threading.RLock()

        opened_ms = self._wall_clock_ms()
        self._books: dict[str, _Book] = {}  # by exchange id, in the order given
        self._by_symbol: dict[str, str] = {}  # unified symbol -> exchange id
        for item in instruments:
            instrument = item if isinstance(item, Instrument) else Instrument.from_symbol(item)
            if instrument.id in self._books:
                raise ValueError(f"instrument {instrument.symbol!r} given twice")
            # Its own stream per instrument: adding one does not shift another's prices.
            rng = random.Random(f"{self.seed}/{instrument.id}")
            self._books[instrument.id] = _Book(instrument, rng, book_depth, event_history,
                                               opened_ms)
            self._by_symbol[instrument.symbol] = instrument.id

        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        if balances is None:
            for book in self._books.values():
                self._free.setdefault(book.instrument.quote, _DEFAULT_QUOTE_BALANCE)
            for book in self._books.values():
                self._free.setdefault(book.instrument.base, _DEFAULT_BASE_BALANCE)
        else:
            self._free = {asset: Decimal(str(amount)) for asset, amount in balances.items()}
        for book in self._books.values():
            for asset in (book.instrument.base, book.instrument.quote):
                self._free.setdefault(asset, _ZERO)
        self._locked = dict.fromkeys(self._free, _ZERO)
        self._counterparty = dict.fromkeys(self._free, _ZERO)

        self._orders: dict[int, _LiveOrder] = {}  # open and recent closed, by id
        self._closed_order_ids: deque[int] = deque()
        self._account_trades: deque[Trade] = deque(maxlen=history_limit)
        self._history_limit = history_limit
        self._next_order_id = 1
        self._client_ids = itertools.count(1)

        self._subscriptions: list[Subscription] = []
        self._origin = clock()
        self._now = self._origin
        # time since the origin, kept apart so that many small advances add up exactly even
        # on a monotonic clock hours from zero (where each absolute sum would round)
        self._elapsed = 0.0
        self._intervals_walked = 0
        self._ticker_thread: threading.Thread | None = None
        self._ticker_stop: threading.Event | None = None

    # ------------------------------------------------------------------ lookup

    @property
    def lock(self) -> threading.RLock:
        """The market's reentrant lock: hold it to read several things consistently."""
        return self._lock

    def instruments(self) -> list[Instrument]:
        return [book.instrument for book in self._books.values()]

    def instrument(self, symbol: str) -> Instrument:
        """By unified symbol ("BTC/USDT") or exchange id ("BTCUSDT", any case); KeyError."""
        return self._book(symbol).instrument

    def _book(self, symbol: str) -> _Book:
        market_id = self._by_symbol.get(symbol, symbol.replace("/", "").upper())
        try:
            return self._books[market_id]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}") from None

    # ------------------------------------------------------------------ time

    @property
    def now(self) -> float:
        """The market's timeline: the latest time stepped to (``clock()`` when built)."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> int:
        """Step ``seconds`` ahead of ``now``; returns the intervals walked."""
        with self._lock:
            return self._walk_to(self._elapsed + seconds)

    def step(self, now: float) -> int:
        """Walk every whole interval up to ``now`` not walked yet (a time not after ``now``
        does nothing); returns how many were walked, at most ``max_catch_up``."""
        with self._lock:
            return self._walk_to(now - self._origin)

    def _walk_to(self, elapsed: float) -> int:
        with self._lock:
            if elapsed <= self._elapsed:
                return 0
            self._elapsed = elapsed
            self._now = self._origin + elapsed
            # Count intervals from the origin, not from the last step, so the walk does not
            # depend on how often it is stepped; the epsilon absorbs float sums of intervals.
            due = math.floor(elapsed / self.interval + 1e-9) - self._intervals_walked
            if due <= 0:
                return 0
            skipped = max(0, due - self._max_catch_up)
            walked = due - skipped
            self._intervals_walked += skipped
            time_ms = self._wall_clock_ms()
            for _ in range(walked):
                self._intervals_walked += 1
                for book in self._books.values():
                    self._walk(book, time_ms)
            return walked

    def start_ticker(self, rate: float = 20.0) -> None:
        """Step the market from ``clock()`` ``rate`` times a second in a daemon thread
        (idempotent). The thread logs and survives anything a step raises."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0 steps per second, got {rate!r}")
        with self._lock:
            if self._ticker_thread is not None:
                return
            stop = threading.Event()
            thread = threading.Thread(target=self._run_ticker, args=(stop, 1.0 / rate),
                                      name="loopback-market-ticker", daemon=True)
            self._ticker_stop, self._ticker_thread = stop, thread
        thread.start()

    def stop_ticker(self) -> None:
        """Stop the ticker thread and wait for it (idempotent)."""
        with self._lock:
            stop, thread = self._ticker_stop, self._ticker_thread
            self._ticker_stop = self._ticker_thread = None
        if stop is None or thread is None:
            return
        stop.set()
        if thread is not threading.current_thread():  # stopped from a callback it ran
            thread.join(timeout=5)

    @property
    def ticker_running(self) -> bool:
        return self._ticker_thread is not None

    def _run_ticker(self, stop: threading.Event, period: float) -> None:
        while not stop.wait(period):
            try:
                self.step(self._clock())
            except Exception:
                logger.exception("market step failed; the ticker goes on")

    def close(self) -> None:
        self.stop_ticker()

    def __enter__(self) -> Market:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ the walk

    def _walk(self, book: _Book, time_ms: int) -> None:
        rng = book.rng
        # A fixed set of draws every interval, whatever happens, keeps the stream aligned.
        z = rng.gauss(0.0, 1.0)
        taker_buys = rng.random() < 0.5
        fraction = rng.random()
        resize_bids = rng.random() < 0.5
        resize_offset = rng.randint(1, min(RESIZED_LEVELS, book.depth))
        resize_units = rng.randint(1, MAX_LEVEL_UNITS)

        book.fair *= math.exp(z * self._sigma)
        old_mid = book.mid
        new_mid = max(MIN_MID_GAPS, round(book.fair / float(book.gap)))
        taken_qty = book.level_taken_by_move_to(new_mid)
        bid_changes: dict[int, Decimal] = {}
        ask_changes: dict[int, Decimal] = {}
        book.move_to(new_mid, bid_changes, ask_changes)

        levels, changes = ((book.bids, bid_changes) if resize_bids else (book.asks, ask_changes))
        index = new_mid - resize_offset if resize_bids else new_mid + resize_offset
        qty = book.unit * resize_units
        if index in levels and levels[index] != qty:
            levels[index] = changes[index] = qty
        self._publish_diff(book, bid_changes, ask_changes, time_ms)

        # The crowd's trade: the level the move took, or a nibble at the top of the book.
        if new_mid != old_mid:
            self._record_trade(book, new_mid * book.gap, taken_qty,
                               SELL if new_mid > old_mid else BUY, time_ms)
        else:
            top = book.mid + 1 if taker_buys else book.mid - 1
            level_qty = (book.asks if taker_buys else book.bids).get(top, book.unit)
            qty = max(book.instrument.step_size,
                      _floor_to_step(level_qty * Decimal(repr(fraction)), book.instrument.step_size))
            self._record_trade(book, top * book.gap, qty, SELL if taker_buys else BUY, time_ms)

        self._fill_resting_orders(book, time_ms)

    def _publish_diff(self, book: _Book, bid_changes: Mapping[int, Decimal],
                      ask_changes: Mapping[int, Decimal], time_ms: int) -> None:
        count = len(bid_changes) + len(ask_changes)
        if count == 0:
            return
        first = book.last_update_id + 1
        book.last_update_id += count
        diff = DepthDiff(
            symbol=book.instrument.id, first_update_id=first, last_update_id=book.last_update_id,
            bids=tuple((i * book.gap, bid_changes[i]) for i in sorted(bid_changes, reverse=True)),
            asks=tuple((i * book.gap, ask_changes[i]) for i in sorted(ask_changes)),
            time_ms=time_ms)
        book.diffs.append(diff)
        self._emit(diff)

    def _record_trade(self, book: _Book, price: Decimal, qty: Decimal, maker_side: str,
                      time_ms: int, order: _LiveOrder | None = None) -> Trade:
        trade = Trade(symbol=book.instrument.id, trade_id=book.next_trade_id, price=price,
                      qty=qty, maker_side=maker_side, time_ms=time_ms,
                      buyer_order_id=order.order_id if order and order.side == BUY else None,
                      seller_order_id=order.order_id if order and order.side == SELL else None)
        book.next_trade_id += 1
        book.trades.append(trade)
        if book.first_trade_id < 0:
            book.first_trade_id = trade.trade_id
            book.open_price = book.high_price = book.low_price = price
        book.high_price = max(book.high_price, price)
        book.low_price = min(book.low_price, price)
        book.last_price, book.last_qty = price, qty
        book.volume += qty
        book.quote_volume += trade.quote_qty
        book.trade_count += 1
        if order is not None:
            self._account_trades.append(trade)
            order.fills.append(trade)
        self._emit(trade)
        return trade

    def _fill_resting_orders(self, book: _Book, time_ms: int) -> None:
        for order in list(book.open_orders.values()):
            position = order.price / book.gap
            if order.side == BUY:
                # The best ask index and the highest ask index at or below the order price.
                first, last = book.mid + 1, int(position.to_integral_value(ROUND_FLOOR))
                crossing = range(first, min(last, book.mid + book.depth) + 1)
                levels = book.asks
            else:
                first, last = int(position.to_integral_value(ROUND_CEILING)), book.mid - 1
                crossing = range(max(first, book.mid - book.depth, 1), last + 1)
                levels = book.bids
            if first > last:
                continue
            liquidity = sum((levels.get(i, _ZERO) for i in crossing), _ZERO)
            qty = min(order.remaining_qty, liquidity)
            if qty > 0:
                self._fill(book, order, order.price, qty, as_maker=True, time_ms=time_ms)

    # ------------------------------------------------------------------ account

    def _fill(self, book: _Book, order: _LiveOrder, price: Decimal, qty: Decimal, *,
              as_maker: bool, time_ms: int) -> None:
        """Trade ``qty`` of ``order`` with the crowd at ``price``. A maker fill spends what
        the order locked (at this same price); a taker fill spends free balance."""
        base, quote = book.instrument.base, book.instrument.quote
        cost = price * qty
        spent_asset, spent, got_asset, got = ((quote, cost, base, qty) if order.side == BUY
                                              else (base, qty, quote, cost))
        if as_maker:
            self._locked[spent_asset] -= spent
        else:
            self._free[spent_asset] -= spent
        self._free[got_asset] += got
        self._counterparty[spent_asset] += spent
        self._counterparty[got_asset] -= got

        order.executed_qty += qty
        order.cumulative_quote_qty += cost
        order.update_time_ms = time_ms
        order.status = "FILLED" if order.remaining_qty == 0 else "PARTIALLY_FILLED"
        maker_side = order.side if as_maker else _opposite(order.side)
        if order.status == "FILLED":
            self._close(book, order)
        self._record_trade(book, price, qty, maker_side, time_ms, order)

    def _close(self, book: _Book, order: _LiveOrder) -> None:
        book.open_orders.pop(order.order_id, None)
        self._closed_order_ids.append(order.order_id)
        while len(self._closed_order_ids) > self._history_limit:
            self._orders.pop(self._closed_order_ids.popleft(), None)

    def _require_free(self, asset: str, amount: Decimal) -> None:
        if self._free.get(asset, _ZERO) < amount:
            raise OrderRejected(RejectReason.INSUFFICIENT_BALANCE,
                                f"{amount} {asset} needed, {self._free.get(asset, _ZERO)} free")

    def place_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        quote_quantity: Decimal | None = None,
        time_in_force: str = "GTC",
        client_order_id: str | None = None,
    ) -> Order:
        """Place an account order (see the fill rule in the module docstring).

        LIMIT and LIMIT_MAKER need ``quantity`` and ``price``; MARKET needs ``quantity`` or
        ``quote_quantity`` (spend that much quote: the quantity is rounded down to the step).
        Raises ``OrderRejected`` (filters, balance, LIMIT_MAKER that would take, the client
        order id of an open order), ``ValueError`` for arguments no exchange would accept
        (unknown side, type or time in force, a missing amount), ``KeyError`` for an unknown
        symbol.
        """
        side, order_type = side.upper(), order_type.upper()
        time_in_force = time_in_force.upper()
        if side not in (BUY, SELL):
            raise ValueError(f"side must be BUY or SELL, got {side!r}")
        if order_type not in ORDER_TYPES:
            raise ValueError(f"order_type must be one of {ORDER_TYPES}, got {order_type!r}")
        if time_in_force not in TIMES_IN_FORCE:
            raise ValueError(f"time_in_force must be one of {TIMES_IN_FORCE}, got {time_in_force!r}")
        with self._lock:
            book = self._book(symbol)
            instrument = book.instrument
            client_order_id = client_order_id or f"market{next(self._client_ids)}"
            if any(o.client_order_id == client_order_id for o in book.open_orders.values()):
                raise OrderRejected(RejectReason.DUPLICATE_ORDER, client_order_id)
            now_ms = self._wall_clock_ms()
            if order_type == "MARKET":
                return self._place_market(book, side, quantity, quote_quantity, client_order_id,
                                          now_ms)
            if quantity is None or price is None:
                raise ValueError("LIMIT and LIMIT_MAKER orders need a quantity and a price")
            if order_type == "LIMIT_MAKER":
                time_in_force = "GTC"
            self._check_filters(instrument, price, quantity)
            order = self._new_order(book, client_order_id, side, order_type, time_in_force, price,
                                    quantity, _ZERO, now_ms)
            best = book.best_ask if side == BUY else book.best_bid
            marketable = price >= best if side == BUY else price <= best
            if marketable:
                if order_type == "LIMIT_MAKER":
                    raise OrderRejected(RejectReason.WOULD_TAKE, f"{side} at {price}, best {best}")
                if side == BUY:
                    self._require_free(instrument.quote, price * quantity)
                else:
                    self._require_free(instrument.base, quantity)
                self._register(book, order, resting=False)
                self._fill(book, order, best, quantity, as_maker=False, time_ms=now_ms)
            elif time_in_force in ("IOC", "FOK"):
                order.status = "EXPIRED"
                self._register(book, order, resting=False)
                self._close(book, order)
            else:
                asset, amount = ((instrument.quote, price * quantity) if side == BUY
                                 else (instrument.base, quantity))
                self._require_free(asset, amount)
                self._free[asset] -= amount
                self._locked[asset] += amount
                self._register(book, order, resting=True)
            return order.freeze()

    def _place_market(self, book: _Book, side: str, quantity: Decimal | None,
                      quote_quantity: Decimal | None, client_order_id: str, now_ms: int) -> Order:
        instrument = book.instrument
        price = book.best_ask if side == BUY else book.best_bid
        if quote_quantity is not None:
            qty = _floor_to_step(quote_quantity / price, instrument.step_size)
        elif quantity is not None:
            qty = quantity
        else:
            raise ValueError("a MARKET order needs a quantity or a quote quantity")
        if qty < instrument.step_size or not _is_multiple(qty, instrument.step_size):
            raise OrderRejected(RejectReason.LOT_SIZE, f"quantity {qty}")
        if price * qty < instrument.min_notional:
            raise OrderRejected(RejectReason.NOTIONAL, f"{price} * {qty}")
        if side == BUY:
            self._require_free(instrument.quote, price * qty)
        else:
            self._require_free(instrument.base, qty)
        order = self._new_order(book, client_order_id, side, "MARKET", "GTC", _ZERO, qty,
                                quote_quantity or _ZERO, now_ms)
        self._register(book, order, resting=False)
        self._fill(book, order, price, qty, as_maker=False, time_ms=now_ms)
        return order.freeze()

    @staticmethod
    def _check_filters(instrument: Instrument, price: Decimal, qty: Decimal) -> None:
        if price <= 0 or not _is_multiple(price, instrument.tick_size):
            raise OrderRejected(RejectReason.PRICE_FILTER, f"price {price}")
        if qty < instrument.step_size or not _is_multiple(qty, instrument.step_size):
            raise OrderRejected(RejectReason.LOT_SIZE, f"quantity {qty}")
        if price * qty < instrument.min_notional:
            raise OrderRejected(RejectReason.NOTIONAL, f"{price} * {qty}")

    def _new_order(self, book: _Book, client_order_id: str, side: str, order_type: str,
                   time_in_force: str, price: Decimal, qty: Decimal, quote_qty: Decimal,
                   now_ms: int) -> _LiveOrder:
        # The id is taken only once the order is accepted (see _register).
        return _LiveOrder(order_id=0, client_order_id=client_order_id,
                          symbol=book.instrument.id, side=side, type=order_type,
                          time_in_force=time_in_force, price=price, orig_qty=qty,
                          orig_quote_qty=quote_qty, time_ms=now_ms, update_time_ms=now_ms)

    def _register(self, book: _Book, order: _LiveOrder, *, resting: bool) -> None:
        order.order_id = self._next_order_id
        self._next_order_id += 1
        self._orders[order.order_id] = order
        if resting:
            book.open_orders[order.order_id] = order

    def cancel_order(self, symbol: str, order_id: int | None = None,
                     client_order_id: str | None = None) -> Order:
        """Cancel an open order, releasing what it locked; ``UnknownOrder`` if no open
        order has that id (``order_id`` wins over ``client_order_id``)."""
        with self._lock:
            book = self._book(symbol)
            order = self._find(book, order_id, client_order_id)
            if order is None or order.status not in OPEN_STATUSES:
                raise UnknownOrder(f"no open order {order_id or client_order_id!r} on {symbol}")
            instrument = book.instrument
            remaining = order.remaining_qty
            asset, amount = ((instrument.quote, order.price * remaining) if order.side == BUY
                             else (instrument.base, remaining))
            self._locked[asset] -= amount
            self._free[asset] += amount
            order.status = "CANCELED"
            order.update_time_ms = self._wall_clock_ms()
            self._close(book, order)
            return order.freeze()

    def find_order(self, symbol: str, order_id: int | None = None,
                   client_order_id: str | None = None) -> Order | None:
        """An order by id, or else by client order id (the latest order that used it)."""
        with self._lock:
            order = self._find(self._book(symbol), order_id, client_order_id)
            return None if order is None else order.freeze()

    def _find(self, book: _Book, order_id: int | None,
              client_order_id: str | None) -> _LiveOrder | None:
        if order_id:
            order = self._orders.get(order_id)
            return order if order is not None and order.symbol == book.instrument.id else None
        if client_order_id:
            for order in reversed(self._orders.values()):
                if order.symbol == book.instrument.id and order.client_order_id == client_order_id:
                    return order
        return None

    def orders(self, symbol: str | None = None, *, open_only: bool = False) -> list[Order]:
        """Open orders and the latest closed ones, oldest first."""
        with self._lock:
            market_id = None if symbol is None else self._book(symbol).instrument.id
            return [order.freeze() for order in self._orders.values()
                    if (market_id is None or order.symbol == market_id)
                    and (not open_only or order.status in OPEN_STATUSES)]

    def account_trades(self, symbol: str | None = None) -> list[Trade]:
        """The account's latest trades (``history_limit``), oldest first."""
        with self._lock:
            market_id = None if symbol is None else self._book(symbol).instrument.id
            return [t for t in self._account_trades if market_id is None or t.symbol == market_id]

    def balances(self) -> dict[str, Balance]:
        with self._lock:
            return {asset: Balance(self._free[asset], self._locked[asset])
                    for asset in sorted(self._free)}

    def set_balance(self, asset: str, free: Decimal | float | int | str) -> None:
        """Set an asset's free balance: a deposit or withdrawal from outside the market."""
        with self._lock:
            self._free[asset] = Decimal(str(free))
            self._locked.setdefault(asset, _ZERO)
            self._counterparty.setdefault(asset, _ZERO)

    def counterparty_balances(self) -> dict[str, Decimal]:
        """What the crowd gained (+) or gave (-) trading with the account, per asset."""
        with self._lock:
            return dict(sorted(self._counterparty.items()))

    # ------------------------------------------------------------------ market data

    def mid(self, symbol: str) -> Decimal:
        with self._lock:
            return self._book(symbol).mid_price

    def best_bid_ask(self, symbol: str) -> tuple[Decimal, Decimal]:
        with self._lock:
            book = self._book(symbol)
            return book.best_bid, book.best_ask

    def set_mid(self, symbol: str, price: Decimal | float | str) -> None:
        """Jump the mid (rounded to the level grid) as one step of the market: the book
        shifts (one diff), the crowd trades the level the jump took, resting orders the
        jump went through fill. The walk goes on from there. The new levels' sizes draw from
        the instrument's random stream, so a jump shifts what follows."""
        with self._lock:
            book = self._book(symbol)
            target = Decimal(str(price))
            if not target.is_finite() or target <= 0:
                raise ValueError(f"price must be positive, got {price!r}")
            new_mid = max(MIN_MID_GAPS, int((target / book.gap).to_integral_value()))
            book.fair = float(new_mid * book.gap)
            if new_mid == book.mid:
                return
            time_ms = self._wall_clock_ms()
            old_mid = book.mid
            taken_qty = book.level_taken_by_move_to(new_mid)
            bid_changes: dict[int, Decimal] = {}
            ask_changes: dict[int, Decimal] = {}
            book.move_to(new_mid, bid_changes, ask_changes)
            self._publish_diff(book, bid_changes, ask_changes, time_ms)
            self._record_trade(book, new_mid * book.gap, taken_qty,
                               SELL if new_mid > old_mid else BUY, time_ms)
            self._fill_resting_orders(book, time_ms)

    def book(self, symbol: str, limit: int | None = None) -> BookSnapshot:
        """The book (``limit`` best levels a side, None: all ``book_depth``)."""
        with self._lock:
            return self._book(symbol).snapshot(limit)

    def last_update_id(self, symbol: str) -> int:
        with self._lock:
            return self._book(symbol).last_update_id

    def diffs_since(self, symbol: str, update_id: int) -> list[DepthDiff] | None:
        """The diffs after ``update_id`` (those with ``last_update_id > update_id``), oldest
        first; None when the kept history no longer reaches back to ``update_id + 1``."""
        with self._lock:
            book = self._book(symbol)
            if update_id >= book.last_update_id:
                return []
            if not book.diffs or book.diffs[0].first_update_id > update_id + 1:
                return None
            return [d for d in book.diffs if d.last_update_id > update_id]

    def recent_trades(self, symbol: str, limit: int | None = None) -> list[Trade]:
        """Public trades, oldest first: the last ``limit`` kept (None: all kept)."""
        with self._lock:
            trades = list(self._book(symbol).trades)
            return trades if limit is None else trades[-limit:] if limit > 0 else []

    def stats(self, symbol: str) -> TickerStats:
        with self._lock:
            book = self._book(symbol)
            last_price = book.last_price if book.trade_count else book.mid_price
            return TickerStats(
                symbol=book.instrument.id, open_price=book.open_price,
                high_price=max(book.high_price, last_price),
                low_price=min(book.low_price, last_price), last_price=last_price,
                last_qty=book.last_qty, volume=book.volume, quote_volume=book.quote_volume,
                count=book.trade_count, first_trade_id=book.first_trade_id,
                last_trade_id=book.next_trade_id - 1 if book.trade_count else -1,
                open_time_ms=book.opened_ms)

    # ------------------------------------------------------------------ listeners

    def subscribe(self, callback: Callable[[MarketEvent], object],
                  symbols: Iterable[str] | None = None) -> Subscription:
        """Deliver every later ``DepthDiff`` and ``Trade`` (of ``symbols``, unified or ids;
        None: all) to ``callback``, in order, on the thread that made them, under the lock."""
        with self._lock:
            ids = None if symbols is None else frozenset(self._book(s).instrument.id
                                                         for s in symbols)
            last_ids = {market_id: book.last_update_id for market_id, book in self._books.items()
                        if ids is None or market_id in ids}
            subscription = Subscription(self, callback, ids, last_ids)
            self._subscriptions.append(subscription)
            return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            # A new list, so a dispatch loop in progress is not disturbed.
            self._subscriptions = [s for s in self._subscriptions if s is not subscription]

    def _emit(self, event: MarketEvent) -> None:
        for subscription in self._subscriptions:
            if not subscription.active or (subscription.symbols is not None
                                           and event.symbol not in subscription.symbols):
                continue
            try:
                subscription.callback(event)
            except Exception:
                subscription.errors += 1
                if subscription.errors == 1:
                    logger.exception("market listener %r raised; it stays subscribed, and "
                                     "further errors are counted, not logged",
                                     subscription.callback)
