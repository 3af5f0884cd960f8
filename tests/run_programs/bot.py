"""A small ccxt bot that tells chaos_shims about its loop, for the run-lifecycle tests.

usage: python bot.py CCXT_CONFIG_JSON MODE TICKS

Chaos comes from the environment (``import chaos_shims.auto``). Each tick fetches the loopback
order book and reports one cancel. MODE says how the process ends after TICKS ticks:
``exit`` (normally), ``raise`` (an uncaught exception), ``wait`` (prints "ready" and keeps
ticking until a signal ends it), ``handler`` (as ``wait``, with the bot's own SIGTERM handler
that exits with status 3).
"""

import chaos_shims.auto  # noqa: I001  (first thing, as a user would)

import json
import signal
import sys
import time
from types import FrameType

import ccxt

import chaos_shims
from chaos_shims import run
from chaos_shims.ticks import report_cancels, tick

# Until activation starts the run itself (activate_from_environment -> start_run).
if run.current_run() is None:
    run.start_run(chaos_shims.active_injector())


def one_tick(exchange: ccxt.Exchange) -> None:
    with tick():
        exchange.fetch_order_book("BTC/USDT")
        report_cancels(1)


def main() -> None:
    config, mode, count = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    exchange = ccxt.binance(config)
    exchange.load_markets()
    if mode == "handler":
        def graceful(signum: int, frame: FrameType | None) -> None:
            print("graceful", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, graceful)
    for _ in range(count):
        one_tick(exchange)
    if mode == "raise":
        raise RuntimeError("the bot gave up")
    if mode in ("wait", "handler"):
        print("ready", flush=True)
        deadline = time.monotonic() + 30  # never outlive the test
        while time.monotonic() < deadline:
            one_tick(exchange)
            time.sleep(0.01)
    print("done", flush=True)


if __name__ == "__main__":
    main()
