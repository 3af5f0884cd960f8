"""Benchmark: what ``with chaos_shims.tick():`` costs a bot's loop.

Run: python benchmarks/bench_ticks.py   (a few seconds; not part of the test suite)

Measures the cost of one empty tick, per tick, against the same loop without a tick:
1. chaos off (no injector: the tick is a shared no-op);
2. chaos active, always ON (no duty-cycle phase to look up);
3. chaos active with a duty cycle (each tick looks up its burst);
4. as 3 with a cancel reported every tick (the cancel-storm window is followed);
5. as 3 from a coroutine, with ``with`` and with ``async with``.
Also prints the memory the statistics hold before and after a million ticks.
Budget: under 2 µs per tick with chaos active, next to nothing with chaos off.
"""

from __future__ import annotations

import asyncio
import sys
import time
import tracemalloc
from collections.abc import Callable

from chaos_shims import activation, run, ticks

ROUNDS = 7
TICKS = 200_000


def per_iteration(loop: Callable[[int], None], number: int = TICKS) -> float:
    """Best of ROUNDS of the seconds per iteration of ``loop(number)`` (the least disturbed
    round: other processes only ever add time)."""
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        loop(number)
        samples.append((time.perf_counter() - started) / number)
    return min(samples)


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


def main() -> None:
    results: list[tuple[str, float]] = []
    base = per_iteration(bare)
    results.append(("chaos off", per_iteration(ticking) - base))

    start(burst_on_sec=0)
    results.append(("active, always ON", per_iteration(ticking) - base))
    stop()

    start(burst_on_sec=30, burst_off_sec=90)
    results.append(("active, duty cycle", per_iteration(ticking) - base))
    call = per_iteration(bare_with_call)
    results.append(("active, duty cycle, report_cancels(1) each tick",
                    per_iteration(ticking_with_cancels) - call))
    async_base = per_iteration(async_loop("bare"))
    results.append(("active, duty cycle, `with` in a coroutine",
                    per_iteration(async_loop("with")) - async_base))
    results.append(("active, duty cycle, `async with`",
                    per_iteration(async_loop("async")) - async_base))

    tracemalloc.start()
    ticking(1_000)
    before = tracemalloc.take_snapshot()
    ticking(1_000_000)
    after = tracemalloc.take_snapshot()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    tracemalloc.stop()
    stop()

    print(f"Python {sys.version.split()[0]}, {TICKS} ticks x {ROUNDS} rounds, best round")
    for name, seconds in results:
        print(f"  {name:<52} {seconds * 1e9:8.0f} ns per tick")
    print(f"  memory growth over 1,000,000 ticks: {growth} bytes")


if __name__ == "__main__":
    main()
