"""Benchmark: what ``with chaos_shims.tick():`` costs a bot's loop.

Run: python -m benchmarks --only ticks,tick_memory   (or this file alone:
python benchmarks/bench_ticks.py, a few seconds; not part of the test suite)

Measures the cost of one empty tick, per tick, against the same loop without a tick:
1. chaos off (no injector: the tick is a shared no-op);
2. chaos active, always ON (no duty-cycle phase to look up);
3. chaos active with a duty cycle (each tick looks up its burst);
4. as 3 with a cancel reported every tick (the cancel-storm window is followed);
5. as 3 from a coroutine, with ``with`` and with ``async with``.
Budget: under 2 µs per tick with chaos active, next to nothing with chaos off.

And the memory the tick statistics hold after 10^3, 10^4, 10^5 and 10^6 ticks (tracemalloc,
allocations made by chaos_shims' own files), with bursts, cancel storms and error ticks
happening all along: it must not grow with the number of ticks.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from chaos_shims import activation, run, ticks

ROUNDS = 7
TICKS = 200_000


def per_iteration(loop: Callable[[int], None], number: int = TICKS) -> float:
    """Median over ROUNDS of the seconds per iteration of ``loop(number)``, by this thread's CPU
    time (time spent waiting for a core on a busy machine is left out)."""
    samples = []
    for _ in range(ROUNDS):
        started = time.thread_time()
        loop(number)
        samples.append((time.thread_time() - started) / number)
    return statistics.median(samples)


def bare(number: int) -> None:
    for _ in range(number):
        pass


def ticking(number: int) -> None:
    tick = ticks.tick
    for _ in range(number):
        with tick():
            pass


def ticking_with_cancels(number: int) -> None:
    tick, report = ticks.tick, ticks.report_cancels
    for _ in range(number):
        with tick():
            report(1)


def bare_with_call(number: int) -> None:
    # What report_cancels costs is compared with a plain call of a function doing nothing.
    def nothing(n: int) -> None:
        return None

    for _ in range(number):
        nothing(1)


def async_loop(kind: str) -> Callable[[int], None]:
    async def body(number: int) -> None:
        tick = ticks.tick
        if kind == "bare":
            for _ in range(number):
                pass
        elif kind == "with":
            for _ in range(number):
                with tick():
                    pass
        else:
            for _ in range(number):
                async with tick():
                    pass

    return lambda number: asyncio.run(body(number))


def start(**overrides: object) -> None:
    injector = activation.activate(enabled=True, **overrides)
    run.start_run(injector, directory="/tmp/chaos_shims_bench_runs")


def stop() -> None:
    run._reset_for_tests()
    activation.deactivate()
    ticks._reset_for_tests()


def tick_costs(number: int = TICKS) -> list[tuple[str, float]]:
    """Seconds per tick over the same loop without a tick, in each situation of the module's
    list."""
    def measure(loop: Callable[[int], None]) -> float:
        return per_iteration(loop, number)

    results: list[tuple[str, float]] = []
    base = measure(bare)
    results.append(("chaos off", measure(ticking) - base))

    start(burst_on_sec=0)
    results.append(("active, always ON", measure(ticking) - base))
    stop()

    start(burst_on_sec=30, burst_off_sec=90)
    results.append(("active, duty cycle", measure(ticking) - base))
    call = measure(bare_with_call)
    results.append(("active, duty cycle, report_cancels(1) each tick",
                    measure(ticking_with_cancels) - call))
    async_base = measure(async_loop("bare"))
    results.append(("active, duty cycle, `with` in a coroutine",
                    measure(async_loop("with")) - async_base))
    results.append(("active, duty cycle, `async with`",
                    measure(async_loop("async")) - async_base))
    stop()
    return results


class _TickFailure(Exception):
    """An error tick of the busy workload."""


def _steady_ticks(first: int, last: int) -> None:
    """A bot ticking along: nothing but ticks."""
    tick = ticks.tick
    for _ in range(first, last):
        with tick():
            pass


def _busy_ticks(first: int, last: int) -> None:
    """Ticks ``first``..``last - 1`` of a bot that has a cancel storm every 500 ticks and an
    error tick every 97 (of one of a few exception types)."""
    tick, report = ticks.tick, ticks.report_cancels
    errors = (_TickFailure, ValueError, KeyError, TimeoutError)
    for index in range(first, last):
        try:
            with tick():
                if index % 500 == 0:
                    report(60)  # over the default storm rule: 50 cancels within 10 ticks
                if index % 97 == 0:
                    raise errors[index % len(errors)]("tick failed")
        except Exception:  # the bot survives its own failing tick
            pass


#: workload -> (its ticks, the activation's duty cycle)
MEMORY_WORKLOADS: dict[str, tuple[Callable[[int, int], None], dict[str, float]]] = {
    # the defaults: a 30 s burst every 2 minutes
    "steady": (_steady_ticks, {}),
    # a burst ending every millisecond, so that the capped lists (burst recoveries, storm
    # episodes, error types) fill up within the run
    "busy": (_busy_ticks, {"burst_on_sec": 0.0005, "burst_off_sec": 0.0005}),
}


def bench_memory(workload: str = "steady",
                 counts: Sequence[int] = (1_000, 10_000, 100_000, 1_000_000)) -> dict[str, Any]:
    """Bytes held by chaos_shims' allocations after each count of ticks (cumulative, one run),
    relative to before the first tick (the statistics are made at the first tick)."""
    run_ticks, duty_cycle = MEMORY_WORKLOADS[workload]

    def held() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*chaos_shims*")])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    activation.activate(enabled=True, **duty_cycle)
    try:
        tracemalloc.start()
        before = held()
        done = 0
        bytes_after: dict[str, int] = {}
        for count in sorted(counts):
            run_ticks(done, count)
            done = count
            bytes_after[str(count)] = held() - before
        tracemalloc.stop()
        stats = ticks.current_stats()
        if stats is None:
            raise RuntimeError("no tick statistics: chaos did not activate")
        snapshot = stats.snapshot()
    finally:
        stop()
    first, last = bytes_after[str(min(counts))], bytes_after[str(max(counts))]
    return {
        "workload": workload,
        "bytes_after_ticks": bytes_after,
        "growth_bytes": last - first,
        "growth_from_ticks": min(counts),
        "growth_to_ticks": max(counts),
        # what the workload exercised (the busy one fills every capped list)
        "ticks_recorded": snapshot["ticks"]["count"],
        "error_ticks": snapshot["ticks"]["error_ticks"],
        "bursts_ended": snapshot["recovery"]["bursts_ended"],
        "cancel_storms": snapshot["cancels"]["storms"],
    }


def main() -> None:
    results = tick_costs()
    memory = bench_memory()
    busy = bench_memory("busy")

    print(f"Python {sys.version.split()[0]}, {TICKS} ticks x {ROUNDS} rounds, median round, CPU time")
    for name, seconds in results:
        print(f"  {name:<52} {seconds * 1e9:8.0f} ns per tick")
    for result in (memory, busy):
        for count, held in result["bytes_after_ticks"].items():
            print(f"  tick statistics after {int(count):>9,} ticks ({result['workload']}): "
                  f"{held:,} bytes")


if __name__ == "__main__":
    main()
