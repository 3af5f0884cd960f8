"""Chaos safe to run in production, end to end with real ccxt binance against the loopback
exchange: the kill switch (in one process and in several), the canary share and its rollout
stages, and the blast radius on real calls."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.activation import activate, resolve
from chaos_shims.core.injector import KILL_LOOK_SEC, ChaosInjector, in_rollout
from chaos_shims.exchange import LoopbackExchange
from tests.scenarios.contract import outcome

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")

SYMBOL = "BTC/USDT"
TICKER = "/api/v3/ticker/24hr"
DEPTH = "/api/v3/depth"
#: "every injection stops within a second": the look interval, plus what one call may take
KILL_BOUND_SEC = KILL_LOOK_SEC + 0.25


def live(**keys: Any) -> ChaosInjector:
    injector = activate(None, **{"enabled": True, "dry_run": False, "burst_on_sec": 0,
                                 "exch_429": 1.0, "seed": 1, **keys})
    assert injector is not None
    return injector


def seconds_until(call: Callable[[], Any], wanted: str, limit: float = 5.0) -> float:
    """Call every 10 ms until the outcome is ``wanted``; how long that took."""
    start = time.monotonic()
    while outcome(call) != wanted:
        assert time.monotonic() - start < limit, f"still not {wanted} after {limit} s"
        time.sleep(0.01)
    return time.monotonic() - start


# -- kill switch -----------------------------------------------------------------------------

def test_the_kill_file_stops_live_injections_within_a_second_and_its_removal_resumes_them(
        binance: Any, exchange: LoopbackExchange, tmp_path: Path) -> None:
    kill = tmp_path / "chaos.kill"
    injector = live(kill_file=str(kill))
    ticker = lambda: binance.fetch_ticker(SYMBOL)  # noqa: E731
    assert outcome(ticker) == "DDoSProtection"
    assert exchange.request_count(TICKER) == 0

    kill.touch()
    stopped_after = seconds_until(ticker, "ok")
    assert stopped_after <= KILL_BOUND_SEC
    assert injector.mode == "killed"
    before = exchange.request_count(TICKER)
    for _ in range(5):  # and it stays stopped: every call reaches the exchange
        assert outcome(ticker) == "ok"
    assert exchange.request_count(TICKER) == before + 5
    # decisions go on being made and counted, as dry-run: the shadow of what would have happened
    assert injector.count("exch_429", "dry_run") >= 5

    kill.unlink()
    resumed_after = seconds_until(ticker, "DDoSProtection")
    assert resumed_after <= KILL_BOUND_SEC
    assert injector.mode == "live"


@pytest.mark.asyncio
async def test_the_kill_file_stops_async_calls_too(async_binance: Any, tmp_path: Path) -> None:
    kill = tmp_path / "chaos.kill"
    live(kill_file=str(kill))
    with pytest.raises(ccxt.DDoSProtection):
        await async_binance.fetch_ticker(SYMBOL)
    kill.touch()
    start = time.monotonic()
    while True:
        try:
            await async_binance.fetch_ticker(SYMBOL)
            break
        except ccxt.DDoSProtection:
            assert time.monotonic() - start < KILL_BOUND_SEC
            await _sleep(0.01)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


#: A bot process: chaos from the environment, then a fetch_ticker every 10 ms; it prints each
#: change of outcome with the wall time, until its stdin closes.
WATCHER = textwrap.dedent("""
    import json, select, sys, time
    import chaos_shims.auto
    import ccxt
    client = ccxt.binance({**json.loads(sys.argv[1]), "enableRateLimit": False})
    client.load_markets()
    last = None
    while not select.select([sys.stdin], [], [], 0)[0]:
        try:
            client.fetch_ticker("BTC/USDT")
            now = "ok"
        except ccxt.BaseError as exc:
            now = type(exc).__name__
        if now != last:
            print(now, time.time(), flush=True)
            last = now
        time.sleep(0.01)
""")


def test_one_kill_file_stops_every_process_watching_it(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    kill = tmp_path / "fleet.kill"
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_DRY_RUN": "0",
                    "CHAOS_SHIMS_BURST_ON_SEC": "0", "CHAOS_SHIMS_EXCH_429": "1",
                    "CHAOS_SHIMS_INCLUDE_OPS": "fetch_ticker", "CHAOS_SHIMS_KILL_FILE": str(kill)})
    bots = [subprocess.Popen([sys.executable, "-c", WATCHER, json.dumps(exchange.ccxt_config())],
                             env={**environ, "CHAOS_SHIMS_INSTANCE_ID": f"bot-{n}"},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for n in range(2)]
    try:
        for bot in bots:
            assert _next_change(bot)[0] == "DDoSProtection", bot.stderr
        kill.touch()
        killed_at = time.time()
        for bot in bots:
            state, at = _next_change(bot)
            assert state == "ok" and at - killed_at <= KILL_BOUND_SEC
        kill.unlink()
        removed_at = time.time()
        for bot in bots:
            state, at = _next_change(bot)
            assert state == "DDoSProtection" and at - removed_at <= KILL_BOUND_SEC
    finally:
        errors = [_stop(bot) for bot in bots]
    assert [bot.returncode for bot in bots] == [0, 0], errors


def _stop(bot: subprocess.Popen[str]) -> str:
    try:
        return bot.communicate("stop\n", timeout=20)[1]
    except (subprocess.TimeoutExpired, OSError):
        bot.kill()
        return bot.communicate()[1]


def _next_change(bot: subprocess.Popen[str]) -> tuple[str, float]:
    assert bot.stdout is not None
    line = bot.stdout.readline()
    assert line, "the bot process ended"
    state, at = line.split()
    return state, float(at)


# -- canary ----------------------------------------------------------------------------------

INSTANCES = [f"bot-{n}" for n in range(400)]


@pytest.mark.parametrize("rollout_pct", [10, 50])
def test_the_live_share_tracks_rollout_pct_and_the_others_record_dry_run(
        binance: Any, exchange: LoopbackExchange, rollout_pct: float) -> None:
    canaries = 0
    for instance in INSTANCES:
        injector = live(rollout_pct=rollout_pct, instance_id=instance)
        faulted = outcome(lambda: binance.fetch_ticker(SYMBOL)) == "DDoSProtection"
        assert faulted is injector.canary is in_rollout(instance, rollout_pct)
        if injector.canary:
            canaries += 1
            assert injector.counts() == {("exch_429", "live"): 1}
        else:  # a shadow: the same decision, recorded and counted, and the call went through
            assert injector.mode == "shadow"
            assert injector.counts() == {("exch_429", "dry_run"): 1}
            assert [r.mode for r in injector.records()] == ["dry_run"]
    share = rollout_pct / 100  # the hash is stable, so this holds within three standard errors
    assert abs(canaries / len(INSTANCES) - share) <= 3 * math.sqrt(share * (1 - share) / len(INSTANCES))
    assert exchange.request_count(TICKER) == len(INSTANCES) - canaries


def test_shadow_10_50_100_percent_are_four_config_values_that_only_ever_add_instances(
        binance: Any) -> None:
    stages = ("0", "10", "50", "100")
    fleet = [f"mm-{region}-{n}" for region in ("eu", "us", "ap") for n in range(400)]
    environ = {"CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_DRY_RUN": "0",
               "CHAOS_SHIMS_EXCH_429": "1", "CHAOS_SHIMS_BURST_ON_SEC": "0"}
    live_sets: list[set[str]] = []
    for stage in stages:
        live_sets.append({
            instance for instance in fleet
            if ChaosInjector(resolve(environ={**environ, "CHAOS_SHIMS_ROLLOUT_PCT": stage,
                                              "CHAOS_SHIMS_INSTANCE_ID": instance}),
                             export_metrics=False).canary})
    shares = [len(found) / len(fleet) for found in live_sets]
    assert shares[0] == 0 and shares[3] == 1
    assert shares[1] == pytest.approx(0.10, abs=0.03) and shares[2] == pytest.approx(0.5, abs=0.04)
    for smaller, larger in itertools.pairwise(live_sets):
        assert smaller <= larger  # a stage never takes an instance out of the canary

    # and on real calls: the instances that fault at each stage are exactly that stage's set
    sample = fleet[::30]
    for stage, expected in zip(stages, live_sets, strict=True):
        faulted = set()
        for instance in sample:
            live(rollout_pct=float(stage), instance_id=instance)
            if outcome(lambda: binance.fetch_ticker(SYMBOL)) == "DDoSProtection":
                faulted.add(instance)
        assert faulted == expected & set(sample)


# -- blast radius ----------------------------------------------------------------------------

@pytest.mark.parametrize(("radius", "ticker", "depth"), [
    ({}, "DDoSProtection", "DDoSProtection"),
    ({"include_exchanges": "binance"}, "DDoSProtection", "DDoSProtection"),
    ({"include_exchanges": "okx,kraken"}, "ok", "ok"),
    ({"exclude_exchanges": "binance"}, "ok", "ok"),
    ({"exclude_exchanges": "BINANCE"}, "ok", "ok"),
    ({"include_ops": "fetch_ticker"}, "DDoSProtection", "ok"),
    ({"include_ops": "fetchOrderBook"}, "ok", "DDoSProtection"),
    ({"exclude_ops": "fetch_ticker"}, "ok", "DDoSProtection"),
    ({"include_ops": "fetch_ticker,fetch_order_book", "exclude_ops": "fetch_order_book"},
     "DDoSProtection", "ok"),
])
def test_the_blast_radius_on_real_calls(binance: Any, exchange: LoopbackExchange,
                                        radius: dict[str, str], ticker: str, depth: str) -> None:
    environ = {f"CHAOS_SHIMS_{key.upper()}": value for key, value in radius.items()}
    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "exch_429": 1.0},
                     environ=environ)
    injector = activate(config)
    assert injector is not None
    assert outcome(lambda: binance.fetch_ticker(SYMBOL)) == ticker
    assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == depth
    # what is outside the radius reaches the exchange and is neither recorded nor counted
    assert exchange.request_count(TICKER) == (ticker == "ok")
    assert exchange.request_count(DEPTH) == (depth == "ok")
    expected_ops = [op for op, seen in (("fetch_ticker", ticker), ("fetch_order_book", depth))
                    if seen != "ok"]
    assert [(r.exchange, r.op) for r in injector.records()] == [("binance", op) for op in expected_ops]


def test_the_exchange_radius_tells_two_exchanges_apart_in_one_process(
        binance: Any, exchange: LoopbackExchange) -> None:
    other = ccxt.binanceus({**exchange.ccxt_config(), "enableRateLimit": False})
    other.load_markets()
    exchange.clear_requests()
    live(include_exchanges="binanceus")
    assert outcome(lambda: other.fetch_ticker(SYMBOL)) == "DDoSProtection"
    assert outcome(lambda: binance.fetch_ticker(SYMBOL)) == "ok"
    live(exclude_exchanges="binanceus")
    assert outcome(lambda: other.fetch_ticker(SYMBOL)) == "ok"
    assert outcome(lambda: binance.fetch_ticker(SYMBOL)) == "DDoSProtection"
    assert exchange.request_count(TICKER) == 2
