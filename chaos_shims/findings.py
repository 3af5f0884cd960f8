"""``chaos-shims findings --report report.md --output findings.json``: what to fix, by severity.

A report carries its measurements in a machine-readable block, an HTML comment that Markdown
viewers hide::

    <!-- chaos_shims.report/1
    {"schema": "chaos_shims.report/1", "rows": [...], ...}
    -->

This module owns that block (``embed_summary`` writes it, ``extract_summary`` reads it) and the
judgement ``derive_findings``: the same findings the report prints in words, as a JSON list of
``{severity, scenario, criterion, evidence, recommendation}``, most severe first. The severity
rules are in docs/METRICS_AND_REPORTS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "derive_findings", "embed_summary", "extract_summary", "main", "run",
           "run_standalone"]

PROG = "chaos-shims findings"
USAGE_ERROR = 2
REPORT_SCHEMA = "chaos_shims.report/1"
HIGH, MEDIUM, LOW = "high", "medium", "low"
SEVERITIES = (HIGH, MEDIUM, LOW)

_BLOCK = re.compile(r"<!-- (chaos_shims\.report/\S+)\n(.*?)\n-->", re.DOTALL)


class FindingsError(Exception):
    """The report cannot be read; the message says why, for a person."""


# -- the machine-readable block -----------------------------------------------------------------

def embed_summary(summary: Mapping[str, Any]) -> str:
    """The summary as an HTML comment; ``<``, ``>`` and ``&`` are escaped inside JSON strings,
    so no value can close the comment early."""
    data = json.dumps(summary, indent=1, sort_keys=False, allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"<!-- {REPORT_SCHEMA}\n{data}\n-->"


def extract_summary(text: str) -> dict[str, Any]:
    """The summary embedded in a report's Markdown; FindingsError when there is none."""
    match = _BLOCK.search(text)
    if match is None:
        raise FindingsError("it has no chaos_shims summary block "
                            f"(<!-- {REPORT_SCHEMA} ... -->); was it written by chaos-shims report?")
    if match.group(1) != REPORT_SCHEMA:
        raise FindingsError(f"its summary block is {match.group(1)}; this version reads "
                            f"{REPORT_SCHEMA}")
    try:
        summary = json.loads(match.group(2))
    except json.JSONDecodeError as exc:
        raise FindingsError(f"its summary block is not valid JSON ({exc})") from exc
    if (not isinstance(summary, dict) or summary.get("schema") != REPORT_SCHEMA
            or not isinstance(summary.get("rows"), list)
            or not isinstance(summary.get("criteria"), dict)):
        raise FindingsError("its summary block does not have the report's fields")
    return summary


# -- judgement -----------------------------------------------------------------------------------

#: What to do about each criterion, in general; scenario hints below refine it.
ADVICE = {
    "deadline_miss_rate": (
        "Keep slow I/O off the tick's critical path: give every REST call a ccxt `timeout` "
        "well below tick_deadline_ms, and when the exchange is slow skip or defer that work "
        "instead of waiting for it inside the tick."),
    "p95_regression": (
        "Bound the time a tick can spend waiting on the exchange (ccxt `timeout`, fewer "
        "sequential calls per tick, concurrent calls in async code, cached market data) so a "
        "degraded exchange slows the bot down by a bounded amount."),
    "recovery_ticks": (
        "Return to normal as soon as calls succeed again: reset backoff and circuit-breaker "
        "state on the first success, re-sync open orders and balances once rather than every "
        "tick, and avoid backoff delays that outlive the fault."),
    "cancel_storms": (
        "Do not answer errors with cancel-all and re-quote: rate-limit cancels, treat an "
        "order in unknown state as possibly open and reconcile before cancelling again."),
    "detection_rate": (
        "Compare the exchange's open orders, fills and balances with the bot's own books "
        "regularly, and call chaos_shims.report_discrepancy(kind) for every mismatch found."),
    "error_ticks": (
        "Catch ccxt.NetworkError (RequestTimeout, RateLimitExceeded, DDoSProtection, "
        "ExchangeNotAvailable are its subclasses) inside the iteration, so one failed call "
        "costs one tick, not the loop."),
}

#: Scenario-specific advice for a criterion: (scenario key, criterion) -> text.
SCENARIO_ADVICE = {
    ("lat_spike_ms", "deadline_miss_rate"): (
        "Every request was slower: set ccxt `timeout` below the tick deadline and move "
        "non-essential calls (markets, balances) out of the hot loop."),
    ("net_loss", "deadline_miss_rate"): (
        "On a real network a lost request holds the tick for the whole ccxt `timeout` (10 s "
        "by default): set it well below tick_deadline_ms and retry in a later tick."),
    ("exch_429", "deadline_miss_rate"): (
        "Do not sleep out Retry-After inside the tick: skip the call and come back when the "
        "exchange allows it."),
    ("rate_limit_storm", "deadline_miss_rate"): (
        "During an exchange-wide throttle, back off across ticks (skip REST work, keep "
        "quoting from websocket data) instead of waiting inside each tick."),
    ("rate_limit_storm", "recovery_ticks"): (
        "After a throttle ends, ramp back up gradually but promptly: a backoff that keeps "
        "growing after the storm delays recovery."),
    ("exch_5xx", "error_ticks"): (
        "Treat ExchangeNotAvailable as transient: keep existing quotes, retry in a later tick, "
        "and alert only when it lasts."),
}

_SEVERITY_ORDER = {HIGH: 0, MEDIUM: 1, LOW: 2}


def _advice(scenarios: Sequence[str], criterion: str) -> str:
    """The scenario-specific advice when there is some, else the general one."""
    specific = [SCENARIO_ADVICE[(key, criterion)] for key in scenarios
                if (key, criterion) in SCENARIO_ADVICE]
    return " ".join(specific) or ADVICE[criterion]


def _finding(severity: str, scenario: str | None, criterion: str, evidence: str,
             recommendation: str) -> dict[str, Any]:
    return {"severity": severity, "scenario": scenario, "criterion": criterion,
            "evidence": evidence, "recommendation": recommendation}


def derive_findings(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The findings of a report summary, most severe first (stable within a severity)."""
    criteria = summary["criteria"]
    findings: list[dict[str, Any]] = []
    rows = [row for row in summary["rows"] if isinstance(row, dict)]
    baseline = next((row for row in rows if row.get("baseline")), None)
    scenario_rows = [row for row in rows if not row.get("baseline")]

    if not summary["baseline"]["found"] and scenario_rows:
        findings.append(_finding(
            LOW, None, "baseline", "no baseline run among the artifacts: p95 regressions could "
            "not be judged",
            "Run the bot once with CHAOS_SHIMS_ENABLED=1 and no scenario, otherwise as in the "
            "scenario runs, and report again."))
    if baseline is not None:
        findings += _baseline_findings(baseline, criteria)
    for row in scenario_rows:
        findings += _row_findings(row, criteria, baseline)
    for skipped in summary.get("skipped") or []:
        findings.append(_finding(LOW, None, "data", f"{skipped['file']} was skipped: "
                                 f"{skipped['reason']}",
                                 "Remove files that are not run artifacts from the runs folder, "
                                 "or re-run the experiment that wrote a damaged one."))
    findings.sort(key=lambda f: _SEVERITY_ORDER[f["severity"]])
    return findings


def _baseline_findings(row: Mapping[str, Any], criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    for result in row["criteria"]:
        if result["status"] == "fail":
            found.append(_finding(
                MEDIUM, "baseline", result["criterion"],
                f"without chaos: {result['evidence']}",
                "Fix this first: the bot breaks this criterion with no fault injected, so no "
                "scenario can be judged fairly on it. " + ADVICE[result["criterion"]]))
    return found


def _row_findings(row: Mapping[str, Any], criteria: Mapping[str, Any],
                  baseline: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    label = row["scenario"]
    scenarios = row.get("scenarios") or []
    found = []
    for result in row["criteria"]:
        criterion = result["criterion"]
        if result["status"] == "fail":
            found.append(_finding(_severity(result, row, criteria), label, criterion,
                                  result["evidence"], _advice(scenarios, criterion)))
        elif result["status"] == "unknown" and criterion == "deadline_miss_rate":
            found.append(_finding(
                MEDIUM, label, "ticks", result["evidence"],
                "Wrap each iteration of the bot's main loop in `with chaos_shims.tick():` so "
                "the run measures latency, deadlines and recovery."))
        elif result["status"] == "unknown" and criterion == "recovery_ticks":
            found.append(_finding(
                LOW, label, "recovery_ticks", result["evidence"],
                "Run longer than one duty cycle (burst_on_sec + burst_off_sec) with "
                "burst_on_sec > 0, so bursts end and recovery can be measured."))

    # Detection: findings even when it is not an acceptance criterion.
    reconcile = row.get("reconcile") or {}
    rate = reconcile.get("detection_rate")
    if rate is not None and rate < 1.0 and criteria.get("min_detection_rate") is None:
        missed = [kind for kind, v in (reconcile.get("by_type") or {}).items()
                  if v.get("injected") and (v.get("detection_rate") or 0) < 1.0]
        found.append(_finding(
            HIGH if rate < 0.5 else MEDIUM, label, "detection_rate",
            f"the bot reported {reconcile['detected']} of {reconcile['injected']} injected "
            f"order-state mismatches ({rate:.0%}); missed types: {', '.join(missed) or '—'}",
            ADVICE["detection_rate"]))

    # Error ticks beyond the baseline's share.
    ticks, errors = row.get("ticks") or 0, row.get("error_ticks") or 0
    base_rate = ((baseline.get("error_ticks") or 0) / baseline["ticks"]
                 if baseline is not None and baseline.get("ticks") else 0.0)
    if ticks and errors and errors / ticks > base_rate:
        top = ", ".join(f"{name} x{n}" for name, n in list(
            (row.get("errors_by_type") or {}).items())[:3])
        severity = MEDIUM if errors / ticks >= criteria["max_deadline_miss_rate"] else LOW
        found.append(_finding(severity, label, "error_ticks",
                              f"{errors} of {ticks} ticks raised ({errors / ticks:.1%}): {top}",
                              _advice(scenarios, "error_ticks")))

    for trip in row.get("stop_condition_tripped") or []:
        found.append(_finding(
            MEDIUM, label, "stop_condition",
            f"run {trip['run_id']}: {trip.get('misses')} of {trip.get('window_ticks')} ticks "
            f"missed the deadline at tick {trip.get('at_tick')}; chaos rolled itself back to "
            "dry-run, so later ticks were not under the fault",
            "Fix the deadline misses first; in a test environment a higher stop_deadline_miss "
            "lets the whole experiment run."))
    if row.get("jsonl_lost"):
        found.append(_finding(LOW, label, "data",
                              f"{row['jsonl_lost']} JSONL decision records could not be written",
                              "Check the disk and the path of CHAOS_SHIMS_LOG_FILE."))
    for item in row.get("incomplete") or []:
        found.append(_finding(LOW, label, "data", f"incomplete artifact: {item}",
                              "The process was signalled while chaos_shims held a lock; the "
                              "missing counts are also in the Prometheus metrics."))
    return found


def _severity(result: Mapping[str, Any], row: Mapping[str, Any],
              criteria: Mapping[str, Any]) -> str:
    criterion = result["criterion"]
    value, limit = result.get("value"), result.get("limit")
    if criterion == "cancel_storms":
        return HIGH  # cancel storms cost fees, rate limit and queue position at once
    if criterion == "recovery_ticks":
        return HIGH if value is None else MEDIUM  # None: a burst never recovered
    if criterion in ("deadline_miss_rate", "p95_regression"):
        if value is not None and limit is not None and value >= 2 * limit:
            return HIGH
        return MEDIUM
    if criterion == "detection_rate":
        return HIGH if value is not None and value < 0.5 else MEDIUM
    return MEDIUM


# -- command line --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chaos-shims findings``."""
    parser.add_argument("--report", metavar="FILE", default="report.md",
                        help="a report written by chaos-shims report (default report.md)")
    parser.add_argument("--output", metavar="FILE", default="findings.json",
                        help="where to write the findings ('-': standard output)")


def run(args: argparse.Namespace) -> int:
    """``chaos-shims findings``: 0 when written, 2 when the report is missing or unreadable."""
    try:
        text = Path(args.report).read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"{PROG}: no such report: {args.report}", file=sys.stderr)
        return USAGE_ERROR
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"{PROG}: cannot read {args.report}: {reason}", file=sys.stderr)
        return USAGE_ERROR
    try:
        findings = derive_findings(extract_summary(text))
    except FindingsError as exc:
        print(f"{PROG}: cannot use {args.report}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        print(f"{PROG}: cannot use {args.report}: its summary block is malformed "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
        return USAGE_ERROR
    data = json.dumps(findings, indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(data)
        return 0
    try:
        Path(args.output).write_text(data, encoding="utf-8")
    except OSError as exc:
        print(f"{PROG}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE_ERROR
    counts = {severity: sum(f["severity"] == severity for f in findings) for severity in SEVERITIES}
    print(f"{PROG}: wrote {args.output}: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
          file=sys.stderr)
    return 0


def run_standalone(prog: str, doc: str | None,
                   add_arguments: Callable[[argparse.ArgumentParser], None],
                   run: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """A subcommand run on its own (``python -m chaos_shims.<module>``): its parser, described
    by the first paragraph of its module docstring; a usage error returns instead of exiting."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    return run(args)


def main(argv: list[str] | None = None) -> int:
    return run_standalone(PROG, __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
