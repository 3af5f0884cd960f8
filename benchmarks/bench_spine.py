"""Benchmarks of the spine: what chaos_shims costs a process and a REST call.

Run: python benchmarks/bench_spine.py   (takes about a minute; not part of the test suite)

1. Interpreter start with `import chaos_shims.auto` and chaos off, against a bare start.
2. What activation imports before any target library is imported.
3. A ccxt REST call (sync binance fetch_order_book, full ccxt code path, transport answered
   in-process so the network does not drown the difference), without chaos_shims, patched but
   inactive, and active with a scenario armed that does not fire; the same for the async
   wrapper path; and, for scale, the same call against the loopback exchange over TCP.
4. Decisions per second on one thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 7


def best_per_call(fn: Callable[[], Any], number: int) -> float:
    """Median over ROUNDS of the mean seconds per call (each round runs `number` calls)."""
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - started) / number)
    return statistics.median(samples)


def interpreter_start(code: str, env: dict[str, str], runs: int = 40) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _user_env(**extra: str) -> dict[str, str]:
    # As on a user's machine: bytecode caches written and used, no chaos settings inherited.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHAOS_SHIMS_") and k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


def bench_start(pairs: int = 60) -> dict[str, float]:
    """Bare and `import chaos_shims.auto` starts, interleaved so that drift in the machine's
    load hits both alike; the added cost is the median of the paired differences. The import
    alone is also timed inside the interpreter (-X importtime)."""
    env = _user_env()
    interpreter_start("import chaos_shims.auto", env, runs=2)  # write the bytecode caches
    differences, bare = [], []
    for _ in range(pairs):
        plain = interpreter_start("pass", env, runs=1)
        auto = interpreter_start("import chaos_shims.auto", env, runs=1)
        bare.append(plain)
        differences.append(auto - plain)
    timing = subprocess.run([sys.executable, "-X", "importtime", "-c", "import chaos_shims.auto"],
                            env=env, capture_output=True, text=True, check=True).stderr
    last = timing.strip().splitlines()[-1]  # "import time: self | cumulative | chaos_shims.auto"
    import_us = float(last.split("|")[1])
    return {"bare_ms": statistics.median(bare) * 1e3,
            "auto_off_added_ms": statistics.median(differences) * 1e3,
            "auto_off_import_ms": import_us / 1e3}


def bench_activation_imports() -> dict[str, Any]:
    code = (
        "import sys, time; t=time.perf_counter(); import chaos_shims.auto; "
        "d=time.perf_counter()-t; heavy=[m for m in ('wrapt','prometheus_client','yaml','asyncio',"
        "'ccxt','aiohttp','websockets','requests') if m in sys.modules]; "
        "import json; print(json.dumps({'activation_ms': d*1e3, 'heavy_imported': heavy}))"
    )
    env = _user_env(CHAOS_SHIMS_ENABLED="1", CHAOS_SHIMS_EXCH_429="0.1")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout
    return dict(json.loads(out))


def _time_calls(client: Any, number: int) -> float:
    return best_per_call(client.fetch_time, number) * 1e6


async def _atime_calls(client: Any, number: int) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(number):
            await client.fetch_time()
        samples.append((time.perf_counter() - started) / number)
    return statistics.median(samples) * 1e6


def bench_rest() -> dict[str, float]:
    """ccxt's whole REST path (unified method, implicit endpoint, fetch2, sign) with the transport
    inside BaseExchange.fetch replaced by an instant one, so that what remains is ccxt plus
    whatever chaos_shims adds around fetch and the unified method."""
    import ccxt
    import ccxt.async_support as ccxt_async

    from chaos_shims.activation import activate, deactivate
    from chaos_shims.exchange import LoopbackExchange

    with LoopbackExchange() as exchange:
        config = {**exchange.ccxt_config(), "enableRateLimit": False}
        tcp_client = ccxt.binance(config)
        tcp_client.load_markets()
        loopback_us = best_per_call(lambda: tcp_client.fetch_order_book("BTC/USDT"), 300) * 1e6

    sync_base = sys.modules["ccxt.base.exchange"].BaseExchange
    async_base = sys.modules["ccxt.async_support.base.exchange"].BaseExchange
    originals = (sync_base.__dict__["fetch"], async_base.__dict__["fetch"])

    def instant_fetch(self: Any, url: str, method: str = "GET", headers: Any = None,
                      body: Any = None) -> Any:
        return {"serverTime": 1}

    async def instant_async_fetch(self: Any, url: str, method: str = "GET", headers: Any = None,
                                  body: Any = None) -> Any:
        return {"serverTime": 1}

    sync_base.fetch = instant_fetch
    async_base.fetch = instant_async_fetch
    number = 20000
    results: dict[str, float] = {"loopback_fetch_order_book_us": loopback_us}
    try:
        def measure(label: str) -> None:
            client = ccxt.binance({"enableRateLimit": False})
            results[f"sync_{label}_us"] = _time_calls(client, number)

            async def run() -> float:
                aclient = ccxt_async.binance({"enableRateLimit": False})
                try:
                    return await _atime_calls(aclient, number)
                finally:
                    await aclient.close()

            results[f"async_{label}_us"] = asyncio.run(run())

        measure("bare")
        activate(None, enabled=True, exch_429=0.1)
        deactivate(unpatch=False)  # patched, dormant
        measure("dormant")
        # armed, live, always ON: draws on every request and never fires
        activate(None, enabled=True, dry_run=False, burst_on_sec=0, exch_429=1e-12, seed=1)
        measure("active")
        deactivate()
    finally:
        sync_base.fetch, async_base.fetch = originals
    for kind in ("sync", "async"):
        added = results[f"{kind}_active_us"] - results[f"{kind}_bare_us"]
        results[f"{kind}_active_added_us"] = added
        results[f"{kind}_added_pct_of_loopback_call"] = added / loopback_us * 100
    return results


def bench_decisions() -> dict[str, float]:
    from chaos_shims.activation import resolve
    from chaos_shims.core.injector import ChaosInjector
    from chaos_shims.core.registry import REST

    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "exch_429": 1e-12,
                      "seed": 1}, environ={})
    injector = ChaosInjector(config, export_metrics=False)
    per_call = best_per_call(lambda: injector.plan(REST, "binance", "fetch_ticker", "/x"), 200_000)
    return {"plan_ns": per_call * 1e9, "decisions_per_sec": 1 / per_call}


def main() -> None:
    results: dict[str, Any] = {}
    results.update(bench_start())
    results.update(bench_activation_imports())
    results.update(bench_rest())
    results.update(bench_decisions())
    width = max(map(len, results))
    for key, value in results.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main()
