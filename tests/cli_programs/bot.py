"""An unmodified ccxt bot: load markets, fetch the order book a few times, print what happened.

usage: python bot.py CCXT_CONFIG_JSON [CALLS]

Prints one JSON object: ``{"load_markets": OUTCOME, "fetch_order_book": [OUTCOME, ...]}`` where
an outcome is "ok" or the name of the ccxt exception class raised. It knows nothing of
chaos_shims.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import ccxt


def outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except ccxt.BaseError as exc:
        return type(exc).__name__
    return "ok"


def main() -> None:
    config = json.loads(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    exchange = ccxt.binance(config)
    report = {
        "load_markets": outcome(exchange.load_markets),
        "fetch_order_book": [outcome(lambda: exchange.fetch_order_book("BTC/USDT"))
                             for _ in range(calls)],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
