"""A naive market maker: the same quoting loop as market_maker.py, without the resilience.

It is what many first bots look like, and what chaos_shims is there to catch before production:

* the order book comes from the depth-diff websocket stream and one REST snapshot, taken after
  subscribing as Binance's recipe says (so a good day gives it a true book), but a lost
  connection is never reopened and sequence gaps are not checked: once the stream is gone the
  book goes stale and stays stale;
* orders are sent inline, inside the loop iteration, and awaited: a slow exchange slows the
  loop itself;
* a failed request is retried at once, up to three times, with no backoff, ignoring
  Retry-After and never resyncing the clock on ``InvalidNonce``;
* after an error it cancels every order it can see and starts over;
* it keeps no books of its own: each iteration it lists its open orders and believes the
  list, so it never notices when the exchange's answer is wrong (nothing to reconcile with).

It reports to chaos_shims like the resilient bot (``chaos_shims.tick()``,
``report_cancels``), so ``chaos-shims demo --bot naive`` can show what it lacks. Command line as
market_maker.py::

    chaos-shims run --set ws_disconnect=0.05 --set dry_run=false -- \\
        python examples/naive_bot.py --embedded chaos-demo/exchange.json --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import ccxt
import ccxt.async_support as ccxt_async
import websockets
from websockets.exceptions import WebSocketException

import chaos_shims

log = logging.getLogger("naive_bot")
T = TypeVar("T")

STREAM_URLS = {("binance", False): "wss://stream.binance.com:9443/ws",
               ("binance", True): "wss://stream.testnet.binance.vision/ws"}
HALF_SPREAD_BPS = 6.0
REQUOTE_BPS = 3.0
NOTIONAL = 20.0
#: even a naive bot refuses to quote from a book this old (it just never repairs it)
STALE_AFTER_S = 2.0


class StaleBook(Exception):
    """The book has not changed for a while: the stream is gone and nothing reopens it."""


class NaiveBot:
    def __init__(self, exchange: Any, ws_url: str, symbol: str, seconds: float,
                 tick_hz: float) -> None:
        self.exchange = exchange
        self.ws_url = ws_url
        self.symbol = symbol
        self.seconds = seconds
        self.period = 1.0 / tick_hz
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.updated_at = 0.0
        self.last_update_id = 0
        #: diffs received before the snapshot is in (None once it is)
        self.early: list[dict[str, Any]] | None = []
        self.stopping = asyncio.Event()
        self.amount = 0.0
        self.reader: asyncio.Task[None] | None = None
        self.counts: dict[str, Any] = {"ticks": 0, "error_ticks": 0, "orders_sent": 0,
                                       "cancels_sent": 0, "retries": 0, "errors": {}}

    async def retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """Three tries, back to back: no backoff, no Retry-After."""
        for attempt in range(3):
            try:
                return await call()
            except ccxt.NetworkError:
                if attempt == 2:
                    raise
                self.counts["retries"] += 1
        raise AssertionError("unreachable")

    async def start(self) -> None:
        markets = await self.retry(self.exchange.load_markets)
        market = markets[self.symbol]
        # Subscribe first, then the snapshot: diffs made in between are not lost. (The only
        # part of Binance's recipe it follows: it never checks that the diffs join up.)
        stream = f"{market['id'].lower()}@depth@100ms"
        connection = await websockets.connect(f"{self.ws_url}/{stream}")
        self.reader = asyncio.ensure_future(self.read(connection))
        book = await self.retry(lambda: self.exchange.fetch_order_book(self.symbol, 1000))
        mid = (book["bids"][0][0] + book["asks"][0][0]) / 2.0
        step = float(market["precision"]["amount"] or 1e-8)
        self.amount = round(max(NOTIONAL / mid, step) / step) * step
        self.bids = {float(p): float(q) for p, q, *_ in book["bids"]}
        self.asks = {float(p): float(q) for p, q, *_ in book["asks"]}
        self.last_update_id = int(book["nonce"])
        early, self.early = self.early or [], None
        for event in early:
            self.apply(event)
        self.updated_at = time.monotonic()

    async def read(self, connection: Any) -> None:
        """Apply every diff as it comes. When the connection drops, this simply ends."""
        async with connection:
            async for raw in connection:
                event = json.loads(raw)
                if self.early is not None:
                    self.early.append(event)  # the snapshot is not in yet
                else:
                    self.apply(event)

    def apply(self, event: dict[str, Any]) -> None:
        if int(event.get("u", 0)) <= self.last_update_id:
            return  # already in the snapshot
        for levels, changes in ((self.bids, event.get("b", [])),
                                (self.asks, event.get("a", []))):
            for price, qty in changes:
                if float(qty) == 0.0:
                    levels.pop(float(price), None)
                else:
                    levels[float(price)] = float(qty)
        self.updated_at = time.monotonic()

    async def run(self) -> None:
        end = time.monotonic() + self.seconds
        while not self.stopping.is_set() and time.monotonic() < end:
            started = time.monotonic()
            try:
                with chaos_shims.tick():
                    await self.iterate()
            except Exception as exc:
                self.counts["error_ticks"] += 1
                errors = self.counts["errors"]
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await self.cancel_everything()
            self.counts["ticks"] += 1
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))

    async def iterate(self) -> None:
        if time.monotonic() - self.updated_at > STALE_AFTER_S:
            raise StaleBook("no order book update for more than 2 s")
        mid = (max(self.bids) + min(self.asks)) / 2.0
        wanted = {"buy": mid * (1 - HALF_SPREAD_BPS / 1e4),
                  "sell": mid * (1 + HALF_SPREAD_BPS / 1e4)}
        # No books of its own: whatever the exchange lists is the truth.
        listed = await self.retry(lambda: self.exchange.fetch_open_orders(self.symbol))
        if len(listed) == 2 and {o["side"] for o in listed} == {"buy", "sell"} and all(
                abs(o["price"] - wanted[o["side"]]) / mid * 1e4 < REQUOTE_BPS for o in listed):
            return
        for order in listed:
            self.counts["cancels_sent"] += 1
            await self.retry(partial(self.exchange.cancel_order, order["id"], self.symbol))
        chaos_shims.report_cancels(len(listed))
        for side, price in wanted.items():
            self.counts["orders_sent"] += 1
            await self.retry(partial(
                self.exchange.create_order, self.symbol, "limit", side, self.amount,
                float(self.exchange.price_to_precision(self.symbol, price)), {"postOnly": True}))

    async def cancel_everything(self) -> None:
        """The naive answer to any error: cancel all open orders, then quote afresh."""
        try:
            open_orders = await self.exchange.fetch_open_orders(self.symbol)
        except ccxt.BaseError:
            return
        cancelled = 0
        for order in open_orders:
            with contextlib.suppress(ccxt.BaseError):
                self.counts["cancels_sent"] += 1
                cancelled += 1
                await self.exchange.cancel_order(order["id"], self.symbol)
        chaos_shims.report_cancels(cancelled)

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
        with contextlib.suppress(ccxt.BaseError):
            for order in await self.exchange.fetch_open_orders(self.symbol):
                with contextlib.suppress(ccxt.BaseError):
                    await self.exchange.cancel_order(order["id"], self.symbol)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--embedded", metavar="FILE",
                       help="trade on the embedded exchange described by FILE")
    where.add_argument("--loopback", action="store_true",
                       help="start an embedded exchange in this process and trade on it")
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--sandbox", action="store_true", help="use the exchange's testnet")
    parser.add_argument("--ws-url", default=None)
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tick-hz", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0, help="the embedded market's seed")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


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
        ws_url = STREAM_URLS.get((args.exchange, args.sandbox), "")
    exchange = getattr(ccxt_async, args.exchange)({**config, "enableRateLimit": False})
    if args.sandbox:
        exchange.set_sandbox_mode(True)
    return exchange, args.ws_url or ws_url, embedded


async def amain(args: argparse.Namespace) -> int:
    exchange, ws_url, embedded = exchange_and_stream(args)
    bot = NaiveBot(exchange, ws_url, args.symbol, args.seconds, args.tick_hz)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, bot.stopping.set)
    status = 0
    try:
        await bot.start()
        await bot.run()
    except (ccxt.BaseError, OSError, WebSocketException) as exc:
        print(f"naive_bot: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 3
    finally:
        await bot.stop()
        await exchange.close()
        if embedded is not None:
            embedded.stop()
    print(json.dumps({"bot": "naive_bot", **bot.counts}), flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
