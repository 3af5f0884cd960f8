"""Latency injection: how exactly ``lat_spike_ms`` delays a real ccxt REST call, sync and async,
and whether the event loop stays free while an async call is held back.

Run: python -m benchmarks --only latency,loop_lag   (not part of the test suite)

Every call is a real ``fetch_order_book`` of an unmodified ``ccxt.binance`` (sync) or
``ccxt.async_support.binance`` against the loopback exchange, with ``lat_spike_ms`` live and
always ON. Two errors are measured per call:

* the injected delay alone (the verdict): from the moment chaos_shims' ``BaseExchange.fetch``
  is entered to the moment the request is handed to ccxt's own transport. Both moments are
  stamped by plain pass-through functions: one set on the client instance in front of the
  class's ``fetch`` (ccxt's ``fetch2`` calls ``self.fetch``), one put on ``BaseExchange.fetch``
  before activation, which chaos_shims then wraps. error = injected - target.
* end to end: the whole call's duration minus the target minus the median duration of the
  same call made without chaos_shims right after the app itself slept the target (calls
  alternate). On a busy machine a call made after an idle pause takes milliseconds longer
  than one made back to back, with or without chaos_shims: the paired baseline takes that
  out. This one also carries the loopback round trip's own jitter.

The app's own pause before each baseline call is timed too: the error of the same sleep made
by the app itself, the floor any sleeping injection inherits from the machine and from
``time.sleep`` / ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from benchmarks.stats import summary

TARGETS_MS = (10, 50, 100, 500, 1000)
#: calls per target: enough for a p99 at 10 ms; fewer (the p99 is then the maximum) where each
#: call is long
FULL_CALLS = dict(zip(TARGETS_MS, (150, 80, 50, 12, 8), strict=True))
QUICK_CALLS = dict(zip(TARGETS_MS, (20, 8, 5, 2, 2), strict=True))
SYMBOL = "BTC/USDT"


class Stamps:
    """When the latest request entered chaos_shims' fetch and when it reached the transport."""

    entered = 0.0
    sent = 0.0

    @property
    def injected_ms(self) -> float:
        return (self.sent - self.entered) * 1e3


@contextmanager
def stamped_transport(stamps: Stamps) -> Iterator[None]:
    """Both ``BaseExchange.fetch`` (sync and async) stamp ``stamps.sent`` and call ccxt's own;
    put in place before chaos_shims is activated, so its wrapper calls them. Restored after."""
    from ccxt.async_support.base.exchange import BaseExchange as AsyncBase
    from ccxt.base.exchange import BaseExchange as SyncBase

    sync_fetch = SyncBase.__dict__["fetch"]
    async_fetch = AsyncBase.__dict__["fetch"]

    def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        stamps.sent = time.perf_counter()
        return sync_fetch(self, *args, **kwargs)

    async def afetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        stamps.sent = time.perf_counter()
        return await async_fetch(self, *args, **kwargs)

    SyncBase.fetch, AsyncBase.fetch = fetch, afetch
    try:
        yield
    finally:
        SyncBase.fetch, AsyncBase.fetch = sync_fetch, async_fetch


def stamp_entry(client: Any, stamps: Stamps, *, is_async: bool) -> None:
    """``client.fetch`` (an instance attribute, in front of the class's, chaos_shims' when
    patched) stamps ``stamps.entered`` and calls the class's current ``fetch``."""
    cls = type(client)

    if is_async:
        async def entering_async(*args: Any, **kwargs: Any) -> Any:
            stamps.entered = time.perf_counter()
            return await cls.fetch(client, *args, **kwargs)
        client.fetch = entering_async
    else:
        def entering(*args: Any, **kwargs: Any) -> Any:
            stamps.entered = time.perf_counter()
            return cls.fetch(client, *args, **kwargs)
        client.fetch = entering


def _spike(target_ms: float) -> None:
    from chaos_shims.activation import activate

    activate(None, enabled=True, dry_run=False, burst_on_sec=0, lat_spike_ms=target_ms, seed=1)


class Series:
    """One target's pairs: the app's own pause and call, then the call with the spike."""

    def __init__(self, target_ms: float) -> None:
        self.target_ms = target_ms
        self.pauses: list[float] = []
        self.baseline: list[float] = []
        self.durations: list[float] = []
        self.injected: list[float] = []

    def result(self) -> dict[str, Any]:
        target = self.target_ms
        baseline_ms = statistics.median(self.baseline)
        return {
            "target_ms": target,
            "injected_error_ms": summary(abs(ms - target) for ms in self.injected),
            "end_to_end_error_ms": summary(abs(ms - baseline_ms - target) for ms in self.durations),
            # the same sleep made by the app itself, in the same pairs: the floor any sleeping
            # injection inherits from the machine and the sleep function
            "own_sleep_error_ms": summary(abs(ms - target) for ms in self.pauses),
            "injected_ms_median": statistics.median(self.injected),
            "baseline_call_ms": baseline_ms,
        }


def _sync_series(client: Any, stamps: Stamps, calls: Mapping[int, int]) -> dict[str, Any]:
    """Pairs of calls per target: the app sleeps the target itself, then calls without chaos
    (the baseline: a call made after an idle pause is slower on a busy machine than one made
    back to back); then the same call with the spike."""
    from chaos_shims.activation import deactivate

    def timed() -> float:
        started = time.perf_counter()
        client.fetch_order_book(SYMBOL, limit=5)
        return (time.perf_counter() - started) * 1e3

    def pause(ms: float) -> float:
        started = time.perf_counter()
        time.sleep(ms / 1e3)
        return (time.perf_counter() - started) * 1e3

    by_target: dict[str, Any] = {}
    try:
        for target_ms, count in calls.items():
            series = Series(target_ms)
            for _ in range(count):
                series.pauses.append(pause(target_ms))
                series.baseline.append(timed())
                _spike(target_ms)
                series.durations.append(timed())
                series.injected.append(stamps.injected_ms)
                deactivate(unpatch=False)
            by_target[str(target_ms)] = series.result()
    finally:
        deactivate()
    return {"targets": by_target}


async def _async_series(client: Any, stamps: Stamps, calls: Mapping[int, int]) -> dict[str, Any]:
    """As ``_sync_series``, in a coroutine: the baseline pause is the app's own asyncio.sleep."""
    from chaos_shims.activation import deactivate

    async def timed() -> float:
        started = time.perf_counter()
        await client.fetch_order_book(SYMBOL, limit=5)
        return (time.perf_counter() - started) * 1e3

    async def pause(ms: float) -> float:
        started = time.perf_counter()
        await asyncio.sleep(ms / 1e3)
        return (time.perf_counter() - started) * 1e3

    by_target: dict[str, Any] = {}
    try:
        for target_ms, count in calls.items():
            series = Series(target_ms)
            for _ in range(count):
                series.pauses.append(await pause(target_ms))
                series.baseline.append(await timed())
                _spike(target_ms)
                series.durations.append(await timed())
                series.injected.append(stamps.injected_ms)
                deactivate(unpatch=False)
            by_target[str(target_ms)] = series.result()
    finally:
        deactivate()
    return {"targets": by_target}


def sleep_floor(sleeps: Mapping[int, int], *, is_async: bool) -> dict[str, Any]:
    """How much longer than asked ``time.sleep`` or ``asyncio.sleep`` itself takes (ms), per
    duration: what any sleeping injection inherits."""
    def oversleep_sync(ms: int) -> float:
        started = time.perf_counter()
        time.sleep(ms / 1e3)
        return (time.perf_counter() - started) * 1e3 - ms

    async def oversleep_async(ms: int) -> float:
        started = time.perf_counter()
        await asyncio.sleep(ms / 1e3)
        return (time.perf_counter() - started) * 1e3 - ms

    async def all_async() -> dict[str, Any]:
        return {str(ms): summary([await oversleep_async(ms) for _ in range(n)])
                for ms, n in sleeps.items()}

    if is_async:
        return asyncio.run(all_async())
    return {str(ms): summary(oversleep_sync(ms) for _ in range(n)) for ms, n in sleeps.items()}


def _worst(series: Mapping[str, Any], measure: str, statistic: str) -> float:
    return max(float(t[measure][statistic]) for t in series["targets"].values())


def bench_latency(quick: bool = False) -> dict[str, Any]:
    """The injection error for every target, sync then async."""
    import ccxt
    import ccxt.async_support as ccxt_async

    from chaos_shims.exchange import LoopbackExchange

    calls = QUICK_CALLS if quick else FULL_CALLS
    stamps = Stamps()
    results: dict[str, Any] = {"calls_per_target": {str(k): v for k, v in calls.items()}}
    with LoopbackExchange() as exchange, stamped_transport(stamps):
        config = {**exchange.ccxt_config(), "enableRateLimit": False}
        client = ccxt.binance(config)
        client.load_markets()
        stamp_entry(client, stamps, is_async=False)
        results["sync"] = _sync_series(client, stamps, calls)

        async def run_async() -> dict[str, Any]:
            aclient = ccxt_async.binance(config)
            try:
                await aclient.load_markets()
                stamp_entry(aclient, stamps, is_async=True)
                return await _async_series(aclient, stamps, calls)
            finally:
                await aclient.close()

        results["async"] = asyncio.run(run_async())
    for kind in ("sync", "async"):
        results[f"{kind}_worst_p99_injected_error_ms"] = _worst(results[kind], "injected_error_ms",
                                                                 "p99")
        results[f"{kind}_worst_p99_end_to_end_error_ms"] = _worst(
            results[kind], "end_to_end_error_ms", "p99")
        results[f"{kind}_worst_p99_own_sleep_error_ms"] = _worst(
            results[kind], "own_sleep_error_ms", "p99")
    return results


# -- the event loop during an async spike ---------------------------------------------------

SIBLING_PERIOD_S = 0.001
SPIKE_MS = 500


async def _sibling(oversleeps: list[float], running: Callable[[], bool]) -> None:
    """Sleep 1 ms at a time and record how much longer each sleep took (ms)."""
    while running():
        started = time.perf_counter()
        await asyncio.sleep(SIBLING_PERIOD_S)
        oversleeps.append((time.perf_counter() - started - SIBLING_PERIOD_S) * 1e3)


def bench_loop_lag(spiked_calls: int = 6, idle_s: float = 1.0) -> dict[str, Any]:
    """A sibling task's oversleep while async ``fetch_order_book`` calls are held back 500 ms by
    ``lat_spike_ms``, and, for scale, while the loop has nothing else to do."""
    import ccxt.async_support as ccxt_async

    from chaos_shims.activation import deactivate
    from chaos_shims.exchange import LoopbackExchange

    async def run(exchange: LoopbackExchange) -> dict[str, Any]:
        client = ccxt_async.binance({**exchange.ccxt_config(), "enableRateLimit": False})
        try:
            await client.load_markets()
            idle: list[float] = []
            stop_idle = False
            task = asyncio.create_task(_sibling(idle, lambda: not stop_idle))
            await asyncio.sleep(idle_s)
            stop_idle = True
            await task

            during: list[float] = []
            calls_ms: list[float] = []
            spiking = True
            _spike(SPIKE_MS)
            try:
                task = asyncio.create_task(_sibling(during, lambda: spiking))
                for _ in range(spiked_calls):
                    started = time.perf_counter()
                    await client.fetch_order_book(SYMBOL, limit=5)
                    calls_ms.append((time.perf_counter() - started) * 1e3)
                spiking = False
                await task
            finally:
                deactivate()
            return {"idle_oversleep_ms": summary(idle), "spike_oversleep_ms": summary(during),
                    "spiked_call_ms": summary(calls_ms)}
        finally:
            await client.close()

    with LoopbackExchange() as exchange:
        result = asyncio.run(run(exchange))
    return {"spike_ms": SPIKE_MS, "spiked_calls": spiked_calls,
            "sibling_period_ms": SIBLING_PERIOD_S * 1e3, **result}
