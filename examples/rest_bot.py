"""A small REST quoting loop that survives rate limits, outages and lost requests.

It shows the handling chaos_shims checks for: retries with exponential backoff and jitter on
``ccxt.NetworkError``, honouring Retry-After (ccxt keeps it in ``last_response_headers``), and a
bounded number of attempts so one bad minute never becomes a crash.

Against the loopback exchange that ships with chaos_shims:

    chaos-shims run --set exch_429=0.2 --set dry_run=false --set burst_on_sec=0 -- \\
        python examples/rest_bot.py --loopback --iterations 20

Against a real exchange's testnet, by configuration alone (keys in the environment):

    python examples/rest_bot.py --exchange binance --sandbox
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ccxt

T = TypeVar("T")


def retry_after_seconds(exchange: Any) -> float | None:
    headers = exchange.last_response_headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(exchange: Any, call: Callable[[], T], *, attempts: int = 4,
                 base_delay: float = 0.05, max_delay: float = 2.0) -> T:
    """Retry transient failures with exponential backoff and full jitter."""
    for attempt in range(attempts):
        try:
            return call()
        except (ccxt.RateLimitExceeded, ccxt.DDoSProtection):
            if attempt == attempts - 1:
                raise
            wait = retry_after_seconds(exchange) or base_delay * 2 ** attempt
            time.sleep(min(wait, max_delay))
        except ccxt.NetworkError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, min(max_delay, base_delay * 2 ** attempt)))
    raise AssertionError("unreachable")


def run(exchange: Any, symbol: str, iterations: int) -> dict[str, Any]:
    outcome: dict[str, Any] = {"quotes": 0, "skipped": 0, "errors": {}}
    with_retries(exchange, exchange.load_markets)
    for _ in range(iterations):
        try:
            book = with_retries(exchange, lambda: exchange.fetch_order_book(symbol, limit=5))
            mid = (book["bids"][0][0] + book["asks"][0][0]) / 2
            outcome["quotes"] += 1
            outcome["last_mid"] = mid
        except ccxt.NetworkError as exc:
            # The tick is lost, the bot is not: skip and go on with the next one.
            outcome["skipped"] += 1
            name = type(exc).__name__
            outcome["errors"][name] = outcome["errors"].get(name, 0) + 1
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sandbox", action="store_true", help="use the exchange's testnet")
    parser.add_argument("--loopback", action="store_true",
                        help="start chaos_shims' loopback exchange and trade against it")
    args = parser.parse_args(argv)

    config: dict[str, Any] = {"enableRateLimit": True}
    server = None
    if args.loopback:
        from chaos_shims.exchange import LoopbackExchange

        server = LoopbackExchange().start()
        config = {**server.ccxt_config(), "enableRateLimit": False}
    else:
        config.update(apiKey=os.environ.get("EXCHANGE_API_KEY"),
                      secret=os.environ.get("EXCHANGE_SECRET"))
    exchange = getattr(ccxt, args.exchange)(config)
    if args.sandbox:
        exchange.set_sandbox_mode(True)
    try:
        print(json.dumps(run(exchange, args.symbol, args.iterations)))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
