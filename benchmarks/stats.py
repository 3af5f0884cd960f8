"""Statistics the benchmarks share: nearest-rank percentiles and interleaved timing rounds."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1): the smallest sample with at least ``q`` of
    the samples at or below it. With fewer than 1/(1-q) samples it is the largest one."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summary(values: Iterable[float]) -> dict[str, Any]:
    """n, median, p99 (nearest rank), min and max of ``values``."""
    samples = list(values)
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p99": percentile(samples, 0.99),
        "min": min(samples),
        "max": max(samples),
    }


#: The clock of the micro-benchmarks: this thread's CPU time. On a shared machine most of the
#: noise in wall-clock time is time spent waiting for a core while other processes run; the
#: thread's CPU time leaves that out (on a quiet machine the two agree).
CPU_CLOCK = time.thread_time


def mean_seconds_per_call(fn: Callable[[], Any], number: int,
                          clock: Callable[[], float] = CPU_CLOCK) -> float:
    """Seconds per call of ``fn`` by ``clock``, averaged over ``number`` back-to-back calls."""
    started = clock()
    for _ in range(number):
        fn()
    return (clock() - started) / number


def interleaved_rounds(variants: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once per round, the order rotated every round, and collect what each
    returns. Drift in the machine's load then hits every variant alike, and the differences
    between variants can be taken round by round (``paired_median``)."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(variants[name]())
    return samples


def paired_median(samples: Mapping[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of ``samples[name] - samples[base]`` taken in the same round."""
    return statistics.median(a - b for a, b in zip(samples[name], samples[base], strict=True))
