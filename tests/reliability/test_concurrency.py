"""Concurrency: 8 threads (sync ccxt) and 1000 asyncio tasks (ccxt.async_support, one event
loop) hammer the loopback exchange with four scenarios live at once, in a bot run the way a user
runs one (``chaos-shims run``, a JSONL log, the Prometheus exporter, the artifact written by the
real exit path). Every injection is counted identically in the four places a user can read it,
and every call of the bot either succeeds or raises the error ccxt itself raises for that fault.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.core.metrics import DEFAULT_PREFIX, METRICS
from chaos_shims.exchange import LoopbackExchange

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("error::ResourceWarning")]

pytest.importorskip("ccxt")

CLI = str(Path(sys.executable).parent / "chaos-shims")
INJECTIONS = f"{DEFAULT_PREFIX}_{METRICS['chaos_injections_total'].suffix}"
TICKER, DEPTH = "/api/v3/ticker/24hr", "/api/v3/depth"

THREADS, THREAD_CALLS = 8, 120
TASKS, TASK_CALLS = 1000, 2
CALLS = THREADS * THREAD_CALLS + TASKS * TASK_CALLS
#: About 5 s on an idle machine; the bot's own bounds (30 s for tasks, 30 s per thread join)
#: report a hang as unfinished work before this.
REPORT_WITHIN_SEC = 75

#: Live, always ON, only the two hammered methods (the clients' load_markets stays clean).
SCENARIOS = {"exch_429": "0.15", "exch_5xx": "0.15", "net_loss": "0.15", "lat_spike_ms": "1"}
#: The exact types ccxt raises for these faults (contract: binance answers 429 with
#: DDoSProtection; 5xx ExchangeNotAvailable, 504 RequestTimeout; a lost connection is
#: NetworkError through requests and ExchangeNotAvailable through aiohttp).
SYNC_ERRORS = {"DDoSProtection", "ExchangeNotAvailable", "RequestTimeout", "NetworkError"}
ASYNC_ERRORS = {"DDoSProtection", "ExchangeNotAvailable", "RequestTimeout"}

#: The bot: threads and tasks at once, every outcome by exact type; one JSON line of what it
#: saw and what the injector counted, then it waits for the test to scrape and say "exit".
BOT = textwrap.dedent("""
    import asyncio, collections, json, sys, threading
    import ccxt
    import ccxt.async_support as ccxt_async
    from chaos_shims import exporter
    from chaos_shims.activation import active_injector

    config = json.loads(sys.argv[1])
    threads, thread_calls, tasks, task_calls = map(int, sys.argv[2:6])
    symbol = "BTC/USDT"
    outcomes = {"sync": collections.Counter(), "async": collections.Counter()}
    count_lock = threading.Lock()

    def outcome(kind, exc):
        name = "ok" if exc is None else type(exc).__name__
        with count_lock:
            outcomes[kind][name] += 1

    def call(client, i):
        return client.fetch_ticker(symbol) if i % 2 else client.fetch_order_book(symbol)

    def sync_worker(start):
        client = ccxt.binance({**config, "enableRateLimit": False})
        client.load_markets()
        start.wait()
        for i in range(thread_calls):
            try:
                call(client, i)
            except Exception as exc:  # every type is reported; the test judges them
                outcome("sync", exc)
            else:
                outcome("sync", None)

    async def async_bot():
        client = ccxt_async.binance({**config, "enableRateLimit": False})
        try:
            await client.load_markets()

            async def task(n):
                for i in range(task_calls):
                    try:
                        await call(client, n + i)
                    except Exception as exc:
                        outcome("async", exc)
                    else:
                        outcome("async", None)

            pending = [asyncio.ensure_future(task(n)) for n in range(tasks)]
            done, not_done = await asyncio.wait(pending, timeout=30)
            for left in not_done:
                left.cancel()
            return len(done), len(not_done)
        finally:
            await client.close()

    start = threading.Barrier(threads + 1)
    workers = [threading.Thread(target=sync_worker, args=(start,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait(timeout=30)
    tasks_done, tasks_left = asyncio.run(async_bot())
    for worker in workers:
        worker.join(timeout=30)
    injector = active_injector()
    print(json.dumps({
        "port": exporter.exporter_server().server_port,
        "tasks_done": tasks_done, "tasks_left": tasks_left,
        "threads_left": sum(worker.is_alive() for worker in workers),
        "outcomes": {kind: dict(found) for kind, found in outcomes.items()},
        "injector": [[s, m, n] for (s, m), n in injector.counts().items()],
    }), flush=True)
    sys.stdin.readline()
""")


def bot_env(folder: Path) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ARTIFACTS_DIR": str(folder / "artifacts"),
                    "CHAOS_SHIMS_LOG_FILE": str(folder / "chaos.jsonl"),
                    "CHAOS_SHIMS_METRICS_PORT": "0"})
    return environ


def scrape_injections(port: int) -> Counter[tuple[str, str]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode("utf-8")
    found: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == INJECTIONS:
                found[(sample.labels["scenario"], sample.labels["mode"])] += int(sample.value)
    return found


def run_bot(exchange: LoopbackExchange, folder: Path) -> tuple[dict[str, Any], Counter[
        tuple[str, str]], str]:
    """Run the bot under ``chaos-shims run``; its report, the scrape, and its stderr."""
    sets = [arg for key, value in {**SCENARIOS, "dry_run": "false", "burst_on_sec": "0",
                                   "seed": "11", "include_ops": "fetch_ticker,fetch_order_book"
                                   }.items() for arg in ("--set", f"{key}={value}")]
    config = json.dumps(exchange.ccxt_config())
    command = [CLI, "run", *sets, "--", sys.executable, "-c", BOT, config,
               str(THREADS), str(THREAD_CALLS), str(TASKS), str(TASK_CALLS)]
    with subprocess.Popen(command, env=bot_env(folder), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as bot:
        assert bot.stdin is not None and bot.stdout is not None
        try:
            # Bounded: a deadlocked bot fails here, not at the suite's timeout.
            ready, _, _ = select.select([bot.stdout], [], [], REPORT_WITHIN_SEC)
            assert ready, f"no report within {REPORT_WITHIN_SEC} s: a thread or task hangs"
            line = bot.stdout.readline()
            if not line:
                raise AssertionError(bot.communicate(timeout=20)[1])
            report = json.loads(line)
            scraped = scrape_injections(report["port"])
            _out, err = bot.communicate("exit\n", timeout=30)
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.communicate()
    assert bot.returncode == 0, err
    return report, scraped, err


def test_threads_and_tasks_are_counted_identically_everywhere(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    started = time.monotonic()
    report, scraped, err = run_bot(exchange, tmp_path)
    elapsed = time.monotonic() - started

    # Nothing hung: every task and thread finished within its bound.
    assert (report["tasks_done"], report["tasks_left"], report["threads_left"]) == (TASKS, 0, 0)
    outcomes = {kind: Counter(found) for kind, found in report["outcomes"].items()}
    assert sum(outcomes["sync"].values()) == THREADS * THREAD_CALLS
    assert sum(outcomes["async"].values()) == TASKS * TASK_CALLS
    # Every failure is the exchange-faithful ccxt error, no foreign type, and each of those
    # errors was seen (each is a few % of about a thousand calls: never absent by chance).
    assert set(outcomes["sync"]) == SYNC_ERRORS | {"ok"}, outcomes["sync"]
    assert set(outcomes["async"]) == ASYNC_ERRORS | {"ok"}, outcomes["async"]
    assert "Traceback" not in err and "chaos is now off" not in err, err

    injector = Counter({(s, m): n for s, m, n in report["injector"]})
    with open(tmp_path / "chaos.jsonl", encoding="utf-8") as log:
        records = [json.loads(line) for line in log]
    logged = Counter((r["scenario"], r["mode"]) for r in records)
    artifacts = list((tmp_path / "artifacts" / "runs").glob("*.json"))
    assert len(artifacts) == 1, artifacts
    artifact = json.loads(artifacts[0].read_text())
    assert (artifact["ended_by"], artifact["complete"]) == ("exit", True)
    from_artifact = Counter({(s, m): n for s, modes in
                             artifact["injections"]["by_scenario"].items()
                             for m, n in modes.items()})

    # The four views agree exactly, per scenario and mode, and nothing ran in dry-run.
    assert set(injector) == {(key, "live") for key in SCENARIOS}
    assert logged == injector
    assert scraped == injector
    assert from_artifact == injector
    assert artifact["injections"]["total"] == len(records) == sum(injector.values())
    assert artifact["jsonl"]["written"] == len(records) and artifact["jsonl"]["lost"] == 0
    # Every record once, none torn or lost, in the order the injector numbered them.
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))

    # Always ON: the spike delays every hammered request, so it counts the bot's calls.
    assert injector[("lat_spike_ms", "live")] == CALLS
    # A call fails when at least one of the three fires, and then never reaches the server.
    failing = [injector[(key, "live")] for key in ("exch_429", "exch_5xx", "net_loss")]
    failed = CALLS - outcomes["sync"]["ok"] - outcomes["async"]["ok"]
    assert max(failing) <= failed <= sum(failing)
    assert min(failing) > 0.15 * CALLS * 0.7  # each scenario really fired at about its rate
    assert exchange.request_count(TICKER) + exchange.request_count(DEPTH) == CALLS - failed
    assert not exchange.handler_errors()
    print(f"{CALLS} calls, {sum(injector.values())} injections, {failed} failed, "
          f"{elapsed:.1f} s; {dict(outcomes['sync'])}; {dict(outcomes['async'])}")
