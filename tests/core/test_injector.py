"""Decisions: one seed, one stream per scenario, exact counts across threads, dry-run, blast
radius, the bot-facing API, and the rule that an internal error turns chaos off."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.activation import resolve
from chaos_shims.core.errors import InjectedConnectionLoss, InjectedHTTPError, InjectedTimeout
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.registry import REST
from tests.loop_watch import watched


def make(registry: Any = None, **keys: Any) -> ChaosInjector:
    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, **keys}, environ={})
    return ChaosInjector(config, registry=registry, export_metrics=registry is not None)


def sequence(injector: ChaosInjector, scenario: str, n: int = 200) -> list[bool]:
    return [injector.should_fire(scenario).fired for _ in range(n)]


def test_same_seed_same_sequence() -> None:
    first = sequence(make(exch_429=0.3, seed=11), "exch_429")
    assert first == sequence(make(exch_429=0.3, seed=11), "exch_429")
    assert first != sequence(make(exch_429=0.3, seed=12), "exch_429")
    assert 30 < sum(first) < 90


def test_turning_one_scenario_on_does_not_shift_another() -> None:
    alone = make(exch_429=0.3, seed=5)
    together = make(exch_429=0.3, exch_5xx=0.5, net_loss=0.2, seed=5)
    expected = sequence(alone, "exch_429")
    interleaved = []
    for _ in range(200):
        together.should_fire("exch_5xx")
        interleaved.append(together.should_fire("exch_429").fired)
        together.should_fire("net_loss")
    assert interleaved == expected


def test_5xx_statuses_come_from_the_seed() -> None:
    def statuses(seed: int) -> list[int]:
        injector = make(exch_5xx=1.0, seed=seed)
        return [injector.should_fire("exch_5xx").fault.status for _ in range(40)]  # type: ignore[union-attr]

    assert statuses(3) == statuses(3)
    assert set(statuses(3)) == {500, 502, 503, 504}


def test_exact_counts_under_eight_threads(tmp_path: Path, registry: Any) -> None:
    log = tmp_path / "chaos.jsonl"
    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "exch_429": 0.5,
                      "seed": 9}, environ={})
    injector = ChaosInjector(config, registry=registry, log_file=str(log))
    fired = [0] * 8
    barrier = threading.Barrier(8)

    def hammer(index: int) -> None:
        barrier.wait()
        for _ in range(5000):
            if injector.should_fire("exch_429", exchange="binance", op="fetch_ticker"):
                fired[index] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    injector.close()
    total = sum(fired)
    # The same seed decides 40,000 draws whichever thread makes them: the total is fixed.
    single = make(exch_429=0.5, seed=9)
    assert total == sum(sequence(single, "exch_429", 40_000))
    assert injector.count("exch_429", "live") == total
    lines = log.read_text().splitlines()
    assert len(lines) == total
    assert sorted(json.loads(line)["seq"] for line in lines) == list(range(1, total + 1))
    assert registry.get_sample_value("mm_chaos_injections_total",
                                     {"scenario": "exch_429", "mode": "live"}) == total


def test_dry_run_decides_logs_and_counts_but_never_injects(tmp_path: Path) -> None:
    config = resolve({"enabled": True, "burst_on_sec": 0, "exch_429": 1.0, "seed": 1}, environ={})
    injector = ChaosInjector(config, export_metrics=False, log_file=str(tmp_path / "log.jsonl"))
    decision = injector.should_fire("exch_429", exchange="kraken", op="fetch_balance")
    assert decision.fired and not decision
    assert injector.plan(REST, "kraken", "fetch_balance", "/x") == ()
    injector.inject("exch_429")  # dry-run: nothing raised
    assert injector.count(mode="dry_run") == 3 and injector.count(mode="live") == 0
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert record["mode"] == "dry_run" and record["exchange"] == "kraken"
    for field in ("ts", "scenario", "mode", "reason_code", "intensity", "duration_ms", "exchange",
                  "op", "target"):
        assert field in record


def test_records_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="chaos_shims"):
        make(exch_429=1.0, seed=1).should_fire("exch_429", exchange="binance", op="create_order")
    [record] = [r for r in caplog.records if hasattr(r, "chaos")]
    assert record.chaos["scenario"] == "exch_429" and record.chaos["op"] == "create_order"


@pytest.mark.parametrize(("keys", "exchange", "op", "fires"), [
    ({"include_exchanges": "binance"}, "binance", "fetch_ticker", True),
    ({"include_exchanges": "binance"}, "kraken", "fetch_ticker", False),
    ({"exclude_exchanges": "kraken"}, "kraken", "fetch_ticker", False),
    ({"include_ops": "fetchTicker"}, "kraken", "fetch_ticker", True),
    ({"include_ops": "create_order"}, "kraken", "fetch_ticker", False),
    ({"exclude_ops": "cancel_order"}, "binance", "cancel_order", False),
    ({"include_ops": "create_order"}, "binance", None, False),
])
def test_blast_radius(keys: dict[str, str], exchange: str, op: str | None, fires: bool) -> None:
    injector = make(exch_429=1.0, seed=1, **keys)
    assert injector.should_fire("exch_429", exchange=exchange, op=op).fired is fires


def test_unconfigured_scenario_never_fires() -> None:
    injector = make(exch_429=1.0, seed=1)
    assert not injector.should_fire("exch_5xx").fired
    assert not injector.should_fire("no_such_scenario").fired


def test_inject_raises_generic_faults_a_bot_already_handles() -> None:
    with pytest.raises(InjectedHTTPError) as info:
        make(exch_429=1.0, seed=1).inject("exch_429")
    assert info.value.status == 429 and info.value.headers == {"Retry-After": "1"}
    with pytest.raises(ConnectionError):
        make(net_loss=1.0, seed=1).inject("net_loss")
    with pytest.raises(InjectedConnectionLoss):
        make(net_loss=1.0, seed=1).inject("net_loss")
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        make(net_loss=1.0, net_loss_timeout_ms=30, seed=1).inject("net_loss")
    assert time.perf_counter() - started >= 0.03
    assert issubclass(InjectedTimeout, TimeoutError)


def test_ainject_never_blocks_the_event_loop() -> None:
    injector = make(lat_spike_ms=150, seed=1)
    _, elapsed, ticks = asyncio.run(watched(injector.ainject("lat_spike_ms"), period=0.01))
    assert elapsed >= 0.15
    assert ticks >= 8


class Exploding(Exception):
    pass


def test_internal_error_turns_chaos_off_and_reports_once(caplog: pytest.LogCaptureFixture) -> None:
    turned_off: list[BaseException] = []
    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "exch_429": 1.0,
                      "seed": 1}, environ={})
    injector = ChaosInjector(config, export_metrics=False, on_internal_error=turned_off.append)

    def broken(now: float) -> None:
        raise Exploding("bug in a scenario")

    injector._armed["exch_429"].draw = broken  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="chaos_shims"):
        assert injector.plan(REST, "binance", "fetch_ticker", "/x") == ()
        assert not injector.should_fire("exch_429").fired
    assert injector.disabled_reason == "Exploding: bug in a scenario"
    assert len(turned_off) == 1
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def test_log_file_that_cannot_be_written_loses_records_not_the_host(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "exch_429": 1.0,
                      "seed": 1}, environ={})
    injector = ChaosInjector(config, export_metrics=False, log_file=str(blocker / "chaos.jsonl"))
    with caplog.at_level("ERROR", logger="chaos_shims"):
        for _ in range(3):
            assert injector.should_fire("exch_429")
    assert injector.sink is not None and injector.sink.lost == 3
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    assert injector.count() == 3


def test_canary_share_is_stable_and_close_to_rollout_pct() -> None:
    from chaos_shims.core.injector import in_rollout

    ids = [f"bot-{i}" for i in range(4000)]
    for pct in (0, 10, 50, 100):
        share = sum(in_rollout(i, pct) for i in ids) / len(ids) * 100
        assert abs(share - pct) < 2.5, (pct, share)
    # growing the share only ever adds instances
    assert {i for i in ids if in_rollout(i, 10)} <= {i for i in ids if in_rollout(i, 50)}


def test_instances_outside_the_canary_run_as_shadow() -> None:
    inside = make(exch_429=1.0, seed=1, rollout_pct=50, instance_id="bot-2")
    outside = make(exch_429=1.0, seed=1, rollout_pct=50, instance_id="bot-0")
    from chaos_shims.core.injector import in_rollout

    assert in_rollout("bot-2", 50) and not in_rollout("bot-0", 50)
    assert inside.should_fire("exch_429") and inside.mode == "live"
    decision = outside.should_fire("exch_429")
    assert decision.fired and not decision and outside.mode == "shadow"
    assert outside.count(mode="dry_run") == 1


class SteppingClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_kill_file_stops_every_injection_within_a_second(tmp_path: Path) -> None:
    kill = tmp_path / "chaos.kill"
    clock = SteppingClock()
    config = resolve({"enabled": True, "dry_run": False, "burst_on_sec": 0, "exch_429": 1.0,
                      "seed": 1, "kill_file": str(kill)}, environ={})
    injector = ChaosInjector(config, clock=clock, export_metrics=False)
    assert injector.should_fire("exch_429")
    kill.write_text("")
    clock.now += 1.0
    assert not injector.should_fire("exch_429") and injector.mode == "killed"
    assert injector.plan(REST, "binance", "fetch_ticker", "/x") == ()
    kill.unlink()
    clock.now += 1.0
    assert injector.should_fire("exch_429") and injector.mode == "live"


def test_roll_back_turns_live_into_dry_run_once(registry: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    injector = make(registry, exch_429=1.0, seed=1)
    with caplog.at_level("WARNING", logger="chaos_shims"):
        injector.roll_back("deadline_miss", "5 of 100 ticks missed")
        injector.roll_back("deadline_miss", "again")
    assert injector.mode == "rolled_back" and not injector.live
    assert [r["reason"] for r in injector.rollbacks] == ["deadline_miss"]
    assert not injector.should_fire("exch_429")
    assert registry.get_sample_value("mm_chaos_rollbacks_total", {"reason": "deadline_miss"}) == 1
    assert sum("rolled back" in r.getMessage() for r in caplog.records) == 1
