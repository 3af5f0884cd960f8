"""Tick statistics: what one iteration of a bot's main loop tells about its health.

Knows nothing of any client library nor of the injector: it is fed one finished tick at a time
(``record``) and answers with a plain-data ``snapshot``. Memory is bounded whatever the run
length: latencies go to a fixed log-scale histogram, windows are fixed rings, and the lists
kept for the artifact (bursts, storms, error types) are capped with exact totals beside them.

The definitions (recovery, cancel storm, healthy tick, quantile error) are written once, in
docs/METRICS_AND_REPORTS.md; the constants below are their defaults.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from chaos_shims.core.frozen import Frozen
from chaos_shims.core.schedule import DutyCycle

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any

logger = logging.getLogger("chaos_shims")

# -- the latency histogram ----------------------------------------------------------------------

#: Smallest and largest latencies the histogram resolves; outside them a value is counted in an
#: underflow / overflow bucket (a 10 ms floor would hide a fast bot; a tick over 10 min is stuck).
HISTOGRAM_MIN_MS = 0.01
HISTOGRAM_MAX_MS = 600_000.0
#: Each bucket is this much wider than the one below it.
HISTOGRAM_RATIO = 1.02
#: The bound on the relative error of a reported quantile (≈ 0.995 %): a quantile is reported
#: as the geometric middle of its bucket, at most sqrt(ratio) away from any value in it.
QUANTILE_RELATIVE_ERROR = math.sqrt(HISTOGRAM_RATIO) - 1.0

_LOG_RATIO = math.log(HISTOGRAM_RATIO)
_log = math.log
HISTOGRAM_BUCKETS = math.ceil(math.log(HISTOGRAM_MAX_MS / HISTOGRAM_MIN_MS) / _LOG_RATIO)


class LogHistogram:
    """Counts per log-scale bucket: bucket ``i`` holds ``[min * ratio**i, min * ratio**(i+1))``.

    About 900 integers for 0.01 ms .. 10 min at 2 %: the same memory after a week of ticks as
    after one. Two histograms with the same parameters merge by adding counts.
    """

    __slots__ = ("_inv_log_ratio", "buckets", "count", "max", "min", "min_ms", "overflow",
                 "ratio", "sum", "underflow")

    def __init__(self, min_ms: float = HISTOGRAM_MIN_MS, max_ms: float = HISTOGRAM_MAX_MS,
                 ratio: float = HISTOGRAM_RATIO) -> None:
        self.min_ms = min_ms
        self.ratio = ratio
        self._inv_log_ratio = 1.0 / math.log(ratio)
        self.buckets = [0] * math.ceil(math.log(max_ms / min_ms) * self._inv_log_ratio)
        self.underflow = 0
        self.overflow = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    @property
    def max_ms(self) -> float:
        return self.min_ms * self.ratio ** len(self.buckets)

    @property
    def relative_error(self) -> float:
        return math.sqrt(self.ratio) - 1.0

    def add(self, value_ms: float) -> None:
        self.count += 1
        self.sum += value_ms
        if value_ms < self.min:
            self.min = value_ms
        if value_ms > self.max:
            self.max = value_ms
        if value_ms < self.min_ms:
            self.underflow += 1
            return
        index = int(_log(value_ms / self.min_ms) * self._inv_log_ratio)
        try:
            self.buckets[index] += 1
        except IndexError:
            self.overflow += 1

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile (the smallest value with at least ``q`` of the
        samples at or below it), within ``relative_error`` for values inside the range."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = self.underflow
        if rank <= seen:
            return self.min  # below the resolved range: the smallest seen is the best we know
        for index, n in enumerate(self.buckets):
            seen += n
            if rank <= seen:
                middle = self.min_ms * self.ratio ** (index + 0.5)
                # Clamping to what was seen can only bring the estimate closer.
                return min(max(middle, self.min), self.max)
        return self.max

    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, sparse: ``counts`` maps bucket index (as a string, for JSON) to count."""
        return {
            "min_ms": self.min_ms,
            "ratio": self.ratio,
            "buckets": len(self.buckets),
            "counts": {str(i): n for i, n in enumerate(self.buckets) if n},
            "underflow": self.underflow,
            "overflow": self.overflow,
            "count": self.count,
            "sum_ms": self.sum,
            "min_seen_ms": self.min if self.count else None,
            "max_seen_ms": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogHistogram:
        """The histogram ``as_dict`` wrote; ValueError, naming the field, when the data does not
        describe one. Read from files that may be damaged: no value may make it overflow or
        allocate more than its ``buckets`` allow (100 000 at most)."""

        def refuse(name: str, value: float, allowed: str) -> ValueError:
            return ValueError(f"tick histogram field {name!r} = {value:g}: allowed: {allowed}")

        def number(name: str) -> float:
            value = float(data[name])  # float() reads the strings "nan" and "inf" too
            if not math.isfinite(value):
                raise refuse(name, value, "a finite number")
            return value

        def count(name: str, value: Any) -> int:
            whole = int(value)
            if whole < 0:
                raise refuse(name, whole, "a count >= 0")
            return whole

        try:
            min_ms, ratio, size = number("min_ms"), number("ratio"), int(data["buckets"])
            if min_ms <= 0:
                raise refuse("min_ms", min_ms, "a number of milliseconds > 0")
            if ratio <= 1:
                raise refuse("ratio", ratio, "a number > 1")
            if not 0 < size <= 100_000:
                raise refuse("buckets", size, "a whole number from 1 to 100000")
            try:  # the top of the last bucket, and so every bucket's middle, must be a float
                max_ms = min_ms * ratio ** size
            except OverflowError:
                max_ms = math.inf
            if not math.isfinite(max_ms):
                raise refuse("buckets", size, f"few enough that min_ms * ratio ** buckets "
                                              f"(min_ms {min_ms:g}, ratio {ratio:g}) is a float")
            histogram = cls(min_ms, max_ms, ratio)
            histogram.buckets = [0] * size
            for key, n in dict(data["counts"]).items():
                index = int(key)
                if not 0 <= index < size:
                    raise ValueError(f"tick histogram field 'counts' names a bucket outside "
                                     f"0..{size - 1}")
                histogram.buckets[index] += count(f"counts[{index}]", n)
            histogram.underflow = count("underflow", data["underflow"])
            histogram.overflow = count("overflow", data["overflow"])
            histogram.count = count("count", data["count"])
            histogram.sum = number("sum_ms")
            if data.get("min_seen_ms") is not None:
                histogram.min = number("min_seen_ms")
            if data.get("max_seen_ms") is not None:
                histogram.max = number("max_seen_ms")
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise ValueError(f"not a tick histogram: {exc!r}") from exc
        if histogram.count != sum(histogram.buckets) + histogram.underflow + histogram.overflow:
            raise ValueError("tick histogram counts do not add up")
        return histogram

    def same_shape(self, other: LogHistogram) -> bool:
        return (self.min_ms, self.ratio, len(self.buckets)) == (
            other.min_ms, other.ratio, len(other.buckets))

    def merge(self, other: LogHistogram) -> None:
        if not self.same_shape(other):
            raise ValueError("histograms with different buckets cannot be merged")
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.underflow += other.underflow
        self.overflow += other.overflow
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


# -- cancel storms -------------------------------------------------------------------------------

class CancelStormRule(Frozen):
    """A cancel storm: ``cancels`` or more cancels reported within ``window_ticks`` consecutive
    ticks. A stretch of ticks that stays at or above it is one storm, however long."""

    __slots__ = ("cancels", "window_ticks")
    cancels: int
    window_ticks: int

    def __init__(self, cancels: int = 50, window_ticks: int = 10) -> None:
        if cancels < 1 or window_ticks < 1:
            raise ValueError(f"a cancel storm rule needs cancels >= 1 and window_ticks >= 1, "
                             f"got {cancels} and {window_ticks}")
        object.__setattr__(self, "cancels", cancels)
        object.__setattr__(self, "window_ticks", window_ticks)

    def describe(self) -> str:
        return f"{self.cancels} or more cancels within {self.window_ticks} consecutive ticks"


DEFAULT_STORM_RULE = CancelStormRule()

#: How many bursts, storms and exception types are itemised; totals stay exact beyond them.
BURSTS_KEPT = 500
STORMS_KEPT = 100
ERROR_TYPES_KEPT = 50

#: The definitions, in one line each, as artifacts and reports quote them.
HEALTHY_TICK = "a tick that did not raise and finished within tick_deadline_ms"
RECOVERY = ("recovery of a burst = the unhealthy ticks counted from the first tick that starts "
            "after the burst's ON phase ends, up to the first healthy tick (0: the first tick "
            "after the burst was healthy); a burst with no healthy tick before the next ON phase "
            "is not recovered")

StopCallback = Callable[[int, int, float], None]


#: ``TickStats._settled_burst`` before any tick: lower than every cycle index
_NO_TICK_YET = -(2**62)


class TickStats:
    """The statistics of one run's ticks. Thread-safe; ``record`` is the hot path.

    ``schedule`` is the run's duty cycle; ticks are placed in it by the monotonic time they
    started (its clock). ``on_stop(misses, window, deadline_ms)`` is called once, outside the
    lock, the first time the deadline-miss ratio over a full window of ``stop_window_ticks``
    exceeds ``stop_miss_ratio``.
    """

    def __init__(
        self,
        *,
        deadline_ms: float = 200.0,
        stop_window_ticks: int = 100,
        stop_miss_ratio: float = 0.02,
        on_stop: StopCallback | None = None,
        schedule: DutyCycle | None = None,
        storm_rule: CancelStormRule = DEFAULT_STORM_RULE,
    ) -> None:
        self.deadline_ms = float(deadline_ms)
        #: None when there are no bursts to follow (no schedule, or always ON)
        self.schedule = schedule if schedule is not None and not schedule.always_on else None
        if self.schedule is not None:
            self._cycle_start = self.schedule.started_at
            self._on_sec = self.schedule.on_sec
            self._period = self.schedule.on_sec + self.schedule.off_sec
        # A signal handler that needs a snapshot while the interrupted thread holds this lock
        # reads without it (``snapshot(lock_timeout=0)``) rather than wait forever.
        self._lock = threading.Lock()
        self.latency = LogHistogram()
        self.ticks = 0
        self.error_ticks = 0
        self.interrupted_ticks = 0
        self.deadline_misses = 0
        self.burst_ticks = 0
        self.burst_misses = 0
        self.burst_errors = 0
        self.errors_by_type: dict[str, int] = {}
        # stop condition: a ring of the last ticks' misses and their running sum
        self.stop_window_ticks = int(stop_window_ticks)
        self.stop_miss_ratio = float(stop_miss_ratio)
        self._stop_limit = self.stop_miss_ratio * self.stop_window_ticks
        self._window = bytearray(self.stop_window_ticks)
        self._window_misses = 0
        self._on_stop = on_stop
        self.stopped: dict[str, Any] | None = None
        # recovery after bursts
        # the last burst whose end has been seen by a tick; before the first tick, a value
        # below every cycle so that tick always looks (and settles what it cannot judge)
        self._settled_burst = _NO_TICK_YET
        self._pending_burst: int | None = None  # ended, waiting for a healthy tick
        self._pending_unhealthy = 0
        self.bursts_ended = 0
        self.recovered = 0
        self.unrecovered = 0
        self.worst_recovery: int | None = None
        self.recoveries: deque[dict[str, Any]] = deque(maxlen=BURSTS_KEPT)
        # cancels
        self.cancels_total = 0
        self._pending_cancels = 0
        self.set_storm_rule(storm_rule)

    # -- configuration -------------------------------------------------------------------------
    def set_storm_rule(self, rule: CancelStormRule) -> None:
        """Use ``rule`` from now on (the window starts empty again)."""
        with self._lock:
            self.storm_rule = rule
            self._cancel_ring = [0] * rule.window_ticks
            self._ring_cancels = 0
            self._in_storm: dict[str, Any] | None = None
            self.storms = 0
            self.storm_episodes: deque[dict[str, Any]] = deque(maxlen=STORMS_KEPT)

    # -- the hot path --------------------------------------------------------------------------
    def phase(self, started: float) -> tuple[int, bool] | None:
        """(cycle index, in an ON phase) at monotonic time ``started``; None without bursts."""
        if self.schedule is None:
            return None
        # DutyCycle.cycle_index and is_on in one division: this runs on every tick.
        cycle, into = divmod(started - self._cycle_start, self._period)
        return int(cycle), into < self._on_sec

    def add_cancels(self, n: int) -> None:
        """Cancels the bot reported; they belong to the next tick that ends."""
        with self._lock:
            self._pending_cancels += n
            self.cancels_total += n

    def record(self, duration_ms: float, started: float | None = None,
               error: BaseException | type[BaseException] | None = None,
               *, interrupted: bool = False) -> None:
        """One tick that started at monotonic time ``started`` ended after ``duration_ms``;
        ``error`` is what it raised, if anything.

        An interrupted tick (cancelled, KeyboardInterrupt, SystemExit) is counted but not
        measured: it was cut short by the program stopping, not by a failure of the iteration.
        """
        trip = None
        with self._lock:
            if interrupted:
                self.interrupted_ticks += 1
                return
            index = self.ticks
            self.ticks = index + 1
            self.latency.add(duration_ms)
            missed = duration_ms > self.deadline_ms
            if missed:
                self.deadline_misses += 1
            if error is not None:
                self.error_ticks += 1
                self._count_error(error)

            # The stop condition looks at the last stop_window_ticks ticks.
            window = self._window
            slot = index % self.stop_window_ticks
            self._window_misses += missed - window[slot]
            window[slot] = missed
            if (self._window_misses > self._stop_limit and self.stopped is None
                    and index + 1 >= self.stop_window_ticks):
                trip = (self._window_misses, self.stop_window_ticks)
                self.stopped = {"tick": index + 1, "misses": trip[0], "window_ticks": trip[1]}

            cycle = -1.0
            on = False
            if started is not None and self.schedule is not None:
                cycle, into = divmod(started - self._cycle_start, self._period)
                on = into < self._on_sec
                if on:
                    self.burst_ticks += 1
                    if missed:
                        self.burst_misses += 1
                    if error is not None:
                        self.burst_errors += 1
                # Only when a burst has ended since the last look, or one awaits recovery.
                if cycle - on > self._settled_burst or self._pending_burst is not None:
                    self._follow_recovery((int(cycle), on), healthy=not missed and error is None)
            if self._pending_cancels or self._ring_cancels:
                self._follow_cancels(index, None if cycle < 0 else (int(cycle), on))
        if trip is not None and self._on_stop is not None:
            self._on_stop(trip[0], trip[1], self.deadline_ms)

    def _count_error(self, error: BaseException | type[BaseException]) -> None:
        name = (error if isinstance(error, type) else type(error)).__name__
        if name in self.errors_by_type or len(self.errors_by_type) < ERROR_TYPES_KEPT:
            self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1
        else:
            self.errors_by_type["(other)"] = self.errors_by_type.get("(other)", 0) + 1

    def _follow_recovery(self, phase: tuple[int, bool], *, healthy: bool) -> None:
        cycle, on = phase
        if self._settled_burst == _NO_TICK_YET:
            # Bursts that were over before the bot's first tick (a slow start) met no tick of
            # the bot: they cannot be judged. One in this tick's own cycle, ended just now, can.
            self._settled_burst = cycle - 1
        # The latest burst that has ended: this cycle's once its ON phase is over, else the last.
        ended = cycle - 1 if on else cycle
        if ended > self._settled_burst:
            if self._pending_burst is not None:
                self._settle(recovered=False)  # a new burst ended before the last one recovered
            self.bursts_ended += 1  # bursts with no tick after them cannot be judged
            self._settled_burst = ended
            self._pending_burst = ended
            self._pending_unhealthy = 0
        if self._pending_burst is None:
            return
        if on:
            self._settle(recovered=False)  # the next burst began before a healthy tick
        elif healthy:
            self._settle(recovered=True)
        else:
            self._pending_unhealthy += 1

    def _settle(self, *, recovered: bool) -> None:
        ticks = self._pending_unhealthy
        self.recoveries.append({"burst": self._pending_burst, "recovered": recovered,
                                "ticks": ticks})
        if recovered:
            self.recovered += 1
            if self.worst_recovery is None or ticks > self.worst_recovery:
                self.worst_recovery = ticks
        else:
            self.unrecovered += 1
        self._pending_burst = None
        self._pending_unhealthy = 0

    def _follow_cancels(self, index: int, phase: tuple[int, bool] | None) -> None:
        cancels, self._pending_cancels = self._pending_cancels, 0
        slot = index % self.storm_rule.window_ticks
        self._ring_cancels += cancels - self._cancel_ring[slot]
        self._cancel_ring[slot] = cancels
        storming = self._ring_cancels >= self.storm_rule.cancels
        episode = self._in_storm
        if storming:
            if episode is None:
                self.storms += 1
                episode = self._in_storm = {
                    "start_tick": index + 1, "end_tick": None, "peak_cancels": 0,
                    "burst": None if phase is None else phase[0],
                    "in_burst": None if phase is None else phase[1],
                }
                self.storm_episodes.append(episode)
            episode["peak_cancels"] = max(episode["peak_cancels"], self._ring_cancels)
        elif episode is not None:
            episode["end_tick"] = index  # the last tick that was still in the storm
            self._in_storm = None

    # -- reading -------------------------------------------------------------------------------
    def snapshot(self, *, lock_timeout: float = 1.0) -> dict[str, Any]:
        """Everything measured, as plain data (the ``ticks``, ``recovery`` and ``cancels``
        parts of a run artifact). Taken without the lock if it cannot be had in time."""
        locked = (self._lock.acquire(timeout=lock_timeout) if lock_timeout > 0
                  else self._lock.acquire(blocking=False))
        try:
            return self._snapshot()
        finally:
            if locked:
                self._lock.release()

    def _snapshot(self) -> dict[str, Any]:
        latency = self.latency
        quantiles = {name: latency.quantile(q) for name, q in (("p50", 0.50), ("p95", 0.95),
                                                               ("p99", 0.99))}
        recoveries = list(self.recoveries)
        if self._pending_burst is not None and self._pending_unhealthy > 0:
            # Still unhealthy when the run ended: not recovered so far.
            recoveries.append({"burst": self._pending_burst, "recovered": False,
                               "ticks": self._pending_unhealthy, "until": "run_end"})
        unrecovered = self.unrecovered + (len(recoveries) > len(self.recoveries))
        return {
            "ticks": {
                "count": self.ticks,
                "error_ticks": self.error_ticks,
                "interrupted_ticks": self.interrupted_ticks,
                "errors_by_type": dict(self.errors_by_type),
                "deadline_ms": self.deadline_ms,
                "deadline_misses": self.deadline_misses,
                "deadline_miss_rate": _ratio(self.deadline_misses, self.ticks),
                "latency_ms": {**quantiles, "mean": latency.mean(),
                               "max": latency.max if latency.count else None,
                               "relative_error": latency.relative_error},
                "histogram": latency.as_dict(),
                "in_bursts": {"ticks": self.burst_ticks, "deadline_misses": self.burst_misses,
                              "error_ticks": self.burst_errors},
                "stop_condition": {
                    "window_ticks": self.stop_window_ticks,
                    "max_miss_ratio": self.stop_miss_ratio,
                    "tripped": self.stopped is not None,
                    **({"at_tick": self.stopped["tick"], "misses": self.stopped["misses"]}
                       if self.stopped is not None else {}),
                },
            },
            "recovery": {
                "definition": RECOVERY,
                "healthy_tick": HEALTHY_TICK,
                "bursts_ended": self.bursts_ended,
                "recovered": self.recovered,
                "unrecovered": unrecovered,
                "worst_ticks": self.worst_recovery,
                "per_burst": recoveries,
                "per_burst_truncated": self.recovered + self.unrecovered > len(self.recoveries),
            },
            "cancels": {
                "total": self.cancels_total,
                "storm_rule": {"cancels": self.storm_rule.cancels,
                               "window_ticks": self.storm_rule.window_ticks,
                               "definition": self.storm_rule.describe()},
                "storms": self.storms,
                "storm_episodes": [dict(e) for e in self.storm_episodes],
                "storm_episodes_truncated": self.storms > len(self.storm_episodes),
            },
        }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def nearest_rank(values: Iterable[float], q: float) -> float:
    """The exact nearest-rank quantile of ``values`` (what the histogram approximates)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
