"""Metric names come from one table; the failure-rate gauge is computed at scrape time."""

from __future__ import annotations

from typing import Any

from chaos_shims.core.metrics import METRICS, FailureWindow, metrics_for


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failure_window_slides() -> None:
    clock = Clock()
    window = FailureWindow(window_sec=60, buckets=12, clock=clock)
    for failed in (True, False, False, False):
        window.record("fetch_ticker", "binance", failed)
    assert list(window.rates()) == [("fetch_ticker", "binance", 0.25)]
    clock.now = 30.0
    window.record("fetch_ticker", "binance", True)
    assert list(window.rates()) == [("fetch_ticker", "binance", 0.4)]
    clock.now = 65.0  # the first four fell out of the window
    assert list(window.rates()) == [("fetch_ticker", "binance", 1.0)]
    clock.now = 200.0
    assert list(window.rates()) == []


def test_metrics_are_exported_under_the_prefix(registry: Any) -> None:
    metrics = metrics_for(registry, prefix="bot")
    assert metrics_for(registry, prefix="bot") is metrics
    metrics.count_injection("exch_429", "live")
    metrics.failures.record("fetch_balance", "binance", True)
    metrics.failures.record("fetch_balance", "binance", False)
    assert registry.get_sample_value("bot_chaos_injections_total",
                                     {"scenario": "exch_429", "mode": "live"}) == 1
    assert registry.get_sample_value("bot_partial_fail_rate",
                                     {"op": "fetch_balance", "exchange": "binance"}) == 0.5
    metrics.count_reconnect("websockets")
    metrics.observe_ws_gap(42.0)
    metrics.count_discrepancy("order_dropped", "injected")
    assert registry.get_sample_value("bot_reconnect_attempts_total", {"kind": "websockets"}) == 1
    assert registry.get_sample_value("bot_ws_gap_ms_count") == 1
    assert registry.get_sample_value("bot_reconcile_discrepancies_total",
                                     {"type": "order_dropped", "source": "injected"}) == 1
    assert {"chaos_injections_total", "partial_fail_rate", "reconnect_attempts_total",
            "ws_gap_ms", "reconcile_discrepancies_total"} <= set(METRICS)


def test_instance_state_gauge_follows_the_active_injector(registry: Any) -> None:
    from chaos_shims.activation import activate

    activate(None, registry=registry, enabled=True, exch_429=0.1)
    assert registry.get_sample_value("mm_chaos_instances", {"state": "dry_run"}) == 1
    assert registry.get_sample_value("mm_chaos_instances", {"state": "live"}) == 0
