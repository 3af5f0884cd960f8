"""``tick()`` and ``report_cancels()`` as a bot uses them, sync and async; the stop condition end
to end with real ccxt against the loopback exchange, ``lat_spike_ms`` making ticks miss."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from chaos_shims import run, ticks
from chaos_shims.activation import activate
from chaos_shims.core.ticks import TickStats

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning"),
              pytest.mark.usefixtures("no_run_left")]


def stats() -> TickStats:
    found = ticks.current_stats()
    assert found is not None
    return found


def test_chaos_off_ticks_do_nothing_and_exceptions_pass_through() -> None:
    assert ticks.current_stats() is None
    with ticks.tick():
        pass
    ticks.report_cancels(3)
    error = ValueError("the bot's own")
    with pytest.raises(ValueError) as raised, ticks.tick():
        raise error
    assert raised.value is error
    assert ticks.current_stats() is None


def test_ticks_are_measured_while_chaos_is_active(registry: Any) -> None:
    activate(enabled=True, tick_deadline_ms=15, registry=registry)
    with ticks.tick():
        time.sleep(0.02)
    with ticks.tick():
        ticks.report_cancels(2)
    error = KeyError("order")
    with pytest.raises(KeyError) as raised, ticks.tick():
        raise error
    assert raised.value is error  # unchanged: the same object, no wrapping
    measured = stats().snapshot()
    assert measured["ticks"]["count"] == 3
    assert measured["ticks"]["deadline_misses"] == 1
    assert measured["ticks"]["error_ticks"] == 1
    assert measured["ticks"]["errors_by_type"] == {"KeyError": 1}
    assert measured["cancels"]["total"] == 2
    assert measured["ticks"]["latency_ms"]["max"] >= 20


def test_a_new_activation_gets_fresh_statistics(registry: Any) -> None:
    activate(enabled=True, registry=registry)
    with ticks.tick():
        pass
    first = stats()
    activate(enabled=True, registry=registry)
    assert stats() is not first
    assert stats().ticks == 0


@pytest.mark.asyncio
async def test_ticks_in_coroutines_with_and_async_with(registry: Any) -> None:
    activate(enabled=True, tick_deadline_ms=1000, registry=registry)

    async def loop(n: int, use_async_with: bool) -> None:
        for _ in range(n):
            if use_async_with:
                async with ticks.tick():
                    await asyncio.sleep(0.01)
            else:
                with ticks.tick():
                    await asyncio.sleep(0.01)

    await asyncio.gather(loop(3, False), loop(3, True))
    measured = stats().snapshot()["ticks"]
    assert measured["count"] == 6
    # Each tick's own wall time, even with another loop's ticks interleaved.
    assert 8 <= measured["latency_ms"]["p50"] < 200


@pytest.mark.asyncio
async def test_a_cancelled_tick_is_counted_not_measured(registry: Any) -> None:
    activate(enabled=True, registry=registry)

    async def tick_forever() -> None:
        with ticks.tick():
            await asyncio.sleep(10)

    task = asyncio.create_task(tick_forever())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    measured = stats().snapshot()["ticks"]
    assert (measured["count"], measured["interrupted_ticks"], measured["error_ticks"]) == (0, 1, 0)


def test_bad_cancel_counts_are_ignored_with_one_warning(registry: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    activate(enabled=True, registry=registry)
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        ticks.report_cancels(-1)
        ticks.report_cancels("many")  # type: ignore[arg-type]
        ticks.report_cancels(2.0)  # type: ignore[arg-type]
        ticks.report_cancels(0)
    assert stats().cancels_total == 2
    assert len([r for r in caplog.records if "report_cancels" in r.getMessage()]) == 1


def test_cancel_storm_rule_can_be_set_in_code(registry: Any) -> None:
    activate(enabled=True, registry=registry)
    ticks.set_cancel_storm_rule(cancels=3, window_ticks=2)
    for _ in range(2):
        with ticks.tick():
            ticks.report_cancels(2)
    cancels = stats().snapshot()["cancels"]
    assert cancels["storms"] == 1
    assert cancels["storm_rule"]["definition"] == "3 or more cancels within 2 consecutive ticks"
    activate(enabled=True, registry=registry)  # later statistics keep the rule
    assert stats().storm_rule.cancels == 3


def test_a_failure_to_record_never_reaches_the_bot(registry: Any, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    activate(enabled=True, registry=registry)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("chaos_shims bug")

    monkeypatch.setattr(stats(), "record", broken)
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        for _ in range(3):
            with ticks.tick():
                pass
    assert len([r for r in caplog.records if "could not record a tick" in r.getMessage()]) == 1


def test_stop_condition_rolls_chaos_back_with_real_ccxt(binance: Any, registry: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    injector = activate(enabled=True, dry_run=False, burst_on_sec=0, lat_spike_ms=80,
                        tick_deadline_ms=40, stop_window_ticks=5, stop_deadline_miss=0.2,
                        registry=registry)
    assert injector is not None and injector.mode == "live"
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        for _ in range(5):
            with ticks.tick():
                binance.fetch_order_book("BTC/USDT")
    assert injector.mode == "rolled_back"
    assert [(r["reason"], r["detail"]) for r in injector.rollbacks] == [
        ("deadline_miss", "5 of 5 ticks over 40 ms")]
    assert registry.get_sample_value("mm_chaos_rollbacks_total", {"reason": "deadline_miss"}) == 1
    assert any("rolled back to dry-run" in r.getMessage() for r in caplog.records)

    # From now on the spike is only decided and logged: requests go out at once.
    started = time.perf_counter()
    for _ in range(3):
        with ticks.tick():
            binance.fetch_order_book("BTC/USDT")
    assert time.perf_counter() - started < 3 * 0.08
    assert injector.count("lat_spike_ms", "dry_run") == 3
    assert injector.count("lat_spike_ms", "live") == 5
    stop = stats().snapshot()["ticks"]["stop_condition"]
    assert stop["tripped"] and stop["at_tick"] == 5


@pytest.mark.asyncio
async def test_stop_condition_in_an_async_bot(async_binance: Any, registry: Any) -> None:
    injector = activate(enabled=True, dry_run=False, burst_on_sec=0, lat_spike_ms=80,
                        tick_deadline_ms=40, stop_window_ticks=4, stop_deadline_miss=0.5,
                        registry=registry)
    assert injector is not None
    for _ in range(4):
        async with ticks.tick():
            await async_binance.fetch_order_book("BTC/USDT")
    assert injector.mode == "rolled_back"
    assert injector.rollbacks[0]["detail"] == "4 of 4 ticks over 40 ms"


def test_a_baseline_run_has_nothing_to_roll_back(registry: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    injector = activate(enabled=True, tick_deadline_ms=1, stop_window_ticks=2,
                        registry=registry)
    assert injector is not None and injector.scenario_keys == []
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        for _ in range(2):
            with ticks.tick():
                time.sleep(0.005)
    assert injector.rollbacks == []
    assert stats().stopped is not None  # still measured and reported
    assert any("no scenario active" in r.getMessage() for r in caplog.records)


def test_a_dry_run_instance_has_nothing_to_roll_back(registry: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    injector = activate(enabled=True, exch_429=0.5, tick_deadline_ms=1, stop_window_ticks=2,
                        registry=registry)
    assert injector is not None and injector.mode == "dry_run"
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        for _ in range(2):
            with ticks.tick():
                time.sleep(0.005)
    assert injector.rollbacks == []
    assert registry.get_sample_value("mm_chaos_rollbacks_total", {"reason": "deadline_miss"}) in (
        None, 0.0)
    assert any("while nothing is injected (dry_run)" in r.getMessage() for r in caplog.records)


def test_ticks_follow_the_run_even_after_chaos_turns_off(registry: Any, tmp_path: Path) -> None:
    injector = activate(enabled=True, registry=registry)
    run.start_run(injector, directory=tmp_path)
    run_stats = stats()
    injector.fail(RuntimeError("internal"))  # chaos turns itself off
    with ticks.tick():
        pass
    assert ticks.current_stats() is run_stats
    assert run_stats.ticks == 1
