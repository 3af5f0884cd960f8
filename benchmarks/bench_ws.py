"""Websocket lag: how exactly ``ws_lag_ms`` holds back the messages of a real ``websockets``
connection to the loopback stream server (``chaos_shims.exchange.ws.LoopbackWsExchange``,
Binance-shaped trade events at 50 a second), on the asyncio client and on the sync client.

Run: python -m benchmarks --only ws   (not part of the test suite)

Two errors per message, with the lag live and always ON:

* the injected hold alone (the verdict): from the moment the library's own ``recv`` returned
  the message (stamped by a plain pass-through function put on the client class before
  activation, which chaos_shims then wraps: the same moment chaos_shims takes as the arrival)
  to the moment the application's ``recv`` returned it. error = hold - lag.
* end to end: the message's lateness by the server's event time (``E``, whole milliseconds)
  minus the lag minus the median lateness of the same stream without chaos_shims.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.bench_latency import sleep_floor
from benchmarks.stats import summary

LAGS_MS = (10, 100, 500)
RATE = 50.0
STREAM = "btcusdt@trade"
FULL_MESSAGES = 150
QUICK_MESSAGES = 25
RECV_TIMEOUT_S = 5.0


@contextmanager
def stamped_recv(cls: type, arrivals: dict[Any, float], *, is_async: bool) -> Iterator[None]:
    """``cls.recv`` (inherited from the library's Connection) stamps each message it returns in
    ``arrivals``; removed after, so the class inherits again."""
    library_recv: Callable[..., Any] = inspect.getattr_static(cls, "recv")
    if "recv" in cls.__dict__:
        raise RuntimeError(f"{cls.__name__}.recv is patched already: deactivate chaos first")

    if is_async:
        async def recv_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            message = await library_recv(self, *args, **kwargs)
            arrivals[message] = time.perf_counter()
            return message
        setattr(cls, "recv", recv_async)  # noqa: B010 - on the class, in front of the base's
    else:
        def recv(self: Any, *args: Any, **kwargs: Any) -> Any:
            message = library_recv(self, *args, **kwargs)
            arrivals[message] = time.perf_counter()
            return message
        setattr(cls, "recv", recv)  # noqa: B010
    try:
        yield
    finally:
        delattr(cls, "recv")


class Messages:
    """Per message handed to the app: the hold (ms) and the lateness by the event time (ms)."""

    def __init__(self, arrivals: dict[Any, float]) -> None:
        self.arrivals = arrivals
        self.holds: list[float] = []
        self.lateness: list[float] = []

    def handed(self, message: Any) -> None:
        now = time.perf_counter()
        self.holds.append((now - self.arrivals.pop(message)) * 1e3)
        self.lateness.append(time.time() * 1e3 - float(json.loads(message)["E"]))


def _lag(lag_ms: float) -> None:
    from chaos_shims.activation import activate

    activate(None, enabled=True, dry_run=False, burst_on_sec=0, ws_lag_ms=lag_ms, seed=1)


def _errors(lag_ms: float, messages: Messages, baseline_lateness_ms: float) -> dict[str, Any]:
    return {
        "lag_ms": lag_ms,
        "messages": len(messages.holds),
        "hold_error_ms": summary(abs(hold - lag_ms) for hold in messages.holds),
        "end_to_end_error_ms": summary(abs(late - lag_ms - baseline_lateness_ms)
                                       for late in messages.lateness),
    }


async def _asyncio_client(url: str, count: int, arrivals: dict[Any, float]) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from chaos_shims.activation import deactivate

    async def read_all(messages: Messages) -> None:
        async with connect(url) as ws:
            for _ in range(count):
                messages.handed(await ws.recv())

    async def read(lag_ms: float | None) -> Messages:
        if lag_ms is not None:
            _lag(lag_ms)
        messages = Messages(arrivals)
        try:
            # one deadline for the whole connection: a task per recv would add to each hold
            await asyncio.wait_for(read_all(messages),
                                   RECV_TIMEOUT_S + count / RATE * 2 + (lag_ms or 0) / 1e3)
        finally:
            deactivate()
            arrivals.clear()  # read ahead, never handed: the connection is gone
        return messages

    baseline = statistics.median((await read(None)).lateness)
    return {"baseline_lateness_ms": baseline,
            "lags": {str(lag): _errors(lag, await read(lag), baseline) for lag in LAGS_MS}}


def _sync_client(url: str, count: int, arrivals: dict[Any, float]) -> dict[str, Any]:
    from websockets.sync.client import connect

    from chaos_shims.activation import deactivate

    def read(lag_ms: float | None) -> Messages:
        if lag_ms is not None:
            _lag(lag_ms)
        messages = Messages(arrivals)
        try:
            with connect(url) as ws:
                for _ in range(count):
                    messages.handed(ws.recv(timeout=RECV_TIMEOUT_S + (lag_ms or 0) / 1e3))
        finally:
            deactivate()
            arrivals.clear()
        return messages

    baseline = statistics.median(read(None).lateness)
    return {"baseline_lateness_ms": baseline,
            "lags": {str(lag): _errors(lag, read(lag), baseline) for lag in LAGS_MS}}


def bench_ws(quick: bool = False) -> dict[str, Any]:
    from websockets.asyncio.client import ClientConnection as AsyncClientConnection
    from websockets.sync.client import ClientConnection as SyncClientConnection

    from chaos_shims.activation import deactivate
    from chaos_shims.exchange.ws import LoopbackWsExchange

    count = QUICK_MESSAGES if quick else FULL_MESSAGES
    arrivals: dict[Any, float] = {}
    deactivate()  # nothing of chaos_shims on the client classes before the stamps go on
    results: dict[str, Any] = {"messages_per_lag": count, "rate_per_s": RATE}
    with LoopbackWsExchange(rate=RATE) as server:
        url = server.raw_url(STREAM)
        with stamped_recv(AsyncClientConnection, arrivals, is_async=True):
            results["asyncio"] = asyncio.run(_asyncio_client(url, count, arrivals))
        with stamped_recv(SyncClientConnection, arrivals, is_async=False):
            results["sync"] = _sync_client(url, count, arrivals)
    # what the asyncio client's hold inherits from asyncio.sleep itself
    results["asyncio_sleep_floor_ms"] = sleep_floor(
        dict.fromkeys(LAGS_MS, 2 if quick else 5), is_async=True)
    for client in ("asyncio", "sync"):
        lags = results[client]["lags"].values()
        results[f"{client}_worst_median_hold_error_ms"] = max(
            lag["hold_error_ms"]["median"] for lag in lags)
        results[f"{client}_worst_median_end_to_end_error_ms"] = max(
            lag["end_to_end_error_ms"]["median"] for lag in lags)
    return results
