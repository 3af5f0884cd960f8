"""The one table of Prometheus metrics chaos_shims exports, and their live objects.

prometheus_client is imported only when metrics are first built (when a target library is
patched, or on the first record), never by an inactive process.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chaos_shims.core import env

DEFAULT_PREFIX = "mm"
#: mm_partial_fail_rate looks back this far.
FAIL_WINDOW_SEC = 60.0
_FAIL_BUCKETS = 12


@dataclass(frozen=True)
class MetricSpec:
    suffix: str
    type: str
    help: str
    labels: tuple[str, ...]


METRICS: dict[str, MetricSpec] = {
    spec.suffix: spec
    for spec in (
        MetricSpec("chaos_injections_total", "counter",
                   "Decisions that fired, by scenario and mode (live or dry_run).",
                   ("scenario", "mode")),
        MetricSpec("partial_fail_rate", "gauge",
                   f"Failed / total REST calls over the last {FAIL_WINDOW_SEC:g} s.",
                   ("op", "exchange")),
    )
}


class FailureWindow:
    """Failed and total calls per (op, exchange) over a sliding window of time buckets.

    Memory is bounded by the number of (op, exchange) pairs; recording is a dict lookup and two
    increments under an uncontended lock.
    """

    def __init__(self, window_sec: float = FAIL_WINDOW_SEC, buckets: int = _FAIL_BUCKETS,
                 clock: Any = time.monotonic) -> None:
        self._bucket_sec = window_sec / buckets
        self._buckets = buckets
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [bucket ids, totals, failures], each a list of length `buckets`
        self._rings: dict[tuple[str, str], list[list[int]]] = {}

    def record(self, op: str, exchange: str, failed: bool) -> None:
        bucket = int(self._clock() / self._bucket_sec)
        slot = bucket % self._buckets
        key = (op, exchange)
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = [[-1] * self._buckets, [0] * self._buckets,
                                           [0] * self._buckets]
            ids, totals, failures = ring
            if ids[slot] != bucket:
                ids[slot] = bucket
                totals[slot] = 0
                failures[slot] = 0
            totals[slot] += 1
            if failed:
                failures[slot] += 1

    def rates(self) -> Iterator[tuple[str, str, float]]:
        oldest = int(self._clock() / self._bucket_sec) - self._buckets + 1
        with self._lock:
            snapshot = [(key, [list(part) for part in ring]) for key, ring in self._rings.items()]
        for (op, exchange), (ids, totals, failures) in snapshot:
            total = sum(t for i, t in zip(ids, totals, strict=True) if i >= oldest)
            failed = sum(f for i, f in zip(ids, failures, strict=True) if i >= oldest)
            if total:
                yield op, exchange, failed / total


class ChaosMetrics:
    """The live metric objects in one registry under one prefix."""

    def __init__(self, registry: Any = None, prefix: str | None = None) -> None:
        import prometheus_client
        from prometheus_client.core import GaugeMetricFamily

        self.prefix = prefix or os.environ.get(env.METRICS_PREFIX) or DEFAULT_PREFIX
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.failures = FailureWindow()
        spec = METRICS["chaos_injections_total"]
        self.injections = prometheus_client.Counter(
            self._name(spec), spec.help, spec.labels, registry=self.registry)
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

    def _name(self, spec: MetricSpec) -> str:
        return f"{self.prefix}_{spec.suffix}"

    def count_injection(self, scenario: str, mode: str) -> None:
        self.injections.labels(scenario=scenario, mode=mode).inc()


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
