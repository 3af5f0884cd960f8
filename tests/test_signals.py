"""report_discrepancy: free and silent with chaos off, counted per kind with chaos on (ledger and
mm_reconcile_discrepancies_total{source="detected"}), never raising, bounded in label values;
and the detection rate it gives against what was injected."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims import signals
from chaos_shims.activation import activate, deactivate
from chaos_shims.core.injector import ChaosInjector

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]


def live(registry: Any = None, **keys: Any) -> ChaosInjector:
    settings = {"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1, **keys}
    injector = activate(None, registry=registry, **settings)
    assert injector is not None
    return injector


def detected(registry: Any, kind: str) -> float | None:
    return registry.get_sample_value("mm_reconcile_discrepancies_total",
                                     {"type": kind, "source": "detected"})


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    deactivate()
    yield
    deactivate()


def test_with_chaos_never_activated_it_imports_nothing_and_costs_little() -> None:
    script = textwrap.dedent("""
        import sys, time
        import chaos_shims.signals as signals
        started = time.perf_counter()
        for _ in range(100_000):
            signals.report_discrepancy("order_dropped")
        per_call = (time.perf_counter() - started) / 100_000
        heavy = [m for m in ("chaos_shims.core.runtime", "chaos_shims.core.injector",
                             "prometheus_client") if m in sys.modules]
        print(heavy, per_call)
        assert not heavy, heavy
        assert per_call < 5e-6, per_call
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr + result.stdout


def test_with_chaos_off_nothing_is_counted(registry: Any) -> None:
    injector = live(registry, reconcile_mismatch=0.5)
    deactivate()
    signals.report_discrepancy("order_dropped")
    assert detected(registry, "order_dropped") is None
    assert signals.detection_report(injector)["detected"] == 0
    assert signals.detection_report()["detected"] == 0  # no injector: an empty report


def test_reports_are_counted_by_kind(registry: Any) -> None:
    injector = live(registry, reconcile_mismatch=0.5)
    signals.report_discrepancy("order_dropped")
    signals.report_discrepancy("order_dropped")
    signals.report_discrepancy("stale_quote")  # a kind of the bot's own: counted as such
    signals.report_discrepancy("   ")
    assert detected(registry, "order_dropped") == 2
    assert detected(registry, "stale_quote") == 1
    assert detected(registry, "unknown") == 1
    report = signals.detection_report(injector)
    assert report["detected"] == 4 and report["injected"] == 0
    assert report["detection_rate"] is None  # nothing injected: no rate
    assert report["by_type"]["order_dropped"] == {"injected": 0, "detected": 2,
                                                  "detection_rate": None}


def test_counted_in_dry_run_and_with_any_scenario() -> None:
    # The bot's reconciler finds real mismatches too: they count whatever chaos does.
    injector = live(dry_run=True, exch_429=0.1)
    signals.report_discrepancy("fill_changed")
    assert signals.ledger_for(injector).counts() == ({}, {"fill_changed": 1})


def test_detection_rate_against_injected(registry: Any) -> None:
    injector = live(registry, reconcile_mismatch=0.5)
    for kind in ("order_dropped", "order_dropped", "phantom_order", "fill_changed"):
        signals.count(injector, signals.INJECTED, kind)
    for kind in ("order_dropped", "phantom_order", "phantom_order", "balance_changed"):
        signals.report_discrepancy(kind)
    report = signals.detection_report(injector)
    assert (report["injected"], report["detected"]) == (4, 4)
    # caught: 1 of 2 dropped, 1 of 1 phantom (reported twice: still 1), 0 of 1 fill
    assert report["detection_rate"] == pytest.approx(2 / 4)
    by_type = report["by_type"]
    assert by_type["order_dropped"]["detection_rate"] == 0.5
    assert by_type["phantom_order"]["detection_rate"] == 1.0
    assert by_type["fill_changed"]["detection_rate"] == 0.0
    assert by_type["balance_changed"]["detection_rate"] is None
    assert registry.get_sample_value("mm_reconcile_discrepancies_total",
                                     {"type": "order_dropped", "source": "injected"}) == 2


def test_kinds_are_bounded_as_metric_labels(registry: Any) -> None:
    injector = live(registry, reconcile_mismatch=0.5)
    for n in range(signals.MAX_CUSTOM_KINDS + 10):
        signals.report_discrepancy(f"order-{n}")  # a bot passing ids by mistake
    signals.report_discrepancy("x" * 500)
    signals.report_discrepancy("phantom_order")  # standard kinds always have their own
    _, counts = signals.ledger_for(injector).counts()
    assert len(counts) == signals.MAX_CUSTOM_KINDS + 2
    assert counts[signals.OTHER] == 11 and counts["phantom_order"] == 1
    assert all(len(kind) <= signals.MAX_KIND_LENGTH for kind in counts)


def test_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    injector = live(reconcile_mismatch=0.5)

    class BrokenMetrics:
        def count_discrepancy(self, kind: str, source: str) -> None:
            raise RuntimeError("registry gone")

    monkeypatch.setattr(injector, "_metrics", BrokenMetrics())
    signals.report_discrepancy("order_dropped")
    signals.report_discrepancy(None)  # type: ignore[arg-type]
    signals.report_discrepancy(object())  # type: ignore[arg-type]
    assert any("could not count" in r.getMessage() for r in caplog.records)


def test_counts_go_with_their_injector() -> None:
    injector = live(reconcile_mismatch=0.5)
    signals.report_discrepancy("order_dropped")
    assert injector in signals._ledgers
    deactivate()
    del injector
    gc.collect()
    assert len(signals._ledgers) == 0
