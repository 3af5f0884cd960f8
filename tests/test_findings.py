"""``chaos-shims findings``: the report's machine-readable block becomes a list of findings by
severity; a missing or unusable report exits 2 with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos_shims import findings, run, ticks
from chaos_shims.activation import activate
from chaos_shims.core import artifacts
from chaos_shims.findings import ADVICE, FindingsError, advise, embed_summary, extract_summary, main
from chaos_shims.report import Criteria, build_report
from chaos_shims.scenarios import CATALOG
from tests.test_report import Tick, craft, cycles, error_named

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

KEYS = {"severity", "scenario", "criterion", "evidence", "recommendation"}


def write_report(tmp_path: Path, runs: Path, criteria: Criteria | None = None) -> Path:
    text, _ = build_report(runs, criteria)
    path = tmp_path / "report.md"
    path.write_text(text)
    return path


def findings_of(tmp_path: Path, report: Path) -> list[dict[str, Any]]:
    output = tmp_path / "findings.json"
    assert main(["--report", str(report), "--output", str(output)]) == 0
    found = json.loads(output.read_text())
    assert isinstance(found, list)
    return found


def test_findings_by_severity_from_a_report(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "fine", cycles(), scenarios={"exch_429": 0.1})
    craft(runs, "many-misses", cycles(bad_on=2), scenarios={"net_loss": 0.5})  # 10 %
    craft(runs, "few-misses", [*cycles(count=5), *[Tick(150.0, 10.5)] * 3],
          scenarios={"net_loss": 0.1})  # 3 of 103: 2.9 %
    craft(runs, "storm", cycles(cancels_on=6), scenarios={"rate_limit_storm": 0.1})
    craft(runs, "slow-recovery", cycles(error_after=4), scenarios={"exch_5xx": 0.5})
    craft(runs, "rec", cycles(), scenarios={"reconcile_mismatch": 0.2},
          reconcile=artifacts.detection({"order_dropped": 4.0, "phantom_order": 2.0},
                                        {"order_dropped": 1.0}))
    (runs / "junk.json").write_text("{")
    found = findings_of(tmp_path, write_report(tmp_path, runs))

    assert all(set(f) == KEYS for f in found)
    order = [findings.SEVERITIES.index(f["severity"]) for f in found]
    assert order == sorted(order)  # most severe first
    by = {(f["scenario"], f["criterion"]): f for f in found}
    assert by[("net_loss=0.5", "deadline_miss_rate")]["severity"] == "high"  # >= 2x the limit
    assert by[("net_loss=0.1", "deadline_miss_rate")]["severity"] == "medium"
    assert "3 of 103 ticks over 100 ms" in by[("net_loss=0.1", "deadline_miss_rate")]["evidence"]
    assert "ccxt `timeout`" in by[("net_loss=0.1", "deadline_miss_rate")]["recommendation"]
    assert by[("rate_limit_storm=0.1", "cancel_storms")]["severity"] == "high"
    assert by[("exch_5xx=0.5", "recovery_ticks")]["severity"] == "medium"
    assert by[("exch_5xx=0.5", "error_ticks")]["severity"] == "medium"
    detection = by[("reconcile_mismatch=0.2", "detection_rate")]
    assert detection["severity"] == "high"  # 1 of 6 detected
    assert "missed types: order_dropped, phantom_order" in detection["evidence"]
    assert "report_discrepancy" in detection["recommendation"]
    assert by[(None, "data")]["severity"] == "low"
    assert "junk.json" in by[(None, "data")]["evidence"]
    assert not [f for f in found if f["scenario"] == "exch_429=0.1"]  # passing: nothing to say


def test_no_baseline_and_no_ticks_are_findings(tmp_path: Path, runs: Path) -> None:
    craft(runs, "quiet", [], scenarios={"exch_429": 0.1})
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert {(f["criterion"], f["severity"]) for f in found} == {
        ("baseline", "low"), ("ticks", "medium")}  # one finding for the silent run, not three


def test_a_scenario_run_without_ticks_where_the_baseline_ticked_is_high(
        tmp_path: Path, runs: Path) -> None:
    """The naive bot under rate_limit_storm: a 429 at start-up, the bot gone after 0.8 s."""
    craft(runs, "base", cycles())
    craft(runs, "gone", [], scenarios={"rate_limit_storm": 0.2}, duration_sec=0.781,
          injections={"rate_limit_storm": 4})
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert [(f["scenario"], f["criterion"], f["severity"]) for f in found] == [
        ("rate_limit_storm=0.2", "ticks", "high")]
    (gone,) = found
    assert gone["evidence"] == (
        "no ticks recorded: run gone ended by exit after 0.781 s; the baseline recorded 60 "
        "ticks, so the bot most likely stopped under this fault before its first iteration")
    assert "Read the run's log and exit status" in gone["recommendation"]
    assert "Under this fault: " + findings.STORM in gone["recommendation"]


def test_a_baseline_that_misses_deadlines_is_a_finding(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles(bad_on=2))
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert [(f["scenario"], f["criterion"], f["severity"]) for f in found] == [
        ("baseline", "deadline_miss_rate", "medium")]
    assert found[0]["evidence"].startswith("without chaos:")


def test_a_baseline_without_ticks_is_a_finding(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", [], ended_by="exception", exit_detail="KeyError: 'BTC/USDT'")
    craft(runs, "case", cycles(), scenarios={"exch_5xx": 0.1})
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    base = [f for f in found if f["scenario"] == "baseline"]
    assert [(f["criterion"], f["severity"]) for f in base] == [("ticks", "medium")]
    assert "run base ended by exception (KeyError: 'BTC/USDT')" in base[0]["evidence"]


def test_runs_without_ticks_among_others_are_findings(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base-1", cycles())
    craft(runs, "base-2", [], duration_sec=0.2)
    craft(runs, "case-1", cycles(), scenarios={"exch_5xx": 0.1})
    craft(runs, "case-2", [], scenarios={"exch_5xx": 0.1}, duration_sec=0.3)
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert [(f["scenario"], f["severity"], f["evidence"]) for f in found] == [
        ("baseline", "medium", "run base-2 ended by exit after 0.2 s: no ticks recorded; the "
                               "baseline's numbers are the other runs'"),
        ("exch_5xx=0.1", "medium", "run case-2 ended by exit after 0.3 s: no ticks recorded; "
                                   "the row's numbers are the other runs'")]


def test_a_rollback_is_a_finding(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    path = craft(runs, "rolled", cycles(), scenarios={"lat_spike_ms": 300})
    document = json.loads(path.read_text())
    document["ticks"]["stop_condition"].update(tripped=True, at_tick=100, misses=5)
    path.write_text(json.dumps(document))
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    stop = [f for f in found if f["criterion"] == "stop_condition"]
    assert len(stop) == 1 and stop[0]["severity"] == "medium"
    assert "rolled itself back" in stop[0]["evidence"]


def test_standard_output(tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    craft(runs, "base", cycles())
    report = write_report(tmp_path, runs)
    assert main(["--report", str(report), "--output", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# -- advice: by scenario and by what the bot's ticks raised --------------------------------------

def one(found: list[dict[str, Any]], scenario: str, criterion: str) -> dict[str, Any]:
    matching = [f for f in found if (f["scenario"], f["criterion"]) == (scenario, criterion)]
    assert len(matching) == 1, [(f["scenario"], f["criterion"]) for f in found]
    return matching[0]


@pytest.mark.parametrize(("scenarios", "error", "expected", "forbidden"), [
    # The bot's own "book is stale" error: a dead stream, never "catch NetworkError".
    ({"ws_disconnect": 0.05}, "StaleBook",
     ("Reopen a dropped stream", "resubscribes", "REST snapshot", "sequence gap"),
     ("NetworkError", "Catch")),
    ({"dns_flap": 0.5}, "StaleBook", ("Reopen a dropped stream",), ("NetworkError",)),
    ({"ws_disconnect": 0.05}, "BookNotInSync", ("backoff and jitter", "resyncs the order book"),
     ("NetworkError",)),
    ({"clock_skew_ms": 6000}, "InvalidNonce",
     ("load_time_difference()", "options['adjustForTimeDifference'] = True"), ("backoff",)),
    ({"net_loss": 0.1}, "RequestTimeout",
     ("backoff and jitter", "client order id", "never doubles"), ("Retry-After",)),
    ({"exch_5xx": 0.1}, "ExchangeNotAvailable", ("backoff and jitter", "clientOrderId"), ()),
    ({"exch_5xx": 0.1}, "QuotesBehind", ("backoff and jitter", "idempotent"), ()),
    ({"exch_429": 0.1}, "DDoSProtection", ("Honour Retry-After", "last_response_headers"), ()),
    ({"rate_limit_storm": 0.2}, "DDoSProtection",
     ("exchange-wide throttle", "honour Retry-After across ticks"), ("Nothing to fix",)),
    ({"lat_spike_ms": 250}, "QuotesBehind", ("`timeout`", "asyncio.wait_for", "deadline"), ()),
    ({"lat_spike_ms": 250}, "OrderImmediatelyFillable", ("post-only", "Reprice"), ()),
    ({"reconcile_mismatch": 0.3}, "OrderNotFound", ("unknown state", "client order id"), ()),
])
def test_error_tick_advice_follows_the_scenario_and_the_error_met(
        tmp_path: Path, runs: Path, scenarios: dict[str, Any], error: str,
        expected: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    craft(runs, "base", cycles())
    craft(runs, "case", cycles(error_after=2, error=error_named(error)), scenarios=scenarios,
          reconnects=3)
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    label = artifacts.scenario_label(scenarios, False)
    finding = one(found, label, "error_ticks")
    assert f"{error} x6" in finding["evidence"]
    for phrase in expected:
        assert phrase in finding["recommendation"], phrase
    for phrase in forbidden:
        assert phrase not in finding["recommendation"], phrase


def test_a_dropped_stream_never_reopened_is_said_with_its_evidence(
        tmp_path: Path, runs: Path) -> None:
    """The naive bot under ws_disconnect: one drop, no reconnect, a stale book ever after."""
    craft(runs, "base", cycles())
    craft(runs, "dropped", cycles(count=2, error_after=10, error=error_named("StaleBook")),
          scenarios={"ws_disconnect": 0.05}, injections={"ws_disconnect": 1}, reconnects=0)
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    for criterion in ("recovery_ticks", "error_ticks"):
        finding = one(found, "ws_disconnect=0.05", criterion)
        assert finding["evidence"].endswith(
            "; ws_disconnect dropped the stream 1 time and the bot opened no connection again "
            "(0 reconnects)")
        assert finding["recommendation"].startswith("The stream was dropped and never reopened")
        assert "NetworkError" not in finding["recommendation"]
    assert one(found, "ws_disconnect=0.05", "recovery_ticks")["severity"] == "high"


def test_slow_tick_advice_follows_the_scenario(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "lat", cycles(bad_on=2), scenarios={"lat_spike_ms": 250})
    craft(runs, "429", cycles(bad_on=2), scenarios={"exch_429": 0.1})
    craft(runs, "skew", cycles(bad_on=2), scenarios={"clock_skew_ms": 6000})
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert one(found, "lat_spike_ms=250", "deadline_miss_rate")["recommendation"] == \
        findings.LATENCY
    assert "Do not sleep out Retry-After inside the tick" in one(
        found, "exch_429=0.1", "deadline_miss_rate")["recommendation"]
    assert one(found, "clock_skew_ms=6000", "deadline_miss_rate")["recommendation"] == \
        findings.CLOCK


def storm_run(runs: Path, error_after: int, error: type[BaseException]) -> None:
    """rate_limit_storm with 0.83 s storms (Retry-After: 1 s), 10 ticks/s in 4 s OFF phases,
    the first ``error_after`` OFF ticks of each burst unhealthy (the bot quiet, then back)."""
    craft(runs, "base", cycles())
    craft(runs, "storm", cycles(per_phase=40, on_sec=4.0, off_sec=4.0, error_after=error_after,
                                error=error),
          scenarios={"rate_limit_storm": 0.2}, config={"rate_limit_storm_sec": 0.83},
          on_sec=4.0, off_sec=4.0)


def test_a_bot_that_waited_out_retry_after_is_not_told_to_back_off(
        tmp_path: Path, runs: Path) -> None:
    """The resilient market maker: it honours Retry-After, so a storm late in a burst keeps it
    quiet into the OFF phase (8 ticks here, within 1 s at 10 ticks/s + the 3 allowed)."""
    storm_run(runs, 8, error_named("QuotesBehind"))
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    recovery = one(found, "rate_limit_storm=0.2", "recovery_ticks")
    assert recovery["severity"] == "low"
    assert recovery["recommendation"] == findings.WAITED
    assert recovery["recommendation"].startswith("Nothing to fix in the bot: it waited out "
                                                 "Retry-After, which is right")
    assert ("no 429 reached the bot's loop as an error, and its slowest recovery (8 ticks, "
            "about 0.8 s at the 10.0 ticks/s measured) is within the longest Retry-After sent "
            "(1 s) plus the 3 ticks allowed") in recovery["evidence"]
    assert one(found, "rate_limit_storm=0.2", "error_ticks")["severity"] == "low"
    assert all("back off" not in f["recommendation"].lower() for f in found)


@pytest.mark.parametrize(("error_after", "error"), [
    (8, error_named("DDoSProtection")),  # the 429s reached the loop: the bot did not handle them
    (20, error_named("QuotesBehind")),  # 2 s of recovery: longer than Retry-After explains
])
def test_a_slow_recovery_retry_after_does_not_explain_is_a_finding(
        tmp_path: Path, runs: Path, error_after: int, error: type[BaseException]) -> None:
    storm_run(runs, error_after, error)
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    recovery = one(found, "rate_limit_storm=0.2", "recovery_ticks")
    assert recovery["severity"] == "medium"
    assert "Nothing to fix" not in recovery["recommendation"]
    assert "waited as the exchange asked" not in recovery["evidence"]
    assert findings.STORM in recovery["recommendation"] or \
        "Return to normal" in recovery["recommendation"]


def test_no_reconciliation_seen(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "rec", cycles(), scenarios={"reconcile_mismatch": 0.3},
          reconcile=artifacts.detection({"phantom_order": 23.0, "order_dropped": 8.0}, {}))
    for criteria in (None, Criteria(min_detection_rate=0.9)):
        found = findings_of(tmp_path, write_report(tmp_path, runs, criteria))
        finding = one(found, "reconcile_mismatch=0.3", "reconciliation")
        assert finding["severity"] == "high"
        assert finding["evidence"] == (
            "no reconciliation seen: 31 order-state mismatches were injected (order_dropped x8, "
            "phantom_order x23) and the bot reported none (0% detected)")
        assert "report_discrepancy" in finding["recommendation"]
        assert not [f for f in found if f["criterion"] == "detection_rate"]  # said once


def test_a_reconcile_run_with_nothing_to_mutate_says_detection_was_not_measured(
        tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "rec", cycles(), scenarios={"reconcile_mismatch": 0.3},
          injections={"reconcile_mismatch": 0})
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    finding = one(found, "reconcile_mismatch=0.3", "reconciliation")
    assert finding["severity"] == "low" and "detection was not measured" in finding["evidence"]


@pytest.mark.usefixtures("no_run_left")
def test_no_reconciliation_seen_in_a_real_run(binance: Any, registry: Any, tmp_path: Path) -> None:
    """A bot that reads its open orders and believes them: every read mutated, none reported."""
    for keys in ({}, {"reconcile_mismatch": 1.0, "dry_run": False}):
        injector = activate(enabled=True, burst_on_sec=0, registry=registry, seed=5, **keys)
        run.start_run(injector, directory=tmp_path / "runs")
        for _ in range(3):
            with ticks.tick():
                binance.fetch_open_orders("BTC/USDT")
        assert run.finish_run() is not None
    report = write_report(tmp_path, tmp_path / "runs")
    found = findings_of(tmp_path, report)
    finding = one(found, "reconcile_mismatch=1", "reconciliation")
    assert finding["severity"] == "high"
    assert finding["evidence"].startswith("no reconciliation seen: 3 order-state mismatches")


def test_p95_severity_weighs_the_floor_too(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles(on_ms=1.0, off_ms=1.0))
    craft(runs, "a", cycles(on_ms=2.5, off_ms=2.5), scenarios={"lat_spike_ms": 1})  # +1.5 ms
    craft(runs, "b", cycles(on_ms=4.0, off_ms=4.0), scenarios={"lat_spike_ms": 3})  # +3 ms
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert one(found, "lat_spike_ms=1", "p95_regression")["severity"] == "medium"
    assert one(found, "lat_spike_ms=3", "p95_regression")["severity"] == "high"


def test_the_advice_is_one_table_covering_every_scenario_and_finding() -> None:
    assert isinstance(ADVICE, tuple) and all(isinstance(a, findings.Advice) for a in ADVICE)
    general = advise("error_ticks")
    assert general is not None
    for key in [scenario.key for scenario in CATALOG]:
        specific = advise("error_ticks", {"scenarios": [key]})
        assert specific is not None and specific.text != general.text, key
    for criterion in ("p95_regression", "deadline_miss_rate", "recovery_ticks", "cancel_storms",
                      "detection_rate", "reconciliation", "error_ticks", "ticks",
                      "recovery_not_measured", "stop_condition", "baseline"):
        assert advise(criterion) is not None, criterion
    assert "NetworkError" not in general.text  # only for errors that are NetworkErrors


# -- unusable input ------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    ("# a report someone wrote by hand\n", "has no chaos_shims summary block"),
    ("<!-- chaos_shims.report/1\n{not json\n-->", "summary block is not valid JSON"),
    ("<!-- chaos_shims.report/7\n{}\n-->", "this version reads chaos_shims.report/1"),
    ('<!-- chaos_shims.report/1\n{"schema": "chaos_shims.report/1", "rows": 3}\n-->',
     "does not have the report's fields"),
    ('<!-- chaos_shims.report/1\n{"schema": "chaos_shims.report/1", "criteria": {}, '
     '"rows": [{"scenario": "x"}], "baseline": {"found": true}}\n-->', "malformed"),
    ('<!-- chaos_shims.report/1\n{"schema": "chaos_shims.report/1", "rows": [NaN]}\n-->',
     "summary block is corrupt: NaN is not a JSON number"),
    ('<!-- chaos_shims.report/1\n{"schema": "chaos_shims.report/1", "rows": [1e999]}\n-->',
     "summary block is corrupt: the number 1e999 is beyond what a float holds"),
])
def test_a_report_without_a_usable_block_exits_2(tmp_path: Path, content: str, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.md"
    report.write_text(content)
    output = tmp_path / "findings.json"
    assert main(["--report", str(report), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(report) in err
    assert "Traceback" not in err
    assert not output.exists()


def test_a_missing_or_unreadable_report_exits_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--report", str(tmp_path / "absent.md")]) == 2
    assert "no such report" in capsys.readouterr().err
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"\xff\xfe\xfa")
    assert main(["--report", str(binary)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["--report", str(tmp_path)]) == 2  # a folder
    assert "cannot read" in capsys.readouterr().err


def test_the_block_survives_any_text_inside_it() -> None:
    summary = {"schema": "chaos_shims.report/1", "rows": [], "criteria": {},
               "note": "--> <!-- & </script>"}
    embedded = embed_summary(summary)
    assert embedded.count("-->") == 1
    assert extract_summary(f"# report\n\n{embedded}\n") == summary
    with pytest.raises(FindingsError):
        extract_summary("no block")


def test_the_block_holds_no_number_json_lacks() -> None:
    """A ratio over a baseline of ~0 ms is infinite: the block says null (JSON has no NaN or
    Infinity, and allow_nan=False made the report raise), and reads back as None."""
    summary = {"schema": "chaos_shims.report/1", "criteria": {},
               "rows": [{"p95_regression": float("inf"), "values": [float("nan"), 1.5]}]}
    embedded = embed_summary(summary)
    assert "NaN" not in embedded and "Infinity" not in embedded
    assert extract_summary(embedded)["rows"] == [{"p95_regression": None, "values": [None, 1.5]}]
