"""The one table of Prometheus metrics chaos_shims exports, and their live objects.

prometheus_client is imported only when metrics are first built (when a target library is
patched, or on the first record), never by an inactive process.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chaos_shims.core import env

DEFAULT_PREFIX = "mm"
#: mm_partial_fail_rate looks back this far.
FAIL_WINDOW_SEC = 60.0
_FAIL_BUCKETS = 12


#: Buckets of mm_ws_gap_ms: from a busy stream's few ms to a stalled one's tens of seconds.
WS_GAP_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


#: The states ChaosInjector.mode can take.
INSTANCE_STATES = ("live", "dry_run", "shadow", "killed", "rolled_back")


@dataclass(frozen=True)
class MetricSpec:
    suffix: str
    type: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


METRICS: dict[str, MetricSpec] = {
    spec.suffix: spec
    for spec in (
        MetricSpec("chaos_injections_total", "counter",
                   "Decisions that fired, by scenario and mode (live or dry_run).",
                   ("scenario", "mode")),
        MetricSpec("partial_fail_rate", "gauge",
                   f"Failed / total REST calls over the last {FAIL_WINDOW_SEC:g} s.",
                   ("op", "exchange")),
        MetricSpec("chaos_instances", "gauge",
                   "This instance's chaos state, one-hot: live, dry_run, shadow, killed, "
                   "rolled_back (summed over a fleet: instances per state).", ("state",)),
        MetricSpec("chaos_rollbacks_total", "counter",
                   "Times chaos rolled itself back to dry-run, by reason.", ("reason",)),
        MetricSpec("reconnect_attempts_total", "counter",
                   "Websocket connections the application opened again after one was lost.",
                   ("kind",)),
        MetricSpec("ws_gap_ms", "histogram",
                   "Gap between consecutive websocket messages the application received (ms).",
                   (), WS_GAP_BUCKETS_MS),
        MetricSpec("reconcile_discrepancies_total", "counter",
                   "Order-state mismatches: injected by chaos, or detected by the bot.",
                   ("type", "source")),
    )
}


class FailureWindow:
    """Failed and total calls per (op, exchange) over a sliding window.

    The hot path bumps two running totals and compares the clock with the next snapshot time:
    no lock, so under heavy thread contention a rare increment can be lost, which a ratio
    gauge tolerates. Every ``window / buckets`` seconds (on the next call) a snapshot of the
    totals is kept; the rate is the difference between now and the oldest snapshot still inside
    the window, so the window is exact to within one bucket.
    """

    def __init__(self, window_sec: float = FAIL_WINDOW_SEC, buckets: int = _FAIL_BUCKETS,
                 clock: Any = time.monotonic) -> None:
        self._window = window_sec
        self._step = window_sec / buckets
        self._clock = clock
        self._lock = threading.Lock()
        # (op, exchange) -> [total, failed], running since creation
        self._totals: dict[tuple[str, str], list[int]] = {}
        now = clock()
        self._snapshots: deque[tuple[float, dict[tuple[str, str], tuple[int, int]]]] = deque(
            [(now, {})])
        self._next_snapshot = now + self._step

    def record(self, op: str, exchange: str, failed: bool) -> None:
        now = self._clock()
        if now >= self._next_snapshot:
            self._snapshot(now)
        totals = self._totals.get((op, exchange))
        if totals is None:
            totals = self._totals.setdefault((op, exchange), [0, 0])
        totals[0] += 1
        if failed:
            totals[1] += 1

    def _snapshot(self, now: float) -> None:
        with self._lock:
            if now < self._next_snapshot:
                return
            self._snapshots.append((now, {k: (v[0], v[1]) for k, v in list(self._totals.items())}))
            while len(self._snapshots) > 1 and self._snapshots[1][0] < now - self._window:
                self._snapshots.popleft()
            self._next_snapshot = now + self._step

    def counts(self) -> Iterator[tuple[str, str, int, int]]:
        """(op, exchange, calls, failed) over the window, for every pair seen (calls may be 0)."""
        now = self._clock()
        with self._lock:
            inside = [snap for snap in self._snapshots if snap[0] >= now - self._window]
            current = {k: (v[0], v[1]) for k, v in list(self._totals.items())}
        if not inside:
            return
        baseline = inside[0][1]
        for (op, exchange), (total, failed) in current.items():
            base_total, base_failed = baseline.get((op, exchange), (0, 0))
            yield op, exchange, total - base_total, failed - base_failed

    def rates(self) -> Iterator[tuple[str, str, float]]:
        for op, exchange, calls, failed in self.counts():
            if calls:
                yield op, exchange, failed / calls


class ChaosMetrics:
    """The live metric objects in one registry under one prefix."""

    def __init__(self, registry: Any = None, prefix: str | None = None) -> None:
        import prometheus_client
        from prometheus_client.core import GaugeMetricFamily

        self.prefix = prefix or os.environ.get(env.METRICS_PREFIX) or DEFAULT_PREFIX
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.failures = FailureWindow()
        # Counters and histograms of the table, by suffix; the gauge below is computed.
        self.plain: dict[str, Any] = {}
        for spec in METRICS.values():
            if spec.type == "counter":
                self.plain[spec.suffix] = prometheus_client.Counter(
                    self._name(spec), spec.help, spec.labels, registry=self.registry)
            elif spec.type == "histogram":
                self.plain[spec.suffix] = prometheus_client.Histogram(
                    self._name(spec), spec.help, spec.labels, buckets=spec.buckets,
                    registry=self.registry)
        self.injections = self.plain["chaos_injections_total"]
        fail_spec = METRICS["partial_fail_rate"]
        failures = self.failures
        name = self._name(fail_spec)

        class _FailRateCollector:
            # Computed at scrape time: the hot path only bumps two integers.
            def collect(self) -> Iterator[Any]:
                family = GaugeMetricFamily(name, fail_spec.help, labels=list(fail_spec.labels))
                for op, exchange, rate in failures.rates():
                    family.add_metric([op, exchange], rate)
                yield family

            def describe(self) -> Iterator[Any]:
                yield GaugeMetricFamily(name, fail_spec.help, labels=list(fail_spec.labels))

        self.registry.register(_FailRateCollector())
        state_spec = METRICS["chaos_instances"]
        state_name = self._name(state_spec)

        class _StateCollector:
            # Read at scrape time from the injector in force (None: chaos is off here).
            def collect(self) -> Iterator[Any]:
                from chaos_shims.core import runtime  # the runtime imports this module

                family = GaugeMetricFamily(state_name, state_spec.help,
                                           labels=list(state_spec.labels))
                active = runtime.active
                if active is not None:
                    active._look_at_kill_file()  # a scrape of an idle bot still sees the kill
                    for state in INSTANCE_STATES:
                        family.add_metric([state], 1.0 if active.mode == state else 0.0)
                yield family

            def describe(self) -> Iterator[Any]:
                yield GaugeMetricFamily(state_name, state_spec.help,
                                        labels=list(state_spec.labels))

        self.registry.register(_StateCollector())

    def _name(self, spec: MetricSpec) -> str:
        return f"{self.prefix}_{spec.suffix}"

    def count_injection(self, scenario: str, mode: str) -> None:
        self.injections.labels(scenario=scenario, mode=mode).inc()

    def count_rollback(self, reason: str) -> None:
        self.plain["chaos_rollbacks_total"].labels(reason=reason).inc()

    def count_reconnect(self, kind: str) -> None:
        self.plain["reconnect_attempts_total"].labels(kind=kind).inc()

    def observe_ws_gap(self, gap_ms: float) -> None:
        self.plain["ws_gap_ms"].observe(gap_ms)

    def count_discrepancy(self, kind: str, source: str) -> None:
        """``source`` is "injected" (chaos made it) or "detected" (the bot reported it)."""
        self.plain["reconcile_discrepancies_total"].labels(type=kind, source=source).inc()


_default_cache: dict[str, ChaosMetrics] = {}
# Keyed by the registry object itself (weakly), never by id(): ids are reused after collection.
_registry_cache: weakref.WeakKeyDictionary[Any, dict[str, ChaosMetrics]] = (
    weakref.WeakKeyDictionary())
_cache_lock = threading.Lock()


def metrics_for(registry: Any = None, prefix: str | None = None) -> ChaosMetrics:
    """The metrics of one registry and prefix, created once (Prometheus refuses duplicates)."""
    resolved_prefix = prefix or os.environ.get(env.METRICS_PREFIX) or DEFAULT_PREFIX
    with _cache_lock:
        cache = (_default_cache if registry is None
                 else _registry_cache.setdefault(registry, {}))
        found = cache.get(resolved_prefix)
        if found is None:
            found = cache[resolved_prefix] = ChaosMetrics(registry, resolved_prefix)
        return found
