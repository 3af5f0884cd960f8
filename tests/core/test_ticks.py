"""Tick statistics: quantiles within their documented error, bounded memory, deadline misses,
the stop condition, recovery after bursts, cancel storms."""

from __future__ import annotations

import math
import random
import sys

import pytest

from chaos_shims.core.schedule import DutyCycle
from chaos_shims.core.ticks import (
    BURSTS_KEPT,
    ERROR_TYPES_KEPT,
    HISTOGRAM_MAX_MS,
    HISTOGRAM_MIN_MS,
    QUANTILE_RELATIVE_ERROR,
    CancelStormRule,
    LogHistogram,
    TickStats,
    nearest_rank,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]


def bursts(on: float = 1.0, off: float = 1.0) -> DutyCycle:
    """A duty cycle that starts at time 0 (ticks are placed in it by their start time)."""
    return DutyCycle(on, off, clock=lambda: 0.0, started_at=0.0)


# -- the histogram ------------------------------------------------------------------------------

def test_quantile_error_bound_is_about_one_percent() -> None:
    assert pytest.approx(math.sqrt(1.02) - 1) == QUANTILE_RELATIVE_ERROR
    assert QUANTILE_RELATIVE_ERROR < 0.01


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_stay_within_the_documented_error(seed: int) -> None:
    stream = random.Random(seed)
    # From sub-millisecond ticks to minute-long stalls: the whole resolved range.
    values = [min(HISTOGRAM_MAX_MS * 0.99, stream.lognormvariate(math.log(20), 2.5))
              for _ in range(20_000)]
    values = [max(HISTOGRAM_MIN_MS, v) for v in values]
    histogram = LogHistogram()
    for value in values:
        histogram.add(value)
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        exact = nearest_rank(values, q)
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) / exact <= QUANTILE_RELATIVE_ERROR + 1e-12, (q, exact, estimate)


def test_histogram_memory_does_not_grow_with_ticks() -> None:
    histogram = LogHistogram()
    buckets = len(histogram.buckets)
    size = sys.getsizeof(histogram.buckets)
    stream = random.Random(5)
    for _ in range(100_000):
        histogram.add(stream.expovariate(1 / 50))
    assert len(histogram.buckets) == buckets < 1_000
    assert sys.getsizeof(histogram.buckets) == size
    assert histogram.count == 100_000


def test_values_outside_the_range_are_counted_not_lost() -> None:
    histogram = LogHistogram()
    for value in (0.0, 0.001, 5.0, HISTOGRAM_MAX_MS * 3):
        histogram.add(value)
    assert (histogram.underflow, histogram.overflow, histogram.count) == (2, 1, 4)
    assert histogram.quantile(0.25) == 0.0  # below the range: the smallest seen
    assert histogram.quantile(1.0) == HISTOGRAM_MAX_MS * 3  # above: the largest seen
    assert LogHistogram().quantile(0.5) is None


def test_histogram_round_trips_and_merges() -> None:
    first, second, both = LogHistogram(), LogHistogram(), LogHistogram()
    for i in range(1, 500):
        (first if i % 2 else second).add(i * 0.7)
        both.add(i * 0.7)
    copy = LogHistogram.from_dict(first.as_dict())
    assert copy.as_dict() == first.as_dict()
    copy.merge(second)
    for q in (0.5, 0.95, 0.99):
        assert copy.quantile(q) == both.quantile(q)
    assert copy.count == both.count


def test_histogram_data_that_does_not_add_up_is_refused() -> None:
    data = LogHistogram().as_dict()
    data["count"] = 3
    with pytest.raises(ValueError, match="do not add up"):
        LogHistogram.from_dict(data)
    with pytest.raises(ValueError):
        LogHistogram.from_dict({"min_ms": 0.01})
    other = LogHistogram(ratio=1.1)
    with pytest.raises(ValueError, match="different buckets"):
        LogHistogram().merge(other)


# -- ticks, deadlines, errors --------------------------------------------------------------------

def test_deadline_misses_errors_and_interrupted_ticks() -> None:
    stats = TickStats(deadline_ms=100)
    for ms in (10, 100, 100.5, 250):
        stats.record(ms)
    stats.record(20, error=ValueError)
    stats.record(300, error=KeyError("k"))
    stats.record(5000, error=KeyboardInterrupt, interrupted=True)
    ticks = stats.snapshot()["ticks"]
    assert ticks["count"] == 6
    assert ticks["deadline_misses"] == 3  # exactly at the deadline is not a miss
    assert ticks["deadline_miss_rate"] == pytest.approx(0.5)
    assert ticks["error_ticks"] == 2
    assert ticks["errors_by_type"] == {"ValueError": 1, "KeyError": 1}
    assert ticks["interrupted_ticks"] == 1  # counted, not measured
    assert ticks["latency_ms"]["max"] == 300


def test_error_types_are_capped() -> None:
    stats = TickStats()
    for i in range(ERROR_TYPES_KEPT + 10):
        stats.record(1, error=type(f"Error{i}", (Exception,), {}))
    errors = stats.snapshot()["ticks"]["errors_by_type"]
    assert len(errors) == ERROR_TYPES_KEPT + 1
    assert errors["(other)"] == 10


# -- the stop condition --------------------------------------------------------------------------

def test_stop_condition_waits_for_a_full_window_then_trips_once() -> None:
    calls: list[tuple[int, int, float]] = []
    stats = TickStats(deadline_ms=50, stop_window_ticks=10, stop_miss_ratio=0.2,
                      on_stop=lambda *args: calls.append(args))
    for _ in range(5):
        stats.record(80)  # 5 misses of 5 ticks: the window is not full yet
    assert calls == []
    for _ in range(4):
        stats.record(1)
    assert calls == []
    stats.record(1)  # window full: 5 of 10 > 20 %
    assert calls == [(5, 10, 50.0)]
    for _ in range(30):
        stats.record(80)
    assert len(calls) == 1
    stop = stats.snapshot()["ticks"]["stop_condition"]
    assert stop == {"window_ticks": 10, "max_miss_ratio": 0.2, "tripped": True, "at_tick": 10,
                    "misses": 5}


def test_stop_condition_is_a_sliding_window_and_needs_more_than_the_ratio() -> None:
    calls: list[tuple[int, int, float]] = []
    stats = TickStats(deadline_ms=50, stop_window_ticks=10, stop_miss_ratio=0.2,
                      on_stop=lambda *args: calls.append(args))
    for i in range(100):
        stats.record(80 if i % 5 == 0 else 1)  # exactly 20 %: not above it
    assert calls == []
    stats.record(80)
    stats.record(80)  # the last 10 ticks now hold 3 misses
    assert calls == [(3, 10, 50.0)]


# -- recovery after bursts -----------------------------------------------------------------------

def test_phase_agrees_with_the_duty_cycle() -> None:
    schedule = DutyCycle(3.0, 7.0, clock=lambda: 0.0, started_at=100.0)
    stats = TickStats(schedule=schedule)
    stream = random.Random(1)
    for _ in range(2_000):
        now = 100.0 + stream.uniform(0, 200)
        assert stats.phase(now) == (schedule.cycle_index(now), schedule.is_on(now))
    assert TickStats(schedule=DutyCycle(0, 90)).phase(5.0) is None  # always ON: no bursts


def test_recovery_counts_unhealthy_ticks_after_each_burst() -> None:
    stats = TickStats(deadline_ms=100, schedule=bursts(1.0, 1.0))
    # burst 0 (0-1 s): bad ticks during ON do not count towards recovery
    stats.record(500, 0.1)
    stats.record(500, 0.5)
    # after it: two unhealthy (a miss, an error), then healthy: recovered in 2
    stats.record(500, 1.1)
    stats.record(10, 1.2, RuntimeError("x"))
    stats.record(10, 1.3)
    stats.record(500, 1.4)  # after recovery: does not count
    # burst 1: healthy right after it: 0
    stats.record(10, 2.5)
    stats.record(10, 3.0)
    # burst 2: never healthy before burst 3 begins: not recovered
    stats.record(500, 5.1)
    stats.record(500, 5.5)
    stats.record(10, 6.2)  # burst 3, ON
    # burst 3 ends; still unhealthy when the run ends
    stats.record(500, 7.3)
    recovery = stats.snapshot()["recovery"]
    assert recovery["per_burst"] == [
        {"burst": 0, "recovered": True, "ticks": 2},
        {"burst": 1, "recovered": True, "ticks": 0},
        {"burst": 2, "recovered": False, "ticks": 2},
        {"burst": 3, "recovered": False, "ticks": 1, "until": "run_end"},
    ]
    assert recovery["worst_ticks"] == 2
    assert (recovery["bursts_ended"], recovery["recovered"], recovery["unrecovered"]) == (4, 2, 2)
    in_bursts = stats.snapshot()["ticks"]["in_bursts"]
    assert in_bursts == {"ticks": 4, "deadline_misses": 2, "error_ticks": 0}


def test_a_burst_with_no_tick_in_its_off_phase_is_not_recovered() -> None:
    stats = TickStats(deadline_ms=100, schedule=bursts(1.0, 1.0))
    stats.record(10, 0.5)
    stats.record(10, 2.5)  # the next burst already: burst 0 had no tick after it in time
    assert stats.snapshot()["recovery"]["per_burst"] == [
        {"burst": 0, "recovered": False, "ticks": 0}]


def test_bursts_over_before_the_first_tick_are_not_judged() -> None:
    # a slow start: the bot's first tick comes after bursts 0 and 1 have ended
    stats = TickStats(deadline_ms=100, schedule=bursts(1.0, 1.0))
    stats.record(10, 4.2)  # cycle 2, ON
    stats.record(10, 5.5)  # cycle 2, OFF: burst 2 ended and is judged
    recovery = stats.snapshot()["recovery"]
    assert recovery["per_burst"] == [{"burst": 2, "recovered": True, "ticks": 0}]
    assert (recovery["bursts_ended"], recovery["unrecovered"]) == (1, 0)


def test_a_first_tick_in_an_off_phase_judges_its_own_burst() -> None:
    stats = TickStats(deadline_ms=100, schedule=bursts(1.0, 1.0))
    stats.record(500, 3.5)  # cycle 1, OFF, missed its deadline: burst 1 not yet recovered
    stats.record(10, 3.7)
    assert stats.snapshot()["recovery"]["per_burst"] == [
        {"burst": 1, "recovered": True, "ticks": 1}]


def test_always_on_or_no_schedule_has_no_bursts() -> None:
    for schedule in (None, DutyCycle(0, 90)):
        stats = TickStats(schedule=schedule)
        stats.record(10, 12345.0)
        recovery = stats.snapshot()["recovery"]
        assert recovery["bursts_ended"] == 0 and recovery["worst_ticks"] is None


def test_bursts_kept_are_bounded_and_totals_stay_exact() -> None:
    stats = TickStats(deadline_ms=100, schedule=bursts(1.0, 1.0))
    cycles = BURSTS_KEPT + 50
    for cycle in range(cycles):
        stats.record(10, 2.0 * cycle + 0.5)
        stats.record(10, 2.0 * cycle + 1.5)
    recovery = stats.snapshot()["recovery"]
    assert len(recovery["per_burst"]) == BURSTS_KEPT
    assert recovery["recovered"] == cycles
    assert recovery["per_burst_truncated"] is True


# -- cancels -------------------------------------------------------------------------------------

def test_cancel_storm_is_counted_once_per_stretch() -> None:
    stats = TickStats(storm_rule=CancelStormRule(cancels=5, window_ticks=3))
    per_tick = [0, 2, 2, 2, 2, 0, 0, 0, 0, 6, 0, 0, 0, 1]
    for cancels in per_tick:
        stats.add_cancels(cancels)
        stats.record(1)
    cancels = stats.snapshot()["cancels"]
    assert cancels["total"] == sum(per_tick)
    assert cancels["storms"] == 2
    assert cancels["storm_episodes"] == [
        {"start_tick": 4, "end_tick": 5, "peak_cancels": 6, "burst": None, "in_burst": None},
        {"start_tick": 10, "end_tick": 12, "peak_cancels": 6, "burst": None, "in_burst": None},
    ]
    assert cancels["storm_rule"]["definition"] == "5 or more cancels within 3 consecutive ticks"


def test_cancels_reported_between_ticks_belong_to_the_next_tick() -> None:
    stats = TickStats(storm_rule=CancelStormRule(cancels=3, window_ticks=1),
                      schedule=bursts(1.0, 1.0))
    stats.record(1, 0.1)
    stats.add_cancels(3)  # outside any tick
    stats.record(1, 0.2)
    episodes = stats.snapshot()["cancels"]["storm_episodes"]
    assert episodes == [{"start_tick": 2, "end_tick": None, "peak_cancels": 3, "burst": 0,
                         "in_burst": True}]


def test_storm_rule_must_make_sense() -> None:
    with pytest.raises(ValueError, match="cancels >= 1"):
        CancelStormRule(0, 10)
    assert CancelStormRule().describe() == "50 or more cancels within 10 consecutive ticks"


def test_snapshot_does_not_wait_for_a_held_lock() -> None:
    stats = TickStats()
    stats.record(1)
    with stats._lock:  # as when a signal interrupts the thread inside record()
        assert stats.snapshot(lock_timeout=0)["ticks"]["count"] == 1
