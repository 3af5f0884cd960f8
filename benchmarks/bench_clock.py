"""Benchmarks of the wall clock patch (clock_skew_ms): what a skewed clock costs a process.

Run: python -m benchmarks --only clock   (or this file alone: python benchmarks/bench_clock.py,
a few seconds; not part of the test suite)

1. One ``time.time()`` / ``time.time_ns()`` call: unpatched; patched and dormant (offset 0);
   patched with a skew; under freezegun's ``freeze_time`` and time-machine's ``travel`` (when
   installed) for comparison. Requirement: a patched ``time.time()`` under 300 ns.
2. Applying and removing a skew: ``wall_clock.apply_skew`` on and off, and a whole scenario
   phase (``start_phase`` + ``end_phase``); freezegun's and time-machine's start + stop for
   comparison (with ccxt loaded: freezegun scans every loaded module on start).
   Requirement: applying and removing a skew under 0.1 ms.
3. Patching and unpatching the wall_clock patch point once.
"""

from __future__ import annotations

import datetime
import importlib
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 7
DESTINATION = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
SKEW_MS = 15_000.0


def per_call(fn: Callable[[], Any], number: int,
             clock: Callable[[], float] = time.thread_time) -> float:
    """Median over ROUNDS of the mean seconds per call (each round runs `number` calls), by
    this thread's CPU time: time spent waiting for a core on a busy machine is left out.

    ``clock`` is bound as a default argument: freezegun replaces every module-level reference
    to the clocks it fakes while it freezes (a frozen timer measures 0), but not this one (nor
    does it, or time-machine, fake the thread's CPU time).
    """
    samples = []
    for _ in range(ROUNDS):
        started = clock()
        for _ in range(number):
            fn()
        samples.append((clock() - started) / number)
    return statistics.median(samples)


def clock_call_ns(number: int = 500_000) -> dict[str, float]:
    """ns per call of time.time() and time.time_ns(), looked up on the module each call as
    ccxt does; the loop overhead of an empty lambda is subtracted."""
    empty = per_call(lambda: None, number)
    return {
        "time": (per_call(lambda: time.time(), number) - empty) * 1e9,
        "time_ns": (per_call(lambda: time.time_ns(), number) - empty) * 1e9,
    }


def bench_calls(number: int = 500_000) -> dict[str, float]:
    from chaos_shims.integrations import PATCH_POINTS, wall_clock

    results: dict[str, float] = {}

    def record(label: str, calls: int = number) -> None:
        for name, ns in clock_call_ns(calls).items():
            results[f"{name}()_ns_{label}"] = ns

    record("unpatched")
    point = PATCH_POINTS["wall_clock"]
    point.enable()
    try:
        record("patched_dormant")
        wall_clock.apply_skew(SKEW_MS)
        record("patched_skewed")
        wall_clock.apply_skew(0)
    finally:
        point.disable()

    freezegun = _optional("freezegun")
    if freezegun is not None:
        # about 20 times as long a call as the others: fewer calls for as long a round
        with freezegun.freeze_time(DESTINATION):
            record("freezegun_frozen", max(1, number // 20))
        with freezegun.freeze_time(DESTINATION, tick=True):
            record("freezegun_ticking", max(1, number // 20))
    time_machine = _optional("time_machine")
    if time_machine is not None:
        with time_machine.travel(DESTINATION, tick=False):
            record("time_machine_frozen")
        with time_machine.travel(DESTINATION):
            record("time_machine_ticking")
    return results


def bench_apply_remove(number: int = 20_000, freezes: int = 20) -> dict[str, float]:
    from chaos_shims.integrations import PATCH_POINTS, wall_clock
    from chaos_shims.scenarios.clock_skew_ms import ClockSkewMs

    results: dict[str, float] = {}
    point = PATCH_POINTS["wall_clock"]
    point.enable()
    try:
        def apply_and_remove() -> None:
            wall_clock.apply_skew(SKEW_MS)
            wall_clock.apply_skew(0)

        results["apply+remove_skew_ms"] = per_call(apply_and_remove, number) * 1e3
        scenario = ClockSkewMs(SKEW_MS, {"burst_on_sec": 30.0}, random.Random(1))

        def phase() -> None:
            scenario.start_phase(True)
            scenario.end_phase()

        results["phase_start+end_ms"] = per_call(phase, number) * 1e3
    finally:
        point.disable()

    importlib.import_module("ccxt")  # what a bot has loaded: freezegun's start scans modules
    importlib.import_module("ccxt.async_support")
    freezegun = _optional("freezegun")
    if freezegun is not None:
        def freeze() -> None:
            freezer = freezegun.freeze_time(DESTINATION)
            freezer.start()
            freezer.stop()

        freeze()  # the first start is slower still; report the steady state
        results["freezegun_start+stop_ms"] = per_call(freeze, freezes) * 1e3
    time_machine = _optional("time_machine")
    if time_machine is not None:
        def travel() -> None:
            traveller = time_machine.travel(DESTINATION)
            traveller.start()
            traveller.stop()

        travel()
        results["time_machine_start+stop_ms"] = per_call(travel, max(1, number // 10)) * 1e3
    return results


def bench_patch(number: int = 2_000) -> dict[str, float]:
    from chaos_shims.integrations import PATCH_POINTS

    point = PATCH_POINTS["wall_clock"]

    def patch_and_unpatch() -> None:
        point.enable()
        point.disable()

    return {"wall_clock_patch+unpatch_ms": per_call(patch_and_unpatch, number) * 1e3}


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"({name} is not installed: skipped)")
        return None


def main() -> None:
    results: dict[str, float] = {}
    results.update(bench_calls())
    results.update(bench_apply_remove())
    results.update(bench_patch())
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.4f}" if key.endswith("_ms") else
              f"{key:<{width}}  {value:,.1f}")
    within = (results["time()_ns_patched_skewed"] < 300
              and results["apply+remove_skew_ms"] < 0.1)
    print("requirements (time() < 300 ns, apply+remove < 0.1 ms):", "met" if within else "NOT MET")


if __name__ == "__main__":
    main()
