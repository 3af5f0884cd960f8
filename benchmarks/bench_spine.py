"""Benchmarks of the spine: what chaos_shims costs a process and a REST call.

Run: python -m benchmarks --only start,activation,rest,decisions   (or this file alone:
python benchmarks/bench_spine.py, about a minute; not part of the test suite)

1. Interpreter start with ``import chaos_shims.auto`` and chaos off, against a bare start:
   interleaved pairs, the added cost is the median of the paired differences.
2. Activation with chaos enabled, first thing in a fresh interpreter (no target imported):
   the time ``import chaos_shims.auto`` takes, cold, and with the standard library modules it
   needs already imported (chaos_shims' own share).
3. A ccxt REST call (sync and async binance ``fetch_time``, ccxt's whole code path, the
   transport inside ``BaseExchange.fetch`` answered in-process so the network does not drown
   the difference): without chaos_shims, under wrapt's pass-through floor (a FunctionWrapper
   whose wrapper just calls through, on the same ``fetch``), patched but dormant, and active
   with a scenario armed that never fires; configurations interleaved round by round. For
   scale, the same kind of call against the loopback exchange over TCP.
4. Decisions per second on one thread (``ChaosInjector.plan``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.stats import (
    CPU_CLOCK,
    interleaved_rounds,
    mean_seconds_per_call,
    paired_median,
    percentile,
)

#: the standard library modules importing chaos_shims.auto must never pull in
HEAVY = ("wrapt", "prometheus_client", "yaml", "asyncio", "ccxt", "aiohttp", "websockets",
         "requests")


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's process: bytecode caches written and used (the project's
    shell sets PYTHONDONTWRITEBYTECODE), no chaos settings inherited, run artifacts kept out
    of the repository."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHAOS_SHIMS_") and k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_seconds(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock seconds of ``python -c code``, and the CPU seconds (user + system) it used:
    the CPU time does not count the waits for a core that a busy machine adds."""
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - started, _children_cpu() - cpu


def _import_time_us(env: dict[str, str], module: str) -> float:
    """Cumulative µs of ``import module`` by ``-X importtime`` (its last line)."""
    timing = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                            env=env, capture_output=True, text=True, check=True).stderr
    last = timing.strip().splitlines()[-1]  # "import time: self | cumulative | module"
    return float(last.split("|")[1])


def bench_start(pairs: int = 200, importtime_runs: int = 30) -> dict[str, Any]:
    """Bare and ``import chaos_shims.auto`` starts (chaos off: CHAOS_SHIMS_ENABLED unset),
    interleaved with the order swapped every pair so that drift in the machine's load and any
    first/second bias hit both alike; the added cost is the median of the paired differences.
    The import alone is also timed inside the interpreter (``-X importtime``)."""
    env = user_env()
    for _ in range(2):  # write the bytecode caches, as a user's first run does
        _run_seconds("import chaos_shims.auto", env)
    bare: list[float] = []
    added: list[float] = []
    added_cpu: list[float] = []
    for index in range(pairs):
        if index % 2:
            auto = _run_seconds("import chaos_shims.auto", env)
            plain = _run_seconds("pass", env)
        else:
            plain = _run_seconds("pass", env)
            auto = _run_seconds("import chaos_shims.auto", env)
        bare.append(plain[0] * 1e3)
        added.append((auto[0] - plain[0]) * 1e3)
        added_cpu.append((auto[1] - plain[1]) * 1e3)
    import_ms = [_import_time_us(env, "chaos_shims.auto") / 1e3 for _ in range(importtime_runs)]
    return {
        "pairs": pairs,
        "bare_ms": statistics.median(bare),
        "auto_off_added_ms": statistics.median(added),
        "auto_off_added_p25_ms": percentile(added, 0.25),
        "auto_off_added_p75_ms": percentile(added, 0.75),
        "auto_off_added_cpu_ms": statistics.median(added_cpu),
        "auto_off_import_ms": statistics.median(import_ms),
        "importtime_runs": importtime_runs,
    }


_ACTIVATION_CODE = """
import sys, time, json
for name in json.loads(sys.argv[1]):
    try:
        __import__(name)
    except Exception:
        pass
before = set(sys.modules)
cpu = time.process_time()
started = time.perf_counter()
import chaos_shims.auto
elapsed = time.perf_counter() - started
cpu = time.process_time() - cpu
from chaos_shims.core import runtime
print(json.dumps({"ms": elapsed * 1e3, "cpu_ms": cpu * 1e3, "active": runtime.active is not None,
                  "new": [m for m in sys.modules if m not in before]}))
"""


def bench_activation(runs: int = 30) -> dict[str, Any]:
    """``import chaos_shims.auto`` with chaos enabled (a scenario armed, dry-run), first thing in
    a fresh interpreter: cold, and with every non-chaos_shims module it imports already
    imported (what is left is chaos_shims' own code and work). Also what it imports, and the
    largest imports by ``-X importtime``."""
    artifacts = tempfile.mkdtemp(prefix="chaos_shims_bench_")
    try:
        env = user_env(CHAOS_SHIMS_ENABLED="1", CHAOS_SHIMS_EXCH_429="0.1",
                       CHAOS_SHIMS_ARTIFACTS_DIR=artifacts)

        def activation(preimported: list[str]) -> dict[str, Any]:
            out = subprocess.run([sys.executable, "-c", _ACTIVATION_CODE, json.dumps(preimported)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
            if not result["active"]:
                raise RuntimeError("chaos did not activate in the activation benchmark")
            return result

        first = activation([])  # also writes the bytecode caches
        stdlib = [m for m in first["new"] if not m.startswith("chaos_shims")]
        cold: list[float] = []
        cold_cpu: list[float] = []
        own: list[float] = []
        for _ in range(runs):  # interleaved: both see the same load
            result = activation([])
            cold.append(result["ms"])
            cold_cpu.append(result["cpu_ms"])
            own.append(activation(stdlib)["ms"])
        timings = [subprocess.run([sys.executable, "-X", "importtime", "-c", "import chaos_shims.auto"],
                                  env=env, capture_output=True, text=True, check=True).stderr
                   for _ in range(max(3, runs // 3))]
    finally:
        shutil.rmtree(artifacts, ignore_errors=True)
    return {
        "runs": runs,
        "activation_ms": statistics.median(cold),
        "activation_p90_ms": percentile(cold, 0.9),
        "activation_cpu_ms": statistics.median(cold_cpu),
        "activation_own_ms": statistics.median(own),
        "stdlib_modules_imported": len(stdlib),
        "chaos_shims_modules_imported": len(first["new"]) - len(stdlib),
        "heavy_imported": [m for m in HEAVY if m in first["new"]],
        "largest_imports_self_ms": _largest_imports(timings, "chaos_shims.auto"),
        "chaos_shims_imports_self_ms": _chaos_shims_self_ms(timings, "chaos_shims.auto"),
    }


def _self_times(importtime: str, top: str) -> dict[str, float]:
    """Self µs per module imported by the top-level ``import top`` in one ``-X importtime``
    report (its line comes after those of the modules it imported, which are indented)."""
    selfs: dict[str, float] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, raw_name = line[len("import time:"):].split("|")
        name = raw_name.strip()
        selfs[name] = float(self_us)
        if raw_name.startswith("  "):
            continue  # nested: part of the next top-level import
        if name == top:
            return selfs
        selfs = {}  # another top-level import (site, at start-up): not ours
    return selfs


def _median_self_ms(importtimes: list[str], last: str) -> dict[str, float]:
    """Median self ms per module over several ``-X importtime`` reports (one is too noisy)."""
    reports = [_self_times(report, last) for report in importtimes]
    return {name: statistics.median(r.get(name, 0.0) for r in reports) / 1e3
            for name in reports[0]}


def _largest_imports(importtimes: list[str], last: str, count: int = 10) -> dict[str, float]:
    """The ``count`` modules with the largest median self time."""
    medians = _median_self_ms(importtimes, last)
    return {name: round(ms, 2) for name, ms in
            sorted(medians.items(), key=lambda item: item[1], reverse=True)[:count]}


def _chaos_shims_self_ms(importtimes: list[str], last: str) -> dict[str, float]:
    """Median self ms of chaos_shims' own modules and of the rest (what they import)."""
    medians = _median_self_ms(importtimes, last)
    own = sum(ms for name, ms in medians.items() if name.startswith("chaos_shims"))
    return {"chaos_shims": round(own, 2), "other": round(sum(medians.values()) - own, 2)}


# -- REST call overhead ---------------------------------------------------------------------

REST_CONFIGS = ("bare", "wrapt_floor", "dormant", "active")


def _instant_fetch(self: Any, url: str, method: str = "GET", headers: Any = None,
                   body: Any = None) -> Any:
    return {"serverTime": 1}


async def _instant_async_fetch(self: Any, url: str, method: str = "GET", headers: Any = None,
                               body: Any = None) -> Any:
    return {"serverTime": 1}


def _pass_through(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    return wrapped(*args, **kwargs)


@contextmanager
def instant_transport() -> Iterator[Callable[[str], None]]:
    """ccxt's two ``BaseExchange.fetch`` answered in-process; yields ``use(config)``, which puts
    chaos_shims and the fetch methods in one of REST_CONFIGS. Everything is restored after."""
    import wrapt
    from ccxt.async_support.base.exchange import BaseExchange as AsyncBase
    from ccxt.base.exchange import BaseExchange as SyncBase

    from chaos_shims.activation import activate, deactivate

    originals = (SyncBase.__dict__["fetch"], AsyncBase.__dict__["fetch"])

    def use(config: str) -> None:
        deactivate()  # unpatched: chaos_shims restores what it wrapped
        if config == "wrapt_floor":
            SyncBase.fetch = wrapt.FunctionWrapper(_instant_fetch, _pass_through)
            AsyncBase.fetch = wrapt.FunctionWrapper(_instant_async_fetch, _pass_through)
            return
        SyncBase.fetch = _instant_fetch
        AsyncBase.fetch = _instant_async_fetch
        if config == "dormant":
            activate(None, enabled=True, exch_429=0.1)
            deactivate(unpatch=False)
        elif config == "active":
            # armed, live, always ON: every request draws, and none fires
            activate(None, enabled=True, dry_run=False, burst_on_sec=0, exch_429=1e-12, seed=1)

    try:
        yield use
    finally:
        deactivate()
        SyncBase.fetch, AsyncBase.fetch = originals


def bench_rest(rounds: int = 21, number: int = 10_000, loopback_calls: int = 300) -> dict[str, Any]:
    """µs per ccxt REST call in each of REST_CONFIGS, sync and async, interleaved round by round
    (each round runs ``number`` calls per configuration); the added costs are the medians of
    the differences taken within a round. By this thread's CPU time (the medians by wall-clock
    time are kept beside them, ``*_wall_us``)."""
    import ccxt
    import ccxt.async_support as ccxt_async

    from chaos_shims.exchange import LoopbackExchange

    with LoopbackExchange() as exchange:
        tcp_client = ccxt.binance({**exchange.ccxt_config(), "enableRateLimit": False})
        tcp_client.load_markets()
        loopback_ms = [mean_seconds_per_call(lambda: tcp_client.fetch_order_book("BTC/USDT"), 1,
                                             time.perf_counter) * 1e3
                       for _ in range(loopback_calls)]

    results: dict[str, Any] = {"rounds": rounds, "calls_per_round": number,
                               "loopback_fetch_order_book_ms": statistics.median(loopback_ms)}
    loop = asyncio.new_event_loop()
    try:
        with instant_transport() as use:
            client = ccxt.binance({"enableRateLimit": False})
            aclient = loop.run_until_complete(_make_async_client(ccxt_async))

            wall: dict[str, list[float]] = {}

            async def async_calls() -> None:
                for _ in range(number):
                    await aclient.fetch_time()

            def variant(config: str, kind: str) -> Callable[[], float]:
                def measure() -> float:
                    use(config)
                    started, cpu = time.perf_counter(), CPU_CLOCK()
                    if kind == "sync":
                        for _ in range(number):
                            client.fetch_time()
                    else:
                        loop.run_until_complete(async_calls())
                    cpu, elapsed = CPU_CLOCK() - cpu, time.perf_counter() - started
                    wall.setdefault(f"{kind}_{config}", []).append(elapsed / number * 1e6)
                    return cpu / number * 1e6
                return measure

            for kind in ("sync", "async"):
                samples = interleaved_rounds(
                    {config: variant(config, kind) for config in REST_CONFIGS}, rounds)
                for config in REST_CONFIGS:
                    results[f"{kind}_{config}_us"] = statistics.median(samples[config])
                    results[f"{kind}_{config}_wall_us"] = statistics.median(wall[f"{kind}_{config}"])
                    if config != "bare":
                        results[f"{kind}_{config}_added_us"] = paired_median(samples, config, "bare")
                results[f"{kind}_active_added_pct_of_loopback_call"] = (
                    results[f"{kind}_active_added_us"] / (results["loopback_fetch_order_book_ms"] * 1e3)
                    * 100)
            loop.run_until_complete(aclient.close())
    finally:
        loop.close()
    return results


async def _make_async_client(ccxt_async: Any) -> Any:
    return ccxt_async.binance({"enableRateLimit": False})


# -- decisions ------------------------------------------------------------------------------

#: The REST scenarios that decide by probability: armed at 1e-12 they draw and never fire.
REST_PROBABILITY_SCENARIOS = ("net_loss", "exch_429", "exch_5xx", "rate_limit_storm")


def bench_decisions(number: int = 200_000, rounds: int = 7) -> dict[str, Any]:
    """``ChaosInjector.plan`` for one REST event, one thread: one scenario armed (one decision
    per plan), and every probability REST scenario armed (four decisions per plan). By this
    thread's CPU time."""
    from chaos_shims.activation import resolve
    from chaos_shims.core.injector import ChaosInjector
    from chaos_shims.core.registry import REST

    def plan_seconds(scenarios: tuple[str, ...]) -> float:
        config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1,
                          **dict.fromkeys(scenarios, 1e-12)}, environ={})
        injector = ChaosInjector(config, export_metrics=False)
        plan = injector.plan
        return statistics.median(
            mean_seconds_per_call(lambda: plan(REST, "binance", "fetch_ticker", "/x"), number)
            for _ in range(rounds))

    one = plan_seconds(("exch_429",))
    every = plan_seconds(REST_PROBABILITY_SCENARIOS)
    return {
        "plans_per_round": number,
        "rounds": rounds,
        "plan_ns": one * 1e9,
        "decisions_per_sec": 1 / one,
        "plan_4_scenarios_ns": every * 1e9,
        "decisions_per_sec_4_scenarios": len(REST_PROBABILITY_SCENARIOS) / every,
    }


def main() -> None:
    results: dict[str, Any] = {}
    results.update(bench_start(pairs=60, importtime_runs=10))
    results.update(bench_activation(runs=10))
    results.update(bench_rest(rounds=9))
    results.update(bench_decisions())
    width = max(map(len, results))
    for key, value in results.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main()
