"""ws_lag_ms on the websockets clients: the contract (through the sync client), then lag
exactness and order on the asyncio, legacy and sync clients, cancellation safety, the event
loop kept free, the duty cycle's edge, and the gap metric. ccxt.pro: tests/integrations."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
import warnings
from typing import Any

import pytest
from websockets.sync.client import connect as sync_connect

from chaos_shims.activation import deactivate
from tests.exchange.ws_fixtures import TRADES, lateness_ms
from tests.loop_watch import watched
from tests.scenarios.contract import ScenarioContract

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]


#: the contract's lag: short, so the messages it provokes stay fast
CONTRACT_LAG_MS = 60
#: the exactness tests' lag
LAG_MS = 200


class TestWsLag(ScenarioContract):
    key = "ws_lag_ms"
    live_keys = {"ws_lag_ms": CONTRACT_LAG_MS}
    live_outcome = "late"
    seed_events = 4

    @pytest.fixture
    def scenario_target(self, ws_server: Any) -> str:
        return str(ws_server.raw_url(TRADES))

    def provoke(self, target: Any) -> str:
        """One message on a fresh sync connection: late by the lag, or on time."""
        with sync_connect(target) as ws:
            late = lateness_ms(ws.recv(timeout=5))
        return "late" if late >= CONTRACT_LAG_MS * 0.9 else "ok"

    def test_records_name_the_connection(self, ws_server: Any) -> None:
        injector = self.activate()
        url = ws_server.combined_url(TRADES)
        with sync_connect(url) as ws:
            ws.recv(timeout=5)
        # one record per message that arrived: the first, and any read while it was held
        records = injector.records(self.key)
        assert records
        for record in records:
            assert (record.mode, record.exchange, record.op) == ("live", None, "recv")
            assert record.target == ws_server.url + "/stream"  # no query string
            assert record.duration_ms == CONTRACT_LAG_MS


def _contiguous(ids: list[int]) -> bool:
    return ids == list(range(ids[0], ids[0] + len(ids)))


def _summary(late: list[float]) -> str:
    return f"median {statistics.median(late):.1f} ms, min {min(late):.1f}, max {max(late):.1f}"


async def _lag_on_asyncio_client(connect: Any, url: str, count: int) -> tuple[list[float], list[int]]:
    late: list[float] = []
    ids: list[int] = []
    async with connect(url) as ws:
        async for raw in ws:
            late.append(lateness_ms(raw))
            ids.append(json.loads(raw)["t"])
            if len(ids) == count:
                break
    return late, ids


@pytest.mark.asyncio
async def test_asyncio_client_lag_is_exact_in_order_and_leaves_the_loop_free(
    ws_server: Any, registry: Any,
) -> None:
    from websockets.asyncio.client import connect

    TestWsLag().activate(registry, ws_lag_ms=LAG_MS)
    (late, ids), elapsed, ticks = await watched(
        _lag_on_asyncio_client(connect, ws_server.raw_url(TRADES), 30))
    print("asyncio client, 200 ms lag:", _summary(late))
    assert abs(statistics.median(late) - LAG_MS) <= LAG_MS * 0.05
    assert min(late) >= LAG_MS - 1  # E is whole ms
    assert _contiguous(ids)
    # a sibling task woke every 5 ms throughout: nothing blocked the loop
    assert ticks >= elapsed / 0.005 * 0.5
    # the gap between consecutive messages is the stream's 20 ms, not the lag
    count = registry.get_sample_value("mm_ws_gap_ms_count")
    assert count == 29
    assert registry.get_sample_value("mm_ws_gap_ms_sum") / count == pytest.approx(20, abs=5)


@pytest.mark.asyncio
async def test_legacy_client_lag_is_exact_and_in_order(ws_server: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from websockets.legacy.client import connect

    TestWsLag().activate(ws_lag_ms=LAG_MS)
    late, ids = await _lag_on_asyncio_client(connect, ws_server.raw_url(TRADES), 30)
    print("legacy client, 200 ms lag:", _summary(late))
    assert abs(statistics.median(late) - LAG_MS) <= LAG_MS * 0.05
    assert _contiguous(ids)


def test_sync_client_lag_is_exact_and_in_order(ws_server: Any) -> None:
    TestWsLag().activate(ws_lag_ms=LAG_MS)
    late: list[float] = []
    ids: list[int] = []
    with sync_connect(ws_server.raw_url(TRADES)) as ws:
        for raw in ws:
            late.append(lateness_ms(raw))
            ids.append(json.loads(raw)["t"])
            if len(ids) == 30:
                break
    print("sync client, 200 ms lag:", _summary(late))
    assert abs(statistics.median(late) - LAG_MS) <= LAG_MS * 0.05
    assert _contiguous(ids)


def test_sync_recv_timeout_shorter_than_the_lag_keeps_the_message(ws_server: Any) -> None:
    TestWsLag().activate(ws_lag_ms=LAG_MS)
    with sync_connect(ws_server.raw_url(TRADES)) as ws:
        timeouts = 0
        ids: list[int] = []
        while len(ids) < 5:
            try:
                ids.append(json.loads(ws.recv(timeout=0.05))["t"])
            except TimeoutError:
                timeouts += 1
    assert timeouts >= 3  # the first message was held 200 ms, past several 50 ms timeouts
    assert _contiguous(ids)


@pytest.mark.asyncio
async def test_a_cancelled_recv_loses_and_reorders_nothing(ws_server: Any) -> None:
    from websockets.asyncio.client import connect

    TestWsLag().activate(ws_lag_ms=LAG_MS)
    ids: list[int] = []
    cancelled = 0
    async with connect(ws_server.raw_url(TRADES)) as ws:
        while len(ids) < 25:
            try:
                # shorter than the lag (often cancelled while held) and than the stream's
                # period (sometimes cancelled inside the library's own recv)
                raw = await asyncio.wait_for(ws.recv(), 0.013)
            except TimeoutError:
                cancelled += 1
                continue
            ids.append(json.loads(raw)["t"])
    assert cancelled >= 10
    assert _contiguous(ids)


@pytest.mark.asyncio
async def test_messages_of_an_off_phase_never_overtake_held_ones(ws_server: Any) -> None:
    from websockets.asyncio.client import connect

    TestWsLag().activate(ws_lag_ms=LAG_MS, burst_on_sec=0.4, burst_off_sec=0.4)
    late, ids = await _lag_on_asyncio_client(connect, ws_server.raw_url(TRADES), 50)
    assert _contiguous(ids)
    assert late[0] >= LAG_MS - 1  # ON: held
    first_on_time = next(i for i, value in enumerate(late) if value < 20)  # OFF: on time
    last_held = max(i for i in range(first_on_time) if late[i] >= LAG_MS - 1)
    # when ON ends, messages that arrive in OFF wait behind the held ones and come out right
    # after them: lateness steps down message by message (two events of one market step
    # share a stamp), nothing jumps ahead
    ending = late[last_held:first_on_time + 1]
    assert len(ending) >= 3
    assert all(b <= a + 1 for a, b in itertools.pairwise(ending)), [round(x) for x in ending]


@pytest.mark.asyncio
async def test_gaps_are_observed_only_while_chaos_is_active(ws_server: Any, registry: Any) -> None:
    from websockets.asyncio.client import connect

    TestWsLag().activate(registry, ws_lag_ms=1)
    async with connect(ws_server.raw_url(TRADES)) as ws:
        for _ in range(4):
            await ws.recv()
        assert registry.get_sample_value("mm_ws_gap_ms_count") == 3
        deactivate(unpatch=False)  # the wrapper stays, dormant
        started = time.perf_counter()
        for _ in range(4):
            await ws.recv()
        assert time.perf_counter() - started < 0.2
    assert registry.get_sample_value("mm_ws_gap_ms_count") == 3
