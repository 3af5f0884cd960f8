"""``chaos-shims report`` from crafted run sets (each criterion failing once, baseline missing,
corrupt and foreign files) and from runs made in process with real ticks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaos_shims import run, ticks
from chaos_shims.activation import activate
from chaos_shims.core import artifacts
from chaos_shims.core.schedule import DutyCycle
from chaos_shims.core.ticks import DEFAULT_STORM_RULE, CancelStormRule, TickStats
from chaos_shims.findings import extract_summary
from chaos_shims.report import Criteria, CriteriaError, build_report, main

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]


# -- crafting run artifacts --------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    ms: float
    at: float  # start time in the duty cycle (by default 1 s ON, 1 s OFF from 0)
    error: type[BaseException] | None = None
    cancels: int = 0


def cycles(count: int = 3, per_phase: int = 10, *, on_ms: float = 5.0, off_ms: float = 5.0,
           bad_on: int = 0, bad_on_ms: float = 150.0, error_after: int = 0,
           error: type[BaseException] = RuntimeError, cancels_on: int = 0,
           on_sec: float = 1.0, off_sec: float = 1.0) -> list[Tick]:
    """``count`` bursts of ``per_phase`` ticks ON then OFF. ``bad_on`` ON ticks per burst take
    ``bad_on_ms``; the first ``error_after`` OFF ticks raise ``error`` (unhealthy, within
    deadline). Give ``craft`` the same ``on_sec``/``off_sec``."""
    made = []
    for cycle in range(count):
        start = (on_sec + off_sec) * cycle
        for i in range(per_phase):
            made.append(Tick(bad_on_ms if i < bad_on else on_ms, start + on_sec * i / per_phase,
                             cancels=cancels_on))
        for i in range(per_phase):
            made.append(Tick(off_ms, start + on_sec + off_sec * i / per_phase,
                             error if i < error_after else None))
    return made


def error_named(name: str) -> type[Exception]:
    """An exception class with the name a bot's own or a library's error has (the artifact
    keeps class names only)."""
    return type(name, (Exception,), {})


def craft(folder: Path, name: str, ticks_: Iterable[Tick], *,
          scenarios: Mapping[str, Any] | None = None, deadline_ms: float = 100.0,
          dry_run: bool = False, reconcile: Mapping[str, Any] | None = None,
          reconnects: int | None = 0, rollbacks: Sequence[Mapping[str, Any]] = (),
          storm_rule: CancelStormRule = DEFAULT_STORM_RULE,
          injections: Mapping[str, int] | None = None, config: Mapping[str, Any] | None = None,
          on_sec: float = 1.0, off_sec: float = 1.0, ended_by: str = "exit",
          exit_detail: str | None = None, duration_sec: float | None = None) -> Path:
    """A run artifact with real tick statistics; the rest as chaos_shims.run writes it.

    ``injections``: live injections by scenario (default: one per active scenario)."""
    schedule = DutyCycle(on_sec, off_sec, clock=lambda: 0.0, started_at=0.0)
    stats = TickStats(deadline_ms=deadline_ms, stop_window_ticks=1_000_000, schedule=schedule,
                      storm_rule=storm_rule)
    last = 0.0
    for tick in ticks_:
        if tick.cancels:
            stats.add_cancels(tick.cancels)
        stats.record(tick.ms, tick.at, tick.error)
        last = max(last, tick.at)
    scenarios = dict(scenarios or {})
    live = dict(injections) if injections is not None else {key: 1 for key in scenarios}
    mode = "dry_run" if dry_run else "live"
    document = {
        "schema": artifacts.SCHEMA,
        "run_id": name,
        "duration_sec": last + 0.1 if duration_sec is None else duration_sec,
        "ended_by": ended_by,
        "exit_detail": exit_detail,
        "mode": mode,
        "dry_run": dry_run,
        "baseline": not scenarios,
        "label": artifacts.scenario_label(scenarios, dry_run),
        "schedule": {"burst_on_sec": on_sec, "burst_off_sec": off_sec, "always_on": False},
        "config": {"tick_deadline_ms": deadline_ms, "burst_on_sec": on_sec,
                   "burst_off_sec": off_sec, **scenarios, **(config or {})},
        "active_scenarios": scenarios,
        **stats.snapshot(),
        "reconnects": None if reconnects is None else {"total": reconnects, "by_kind": {}},
        "injections": {"total": sum(live.values()),
                       "by_scenario": {key: {mode: n} for key, n in live.items() if n}},
        "reconcile": dict(reconcile) if reconcile else artifacts.detection({}, {}),
        "rollbacks": list(rollbacks),
        "jsonl": None,
        "incomplete": [],
    }
    assert artifacts.problems(document) is None
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


def report_of(folder: Path, criteria: Criteria | None = None) -> tuple[str, dict[str, Any]]:
    return build_report(folder, criteria)


def row(summary: Mapping[str, Any], label: str) -> dict[str, Any]:
    found = [r for r in summary["rows"] if r["scenario"] == label]
    assert len(found) == 1, [r["scenario"] for r in summary["rows"]]
    return found[0]


def statuses(found: Mapping[str, Any]) -> dict[str, str]:
    return {c["criterion"]: c["status"] for c in found["criteria"]}


# -- the acceptance criteria, each failing once --------------------------------------------------

@pytest.fixture
def campaign(runs: Path) -> Path:
    craft(runs, "base-1", cycles())
    craft(runs, "base-2", cycles(on_ms=5.2, off_ms=5.2))
    craft(runs, "pass", cycles(on_ms=5.5), scenarios={"exch_429": 0.1})
    craft(runs, "slow", cycles(on_ms=7.0), scenarios={"lat_spike_ms": 2})
    craft(runs, "misses", cycles(bad_on=1), scenarios={"net_loss": 0.2})  # 3 of 60: 5 %
    craft(runs, "recovery", cycles(error_after=5), scenarios={"exch_5xx": 0.5})
    craft(runs, "storms", cycles(cancels_on=6), scenarios={"rate_limit_storm": 0.1})
    return runs


def test_each_criterion_fails_once(campaign: Path) -> None:
    text, summary = report_of(campaign)
    assert summary["baseline"]["found"] and summary["baseline"]["run_ids"] == ["base-1", "base-2"]
    expected = {
        "exch_429=0.1": ("PASS", {}),
        "lat_spike_ms=2": ("FAIL", {"p95_regression"}),
        "net_loss=0.2": ("FAIL", {"deadline_miss_rate"}),
        "exch_5xx=0.5": ("FAIL", {"recovery_ticks"}),
        "rate_limit_storm=0.1": ("FAIL", {"cancel_storms"}),
    }
    for label, (verdict, failing) in expected.items():
        found = row(summary, label)
        assert found["verdict"] == verdict, (label, found["criteria"])
        assert {c for c, s in statuses(found).items() if s == "fail"} == set(failing), label
    slow = row(summary, "lat_spike_ms=2")
    assert slow["p95_regression"] == pytest.approx(7.0 / 5.2 - 1, rel=0.03)
    assert row(summary, "net_loss=0.2")["deadline_miss_rate"] == pytest.approx(0.05)
    assert row(summary, "exch_5xx=0.5")["worst_recovery_ticks"] == 5
    assert row(summary, "rate_limit_storm=0.1")["cancel_storms"] == 3
    assert row(summary, "exch_429=0.1")["worst_recovery_ticks"] == 0
    # The table has one row per scenario against the baseline; the report says what it used.
    assert "| lat_spike_ms=2 | 1 | 60 | 7.0 ms | +35% (+1.8 ms) | 0.0% | 0 ticks | 0 | 0 | — | " \
           "**FAIL** (p95_regression) |" in text
    assert "| baseline | 2 | 120 |" in text
    assert "p95 tick latency below the baseline's + 15%, or at most 1 ms above it" in text
    assert "deadline misses below 2.0% of ticks" in text
    assert "recovery within 3 ticks after every burst" in text
    assert "50 or more cancels within 10 consecutive ticks" in text
    assert "## Findings and recommendations" in text
    assert "Verdicts: 1 PASS, 4 FAIL, 0 INCONCLUSIVE." in text


def test_thresholds_come_from_the_command_line(campaign: Path, tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    status = main(["--runs", str(campaign), "--output", str(output),
                   "--max-p95-regression", "50", "--max-deadline-miss", "10",
                   "--max-recovery-ticks", "5", "--max-cancel-storms", "3",
                   "--p95-floor-ms", "0.5"])
    assert status == 0
    summary = extract_summary(output.read_text())
    assert summary["criteria"] == {"max_p95_regression": 0.5, "p95_floor_ms": 0.5,
                                   "max_deadline_miss_rate": 0.1, "max_recovery_ticks": 5,
                                   "max_cancel_storms": 3, "min_detection_rate": None}
    assert {r["scenario"]: r["verdict"] for r in summary["rows"] if not r["baseline"]} == {
        label: "PASS" for label in ("exch_429=0.1", "lat_spike_ms=2", "net_loss=0.2",
                                    "exch_5xx=0.5", "rate_limit_storm=0.1")}


@pytest.mark.parametrize(("flag", "value", "allowed"), [
    ("--max-deadline-miss", "lots", "a percentage from 0 to 100"),
    ("--max-deadline-miss", "150", "a percentage from 0 to 100"),
    ("--max-p95-regression", "-5", "a percentage >= 0"),
    ("--max-p95-regression", "nan", "a percentage >= 0"),
    ("--p95-floor-ms", "-1", "a number of milliseconds >= 0"),
    ("--p95-floor-ms", "soon", "a number of milliseconds >= 0"),
    ("--p95-floor-ms", "inf", "a number of milliseconds >= 0"),
    ("--max-recovery-ticks", "-1", "a whole number >= 0"),
    ("--max-recovery-ticks", "2.5", "a whole number >= 0"),
    ("--max-cancel-storms", "x", "a whole number >= 0"),
    ("--min-detection-rate", "101", "a percentage from 0 to 100"),
])
def test_bad_threshold_flags_exit_2_naming_flag_value_and_allowed(
        campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        flag: str, value: str, allowed: str) -> None:
    output = tmp_path / "report.md"
    assert main(["--runs", str(campaign), "--output", str(output), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected {allowed}, got {value!r}" in err
    assert "Traceback" not in err
    assert not output.exists()


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("p95_floor_ms", -1.0, "a number of milliseconds >= 0"),
    ("p95_floor_ms", float("inf"), "a number of milliseconds >= 0"),
    ("p95_floor_ms", "1", "a number of milliseconds >= 0"),
    ("p95_floor_ms", True, "a number of milliseconds >= 0"),
    ("max_p95_regression", float("nan"), "a fraction >= 0 (0.15 = 15 %)"),
    ("max_deadline_miss_rate", 1.5, "a fraction from 0 to 1 (0.02 = 2 %)"),
    ("max_recovery_ticks", 2.5, "a whole number of ticks >= 0"),
    ("max_cancel_storms", -1, "a whole number >= 0"),
    ("min_detection_rate", 2, "None, or a fraction from 0 to 1 (0.9 = 90 %)"),
])
def test_bad_criteria_in_code_name_the_key_the_value_and_what_is_allowed(
        key: str, value: Any, allowed: str) -> None:
    with pytest.raises(CriteriaError) as caught:
        Criteria(**{key: value})
    assert str(caught.value) == f"invalid report criterion {key}={value!r}: allowed: {allowed}"
    assert (caught.value.key, caught.value.allowed) == (key, allowed)
    assert isinstance(caught.value, ValueError)
    Criteria(**{key: 0})  # the smallest allowed value is fine


# -- the p95 criterion: a percentage, or an absolute floor ---------------------------------------

def p95_case(runs: Path, base_ms: float, scenario_ms: float) -> None:
    craft(runs, "base", cycles(on_ms=base_ms, off_ms=base_ms))
    craft(runs, "case", cycles(on_ms=scenario_ms, off_ms=scenario_ms),
          scenarios={"lat_spike_ms": 1})


@pytest.mark.parametrize(
    ("base_ms", "scenario_ms", "status", "decided_by", "evidence"), [
        # Ticks of tens of µs, as the example market maker's: +27% is machine noise.
        (0.064, 0.081, "pass", "floor",
         "(+27%, +0.017 ms): within the 1 ms floor (above +15%, which alone would fail)"),
        (10.0, 11.0, "pass", "percentage", "(+10%, +1.0 ms): within +15%"),
        (10.0, 12.0, "fail", "neither", "(+20%, +2.0 ms): above both +15% and the 1 ms floor"),
        (0.064, 1.6, "fail", "neither", "above both +15% and the 1 ms floor"),
    ])
def test_p95_passes_by_percentage_or_by_the_absolute_floor_and_says_which(
        runs: Path, base_ms: float, scenario_ms: float, status: str, decided_by: str,
        evidence: str) -> None:
    p95_case(runs, base_ms, scenario_ms)
    text, summary = report_of(runs)
    found = row(summary, "lat_spike_ms=1")
    result = next(c for c in found["criteria"] if c["criterion"] == "p95_regression")
    assert (result["status"], result["decided_by"]) == (status, decided_by)
    assert evidence in result["evidence"]
    assert f"- p95_regression: {status.upper()}: {result['evidence']}" in text
    assert found["p95_increase_ms"] == pytest.approx(scenario_ms - base_ms, rel=0.03)


def test_the_floor_is_configurable_and_zero_judges_by_percentage_alone(
        runs: Path, tmp_path: Path) -> None:
    p95_case(runs, 0.064, 0.081)
    _, strict = report_of(runs, Criteria(p95_floor_ms=0))
    assert statuses(row(strict, "lat_spike_ms=1"))["p95_regression"] == "fail"
    output = tmp_path / "report.md"
    assert main(["--runs", str(runs), "--output", str(output), "--p95-floor-ms", "0.01"]) == 0
    summary = extract_summary(output.read_text())
    assert summary["criteria"]["p95_floor_ms"] == 0.01
    assert "or at most 0.01 ms above it" in output.read_text()
    assert statuses(row(summary, "lat_spike_ms=1"))["p95_regression"] == "fail"
    assert main(["--runs", str(runs), "--output", str(output), "--p95-floor-ms", "0.02"]) == 0
    assert statuses(row(extract_summary(output.read_text()), "lat_spike_ms=1"))[
        "p95_regression"] == "pass"


# -- what the report refuses to guess ------------------------------------------------------------

def test_a_missing_baseline_is_said_not_guessed(runs: Path) -> None:
    craft(runs, "pass", cycles(), scenarios={"exch_429": 0.1})
    craft(runs, "misses", cycles(bad_on=1), scenarios={"net_loss": 0.2})
    text, summary = report_of(runs)
    assert "**No baseline run was found**" in text
    assert summary["baseline"] == {"found": False, "run_ids": [], "ticks": 0, "p95_ms": None}
    ok = row(summary, "exch_429=0.1")
    assert ok["verdict"] == "INCONCLUSIVE" and ok["p95_regression"] is None
    assert statuses(ok)["p95_regression"] == "unknown"
    assert row(summary, "net_loss=0.2")["verdict"] == "FAIL"  # the other criteria still judge
    assert "INCONCLUSIVE (p95_regression not measured)" in text


def test_corrupt_and_foreign_files_are_named_and_skipped(
        runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    craft(runs, "base", cycles())
    good = craft(runs, "good", cycles(), scenarios={"exch_429": 0.1})
    (runs / "truncated.json").write_text(good.read_text()[:200])
    (runs / "package.json").write_text(json.dumps({"name": "left-pad", "version": "1.3.0"}))
    (runs / "list.json").write_text("[1, 2, 3]")
    (runs / "future.json").write_text(json.dumps({"schema": "chaos_shims.run/9"}))
    damaged = json.loads(good.read_text())
    damaged["run_id"] = "damaged"
    damaged["ticks"]["histogram"]["counts"] = {"1": "many"}
    (runs / "damaged.json").write_text(json.dumps(damaged))
    (runs / "notes.txt").write_text("not even json")  # not *.json: not looked at

    output = tmp_path / "report.md"
    assert main(["--runs", str(runs), "--output", str(output)]) == 0
    err = capsys.readouterr().err
    text = output.read_text()
    summary = extract_summary(text)
    skipped = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"truncated.json", "package.json", "list.json", "future.json",
                            "damaged.json"}
    assert "not valid JSON" in skipped["truncated.json"]
    assert "not a chaos_shims run artifact" in skipped["package.json"]
    assert skipped["list.json"] == "not a JSON object"
    assert "chaos_shims.run/9 is not supported" in skipped["future.json"]
    assert "malformed run artifact" in skipped["damaged.json"]
    for name in skipped:
        assert f"skipped {name}:" in err
        assert f"- `{name}`:" in text
    assert "Traceback" not in err
    assert row(summary, "exch_429=0.1")["verdict"] == "PASS"


def test_a_missing_or_empty_folder_exits_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r.md")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--runs", str(tmp_path / "empty"), "--output", str(tmp_path / "r.md")]) == 2
    assert "no run artifact" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


# -- runs that recorded no tick ------------------------------------------------------------------

def test_a_run_without_ticks_is_said_clearly_never_passed(
        runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    craft(runs, "base", cycles())
    craft(runs, "silent", [], scenarios={"rate_limit_storm": 0.2}, duration_sec=0.781)
    output = tmp_path / "report.md"
    assert main(["--runs", str(runs), "--output", str(output)]) == 0
    assert "rate_limit_storm=0.2: no ticks recorded in run(s) silent" in capsys.readouterr().err
    text = output.read_text()
    summary = extract_summary(text)
    silent = row(summary, "rate_limit_storm=0.2")
    assert silent["verdict"] == "INCONCLUSIVE"
    assert silent["ticks"] == 0 and silent["zero_tick_runs"] == ["silent"]
    assert silent["deadline_miss_rate"] is None and silent["p95_regression"] is None
    assert {c: s for c, s in statuses(silent).items() if s != "pass"} == {
        "p95_regression": "unknown", "deadline_miss_rate": "unknown",
        "recovery_ticks": "unknown"}
    assert "| rate_limit_storm=0.2 | 1 | 0 | — | — | — | n/a | 0 | 0 | — | INCONCLUSIVE (no " \
           "ticks recorded) |" in text
    assert ("- Note: no ticks recorded: run silent ended by exit after 0.781 s. The bot stopped "
            "before its first iteration") in text


def test_a_run_without_ticks_among_others_is_named_and_left_out(runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "a", cycles(bad_on=1), scenarios={"net_loss": 0.2})
    craft(runs, "b", [], scenarios={"net_loss": 0.2}, ended_by="exception",
          exit_detail="DDoSProtection: binance 429 Too Many Requests")
    _, summary = report_of(runs)
    pooled = row(summary, "net_loss=0.2")
    assert pooled["ticks"] == 60 and pooled["zero_tick_runs"] == ["b"]
    assert pooled["deadline_miss_rate"] == pytest.approx(3 / 60)
    assert pooled["verdict"] == "FAIL"
    assert "run(s) b recorded no ticks: the numbers are the other runs'" in pooled["notes"]
    assert {"run_id": "b", "file": "b.json", "mode": "live", "ended_by": "exception",
            "exit_detail": "DDoSProtection: binance 429 Too Many Requests",
            "duration_sec": 0.1, "ticks": 0} in pooled["runs"]


def test_a_baseline_without_ticks_cannot_be_compared(runs: Path) -> None:
    craft(runs, "base", [])
    craft(runs, "case", cycles(), scenarios={"exch_5xx": 0.1})
    _, summary = report_of(runs)
    case = row(summary, "exch_5xx=0.1")
    p95 = next(c for c in case["criteria"] if c["criterion"] == "p95_regression")
    assert p95["status"] == "unknown"
    assert p95["evidence"] == "the baseline recorded no ticks: nothing to compare the p95 with"
    assert case["verdict"] == "INCONCLUSIVE"


@pytest.mark.usefixtures("no_run_left")
def test_a_real_run_that_never_ticked(registry: Any, tmp_path: Path) -> None:
    injector = activate(enabled=True, burst_on_sec=0, registry=registry)
    run.start_run(injector, directory=tmp_path / "runs")
    assert run.finish_run() is not None  # a bot that stopped before its first iteration
    injector = activate(enabled=True, burst_on_sec=0, exch_5xx=0.5, dry_run=False,
                        registry=registry)
    run.start_run(injector, directory=tmp_path / "runs")
    assert run.finish_run() is not None
    text, summary = report_of(tmp_path)
    assert summary["baseline"]["ticks"] == 0
    assert row(summary, "exch_5xx=0.5")["verdict"] == "INCONCLUSIVE"
    assert "INCONCLUSIVE (no ticks recorded)" in text
    assert "ended by finish_run" in text


# -- what findings need to know: tick rate, Retry-After ------------------------------------------

def test_tick_rate_and_the_longest_retry_after_are_measured(runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "storm", cycles(per_phase=20, off_sec=4.0), scenarios={"rate_limit_storm": 0.2},
          config={"rate_limit_storm_sec": 0.83}, off_sec=4.0)
    craft(runs, "429", cycles(), scenarios={"exch_429": 0.1})
    _, summary = report_of(runs)
    storm = row(summary, "rate_limit_storm=0.2")
    assert storm["tick_rate_hz"] == pytest.approx(5.0)  # 20 ticks in each 4 s OFF phase
    assert storm["retry_after_s"] == 1.0  # a 0.83 s storm's Retry-After, in whole seconds
    assert row(summary, "exch_429=0.1")["retry_after_s"] == 1.0
    assert row(summary, "exch_429=0.1")["tick_rate_hz"] == pytest.approx(10.0)
    assert row(summary, "baseline")["retry_after_s"] is None


# -- recovery, detection, pooling ----------------------------------------------------------------

def test_a_burst_that_never_recovers_fails_and_an_open_short_one_does_not(runs: Path) -> None:
    craft(runs, "base", cycles())
    never = cycles(count=2, error_after=10)  # every OFF tick raises: no healthy tick
    craft(runs, "never", never, scenarios={"exch_5xx": 1.0})
    still = [*cycles(count=1), Tick(5.0, 2.5), Tick(5.0, 3.0, RuntimeError)]  # run ends here
    craft(runs, "open", still, scenarios={"exch_5xx": 0.1})
    text, summary = report_of(runs)
    never_row = row(summary, "exch_5xx=1")
    assert never_row["verdict"] == "FAIL" and never_row["unrecovered_bursts"] == 1
    assert "never recovered before the next burst" in next(
        c["evidence"] for c in never_row["criteria"] if c["criterion"] == "recovery_ticks")
    assert statuses(row(summary, "exch_5xx=0.1"))["recovery_ticks"] == "pass"
    assert "not recovered (1 burst(s))" in text


def test_always_on_runs_cannot_show_recovery(runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "always", [Tick(5.0, 0.5)] * 20, scenarios={"exch_429": 0.1})
    _, summary = report_of(runs)
    found = row(summary, "exch_429=0.1")
    assert found["verdict"] == "INCONCLUSIVE"
    assert statuses(found)["recovery_ticks"] == "unknown"


def test_detection_rate_is_shown_and_judged_when_asked(runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "rec", cycles(), scenarios={"reconcile_mismatch": 0.2},
          reconcile=artifacts.detection({"order_dropped": 4.0, "phantom_order": 4.0},
                                        {"order_dropped": 4.0, "phantom_order": 1.0}))
    text, summary = report_of(runs)
    found = row(summary, "reconcile_mismatch=0.2")
    assert found["reconcile"]["detection_rate"] == pytest.approx(5 / 8)
    assert found["verdict"] == "PASS"  # not a criterion unless asked for
    assert "| 62% |" in text
    _, judged = report_of(runs, Criteria(min_detection_rate=0.9))
    assert statuses(row(judged, "reconcile_mismatch=0.2"))["detection_rate"] == "fail"


def test_runs_of_one_experiment_are_pooled_and_dry_run_is_apart(runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "a", cycles(bad_on=1), scenarios={"net_loss": 0.2})  # 3 misses of 60
    craft(runs, "b", cycles(), scenarios={"net_loss": 0.2})  # 0 of 60
    craft(runs, "shadow", cycles(), scenarios={"net_loss": 0.2}, dry_run=True)
    _, summary = report_of(runs)
    pooled = row(summary, "net_loss=0.2")
    assert [r["run_id"] for r in pooled["runs"]] == ["a", "b"]
    assert pooled["deadline_miss_rate"] == pytest.approx(3 / 120)
    assert row(summary, "net_loss=0.2 (dry-run)")["ticks"] == 60


def test_reconnects_not_measured_are_said(runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "ws", cycles(), scenarios={"ws_disconnect": 0.1}, reconnects=None)
    text, _ = report_of(runs)
    assert "| not measured |" in text


def test_output_to_standard_output(campaign: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", str(campaign), "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# chaos_shims report")
    assert extract_summary(out)["rows"]


def test_the_artifacts_folder_or_its_runs_subfolder(campaign: Path) -> None:
    _, from_parent = report_of(campaign.parent)
    _, from_runs = report_of(campaign)
    assert [r["scenario"] for r in from_parent["rows"]] == [r["scenario"] for r in from_runs["rows"]]


# -- from real runs ------------------------------------------------------------------------------

@pytest.mark.usefixtures("no_run_left")
def test_report_of_runs_made_with_real_ticks(binance: Any, registry: Any, tmp_path: Path) -> None:
    for keys in ({}, {"lat_spike_ms": 30, "dry_run": False}):
        injector = activate(enabled=True, burst_on_sec=0, tick_deadline_ms=500,
                            registry=registry, **keys)
        run.start_run(injector, directory=tmp_path / "runs")
        for _ in range(6):
            with ticks.tick():
                binance.fetch_order_book("BTC/USDT")
                time.sleep(0.002)
        assert run.finish_run() is not None
    _, summary = report_of(tmp_path)
    spiked = row(summary, "lat_spike_ms=30")
    assert spiked["p95_ms"] >= 30
    assert spiked["p95_regression"] > 0.15
    assert spiked["verdict"] == "FAIL"
    assert spiked["injections"] == {"lat_spike_ms": {"live": 6}}
