"""The example bots against the embedded exchange, under ``chaos-shims run`` as the demo runs
them: both run and exit cleanly; under faults the resilient one recovers, the naive one not.

Each bot is a subprocess (a clock fault must not reach the exchange) with its own embedded
exchange (its own account), so two bots can run side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.exchange.embedded import EmbeddedExchange

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("error::ResourceWarning")]

pytest.importorskip("ccxt")

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 4
#: the naive bot's run under ws_disconnect: long enough for its stale book to outlast a cycle
NAIVE_DISCONNECT_SECONDS = 8
#: stale ticks, 0.1 s apart at least, spanning more than the 2 s duty cycle of these runs
STALE_TICKS_OVER_A_CYCLE = 22


@dataclass
class BotRun:
    status: int
    summary: dict[str, Any]
    artifact: dict[str, Any]
    stderr: str


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[Path, Any]]]:
    """Two embedded exchanges and their description files."""
    folder = tmp_path_factory.mktemp("exchanges")
    with EmbeddedExchange(seed=1, url_host="localhost") as first, \
            EmbeddedExchange(seed=2, url_host="localhost") as second:
        yield [(exchange.write_description(folder / f"{n}.json"), exchange)
               for n, exchange in enumerate((first, second))]


def run_bot(bot: str, description: Path, artifacts: Path, *sets: str,
            seconds: float = SECONDS) -> BotRun:
    settings = ["enabled=true", "dry_run=false", "seed=3", "burst_on_sec=1", "burst_off_sec=1",
                *sets]
    command = [sys.executable, "-m", "chaos_shims.cli", "run"]
    for item in settings:
        command += ["--set", item]
    command += ["--", sys.executable, str(ROOT / "examples" / f"{bot}.py"),
                "--embedded", str(description), "--seconds", str(seconds)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_SHIMS_")}
    env["CHAOS_SHIMS_ARTIFACTS_DIR"] = str(artifacts)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                            check=False)
    runs = sorted((artifacts / "runs").glob("*.json"))
    assert len(runs) == 1, (runs, result.stderr)
    return BotRun(result.returncode, json.loads(result.stdout.strip().splitlines()[-1]),
                  json.loads(runs[0].read_text()), result.stderr)


def side_by_side(*runs: Callable[[], BotRun]) -> list[BotRun]:
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: run(), runs))


def filled_order_ids(exchange: Any) -> set[int]:
    return {order["orderId"] for order in exchange.rest.all_orders("BTC/USDT")
            if order["status"] == "FILLED"}


def test_both_bots_quote_and_exit_cleanly(exchanges: list[tuple[Path, Any]],
                                          tmp_path: Path) -> None:
    (first, first_exchange), (second, second_exchange) = exchanges
    filled_before = filled_order_ids(second_exchange)
    resilient, naive = side_by_side(partial(run_bot, "market_maker", first, tmp_path / "a"),
                                    partial(run_bot, "naive_bot", second, tmp_path / "b"))
    naive_fills = len(filled_order_ids(second_exchange) - filled_before)
    for run in (resilient, naive):
        assert run.status == 0, run.stderr
        assert run.artifact["baseline"] is True
        assert run.artifact["ticks"]["count"] >= 30
        assert run.summary["orders_sent"] >= 2
    # Without chaos the resilient bot never errs. The naive one can trip over its own orders:
    # it lists its open orders, then cancels them one by one, and one that fills in between is
    # gone (OrderNotFound, an error tick; so does a cancel it retried after a timeout). How
    # often depends on the machine's speed; but each one is an order of its own that really
    # filled (a filled order is never listed again) or a retry, and nothing else goes wrong.
    assert resilient.artifact["ticks"]["error_ticks"] == 0, \
        resilient.artifact["ticks"]["errors_by_type"]
    naive_errors = naive.artifact["ticks"]["errors_by_type"]
    assert set(naive_errors) <= {"OrderNotFound"}, naive_errors
    assert naive_errors.get("OrderNotFound", 0) <= naive_fills + naive.summary["retries"], \
        (naive_errors, naive_fills, naive.summary)
    assert resilient.summary["quoting_ticks"] == resilient.summary["ticks"]
    # each traded on its own exchange (the resilient bot's client order ids start with "mm")
    resilient_orders = first_exchange.rest.all_orders("BTC/USDT")
    naive_orders = second_exchange.rest.all_orders("BTC/USDT")
    assert resilient_orders and all(o["clientOrderId"].startswith("mm") for o in resilient_orders)
    assert naive_orders and not any(o["clientOrderId"].startswith("mm") for o in naive_orders)
    # both leave nothing behind
    assert first_exchange.rest.open_orders("BTC/USDT") == []
    assert second_exchange.rest.open_orders("BTC/USDT") == []


def test_dropped_streams_the_resilient_bot_recovers_the_naive_one_does_not(
    exchanges: list[tuple[Path, Any]], tmp_path: Path,
) -> None:
    (first, _), (second, _) = exchanges
    resilient, naive = side_by_side(
        partial(run_bot, "market_maker", first, tmp_path / "a", "ws_disconnect=0.2"),
        partial(run_bot, "naive_bot", second, tmp_path / "b", "ws_disconnect=0.2",
                seconds=NAIVE_DISCONNECT_SECONDS))
    assert resilient.status == 0 and naive.status == 0, resilient.stderr + naive.stderr

    recovery = resilient.artifact["recovery"]
    assert resilient.artifact["injections"]["by_scenario"]["ws_disconnect"]["live"] >= 1
    assert resilient.summary["reconnects"] >= 1
    assert resilient.artifact["reconnects"]["total"] >= 1
    assert recovery["bursts_ended"] >= 1 and recovery["unrecovered"] == 0, recovery
    assert recovery["worst_ticks"] <= 3, recovery
    assert all(b["recovered"] for b in recovery["per_burst"]), recovery

    # The naive bot never reopens the stream: its book goes stale and stays stale, so its
    # last `stale` ticks are all StaleBook errors, at least 0.1 s apart (its loop's period,
    # however busy the machine). Stale ticks spanning more than one duty cycle (2 s) include
    # the end of a burst with an error tick after it and no healthy tick ever again: that
    # burst is not recovered. The run is long enough for that on a busy machine too (the
    # stream drops within the first ON phases: about 60 stale ticks of 80 measured).
    ticks = naive.artifact["ticks"]
    stale = ticks["errors_by_type"].get("StaleBook", 0)
    # (in the 2 s before it calls its book stale, it quotes from a dead stream: the exchange
    # may refuse a post-only order the market has since moved through)
    assert set(ticks["errors_by_type"]) <= {"StaleBook", "OrderNotFound",
                                            "OrderImmediatelyFillable"}, ticks
    assert naive.artifact["reconnects"]["total"] == 0
    assert stale >= STALE_TICKS_OVER_A_CYCLE, ticks
    naive_recovery = naive.artifact["recovery"]
    assert naive_recovery["unrecovered"] >= 1, naive_recovery
    recovered = [burst["recovered"] for burst in naive_recovery["per_burst"]]
    assert recovered == sorted(recovered, reverse=True), recovered  # once lost, never again


def test_the_resilient_bot_reports_mismatches_and_rides_out_rest_faults(
    exchanges: list[tuple[Path, Any]], tmp_path: Path,
) -> None:
    (first, _), (second, _) = exchanges
    reconcile, rest = side_by_side(
        partial(run_bot, "market_maker", first, tmp_path / "a", "reconcile_mismatch=0.5"),
        partial(run_bot, "market_maker", second, tmp_path / "b", "exch_5xx=0.3"))
    assert reconcile.status == 0 and rest.status == 0, reconcile.stderr + rest.stderr

    detection = reconcile.artifact["reconcile"]
    assert detection["injected"] >= 1, detection
    assert detection["detected"] >= 1 and detection["detection_rate"] >= 0.5, detection
    assert sum(reconcile.summary["discrepancies_reported"].values()) == detection["detected"]

    assert rest.artifact["injections"]["by_scenario"]["exch_5xx"]["live"] >= 1
    assert rest.artifact["recovery"]["unrecovered"] == 0, rest.artifact["recovery"]
    assert rest.artifact["cancels"]["storms"] == 0
    assert rest.summary["orders_sent"] >= 2


def test_the_resilient_bot_runs_on_an_exchange_of_its_own() -> None:
    """``--loopback``: no chaos, no description file; it quotes and exits 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "market_maker.py"), "--loopback",
         "--seconds", "1"],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHAOS_SHIMS_")})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ticks"] >= 5 and summary["orders_sent"] >= 2


@pytest.mark.asyncio
@pytest.mark.parametrize("bot", ["market_maker", "naive_bot"])
async def test_a_testnet_is_configuration_alone(bot: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--exchange binance --sandbox`` with keys from the environment: testnet REST and
    stream URLs, nothing contacted (the client is built, never used)."""
    import importlib

    module = importlib.import_module(f"examples.{bot}")
    monkeypatch.setenv("EXCHANGE_API_KEY", "key-from-env")
    monkeypatch.setenv("EXCHANGE_SECRET", "secret-from-env")
    args = module.parse_args(["--exchange", "binance", "--sandbox", "--seconds", "1"])
    exchange, ws_url, embedded = module.exchange_and_stream(args)
    try:
        assert embedded is None
        assert exchange.apiKey == "key-from-env" and exchange.secret == "secret-from-env"
        assert exchange.urls["api"]["public"].startswith("https://testnet.binance.vision")
        assert ws_url == "wss://stream.testnet.binance.vision/ws"
    finally:
        await exchange.close()
