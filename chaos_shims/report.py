"""``chaos-shims report --runs DIR --output report.md``: scenario runs judged against a baseline.

Reads every run artifact in DIR (and DIR/runs), groups runs by experiment (their active
scenarios and values; dry-run apart), pools each group's ticks and compares it with the
baseline group (runs with no scenario active) on the acceptance criteria. Writes a Markdown
report: the results table, findings and recommendations in plain words, the definitions and
thresholds used, and, for ``chaos-shims findings``, a machine-readable summary in an HTML
comment (``<!-- chaos_shims.report/1 ... -->``) so nothing has to scrape prose.

A missing baseline is said, never guessed; a file that is not a readable run artifact is named
and skipped.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chaos_shims.core import artifacts
from chaos_shims.core.faults import HttpStatus
from chaos_shims.core.ticks import QUANTILE_RELATIVE_ERROR, RECOVERY, LogHistogram
from chaos_shims.findings import (
    REPORT_SCHEMA,
    SEVERITIES,
    derive_findings,
    embed_summary,
    run_standalone,
)
from chaos_shims.scenarios.exch_429 import RETRY_AFTER_S as EXCH_429_RETRY_AFTER_S

__all__ = ["Criteria", "CriteriaError", "add_arguments", "build_report", "main", "run"]

PROG = "chaos-shims report"
USAGE_ERROR = 2

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
VERDICT_PASS, VERDICT_FAIL, VERDICT_INCONCLUSIVE, VERDICT_BASELINE = (
    "PASS", "FAIL", "INCONCLUSIVE", "BASELINE")

#: The definitions a report quotes, written once here and in docs/METRICS_AND_REPORTS.md.
DEFINITIONS = {
    "tick": "one iteration of the bot's main loop, measured by `with chaos_shims.tick():`",
    "deadline_miss": "a tick that took longer than the run's tick_deadline_ms",
    "healthy_tick": "a tick that did not raise and finished within tick_deadline_ms",
    "recovery": RECOVERY,
    "p95_regression": "(p95 tick latency of the scenario's runs pooled) / (p95 of the baseline "
                      "runs pooled) - 1; quantiles are nearest-rank, read from a log-scale "
                      f"histogram within ±{QUANTILE_RELATIVE_ERROR:.2%}",
    "detection_rate": "min(detected, injected) / injected, summed over mismatch types: the share "
                      "of injected order-state mismatches the bot's reconciler reported",
    "p95_floor": "the p95 criterion also passes when the scenario's p95 is at most "
                 "p95_floor_ms above the baseline's, whatever the percentage: an absolute "
                 "tolerance, so ticks of microseconds are not judged on machine noise",
    "baseline": "runs with chaos enabled and no scenario active",
    "tick_rate": "ticks per second in the OFF phases of the duty cycle (ticks outside bursts "
                 "over the OFF time of the bursts that ended; a lower bound, as the last OFF "
                 "phase may be cut short)",
}


class CriteriaError(ValueError):
    """An acceptance criterion given a value it cannot take; the message names the criterion,
    the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid report criterion {key}={value!r}: allowed: {allowed}")


#: What each criterion accepts: (whole number?, largest value or None, allowed in words).
_CRITERIA_RANGES: dict[str, tuple[bool, float | None, str]] = {
    "max_p95_regression": (False, None, "a fraction >= 0 (0.15 = 15 %)"),
    "p95_floor_ms": (False, None, "a number of milliseconds >= 0"),
    "max_deadline_miss_rate": (False, 1.0, "a fraction from 0 to 1 (0.02 = 2 %)"),
    "max_recovery_ticks": (True, None, "a whole number of ticks >= 0"),
    "max_cancel_storms": (True, None, "a whole number >= 0"),
    "min_detection_rate": (False, 1.0, "None, or a fraction from 0 to 1 (0.9 = 90 %)"),
}


@dataclass(frozen=True)
class Criteria:
    """The acceptance criteria (defaults as in docs/METRICS_AND_REPORTS.md).

    The p95 criterion passes when the scenario's p95 is below the baseline's by
    ``max_p95_regression`` *or* at most ``p95_floor_ms`` above it: bots whose ticks take tens of
    microseconds would otherwise be judged on machine noise (identical baseline runs of the
    example market maker measured p95s from 68 to 97 µs), while 1 ms is 0.5 % of the default
    200 ms tick_deadline_ms, an increase no deadline notices.
    """

    max_p95_regression: float = 0.15
    max_deadline_miss_rate: float = 0.02
    max_recovery_ticks: int = 3
    max_cancel_storms: int = 0
    min_detection_rate: float | None = None
    p95_floor_ms: float = 1.0

    def __post_init__(self) -> None:
        for key, (whole, maximum, allowed) in _CRITERIA_RANGES.items():
            value: Any = getattr(self, key)
            if value is None and key == "min_detection_rate":
                continue
            number = isinstance(value, int if whole else (int, float)) \
                and not isinstance(value, bool)
            if (not number or not math.isfinite(value) or value < 0
                    or (maximum is not None and value > maximum)):
                raise CriteriaError(key, value, allowed)

    def describe(self) -> list[str]:
        lines = [
            f"p95 tick latency below the baseline's + {self.max_p95_regression:.0%}, or at most "
            f"{_floor(self.p95_floor_ms)} above it",
            f"deadline misses below {self.max_deadline_miss_rate:.1%} of ticks",
            f"recovery within {self.max_recovery_ticks} ticks after every burst",
            ("no cancel storms" if self.max_cancel_storms == 0
             else f"at most {self.max_cancel_storms} cancel storms"),
        ]
        if self.min_detection_rate is not None:
            lines.append(f"detection rate at least {self.min_detection_rate:.0%} of injected "
                         "mismatches")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"max_p95_regression": self.max_p95_regression,
                "p95_floor_ms": self.p95_floor_ms,
                "max_deadline_miss_rate": self.max_deadline_miss_rate,
                "max_recovery_ticks": self.max_recovery_ticks,
                "max_cancel_storms": self.max_cancel_storms,
                "min_detection_rate": self.min_detection_rate}


def _floor(ms: float) -> str:
    return f"{ms:g} ms"


# -- one run, as the report needs it ------------------------------------------------------------

@dataclass
class RunFacts:
    file: str
    run_id: str
    label: str
    scenarios: list[str]
    baseline: bool
    dry_run: bool
    mode: str
    ended_by: str
    ticks: int
    error_ticks: int
    errors_by_type: dict[str, int]
    deadline_ms: float
    deadline_misses: int
    histogram: LogHistogram | None
    bursts_ended: int
    worst_recovery: int | None
    #: how many bursts never recovered before the next burst began
    unrecovered: int
    #: (burst, unhealthy ticks so far) for a burst still unrecovered when the run ended
    open_recoveries: list[tuple[int, int]]
    storms: int
    storm_rule: str
    cancels: int
    reconnects: int | None
    injected: dict[str, int]
    detected: dict[str, int]
    injections: dict[str, dict[str, int]]
    rollbacks: list[dict[str, Any]]
    stop_condition: dict[str, Any]
    jsonl_lost: int
    incomplete: list[str]
    duration_sec: float | None = None
    exit_detail: str | None = None
    #: ticks that started in an OFF phase, and the OFF seconds of the bursts that ended
    off_ticks: int = 0
    off_seconds: float = 0.0
    #: the longest Retry-After a scenario of this run sent (whole seconds), or None
    retry_after_s: float | None = None


#: How long each 429 scenario asks a client to wait, from the run's config.
RETRY_AFTER_BY_SCENARIO: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "exch_429": lambda config: EXCH_429_RETRY_AFTER_S,
    "rate_limit_storm": lambda config: float(config.get("rate_limit_storm_sec", 10.0)),
}


def _longest_retry_after(active: Mapping[str, Any], config: Mapping[str, Any]) -> float | None:
    """The longest Retry-After header the run's 429 scenarios sent, in seconds: exch_429's fixed
    one, or a whole rate_limit_storm (its first 429 asks to wait the storm out)."""
    waits = []
    for key in active:
        if key not in RETRY_AFTER_BY_SCENARIO:
            continue
        try:
            wait = float(RETRY_AFTER_BY_SCENARIO[key](config))
        except (TypeError, ValueError):
            continue  # an odd config value costs this estimate, not the whole artifact
        if math.isfinite(wait) and wait >= 0:  # as the header says it: whole seconds, rounded up
            waits.append(float(HttpStatus(429, retry_after_s=wait).headers()["Retry-After"]))
    return max(waits) if waits else None


def _read_count(value: Any, name: str) -> int:
    """A count read from an artifact: a whole number >= 0."""
    count = int(value)
    if count < 0:
        raise ValueError(f"{name} = {count} is not a count (a whole number >= 0)")
    return count


def _read_finite(value: Any, name: str) -> float:
    """A measurement read from an artifact: float() also reads the strings "nan" and "inf"."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} = {number} is not a finite number")
    return number


def _at_most(part: int, part_name: str, whole: int, whole_name: str) -> None:
    """Counts of one run that contradict each other mark a damaged file, and trusting the larger
    one would let it decide how much the report allocates or computes."""
    if part > whole:
        raise ValueError(f"{part_name} ({part}) is more than {whole_name} ({whole})")


def run_facts(document: Mapping[str, Any], file: str) -> RunFacts:
    """The facts of one checked artifact; KeyError, TypeError, ValueError or ArithmeticError
    when malformed (a damaged artifact is named and skipped, never trusted in part)."""
    ticks = document["ticks"]
    recovery = document["recovery"]
    cancels = document["cancels"]
    count = _read_count(ticks["count"], "ticks.count")
    histogram = LogHistogram.from_dict(ticks["histogram"]) if count else None
    if histogram is not None and histogram.count != count:
        raise ValueError("ticks.count differs from the histogram's count")
    error_ticks = _read_count(ticks["error_ticks"], "ticks.error_ticks")
    deadline_misses = _read_count(ticks["deadline_misses"], "ticks.deadline_misses")
    _at_most(error_ticks, "ticks.error_ticks", count, "ticks.count")
    _at_most(deadline_misses, "ticks.deadline_misses", count, "ticks.count")
    per_burst = list(recovery.get("per_burst") or [])
    open_recoveries = [(int(e["burst"]), int(e["ticks"])) for e in per_burst
                       if not e.get("recovered") and e.get("until") == "run_end"]
    listed_unrecovered = sum(1 for e in per_burst
                             if not e.get("recovered") and e.get("until") != "run_end")
    # The total counts every unrecovered burst, the one still open at the run's end included;
    # per_burst itemises only the last bursts (BURSTS_KEPT), so the total may be larger.
    bursts_ended = _read_count(recovery.get("bursts_ended", 0), "recovery.bursts_ended")
    total_unrecovered = _read_count(recovery.get("unrecovered", 0), "recovery.unrecovered")
    _at_most(total_unrecovered, "recovery.unrecovered", bursts_ended, "recovery.bursts_ended")
    _at_most(listed_unrecovered + len(open_recoveries), "the unrecovered bursts in "
             "recovery.per_burst", total_unrecovered, "recovery.unrecovered")
    reconcile = document.get("reconcile") or {}
    by_type = reconcile.get("by_type") or {}
    reconnects = document.get("reconnects")
    jsonl = document.get("jsonl") or {}
    scenarios = sorted(str(key) for key in document["active_scenarios"])
    dry_run = bool(document["dry_run"])
    schedule = document.get("schedule") or {}
    off_sec = _read_finite(schedule.get("burst_off_sec") or 0.0, "schedule.burst_off_sec")
    in_bursts = ticks.get("in_bursts") or {}
    on_ticks = _read_count(in_bursts.get("ticks", count), "ticks.in_bursts.ticks")
    _at_most(on_ticks, "ticks.in_bursts.ticks", count, "ticks.count")
    duration = document.get("duration_sec")
    return RunFacts(
        file=file,
        run_id=str(document["run_id"]),
        label=str(document.get("label") or artifacts.scenario_label(
            document["active_scenarios"], dry_run)),
        scenarios=scenarios,
        baseline=bool(document["baseline"]),
        dry_run=dry_run,
        mode=str(document.get("mode", "?")),
        ended_by=str(document.get("ended_by", "?")),
        ticks=count,
        error_ticks=error_ticks,
        errors_by_type={str(k): int(v) for k, v in (ticks.get("errors_by_type") or {}).items()},
        deadline_ms=_read_finite(ticks["deadline_ms"], "ticks.deadline_ms"),
        deadline_misses=deadline_misses,
        histogram=histogram,
        bursts_ended=bursts_ended,
        worst_recovery=None if recovery.get("worst_ticks") is None
        else int(recovery["worst_ticks"]),
        unrecovered=total_unrecovered - len(open_recoveries),
        open_recoveries=open_recoveries,
        storms=int(cancels.get("storms", 0)),
        storm_rule=str((cancels.get("storm_rule") or {}).get("definition", "?")),
        cancels=int(cancels.get("total", 0)),
        reconnects=None if reconnects is None else int(reconnects.get("total", 0)),
        injected={str(k): _read_count(v.get("injected", 0), "reconcile.by_type.*.injected")
                  for k, v in by_type.items()},
        detected={str(k): _read_count(v.get("detected", 0), "reconcile.by_type.*.detected")
                  for k, v in by_type.items()},
        injections={str(s): {str(m): int(n) for m, n in modes.items()}
                    for s, modes in ((document.get("injections") or {}).get("by_scenario")
                                     or {}).items()},
        rollbacks=[dict(r) for r in document["rollbacks"]],
        stop_condition=dict(ticks.get("stop_condition") or {}),
        jsonl_lost=int(jsonl.get("lost", 0)),
        incomplete=[str(x) for x in document.get("incomplete") or []],
        duration_sec=None if duration is None else _read_finite(duration, "duration_sec"),
        exit_detail=None if document.get("exit_detail") is None
        else str(document["exit_detail"]),
        off_ticks=max(0, count - on_ticks) if not schedule.get("always_on") else 0,
        off_seconds=bursts_ended * off_sec if not schedule.get("always_on") else 0.0,
        retry_after_s=_longest_retry_after(document["active_scenarios"],
                                           document.get("config") or {}),
    )


@dataclass
class Skipped:
    file: str
    reason: str


def read_runs(folder: Path) -> tuple[list[RunFacts], list[Skipped]]:
    """Every run artifact in ``folder`` and ``folder/runs``, and the files skipped, with why."""
    folders = [folder] + ([folder / artifacts.RUNS_FOLDER]
                          if (folder / artifacts.RUNS_FOLDER).is_dir() else [])
    runs: list[RunFacts] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for where in folders:
        for path in artifacts.artifact_paths(where):
            name = os.path.relpath(path, folder)
            try:
                document = artifacts.load_artifact(path)
                facts = run_facts(document, name)
            except artifacts.ArtifactError as exc:
                skipped.append(Skipped(name, str(exc)))
                continue
            except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
                skipped.append(Skipped(name, f"malformed run artifact ({type(exc).__name__}: "
                                             f"{exc})"))
                continue
            if facts.run_id in seen:
                skipped.append(Skipped(name, f"run {facts.run_id} appears twice"))
                continue
            seen.add(facts.run_id)
            runs.append(facts)
    return runs, skipped


# -- a group of runs: one row --------------------------------------------------------------------

#: Which rule decided the p95 criterion (``decided_by``).
P95_BY_PERCENTAGE, P95_BY_FLOOR, P95_EXCEEDED = "percentage", "floor", "neither"


@dataclass
class CriterionResult:
    criterion: str
    status: str
    value: float | None
    limit: float | None
    evidence: str
    #: the rule that decided, where a criterion has more than one (p95: P95_BY_*)
    decided_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "status": self.status, "value": self.value,
                "limit": self.limit, "evidence": self.evidence, "decided_by": self.decided_by}


@dataclass
class Row:
    label: str
    runs: list[RunFacts]
    baseline: bool
    notes: list[str] = field(default_factory=list)
    results: list[CriterionResult] = field(default_factory=list)
    verdict: str = VERDICT_INCONCLUSIVE

    # pooled measurements
    @property
    def ticks(self) -> int:
        return sum(r.ticks for r in self.runs)

    @property
    def deadline_misses(self) -> int:
        return sum(r.deadline_misses for r in self.runs)

    @property
    def miss_rate(self) -> float | None:
        return self.deadline_misses / self.ticks if self.ticks else None

    @property
    def error_ticks(self) -> int:
        return sum(r.error_ticks for r in self.runs)

    @property
    def errors_by_type(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for r in self.runs:
            for name, n in r.errors_by_type.items():
                merged[name] = merged.get(name, 0) + n
        return dict(sorted(merged.items(), key=lambda item: -item[1]))

    @property
    def deadlines(self) -> list[float]:
        return sorted({r.deadline_ms for r in self.runs})

    def quantile(self, q: float) -> float | None:
        histograms = [r.histogram for r in self.runs if r.histogram is not None]
        if not histograms:
            return None
        pooled = LogHistogram.from_dict(histograms[0].as_dict())
        for other in histograms[1:]:
            if not pooled.same_shape(other):
                note = "runs with different histogram buckets: quantiles from the first run only"
                if note not in self.notes:
                    self.notes.append(note)
                break
            pooled.merge(other)
        return pooled.quantile(q)

    @property
    def bursts_ended(self) -> int:
        return sum(r.bursts_ended for r in self.runs)

    @property
    def worst_recovery(self) -> int | None:
        values = [r.worst_recovery for r in self.runs if r.worst_recovery is not None]
        return max(values) if values else None

    @property
    def unrecovered(self) -> int:
        return sum(r.unrecovered for r in self.runs)

    @property
    def open_recoveries(self) -> list[tuple[int, int]]:
        return [item for r in self.runs for item in r.open_recoveries]

    @property
    def storms(self) -> int:
        return sum(r.storms for r in self.runs)

    @property
    def tick_rate_hz(self) -> float | None:
        """Ticks per second in OFF phases (a lower bound; see DEFINITIONS["tick_rate"])."""
        off_ticks = sum(r.off_ticks for r in self.runs)
        off_seconds = sum(r.off_seconds for r in self.runs)
        if not off_ticks or not 0 < off_seconds < math.inf:
            return None
        try:
            return off_ticks / off_seconds
        except OverflowError:  # more ticks than a float holds: no rate worth showing
            return None

    @property
    def retry_after_s(self) -> float | None:
        waits = [r.retry_after_s for r in self.runs if r.retry_after_s is not None]
        return max(waits) if waits else None

    @property
    def zero_tick_runs(self) -> list[RunFacts]:
        return [r for r in self.runs if r.ticks == 0]

    @property
    def reconnects(self) -> int | None:
        counted = [r.reconnects for r in self.runs if r.reconnects is not None]
        return sum(counted) if counted else None

    def reconcile(self) -> dict[str, Any]:
        injected: dict[str, float] = {}
        detected: dict[str, float] = {}
        for r in self.runs:
            for kind, n in r.injected.items():
                injected[kind] = injected.get(kind, 0) + n
            for kind, n in r.detected.items():
                detected[kind] = detected.get(kind, 0) + n
        return artifacts.detection(injected, detected)

    def injections(self) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {}
        for r in self.runs:
            for scenario, modes in r.injections.items():
                into = merged.setdefault(scenario, {})
                for mode, n in modes.items():
                    into[mode] = into.get(mode, 0) + n
        return merged

    def summary(self, baseline_p95: float | None) -> dict[str, Any]:
        p95 = self.quantile(0.95)
        reconcile = self.reconcile()
        tick_rate = self.tick_rate_hz
        return {
            "scenario": self.label,
            "scenarios": sorted({key for r in self.runs for key in r.scenarios}),
            "baseline": self.baseline,
            "dry_run": all(r.dry_run for r in self.runs),
            "runs": [{"run_id": r.run_id, "file": r.file, "mode": r.mode, "ended_by": r.ended_by,
                      "exit_detail": r.exit_detail, "duration_sec": r.duration_sec,
                      "ticks": r.ticks} for r in self.runs],
            "ticks": self.ticks,
            "p50_ms": self.quantile(0.50),
            "p95_ms": p95,
            "p99_ms": self.quantile(0.99),
            "p95_regression": _regression(p95, baseline_p95),
            "p95_increase_ms": None if p95 is None or baseline_p95 is None
            else p95 - baseline_p95,
            "deadline_ms": self.deadlines,
            "deadline_misses": self.deadline_misses,
            "deadline_miss_rate": self.miss_rate,
            "error_ticks": self.error_ticks,
            "errors_by_type": self.errors_by_type,
            "bursts_ended": self.bursts_ended,
            "worst_recovery_ticks": self.worst_recovery,
            "unrecovered_bursts": self.unrecovered,
            "open_recoveries": [{"burst": b, "ticks": t} for b, t in self.open_recoveries],
            "cancel_storms": self.storms,
            "cancels": sum(r.cancels for r in self.runs),
            "storm_rules": sorted({r.storm_rule for r in self.runs}),
            "reconnects": self.reconnects,
            "tick_rate_hz": None if tick_rate is None else round(tick_rate, 3),
            "retry_after_s": self.retry_after_s,
            "zero_tick_runs": [r.run_id for r in self.zero_tick_runs],
            "reconcile": reconcile,
            "injections": self.injections(),
            "rollbacks": [{"run_id": r.run_id, **rollback} for r in self.runs
                          for rollback in r.rollbacks],
            "stop_condition_tripped": [
                {"run_id": r.run_id, "at_tick": r.stop_condition.get("at_tick"),
                 "misses": r.stop_condition.get("misses"),
                 "window_ticks": r.stop_condition.get("window_ticks")}
                for r in self.runs if r.stop_condition.get("tripped")],
            "jsonl_lost": sum(r.jsonl_lost for r in self.runs),
            "incomplete": sorted({f"{r.run_id}: {', '.join(r.incomplete)}" for r in self.runs
                                  if r.incomplete}),
            "criteria": [result.as_dict() for result in self.results],
            "verdict": self.verdict,
            "notes": list(self.notes),
        }


def _regression(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline <= 0:
        return None
    regression = value / baseline - 1.0
    return regression if math.isfinite(regression) else None  # a baseline p95 of ~0 ms


def group_runs(runs: Iterable[RunFacts]) -> tuple[Row | None, list[Row]]:
    """The baseline row (None without baseline runs) and one row per experiment."""
    groups: dict[str, list[RunFacts]] = {}
    baseline: list[RunFacts] = []
    for facts in runs:
        if facts.baseline:
            baseline.append(facts)
        else:
            groups.setdefault(facts.label, []).append(facts)
    base_row = Row("baseline", baseline, baseline=True) if baseline else None
    return base_row, [Row(label, groups[label], baseline=False) for label in sorted(groups)]


def judge(row: Row, baseline: Row | None, criteria: Criteria) -> None:
    """Fill ``row.results`` and ``row.verdict`` by the acceptance criteria.

    The baseline row is judged on deadline misses and cancel storms only: a bot that fails
    those without chaos has a finding of its own.
    """
    silent = [r.run_id for r in row.zero_tick_runs]
    if not row.ticks:
        row.notes.append(_no_ticks(row))
    elif silent:
        row.notes.append(f"run(s) {', '.join(silent)} recorded no ticks: the numbers are the "
                         "other runs'")
    if row.baseline:
        row.results = [_judge_misses(row, criteria), _judge_storms(row, criteria)]
        row.verdict = VERDICT_BASELINE
        return
    results = [_judge_p95(row, baseline, criteria), _judge_misses(row, criteria),
               _judge_recovery(row, criteria), _judge_storms(row, criteria)]
    if criteria.min_detection_rate is not None:  # a criterion only when asked for
        results.append(_judge_detection(row, criteria.min_detection_rate))
    row.results = results
    if any(r.status == FAIL for r in results):
        row.verdict = VERDICT_FAIL
    elif any(r.status == UNKNOWN for r in results):
        row.verdict = VERDICT_INCONCLUSIVE
    else:
        row.verdict = VERDICT_PASS


NO_TICKS = "no ticks recorded (see the note)"


def _no_ticks(row: Row) -> str:
    """Why a row has nothing to judge, from what each of its runs recorded."""
    runs = []
    for r in row.runs:
        ended = f"ended by {r.ended_by}" + (f" ({r.exit_detail})" if r.exit_detail else "")
        after = "" if r.duration_sec is None else f" after {r.duration_sec:g} s"
        runs.append(f"run {r.run_id} {ended}{after}")
    return ("no ticks recorded: " + "; ".join(runs) + ". The bot stopped before its first "
            "iteration (see its log and exit status) or never calls chaos_shims.tick()")


def _judge_p95(row: Row, baseline: Row | None, criteria: Criteria) -> CriterionResult:
    limit, floor = criteria.max_p95_regression, criteria.p95_floor_ms
    if baseline is None:
        return CriterionResult("p95_regression", UNKNOWN, None, limit,
                               "no baseline run: nothing to compare the p95 with")
    p95, base_p95 = row.quantile(0.95), baseline.quantile(0.95)
    if p95 is None:
        return CriterionResult("p95_regression", UNKNOWN, None, limit, NO_TICKS)
    if base_p95 is None or base_p95 <= 0:
        return CriterionResult("p95_regression", UNKNOWN, None, limit,
                               "the baseline recorded no ticks: nothing to compare the p95 with")
    regression, increase = p95 / base_p95 - 1.0, p95 - base_p95
    # Over a baseline p95 of ~0 ms the ratio is infinite: it still fails the percentage rule,
    # but it is no value to pass on (None: JSON has no Infinity).
    value = _regression(p95, base_p95)
    measured = (f"p95 {_ms(p95)} against the baseline's {_ms(base_p95)} "
                f"({_signed_pct(regression)}, {_signed_ms(increase)})")
    # Two rules, either suffices: the percentage for ticks of milliseconds and more, the
    # absolute floor for ticks so short that a percentage measures the machine, not the bot.
    if regression < limit:
        return CriterionResult("p95_regression", PASS, value, limit,
                               f"{measured}: within +{limit:.0%}", decided_by=P95_BY_PERCENTAGE)
    if increase <= floor:
        return CriterionResult("p95_regression", PASS, value, limit,
                               f"{measured}: within the {_floor(floor)} floor (above "
                               f"+{limit:.0%}, which alone would fail)", decided_by=P95_BY_FLOOR)
    return CriterionResult("p95_regression", FAIL, value, limit,
                           f"{measured}: above both +{limit:.0%} and the {_floor(floor)} floor",
                           decided_by=P95_EXCEEDED)


def _judge_misses(row: Row, criteria: Criteria) -> CriterionResult:
    limit = criteria.max_deadline_miss_rate
    rate = row.miss_rate
    if rate is None:
        return CriterionResult("deadline_miss_rate", UNKNOWN, None, limit, NO_TICKS)
    deadline = "/".join(_ms(d) for d in row.deadlines)
    return CriterionResult(
        "deadline_miss_rate", PASS if rate < limit else FAIL, rate, limit,
        f"{row.deadline_misses} of {row.ticks} ticks over {deadline} ({rate:.1%}; "
        f"limit {limit:.1%})")


def _judge_detection(row: Row, limit: float) -> CriterionResult:
    reconcile = row.reconcile()
    rate = reconcile["detection_rate"]
    if rate is None:
        return CriterionResult("detection_rate", UNKNOWN, None, limit,
                               "no order-state mismatch was injected")
    return CriterionResult(
        "detection_rate", PASS if rate >= limit else FAIL, rate, limit,
        f"{reconcile['detected']} reported of {reconcile['injected']} injected ({rate:.0%}; "
        f"at least {limit:.0%} required)")


def _judge_storms(row: Row, criteria: Criteria) -> CriterionResult:
    storms = row.storms
    rule = "; ".join(sorted({r.storm_rule for r in row.runs}))
    return CriterionResult(
        "cancel_storms", PASS if storms <= criteria.max_cancel_storms else FAIL, storms,
        criteria.max_cancel_storms,
        f"{storms} cancel storm{'s' if storms != 1 else ''} ({rule}); "
        f"{sum(r.cancels for r in row.runs)} cancels in all")


def _judge_recovery(row: Row, criteria: Criteria) -> CriterionResult:
    limit = criteria.max_recovery_ticks
    worst = row.worst_recovery
    unrecovered = row.unrecovered
    too_long_open = [(b, t) for b, t in row.open_recoveries if t > limit]
    if unrecovered or too_long_open:
        parts = []
        if unrecovered:
            parts.append(f"{unrecovered} burst{'s' if unrecovered != 1 else ''} never recovered "
                         "before the next burst")
        if too_long_open:
            parts.append("still unhealthy after " + ", ".join(
                f"{t} ticks (burst {b})" for b, t in too_long_open) + " when the run ended")
        if worst is not None:
            parts.append(f"the others within {worst} ticks")
        return CriterionResult("recovery_ticks", FAIL, None, limit,
                               "; ".join(parts) + f" (limit {limit} ticks)")
    if not row.ticks:
        return CriterionResult("recovery_ticks", UNKNOWN, None, limit, NO_TICKS)
    if worst is None:
        return CriterionResult("recovery_ticks", UNKNOWN, None, limit,
                               "no burst ended with a tick after it (always ON, or the run was "
                               "shorter than one ON phase): recovery was not measured")
    return CriterionResult(
        "recovery_ticks", PASS if worst <= limit else FAIL, worst, limit,
        f"worst recovery {worst} ticks over {row.bursts_ended} bursts (limit {limit} ticks)")


# -- Markdown ------------------------------------------------------------------------------------

def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.3f} ms"


def _signed_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.0%}"


def _signed_ms(value: float) -> str:
    return ("-" if value < 0 else "+") + _ms(abs(value))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _recovery_cell(summary: Mapping[str, Any]) -> str:
    if summary["unrecovered_bursts"]:
        return f"not recovered ({summary['unrecovered_bursts']} burst(s))"
    worst = summary["worst_recovery_ticks"]
    open_recoveries = summary["open_recoveries"]
    if open_recoveries:
        longest = max(item["ticks"] for item in open_recoveries)
        if worst is None or longest > worst:
            return f"≥ {longest} ticks (run ended)"
    return "n/a" if worst is None else f"{worst} tick{'s' if worst != 1 else ''}"


def _p95_change(summary: Mapping[str, Any]) -> str:
    if summary["p95_regression"] is None:
        return "—"
    increase = summary.get("p95_increase_ms")
    return _signed_pct(summary["p95_regression"]) + (
        "" if increase is None else f" ({_signed_ms(increase)})")


def _verdict_cell(summary: Mapping[str, Any]) -> str:
    verdict = summary["verdict"]
    failed = [c["criterion"] for c in summary["criteria"] if c["status"] == FAIL]
    unknown = [c["criterion"] for c in summary["criteria"] if c["status"] == UNKNOWN]
    if verdict == VERDICT_FAIL:
        return f"**FAIL** ({', '.join(failed)})"
    if verdict == VERDICT_INCONCLUSIVE and not summary["ticks"]:
        return "INCONCLUSIVE (no ticks recorded)"
    if verdict == VERDICT_INCONCLUSIVE:
        return f"INCONCLUSIVE ({', '.join(unknown)} not measured)"
    if verdict == VERDICT_BASELINE:
        return "baseline"
    return "PASS"


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ("Scenario", "Runs", "Ticks", "p95", "p95 vs baseline", "Deadline misses",
              "Worst recovery", "Cancel storms", "Reconnects", "Detection rate", "Verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in rows:
        reconnects = "not measured" if s["reconnects"] is None else str(s["reconnects"])
        detection = s["reconcile"]["detection_rate"]
        cells = (
            s["scenario"], str(len(s["runs"])), str(s["ticks"]), _ms(s["p95_ms"]),
            "—" if s["baseline"] else _p95_change(s),
            _pct(s["deadline_miss_rate"]), _recovery_cell(s), str(s["cancel_storms"]),
            reconnects,
            "—" if detection is None else f"{detection:.0%}",
            _verdict_cell(s),
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _details(s: Mapping[str, Any]) -> list[str]:
    lines = [f"### {s['scenario']}", ""]
    runs = ", ".join(f"`{r['run_id']}` ({r['mode']}, ended by {r['ended_by']}, {r['ticks']} ticks)"
                     for r in s["runs"])
    lines.append(f"- Runs: {runs}")
    lines.append(f"- Tick latency: p50 {_ms(s['p50_ms'])}, p95 {_ms(s['p95_ms'])}, "
                 f"p99 {_ms(s['p99_ms'])}")
    lines.append(f"- Deadline misses: {s['deadline_misses']} of {s['ticks']} ticks "
                 f"(deadline {', '.join(_ms(d) for d in s['deadline_ms']) or '—'})")
    if s["error_ticks"]:
        top = ", ".join(f"{name} x{n}" for name, n in list(s["errors_by_type"].items())[:5])
        lines.append(f"- Error ticks: {s['error_ticks']} ({top})")
    lines.append(f"- Bursts followed by a tick: {s['bursts_ended']}; recovery: "
                 f"{_recovery_cell(s)}")
    lines.append(f"- Cancels: {s['cancels']}, storms: {s['cancel_storms']} "
                 f"({'; '.join(s['storm_rules'])})")
    if s["injections"]:
        made = ", ".join(f"{scenario} " + "/".join(f"{n} {mode}" for mode, n in sorted(m.items()))
                         for scenario, m in sorted(s["injections"].items()))
        lines.append(f"- Injections: {made}")
    reconcile = s["reconcile"]
    if reconcile["injected"] or reconcile["detected"]:
        kinds = ", ".join(f"{kind} {v['detected']}/{v['injected']}"
                          for kind, v in reconcile["by_type"].items())
        lines.append(f"- Order-state mismatches detected/injected: {kinds}")
    for rollback in s["rollbacks"]:
        lines.append(f"- Rolled back to dry-run in `{rollback['run_id']}`: "
                     f"{rollback.get('reason')}: {rollback.get('detail')}")
    if s["jsonl_lost"]:
        lines.append(f"- JSONL decision records lost: {s['jsonl_lost']}")
    for item in s["incomplete"]:
        lines.append(f"- Incomplete artifact (written at a signal): {item}")
    for note in s["notes"]:
        lines.append(f"- Note: {note}")
    for c in s["criteria"]:
        lines.append(f"- {c['criterion']}: {c['status'].upper()}: {c['evidence']}")
    lines.append("")
    return lines


def build_report(runs_folder: Path | str, criteria: Criteria | None = None, *,
                 now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """The report's Markdown and its machine-readable summary.

    FileNotFoundError when the folder does not exist.
    """
    criteria = criteria or Criteria()
    folder = Path(runs_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    runs, skipped = read_runs(folder)
    base_row, rows = group_runs(runs)
    for row in rows:
        judge(row, base_row, criteria)
    if base_row is not None:
        judge(base_row, None, criteria)
    base_p95 = base_row.quantile(0.95) if base_row is not None else None
    summaries = ([base_row.summary(None)] if base_row is not None else []) + [
        row.summary(base_p95) for row in rows]
    generated = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    summary: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": generated,
        "runs_dir": str(folder),
        "criteria": criteria.as_dict(),
        "definitions": {**DEFINITIONS,
                        "cancel_storm": "; ".join(sorted({r.storm_rule for r in runs}))
                        or "no runs"},
        "baseline": {"found": base_row is not None,
                     "run_ids": [r.run_id for r in base_row.runs] if base_row else [],
                     "ticks": base_row.ticks if base_row else 0,
                     "p95_ms": base_p95},
        "rows": summaries,
        "skipped": [{"file": s.file, "reason": s.reason} for s in skipped],
    }
    findings = derive_findings(summary)
    return render_markdown(summary, findings), summary


def render_markdown(summary: Mapping[str, Any], findings: Sequence[Mapping[str, Any]]) -> str:
    rows = summary["rows"]
    scenario_rows = [s for s in rows if not s["baseline"]]
    criteria = Criteria(**summary["criteria"])
    lines = ["# chaos_shims report", ""]
    lines.append(f"Generated {summary['generated_at']} from {sum(len(s['runs']) for s in rows)} "
                 f"run artifact(s) in `{summary['runs_dir']}`"
                 + (f"; {len(summary['skipped'])} file(s) skipped (listed below)."
                    if summary["skipped"] else "."))
    lines.append("")
    baseline = summary["baseline"]
    if baseline["found"]:
        lines.append(f"Baseline: {len(baseline['run_ids'])} run(s), {baseline['ticks']} ticks, "
                     f"p95 {_ms(baseline['p95_ms'])}.")
    else:
        lines.append("**No baseline run was found** (a run with chaos enabled and no scenario "
                     "active). The p95 regression cannot be judged, so no scenario can PASS; "
                     "the other criteria are still judged.")
    lines.append("")
    verdicts = [s["verdict"] for s in scenario_rows]
    if scenario_rows:
        lines.append(f"Verdicts: {verdicts.count(VERDICT_PASS)} PASS, "
                     f"{verdicts.count(VERDICT_FAIL)} FAIL, "
                     f"{verdicts.count(VERDICT_INCONCLUSIVE)} INCONCLUSIVE.")
    else:
        lines.append("No scenario run was found: nothing to judge.")
    lines += ["", "## Results", ""]
    lines += _table(rows) if rows else ["No readable run artifact."]
    lines += ["", "## Acceptance criteria", ""]
    lines += [f"- {line}" for line in criteria.describe()]
    lines.append("")
    lines.append("A scenario PASSes when every criterion passes, FAILs when any fails, and is "
                 "INCONCLUSIVE when none fails but one could not be measured.")
    lines += ["", "## Findings and recommendations", ""]
    if findings:
        for number, finding in enumerate(findings, 1):
            where = finding["scenario"] or "all runs"
            lines.append(f"{number}. **{finding['severity'].upper()}** — {where}, "
                         f"{finding['criterion']}: {finding['evidence']}  ")
            lines.append(f"   Recommendation: {finding['recommendation']}")
    else:
        lines.append("Nothing to report: every scenario passed every criterion.")
    lines += ["", "## Details", ""]
    for s in rows:
        lines += _details(s)
    lines += ["## Definitions and thresholds used", ""]
    for name, text in summary["definitions"].items():
        lines.append(f"- **{name.replace('_', ' ')}**: {text}")
    lines.append(f"- **severity**: {', '.join(SEVERITIES)}, as docs/METRICS_AND_REPORTS.md "
                 "defines them")
    lines.append("")
    if summary["skipped"]:
        lines += ["## Skipped files", ""]
        lines += [f"- `{s['file']}`: {s['reason']}" for s in summary["skipped"]]
        lines.append("")
    lines.append(embed_summary(summary))
    lines.append("")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------

def _percent(maximum: float | None = None) -> Callable[[str], float]:
    """A percentage flag ('15' or '15%') as a fraction; argparse names the flag on error."""
    allowed = "a percentage >= 0" if maximum is None else f"a percentage from 0 to {maximum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text.strip().rstrip("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value / 100.0

    return parse


def _milliseconds(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("ms"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of milliseconds >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chaos-shims report``."""
    default = Criteria()
    parser.add_argument("--runs", metavar="DIR", default=None,
                        help="folder of run artifacts (also reads DIR/runs); default "
                             "$CHAOS_SHIMS_ARTIFACTS_DIR/runs or artifacts/chaos/runs")
    parser.add_argument("--output", metavar="FILE", default="report.md",
                        help="where to write the Markdown report ('-': standard output)")
    parser.add_argument("--max-p95-regression", metavar="PCT", type=_percent(),
                        default=default.max_p95_regression,
                        help="p95 tick latency must stay below the baseline's + PCT "
                             f"(default {default.max_p95_regression * 100:g}), unless within "
                             "--p95-floor-ms of it")
    parser.add_argument("--p95-floor-ms", metavar="MS", type=_milliseconds,
                        default=default.p95_floor_ms,
                        help="a p95 at most MS above the baseline's passes whatever the "
                             f"percentage (default {default.p95_floor_ms:g}; 0 judges by the "
                             "percentage alone)")
    parser.add_argument("--max-deadline-miss", metavar="PCT", type=_percent(100),
                        default=default.max_deadline_miss_rate,
                        help="deadline misses must stay below PCT of ticks "
                             f"(default {default.max_deadline_miss_rate * 100:g})")
    parser.add_argument("--max-recovery-ticks", metavar="N", type=_count,
                        default=default.max_recovery_ticks,
                        help=f"recovery within N ticks (default {default.max_recovery_ticks})")
    parser.add_argument("--max-cancel-storms", metavar="N", type=_count,
                        default=default.max_cancel_storms,
                        help=f"at most N cancel storms (default {default.max_cancel_storms})")
    parser.add_argument("--min-detection-rate", metavar="PCT", type=_percent(100), default=None,
                        help="also require this share of injected order-state mismatches to be "
                             "reported by the bot (default: not a criterion)")


def run(args: argparse.Namespace) -> int:
    """``chaos-shims report``: 0 when written, 2 on bad input."""
    folder = Path(args.runs) if args.runs else artifacts.runs_dir()
    try:
        criteria = Criteria(
            max_p95_regression=args.max_p95_regression,
            p95_floor_ms=args.p95_floor_ms,
            max_deadline_miss_rate=args.max_deadline_miss,
            max_recovery_ticks=args.max_recovery_ticks,
            max_cancel_storms=args.max_cancel_storms,
            min_detection_rate=args.min_detection_rate,
        )
    except CriteriaError as exc:  # the flags' own checks come first; this is the backstop
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    try:
        text, summary = build_report(folder, criteria)
    except FileNotFoundError:
        print(f"{PROG}: no such folder: {folder}", file=sys.stderr)
        return USAGE_ERROR
    for skipped in summary["skipped"]:
        print(f"{PROG}: skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
    if not summary["rows"]:
        print(f"{PROG}: no run artifact in {folder}: nothing to report", file=sys.stderr)
        return USAGE_ERROR
    for row in summary["rows"]:
        if row["zero_tick_runs"]:
            print(f"{PROG}: {row['scenario']}: no ticks recorded in run(s) "
                  f"{', '.join(row['zero_tick_runs'])}", file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    try:
        output = Path(args.output)
        if output.parent != Path():
            output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"{PROG}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE_ERROR
    rows = [s for s in summary["rows"] if not s["baseline"]]
    failed = sum(s["verdict"] == VERDICT_FAIL for s in rows)
    print(f"{PROG}: wrote {args.output}: {len(rows)} scenario(s), {failed} FAIL"
          + ("" if summary["baseline"]["found"] else "; no baseline run"), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_standalone(PROG, __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())

