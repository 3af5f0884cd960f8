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

Every recommendation is a row of one table, ``ADVICE``: by criterion, scenario, the error types
the bot's ticks raised and what the row shows happened (``situations``: a stream never reopened,
a Retry-After waited out), the most specific row wins (``advise``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos_shims.core.artifacts import MAX_JSON_DEPTH, CorruptJSON, loads_json

__all__ = ["ADVICE", "Advice", "add_arguments", "advise", "derive_findings", "embed_summary",
           "extract_summary", "main", "run", "run_standalone", "situations"]

PROG = "chaos-shims findings"
USAGE_ERROR = 2
REPORT_SCHEMA = "chaos_shims.report/1"
HIGH, MEDIUM, LOW = "high", "medium", "low"
SEVERITIES = (HIGH, MEDIUM, LOW)

_BLOCK = re.compile(r"<!-- (chaos_shims\.report/\S+)\n(.*?)\n-->", re.DOTALL)


class FindingsError(Exception):
    """The report cannot be read; the message says why, for a person."""


# -- the machine-readable block -----------------------------------------------------------------

def _finite_values(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None: JSON has no NaN or
    Infinity, and a ratio over a baseline of ~0 ms is not a measurement to pass on."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_values(item) for item in value]
    return value


def embed_summary(summary: Mapping[str, Any]) -> str:
    """The summary as an HTML comment; ``<``, ``>`` and ``&`` are escaped inside JSON strings,
    so no value can close the comment early."""
    data = json.dumps(_finite_values(summary), indent=1, sort_keys=False, allow_nan=False)
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
        # A report copies a few values of its artifacts, a few levels deeper than they were.
        summary = loads_json(match.group(2), max_depth=2 * MAX_JSON_DEPTH)
    except json.JSONDecodeError as exc:
        raise FindingsError(f"its summary block is not valid JSON ({exc})") from exc
    except CorruptJSON as exc:
        raise FindingsError(f"its summary block is corrupt: {exc}") from exc
    if (not isinstance(summary, dict) or summary.get("schema") != REPORT_SCHEMA
            or not isinstance(summary.get("rows"), list)
            or not isinstance(summary.get("criteria"), dict)):
        raise FindingsError("its summary block does not have the report's fields")
    return summary


# -- the advice table ----------------------------------------------------------------------------

ANY: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Advice:
    """One row of the advice table: ``text`` answers a finding about one of ``criteria``, in a
    run of one of ``scenarios``, whose ticks raised one of ``errors`` (exception class names, as
    the artifact's ``errors_by_type`` has them), in ``situation`` (a fact read from the row, see
    ``situations``). An empty set or None matches anything. ``severity``, when set, replaces the
    criterion's own (a situation that is not a defect of the bot)."""

    text: str
    criteria: frozenset[str] = ANY
    scenarios: frozenset[str] = ANY
    errors: frozenset[str] = ANY
    situation: str | None = None
    severity: str | None = None

    @property
    def specificity(self) -> int:
        """A situation beats an error type, which beats a scenario, which beats a criterion."""
        return (8 * (self.situation is not None) + 4 * bool(self.errors)
                + 2 * bool(self.scenarios) + bool(self.criteria))

    def matches(self, criterion: str, scenarios: Sequence[str], error: str | None,
                seen: Mapping[str, str]) -> bool:
        return ((not self.criteria or criterion in self.criteria)
                and (not self.scenarios or not self.scenarios.isdisjoint(scenarios))
                and (not self.errors or error in self.errors)
                and (self.situation is None or self.situation in seen))


def _names(*names: str) -> frozenset[str]:
    return frozenset(names)


# What the bot's ticks raised, by family. ccxt's names (ccxt.NetworkError and its subclasses),
# websockets', and the example bots' own "cannot quote" errors that stand for a dead stream.
NETWORK_ERRORS = _names("NetworkError", "RequestTimeout", "ExchangeNotAvailable",
                        "OnMaintenance", "ConnectionResetError", "TimeoutError",
                        "ClientConnectionError", "ServerDisconnectedError")
RATE_LIMIT_ERRORS = _names("RateLimitExceeded", "DDoSProtection")
CLOCK_ERRORS = _names("InvalidNonce")
STREAM_ERRORS = _names("StaleBook", "BookNotInSync", "ConnectionClosed",
                       "ConnectionClosedError", "ConnectionClosedOK", "WebSocketException")
DNS_ERRORS = _names("gaierror")
ORDER_STATE_ERRORS = _names("OrderNotFound", "InsufficientFunds")
POST_ONLY_ERRORS = _names("OrderImmediatelyFillable")
MEMORY_ERRORS = _names("MemoryError")

#: Criteria whose advice depends on the errors the ticks raised ("startup": a run with no tick).
TICK_HEALTH = _names("error_ticks", "recovery_ticks", "startup")
SLOW = _names("deadline_miss_rate", "p95_regression")

# Situations: facts about a row that change the advice (see ``situations``).
NEVER_RECONNECTED = "never_reconnected"
WAITED_OUT_RETRY_AFTER = "waited_out_retry_after"

RECONNECT = (
    "Reopen a dropped stream: a reconnect loop with exponential backoff and jitter (reset once "
    "the book is in sync again) that resubscribes to every channel and resyncs the order book "
    "from a REST snapshot, applying the diffs buffered meanwhile; resync the same way on a "
    "sequence gap (binance: an event's U is not the previous u + 1), and treat a stream silent "
    "for a few seconds as dead, since not every drop raises.")
RETRY = (
    "Treat ccxt.NetworkError (RequestTimeout, ExchangeNotAvailable, a reset connection) as "
    "transient: catch it where the call is made, retry with exponential backoff and jitter "
    "across ticks rather than in a tight loop, and make orders idempotent: send a client order "
    "id (`params={'clientOrderId': ...}`, binance's newClientOrderId) and, when an answer is "
    "lost, look the order up by that id before sending it again, so a retry never doubles it.")
RETRY_AFTER = (
    "Honour Retry-After: after a 429 (ccxt RateLimitExceeded, binance DDoSProtection) send "
    "nothing to that exchange until the wait in `exchange.last_response_headers['Retry-After']` "
    "has passed, and skip REST work in the ticks meanwhile instead of retrying or sleeping in "
    "them; retrying at once extends the ban (binance answers 418 and bans the IP).")
STORM = (
    "During an exchange-wide throttle every request is refused: honour Retry-After across "
    "ticks, pausing all REST work (not only the call that failed) until it has passed, keep "
    "deciding from websocket data, and resume with one request before ramping up; retries "
    "inside the storm only prolong it.")
WAITED = (
    "Nothing to fix in the bot: it waited out Retry-After, which is right (binance bans IPs "
    "that do not, HTTP 418). A throttle that starts near the end of a burst asks for a wait "
    "that reaches into the OFF phase, and the ticks of that wait count against recovery. Do "
    "not shorten the wait; judge this scenario with a --max-recovery-ticks that covers the "
    "longest Retry-After at the bot's tick rate.")
CLOCK = (
    "Resync the clock offset instead of failing signed requests: on ccxt.InvalidNonce "
    "(binance -1021, timestamp outside recvWindow) call `exchange.load_time_difference()` "
    "and retry once, or set `exchange.options['adjustForTimeDifference'] = True` so ccxt "
    "applies the offset to every request; resync periodically too, as host clocks drift.")
LATENCY = (
    "Give every request a deadline shorter than the tick's: ccxt's `timeout` (ms, 10 000 by "
    "default) well below tick_deadline_ms, or `asyncio.wait_for` around the await; send orders "
    "as tasks instead of awaiting them inside the tick, and move non-essential calls (markets, "
    "balances) out of the hot loop, so a slow exchange delays orders, not the loop.")
WS_LAG = (
    "Market data arrived late: compare each message's exchange time (binance `E`) with the "
    "clock (synced with the exchange) and widen or pull quotes when the data is older than the "
    "bot can stand behind; a post-only quote priced from a late book crosses the spread.")
DNS = (
    "Name lookups failed (socket.gaierror, EAI_AGAIN): retry them like any transient network "
    "error, with backoff, including when reopening a stream, and keep connections warm "
    "(keep-alive pools, aiohttp's DNS cache) so a flapping resolver is met only on new "
    "connections.")
MEMORY = (
    "The bot slowed down with less memory free: keep per-tick allocations small, bound caches "
    "and queues, and call gc.freeze() after start-up so collections of long-lived objects do "
    "not land in ticks.")
ORDER_STATE = (
    "An order or a balance was not what the bot believed: treat an order in unknown state as "
    "possibly filled or cancelled, look it up (by its client order id) and update the bot's "
    "books instead of failing the iteration, and reconcile open orders and balances with the "
    "exchange regularly.")
POST_ONLY = (
    "A post-only quote would have crossed the book (OrderImmediatelyFillable): it was priced "
    "from a stale or late book. Reprice from fresh data and treat the rejection as 'requote', "
    "not as a failed iteration.")
RECONCILE = (
    "Keep books of the bot's own orders and balances, compare them with the exchange's "
    "(fetch_open_orders, fetch_balance) every few seconds, read again before acting on a "
    "difference (a lagging replica can be wrong once), and call "
    "chaos_shims.report_discrepancy(kind) for every mismatch found.")

#: Every recommendation, as data. For a finding, the most specific matching row wins (per error
#: type the ticks raised, the top three); among rows as specific, the first. See ``advise``.
ADVICE: tuple[Advice, ...] = (
    # What happened, read from the row: it outranks everything else.
    Advice(WAITED, _names("recovery_ticks", "error_ticks"),
           _names("rate_limit_storm", "exch_429"), situation=WAITED_OUT_RETRY_AFTER,
           severity=LOW),
    Advice("The stream was dropped and never reopened: the bot went on with a book that no "
           "longer moved. " + RECONNECT, TICK_HEALTH | SLOW, _names("ws_disconnect"),
           situation=NEVER_RECONNECTED),
    # The error type the bot's ticks raised, where a scenario refines it.
    Advice(STORM, TICK_HEALTH, _names("rate_limit_storm"), RATE_LIMIT_ERRORS),
    # The error type alone.
    Advice(CLOCK, TICK_HEALTH, errors=CLOCK_ERRORS),
    Advice(RETRY_AFTER, TICK_HEALTH, errors=RATE_LIMIT_ERRORS),
    Advice(RETRY, TICK_HEALTH, errors=NETWORK_ERRORS),
    Advice(RECONNECT, TICK_HEALTH, errors=STREAM_ERRORS),
    Advice(DNS, TICK_HEALTH, errors=DNS_ERRORS),
    Advice(ORDER_STATE, TICK_HEALTH, errors=ORDER_STATE_ERRORS),
    Advice(POST_ONLY, TICK_HEALTH, errors=POST_ONLY_ERRORS),
    Advice(MEMORY, TICK_HEALTH, errors=MEMORY_ERRORS),
    # The scenario: first what is particular to slow ticks, then the scenario's own advice.
    Advice("On a real network a lost request holds the tick for the whole ccxt `timeout` "
           "(10 s by default): set it well below tick_deadline_ms, keep order calls off the "
           "tick's path, and retry in a later tick.", SLOW, _names("net_loss")),
    Advice("Do not sleep out Retry-After inside the tick: note when the exchange allows "
           "requests again, skip REST work until then and come back in a later tick.",
           SLOW, _names("exch_429", "rate_limit_storm")),
    Advice(RECONNECT, TICK_HEALTH | SLOW, _names("ws_disconnect")),
    Advice(CLOCK, TICK_HEALTH | SLOW, _names("clock_skew_ms")),
    Advice(STORM, TICK_HEALTH, _names("rate_limit_storm")),
    Advice(RETRY_AFTER, TICK_HEALTH, _names("exch_429")),
    Advice(RETRY, TICK_HEALTH | SLOW, _names("net_loss", "exch_5xx")),
    Advice(LATENCY, TICK_HEALTH | SLOW, _names("lat_spike_ms")),
    Advice(WS_LAG, TICK_HEALTH | SLOW, _names("ws_lag_ms")),
    Advice(DNS, TICK_HEALTH | SLOW, _names("dns_flap")),
    Advice(MEMORY, TICK_HEALTH | SLOW, _names("mem_pressure")),
    Advice(ORDER_STATE, TICK_HEALTH, _names("reconcile_mismatch")),
    # The criterion, when nothing more particular is known.
    Advice("Keep slow I/O off the tick's critical path: give every REST call a ccxt `timeout` "
           "well below tick_deadline_ms, and when the exchange is slow skip or defer that work "
           "instead of waiting for it inside the tick.", _names("deadline_miss_rate")),
    Advice("Bound the time a tick can spend waiting on the exchange (ccxt `timeout`, fewer "
           "sequential calls per tick, concurrent calls in async code, cached market data) so "
           "a degraded exchange slows the bot down by a bounded amount.",
           _names("p95_regression")),
    Advice("Return to normal as soon as calls succeed again: reset backoff and circuit-breaker "
           "state on the first success, re-sync open orders and balances once rather than "
           "every tick, and avoid backoff delays that outlive the fault.",
           _names("recovery_ticks")),
    Advice("Do not answer errors with cancel-all and re-quote: rate-limit cancels, treat an "
           "order in unknown state as possibly open and reconcile before cancelling again.",
           _names("cancel_storms")),
    Advice(RECONCILE, _names("detection_rate")),
    Advice("No reconciliation seen: the bot either does not compare the exchange's state with "
           "its own books or does not report what it finds. " + RECONCILE,
           _names("reconciliation")),
    Advice("Handle what the exception stands for where it is raised (retry later, skip the "
           "work, or resync the state it depends on), so one failure costs one tick and the "
           "next one starts clean.", _names("error_ticks")),
    Advice("Read the run's log and exit status: a bot that ticks in the baseline but not under "
           "a fault most likely failed while starting (loading markets, the first signed "
           "request), so give start-up the same handling of transient errors as the main "
           "loop. A bot that never calls chaos_shims.tick() needs `with chaos_shims.tick():` "
           "around each iteration of its main loop.", _names("ticks")),
    Advice("Run longer than one duty cycle (burst_on_sec + burst_off_sec) with "
           "burst_on_sec > 0, so bursts end and recovery can be measured.",
           _names("recovery_not_measured")),
    Advice("Fix the deadline misses first; in a test environment a higher stop_deadline_miss "
           "lets the whole experiment run.", _names("stop_condition")),
    Advice("Run the bot once with CHAOS_SHIMS_ENABLED=1 and no scenario, otherwise as in the "
           "scenario runs, and report again.", _names("baseline")),
)


def advise(criterion: str, row: Mapping[str, Any] | None = None,
           seen: Mapping[str, str] | None = None) -> Advice | None:
    """The advice for a finding about ``criterion`` in ``row`` (a report summary row), where
    the situations ``seen`` (``situations(row, ...)``) were seen.

    Each of the three error types the row's ticks raised most picks its most specific row of
    ADVICE; the most specific of those wins, and rows as specific (two error types, two pieces
    of advice) are joined. None when nothing matches.
    """
    row = row or {}
    seen = seen or {}
    scenarios = list(row.get("scenarios") or [])
    errors: list[str | None] = [name for name in (row.get("errors_by_type") or {})
                                if name != "(other)"][:3] or [None]
    chosen: list[Advice] = []
    for error in errors:
        matching = [a for a in ADVICE if a.matches(criterion, scenarios, error, seen)]
        if matching:
            chosen.append(max(matching, key=lambda a: a.specificity))  # first among equals
    if not chosen:
        return None
    best = max(a.specificity for a in chosen)
    top = [a for a in chosen if a.specificity == best]
    texts = list(dict.fromkeys(a.text for a in top))
    return Advice(" ".join(texts), severity=top[0].severity, situation=top[0].situation)


def _recommend(criterion: str, row: Mapping[str, Any] | None = None,
               seen: Mapping[str, str] | None = None) -> str:
    found = advise(criterion, row, seen)
    return "" if found is None else found.text


# -- what happened: situations read from a row ---------------------------------------------------

def situations(row: Mapping[str, Any], criteria: Mapping[str, Any]) -> dict[str, str]:
    """The situations of ADVICE seen in ``row``, each with the evidence for it."""
    found: dict[str, str] = {}
    scenarios = set(row.get("scenarios") or [])
    live = {scenario: int(modes.get("live", 0))
            for scenario, modes in (row.get("injections") or {}).items()}
    reconnects = row.get("reconnects")
    drops = live.get("ws_disconnect", 0)
    if "ws_disconnect" in scenarios and drops and reconnects == 0:
        found[NEVER_RECONNECTED] = (
            f"ws_disconnect dropped the stream {drops} time{'s' if drops != 1 else ''} and the "
            "bot opened no connection again (0 reconnects)")
    waited = _waited_out_retry_after(row, criteria, scenarios)
    if waited:
        found[WAITED_OUT_RETRY_AFTER] = waited
    return found


def _waited_out_retry_after(row: Mapping[str, Any], criteria: Mapping[str, Any],
                            scenarios: set[str]) -> str | None:
    """Evidence that a slow recovery was the bot honouring Retry-After, or None.

    The artifact cannot see the bot wait, so this is read from what it can see: no 429 error
    reached the loop (the bot handled them), every burst recovered, and the slowest recovery
    was no longer than the longest Retry-After sent (converted to ticks at the tick rate
    measured in OFF phases, a lower bound) plus the recovery the criteria allow anyway.
    """
    # Numbers only: a damaged summary's list times a large "rate" would allocate at will.
    retry_after, rate = _number(row.get("retry_after_s")), _number(row.get("tick_rate_hz"))
    limit = _number(criteria.get("max_recovery_ticks"))
    if (not scenarios & {"rate_limit_storm", "exch_429"} or retry_after is None or not rate
            or limit is None or row.get("unrecovered_bursts")):
        return None
    if RATE_LIMIT_ERRORS & set(row.get("errors_by_type") or {}):
        return None
    recoveries = [row.get("worst_recovery_ticks")] + [
        item.get("ticks") for item in row.get("open_recoveries") or []]
    slowest = max((int(t) for t in recoveries if t is not None), default=None)
    if slowest is None or slowest <= limit:
        return None
    allowed = retry_after * rate + limit  # inf at worst, for absurd numbers: still compares
    if slowest > allowed:
        return None
    return (f"no 429 reached the bot's loop as an error, and its slowest recovery ({slowest} "
            f"ticks, about {slowest / rate:.1f} s at the {rate:.1f} ticks/s measured) is within "
            f"the longest Retry-After sent ({retry_after:g} s) plus the {limit} ticks allowed: "
            "the bot waited as the exchange asked")


# -- judgement -----------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    """``value`` when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _share(part: Any, whole: Any) -> float | None:
    """``part / whole``, or None when it is no finite number (a damaged summary's counts)."""
    try:
        share = part / whole
    except ArithmeticError:
        return None
    return share if isinstance(share, float) and math.isfinite(share) else None


_SEVERITY_ORDER = {HIGH: 0, MEDIUM: 1, LOW: 2}


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
            "not be judged", _recommend("baseline")))
    if baseline is not None:
        findings += _baseline_findings(baseline)
    for row in scenario_rows:
        findings += _row_findings(row, criteria, baseline)
    for skipped in summary.get("skipped") or []:
        findings.append(_finding(LOW, None, "data", f"{skipped['file']} was skipped: "
                                 f"{skipped['reason']}",
                                 "Remove files that are not run artifacts from the runs folder, "
                                 "or re-run the experiment that wrote a damaged one."))
    findings.sort(key=lambda f: _SEVERITY_ORDER[f["severity"]])
    return findings


def _baseline_findings(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    if not row.get("ticks"):
        found.append(_finding(
            MEDIUM, "baseline", "ticks", "the baseline recorded no ticks, so no scenario's p95 "
            f"could be compared: {_runs_without_ticks(row)}", _recommend("ticks")))
        return found
    if row.get("zero_tick_runs"):
        found.append(_finding(
            MEDIUM, "baseline", "ticks", f"{_runs_without_ticks(row)}: no ticks recorded; the "
            "baseline's numbers are the other runs'", _recommend("ticks")))
    for result in row["criteria"]:
        if result["status"] == "fail":
            found.append(_finding(
                MEDIUM, "baseline", result["criterion"],
                f"without chaos: {result['evidence']}",
                "Fix this first: the bot breaks this criterion with no fault injected, so no "
                "scenario can be judged fairly on it. " + _recommend(result["criterion"])))
    return found


def _runs_without_ticks(row: Mapping[str, Any]) -> str:
    runs = []
    for run in row.get("runs") or []:
        if run.get("ticks"):
            continue
        ended = f"ended by {run.get('ended_by', '?')}"
        if run.get("exit_detail"):
            ended += f" ({run['exit_detail']})"
        if run.get("duration_sec") is not None:
            ended += f" after {run['duration_sec']:g} s"
        runs.append(f"run {run.get('run_id')} {ended}")
    return "; ".join(runs) or "no run"


def _row_findings(row: Mapping[str, Any], criteria: Mapping[str, Any],
                  baseline: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    label, results = row["scenario"], row["criteria"]
    seen = situations(row, criteria)
    found: list[dict[str, Any]] = []

    def add(severity: str, criterion: str, evidence: str) -> None:
        """A finding with the advice for what happened, and the evidence of the situation."""
        advice = advise(criterion, row, seen)
        if advice is not None and advice.situation is not None:
            evidence += f"; {seen[advice.situation]}"
        chosen = severity if advice is None else (advice.severity or severity)
        found.append(_finding(chosen, label, criterion, evidence,
                              "" if advice is None else advice.text))

    ticks = row.get("ticks") or 0
    if not ticks:
        return _no_tick_findings(row, baseline)
    if row.get("zero_tick_runs"):
        found.append(_finding(
            MEDIUM, label, "ticks", f"{_runs_without_ticks(row)}: no ticks recorded; the "
            "row's numbers are the other runs'", _recommend("ticks")))

    reconcile = row.get("reconcile") or {}
    unseen_reconciliation = bool(reconcile.get("injected")) and not reconcile.get("detected")
    for result in results:
        criterion = result["criterion"]
        if result["status"] == "fail":
            if criterion == "detection_rate" and unseen_reconciliation:
                continue  # said once, below, as "no reconciliation seen"
            add(_severity(result, row, criteria), criterion, result["evidence"])
        elif result["status"] == "unknown" and criterion == "recovery_ticks":
            found.append(_finding(LOW, label, "recovery_ticks", result["evidence"],
                                  _recommend("recovery_not_measured")))

    # Reconciliation: findings even when detection is not an acceptance criterion.
    rate = reconcile.get("detection_rate")
    by_type = reconcile.get("by_type") or {}
    if unseen_reconciliation:
        kinds = ", ".join(f"{kind} x{v.get('injected')}" for kind, v in by_type.items()
                          if v.get("injected"))
        add(HIGH, "reconciliation",
            f"no reconciliation seen: {reconcile['injected']} order-state mismatches were "
            f"injected ({kinds}) and the bot reported none (0% detected)")
    elif rate is not None and rate < 1.0 and criteria.get("min_detection_rate") is None:
        missed = [kind for kind, v in by_type.items()
                  if v.get("injected") and (v.get("detection_rate") or 0) < 1.0]
        add(HIGH if rate < 0.5 else MEDIUM, "detection_rate",
            f"the bot reported {reconcile['detected']} of {reconcile['injected']} injected "
            f"order-state mismatches ({rate:.0%}); missed types: {', '.join(missed) or '—'}")
    elif ("reconcile_mismatch" in (row.get("scenarios") or []) and not row.get("dry_run")
          and not reconcile.get("injected")):
        found.append(_finding(
            LOW, label, "reconciliation", "reconcile_mismatch was active but no order-state "
            "read was made during a burst (fetch_open_orders, fetch_orders, fetch_order, "
            "fetch_balance, fetch_positions, fetch_my_trades): detection was not measured",
            _recommend("reconciliation")))

    # Error ticks beyond the baseline's share.
    errors = row.get("error_ticks") or 0
    share = _share(errors, ticks) if errors else None
    base_rate = (_share(baseline.get("error_ticks") or 0, baseline["ticks"])
                 if baseline is not None and baseline.get("ticks") else 0.0)
    if share is not None and share > (base_rate or 0.0):
        top = ", ".join(f"{name} x{n}" for name, n in list(
            (row.get("errors_by_type") or {}).items())[:3])
        add(MEDIUM if share >= criteria["max_deadline_miss_rate"] else LOW,
            "error_ticks", f"{errors} of {ticks} ticks raised ({share:.1%}): {top}")

    for trip in row.get("stop_condition_tripped") or []:
        found.append(_finding(
            MEDIUM, label, "stop_condition",
            f"run {trip['run_id']}: {trip.get('misses')} of {trip.get('window_ticks')} ticks "
            f"missed the deadline at tick {trip.get('at_tick')}; chaos rolled itself back to "
            "dry-run, so later ticks were not under the fault", _recommend("stop_condition")))
    if row.get("jsonl_lost"):
        found.append(_finding(LOW, label, "data",
                              f"{row['jsonl_lost']} JSONL decision records could not be written",
                              "Check the disk and the path of CHAOS_SHIMS_LOG_FILE."))
    for item in row.get("incomplete") or []:
        found.append(_finding(LOW, label, "data", f"incomplete artifact: {item}",
                              "The process was signalled while chaos_shims held a lock; the "
                              "missing counts are also in the Prometheus metrics."))
    return found


def _no_tick_findings(row: Mapping[str, Any],
                      baseline: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A row with no tick at all: one finding, instead of one per criterion it leaves unknown.

    When the baseline ticked and this row was live, the bot ticks without the fault but not
    with it: it most likely stopped under the fault, a finding as severe as any.
    """
    base_ticks = (baseline or {}).get("ticks") or 0
    stopped = bool(base_ticks) and not row.get("dry_run")
    evidence = f"no ticks recorded: {_runs_without_ticks(row)}"
    if stopped:
        evidence += (f"; the baseline recorded {base_ticks} ticks, so the bot most likely "
                     "stopped under this fault before its first iteration")
    recommendation = _recommend("ticks")
    startup = advise("startup", row)
    if startup is not None:
        recommendation += f" Under this fault: {startup.text}"
    return [_finding(HIGH if stopped else MEDIUM, row["scenario"], "ticks", evidence,
                     recommendation)]


def _severity(result: Mapping[str, Any], row: Mapping[str, Any],
              criteria: Mapping[str, Any]) -> str:
    criterion = result["criterion"]
    value, limit = result.get("value"), result.get("limit")
    if criterion == "cancel_storms":
        return HIGH  # cancel storms cost fees, rate limit and queue position at once
    if criterion == "recovery_ticks":
        return HIGH if value is None else MEDIUM  # None: a burst never recovered
    if criterion == "p95_regression":
        # Twice the percentage and twice the floor: a FAIL only just past the floor is medium.
        increase, floor = row.get("p95_increase_ms"), criteria.get("p95_floor_ms")
        doubled = value is not None and limit is not None and value >= 2 * limit
        if doubled and (increase is None or floor is None or increase >= 2 * floor):
            return HIGH
        return MEDIUM
    if criterion == "deadline_miss_rate":
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
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        print(f"{PROG}: cannot use {args.report}: its summary block is malformed "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
        return USAGE_ERROR
    data = json.dumps(_finite_values(findings), indent=2, allow_nan=False) + "\n"
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
