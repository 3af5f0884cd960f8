"""What the bot tells chaos_shims about its own loop: ``tick()`` and ``report_cancels(n)``.

::

    while running:
        with chaos_shims.tick():        # also inside coroutines; ``async with`` works too
            quote_and_reconcile()
            chaos_shims.report_cancels(cancelled)

With chaos off a tick costs a function call and two look-ups: no clock is read, nothing is
imported. With chaos on, ticks feed the statistics of the run (``chaos_shims.core.ticks``)
and its stop condition: when too many recent ticks miss ``tick_deadline_ms``, the injector
rolls itself back to dry-run.

Where ticks go: to the run started by ``chaos_shims.run.start_run`` (environment or bootstrap
activation) for the whole run, even if chaos later turns itself off; otherwise, when chaos was
activated in code, to statistics kept for the active injector.
"""

from __future__ import annotations

import sys
import time

# Nothing else at import time: a bot with chaos off imports this module and should not pay for
# typing, logging or the statistics (they come with the first tick of an active injector).
# Not `from typing import TYPE_CHECKING`: type checkers treat this constant the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    from chaos_shims.core.injector import ChaosInjector
    from chaos_shims.core.ticks import CancelStormRule, StopCallback, TickStats

__all__ = ["report_cancels", "set_cancel_storm_rule", "tick"]

_perf_counter = time.perf_counter
_monotonic = time.monotonic  # the duty cycle's clock
_modules = sys.modules
_RUNTIME = "chaos_shims.core.runtime"
_STOP_REASON = "deadline_miss"

#: The run's statistics, set by chaos_shims.run for as long as a run is in progress.
_run_stats: TickStats | None = None
#: (injector, its statistics) for an injector activated in code, outside any run.
_auto: tuple[Any, TickStats] | None = None
_storm_rule: CancelStormRule | None = None
_warned: set[str] = set()


class _Tick:
    """One measured tick (a context manager for ``with`` and ``async with``)."""

    __slots__ = ("_start", "_started", "_stats")

    def __init__(self, stats: TickStats) -> None:
        self._stats = stats

    def __enter__(self) -> _Tick:
        # The duty cycle's clock places the tick in a burst; perf_counter measures it.
        self._started = None if self._stats.schedule is None else _monotonic()
        self._start = _perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        elapsed_ms = (_perf_counter() - self._start) * 1000.0
        try:
            if exc_type is None:
                self._stats.record(elapsed_ms, self._started)
            elif issubclass(exc_type, Exception):
                self._stats.record(elapsed_ms, self._started, exc_type)
            else:  # CancelledError, KeyboardInterrupt, SystemExit: the program is stopping
                self._stats.record(elapsed_ms, self._started, exc_type, interrupted=True)
        except Exception:
            _warn_once("record", "chaos_shims: could not record a tick; the bot goes on")
        # None: the bot's own exception, if any, propagates unchanged.

    async def __aenter__(self) -> _Tick:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, traceback)


class _NoTick:
    """The tick of a process with chaos off: does nothing, as cheaply as Python allows."""

    __slots__ = ()

    def __enter__(self) -> _NoTick:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        return None

    async def __aenter__(self) -> _NoTick:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        return None


_NO_TICK = _NoTick()


def tick() -> _Tick | _NoTick:
    """Measure one iteration of the bot's main loop: ``with chaos_shims.tick(): ...``.

    A tick that raises is an error tick and its exception propagates unchanged.
    """
    stats = _run_stats
    if stats is None:
        stats = _active_stats()
        if stats is None:
            return _NO_TICK
    return _Tick(stats)


def report_cancels(n: int = 1) -> None:
    """The bot cancelled ``n`` orders in this tick (for cancel storms)."""
    stats = _run_stats
    if stats is None:
        stats = _active_stats()
        if stats is None:
            return
    if type(n) is not int:  # the usual case skips the conversion
        try:
            n = int(n)
        except (TypeError, ValueError):
            n = -1
    if n > 0:
        stats.add_cancels(n)
    elif n < 0:
        _warn_once("cancels", "chaos_shims.report_cancels expects a count >= 0; ignored")


def set_cancel_storm_rule(cancels: int, window_ticks: int) -> None:
    """What counts as a cancel storm (default: 50 cancels within 10 ticks); applies to the
    statistics in force and to those created later. A bot that cancels and re-quotes many
    orders every tick raises it above its normal rate."""
    from chaos_shims.core.ticks import CancelStormRule

    global _storm_rule
    _storm_rule = rule = CancelStormRule(int(cancels), int(window_ticks))
    for stats in (_run_stats, None if _auto is None else _auto[1]):
        if stats is not None:
            stats.set_storm_rule(rule)


# -- where ticks go ------------------------------------------------------------------------------

def _active_stats() -> TickStats | None:
    runtime = _modules.get(_RUNTIME)  # not imported: chaos was never activated here
    if runtime is None:
        return None
    injector = runtime.active
    if injector is None:
        return None
    auto = _auto
    if auto is not None and auto[0] is injector:
        return auto[1]
    return _bind_auto(injector)


def _bind_auto(injector: ChaosInjector) -> TickStats | None:
    global _auto
    try:
        stats = stats_for(injector)
    except Exception:
        _warn_once("bind", "chaos_shims: could not start tick statistics; ticks are not measured")
        return None
    _auto = (injector, stats)
    return stats


def stats_for(injector: ChaosInjector) -> TickStats:
    """Fresh tick statistics following ``injector``'s config, duty cycle and stop condition."""
    from chaos_shims.core.ticks import TickStats

    config = injector.config
    return TickStats(
        deadline_ms=config["tick_deadline_ms"],
        stop_window_ticks=config["stop_window_ticks"],
        stop_miss_ratio=config["stop_deadline_miss"],
        on_stop=stop_condition_for(injector),
        schedule=injector.schedule,
        **({"storm_rule": _storm_rule} if _storm_rule is not None else {}),
    )


def stop_condition_for(injector: ChaosInjector) -> StopCallback:
    """The stop condition's action: roll ``injector`` back to dry-run, saying why."""

    def roll_back(misses: int, window: int, deadline_ms: float) -> None:
        if not injector.scenario_keys or not injector.live:
            # A baseline, dry-run or shadow instance injects nothing: the bot misses its
            # deadline without chaos. Nothing to roll back (no rollback metric or alert), only
            # to report.
            _logger().warning("chaos_shims: %d of %d ticks over %g ms while nothing is "
                              "injected (%s)", misses, window, deadline_ms,
                              injector.mode if injector.scenario_keys else "no scenario active")
            return
        try:
            injector.roll_back(_STOP_REASON, f"{misses} of {window} ticks over {deadline_ms:g} ms")
        except Exception as exc:
            injector.fail(exc)

    return roll_back


def bind_run(stats: TickStats | None) -> None:
    """Send every tick to ``stats`` (a run's), or stop doing so with None."""
    global _run_stats
    _run_stats = stats


def current_stats() -> TickStats | None:
    """The statistics ticks go to right now, if any (for tests and the run artifact)."""
    return _run_stats if _run_stats is not None else _active_stats()


def _reset_for_tests() -> None:
    global _run_stats, _auto, _storm_rule
    _run_stats = None
    _auto = None
    _storm_rule = None
    _warned.clear()


def _logger() -> Any:
    import logging

    return logging.getLogger("chaos_shims")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _logger().warning(message, exc_info=sys.exc_info()[0] is not None)
