"""`import chaos_shims.auto` first thing: chaos as the environment says, no other change.

    CHAOS_SHIMS_ENABLED=1 CHAOS_SHIMS_DRY_RUN=0 CHAOS_SHIMS_BURST_ON_SEC=0 \\
    CHAOS_SHIMS_EXCH_5XX=0.5 CHAOS_SHIMS_SEED=7 CHAOS_SHIMS_INCLUDE_OPS=fetch_ticker \
    python examples/auto_activation.py

include_ops keeps the blast radius to fetch_ticker: loading the markets is never faulted.
"""


import chaos_shims.auto  # noqa: F401, I001  (first: it patches ccxt when ccxt is imported)

import ccxt

from chaos_shims.exchange import LoopbackExchange

with LoopbackExchange() as server:
    exchange = ccxt.binance({**server.ccxt_config(), "enableRateLimit": False})
    exchange.load_markets()
    outcomes = []
    for _ in range(10):
        try:
            exchange.fetch_ticker("BTC/USDT")
            outcomes.append("ok")
        except ccxt.NetworkError as exc:
            outcomes.append(type(exc).__name__)
    print(" ".join(outcomes))
