"""``chaos-shims demo``: a whole chaos campaign against an embedded exchange, in a few minutes.

1. An embedded Binance-spot exchange starts on 127.0.0.1 (``exchange.embedded``: REST and
   websocket streams on one seeded, moving market). Its URLs name ``localhost``, so the bot
   resolves a host name as it would for a real exchange and ``dns_flap`` has lookups to fail.
2. The example market maker (``examples/market_maker.py``, or ``--bot naive`` for
   ``examples/naive_bot.py``; installed as ``chaos_shims.examples``) runs in a subprocess
   under ``chaos-shims run``: a baseline
   (chaos enabled, no scenario), once per scenario, live (``dry_run=false``), and a baseline
   again, with a fixed seed and a compressed duty cycle so every run has several bursts to
   recover from.
3. The run artifacts land in ``OUT/runs/``, the bots' logs in ``OUT/logs/``; ``report.md``
   and ``findings.json`` are written to ``OUT`` and the verdicts printed.

Every number in the report is measured on the bot: chaos_shims only injects the faults below
and counts what the bot's own ``chaos_shims.tick()`` calls tell it.

The campaign (intensities chosen to look like a bad day on a real exchange, not like the end
of the world; each run's ON phases are ``burst_on_sec`` long, OFF phases ``burst_off_sec``):

================== ============ =================================================================
scenario           value        why this value
================== ============ =================================================================
net_loss           0.1          1 request in 10 lost during a burst, the connection reset (the
                                scenario's default form, ``net_loss_timeout_ms=0``)
exch_429           0.1          1 request in 10 refused with Retry-After: 1 s, as when a bot
                                brushes against its request-weight limit
exch_5xx           0.1          1 request in 10 answered 500/502/503/504: a struggling gateway
lat_spike_ms       250          every request 250 ms slower: a congested route or a matching
                                engine under load
ws_lag_ms          250          market data 250 ms late, in order
ws_disconnect      0.05         a drop every ~20 messages (about every 2 s at 10 diffs a second)
dns_flap           0.5          half the name lookups fail; only new connections look names up
clock_skew_ms      6000         the host clock 6 s fast (no NTP after a VM resume): signed
                                requests leave Binance's window (1 s ahead, recvWindow behind)
mem_pressure       low          5 % of the memory available held as touched pages during bursts
rate_limit_storm   0.2          a storm of 429s on the IP about once a burst (the bot sends about
                                five requests a second), ``rate_limit_storm_sec`` a third of
                                ``burst_on_sec`` (the defaults' 10 s in 30 s, compressed alike)
reconcile_mismatch 0.3          3 reconciliation reads in 10 disagree with the exchange
================== ============ =================================================================

The seed (88 unless ``--seed`` says otherwise) fixes the market's walk and every decision of
every scenario. 88 is one under which each scenario's first fault comes within its first few
events of a burst, so that even ``--quick`` runs show every fault at work; any other seed
gives another, equally real, campaign.

Durations: by default 18 s of ticks per run, bursts of 2.5 s ON / 2.5 s OFF (four bursts),
about 4.5 minutes for the thirteen runs (eleven scenarios, a baseline first and one last) on 2
cores; ``--quick``: 4 s per run, 1 s / 1 s (two bursts), about 75 s. Quick runs have 40 ticks
each: enough to see every scenario at work, too few for a p95 to be judged finely, so
``--quick`` judges it against the baseline's +100 % instead of +15 % (the report says so; the
report's 1 ms floor applies to both); use the default length for verdicts you act on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["EXPERIMENTS", "Experiment", "add_arguments", "main", "run"]

PROG = "chaos-shims demo"
USAGE_ERROR = 2
FAILED = 1

#: The example bots are the repository's ``examples/`` folder, which pyproject.toml ships as
#: the package ``chaos_shims.examples``: a wheel and an editable install find them by import.
EXAMPLES_PACKAGE = "chaos_shims.examples"
#: A source checkout used without installing it (``PYTHONPATH=.``) has no such package.
CHECKOUT_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BOTS = {"resilient": "market_maker", "naive": "naive_bot"}
#: how long past its --seconds a bot may take to shut down before it is stopped
SHUTDOWN_GRACE_SEC = 30.0


@dataclass(frozen=True)
class Experiment:
    """One scenario run of the campaign: the scenario's value, its parameters, and why."""

    key: str
    value: str
    why: str
    #: parameters of the scenario (``net_loss_timeout_ms``...)
    parameters: Mapping[str, str] = field(default_factory=dict)
    #: what to keep in mind when reading this row of the report
    caveat: str = ""

    def settings(self, burst_on_sec: float) -> dict[str, str]:
        values = {self.key: self.value, **self.parameters}
        if self.key == "rate_limit_storm":
            # The defaults' ratio (a 10 s storm in a 30 s burst), compressed with the cycle.
            values["rate_limit_storm_sec"] = f"{round(burst_on_sec / 3, 2):g}"
        return values


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("net_loss", "0.1", "1 request in 10 lost, the connection reset (the scenario's "
               "default form)",
               caveat="With net_loss_timeout_ms=500 (a lost request noticed only at a 500 ms "
                      "client timeout) an order lost near the end of a burst is unknown for "
                      "half a second after it: the resilient bot then measured 4 ticks of "
                      "recovery at 10 Hz."),
    Experiment("exch_429", "0.1", "1 request in 10 refused with 429 and Retry-After: 1 s",
               caveat="A 429 near the end of a burst keeps the bot quiet for its Retry-After "
                      "(1 s) into the OFF phase: a bot that honours it recovers when it ends."),
    Experiment("exch_5xx", "0.1", "1 request in 10 answered 500/502/503/504"),
    Experiment("lat_spike_ms", "250", "every request 250 ms slower"),
    Experiment("ws_lag_ms", "250", "market data 250 ms late, in order"),
    Experiment("ws_disconnect", "0.05", "a dropped stream every ~20 messages"),
    Experiment("dns_flap", "0.5", "half the name lookups fail",
               caveat="Only new connections look a name up: warm keep-alive pools and "
                      "aiohttp's 10 s DNS cache hide a flap, as they do in production. Few "
                      "lookups happen unless a connection is lost."),
    Experiment("clock_skew_ms", "6000", "the host clock 6 s fast: -1021 on signed requests",
               caveat="Only the bot's process is skewed; the exchange keeps true time. Each "
                      "phase change costs one refused request and a clock resync."),
    Experiment("mem_pressure", "low", "5% of available memory held during bursts",
               caveat="Sized from the memory available at each burst: on a large machine "
                      "'low' is gigabytes of touched pages."),
    Experiment("rate_limit_storm", "0.2", "IP-wide 429 storms, a third of a burst long",
               caveat="A storm that starts late in a burst outlives it: the exchange's "
                      "Retry-After still stands in the OFF phase, and a bot that honours it "
                      "(as it must: Binance bans IPs that do not, HTTP 418) stays quiet until "
                      "then. Recovery counted in ticks includes that wait."),
    Experiment("reconcile_mismatch", "0.3", "3 reconciliation reads in 10 disagree",
               caveat="The detection rate (the bot's report_discrepancy calls against the "
                      "mismatches injected) is shown, not judged: `chaos-shims report "
                      "--min-detection-rate PCT` makes it a criterion."),
)


@dataclass(frozen=True)
class Plan:
    bot: str
    seconds: float
    burst_on_sec: float
    burst_off_sec: float
    seed: int
    experiments: tuple[Experiment, ...]
    out: Path
    quick: bool = False

    @property
    def runs(self) -> list[Experiment | None]:
        """None is a baseline run: one first and one last, pooled by the report, so a drift
        of the machine during the campaign does not land on one side of the comparison."""
        return [None, *self.experiments, None]


DEFAULT_SEED = 88
#: The p95 criterion of --quick runs. A p95 from 40 ticks is their second-slowest tick: it moved
#: by up to ±50 % between runs of the same bot (measured on 2 cores), so +15 % would judge
#: noise; --quick flags a doubling. Default runs (180 ticks, ±10 % measured) keep +15 %. (Ticks
#: of microseconds, the resilient bot's, are judged by the report's 1 ms floor in both.)
QUICK_MAX_P95_REGRESSION = 1.0
DEFAULT_TIMING = (18.0, 2.5, 2.5)
QUICK_TIMING = (4.0, 1.0, 1.0)


# -- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chaos-shims demo``."""
    keys = [experiment.key for experiment in EXPERIMENTS]
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TIMING[0]:g} s per run instead of {DEFAULT_TIMING[0]:g} "
                             "(about 75 s in all instead of about 4.5 min)")
    parser.add_argument("--scenario", action="append", metavar="KEY", default=[],
                        help="run only this scenario (repeatable); one of: " + ", ".join(keys))
    parser.add_argument("--bot", choices=sorted(BOTS), default="resilient",
                        help="the example bot: the resilient market maker (default) or the "
                             "naive one")
    parser.add_argument("--out", metavar="DIR", default="chaos-demo",
                        help="where artifacts, logs, report.md and findings.json go "
                             "(default chaos-demo/)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the market and of every decision (default {DEFAULT_SEED})")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds of ticks per run (overrides --quick's and the default)")
    parser.add_argument("--rest-port", type=int, default=0, metavar="PORT",
                        help="embedded exchange REST port (default: any free port)")
    parser.add_argument("--ws-port", type=int, default=0, metavar="PORT",
                        help="embedded exchange websocket port (default: any free port)")


def _plan(args: argparse.Namespace) -> Plan:
    seconds, on, off = QUICK_TIMING if args.quick else DEFAULT_TIMING
    if args.seconds is not None:
        if not args.seconds > 0:
            raise ValueError(f"--seconds must be > 0, got {args.seconds:g}")
        seconds = args.seconds
    by_key = {experiment.key: experiment for experiment in EXPERIMENTS}
    unknown = [key for key in args.scenario if key not in by_key]
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r}; choose from {', '.join(by_key)}")
    chosen = tuple(e for e in EXPERIMENTS if e.key in args.scenario) if args.scenario \
        else EXPERIMENTS
    return Plan(bot=args.bot, seconds=seconds, burst_on_sec=on, burst_off_sec=off,
                seed=args.seed, experiments=chosen, out=Path(args.out), quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    from chaos_shims.findings import run_standalone

    return run_standalone(PROG, __doc__, add_arguments, run, argv)


# -- the campaign ------------------------------------------------------------------------------

@dataclass
class RunOutcome:
    label: str
    status: int | None
    seconds: float
    summary: dict[str, Any] | None
    artifact: Path | None
    log: Path


def run(args: argparse.Namespace) -> int:
    """Run the campaign: 0 when it ran (whatever the verdicts), 1 when it could not, 2 on bad
    input."""
    try:
        plan = _plan(args)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    bot = find_bot(plan.bot)
    if bot is None:
        print(f"{PROG}: the example bot {EXAMPLES_PACKAGE}.{BOTS[plan.bot]} is not installed "
              f"(nor in {CHECKOUT_EXAMPLES}): reinstall chaos-shims", file=sys.stderr)
        return FAILED

    from chaos_shims.exchange.embedded import EmbeddedExchange, EmbeddedExchangeError

    out = _prepare_folder(plan.out)
    console = Console(sys.stdout)
    exchange = EmbeddedExchange(rest_port=args.rest_port, ws_port=args.ws_port,
                                url_host="localhost", seed=plan.seed)
    try:
        exchange.start()
    except EmbeddedExchangeError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return FAILED
    started = time.monotonic()
    try:
        description = exchange.write_description(out / "exchange.json")
        console.header(plan, exchange.rest_url, exchange.ws_url)
        outcomes: list[RunOutcome] = []
        for index, experiment in enumerate(plan.runs):
            outcome = _run_one(plan, experiment, index, bot, description, out, console)
            outcomes.append(outcome)
            if index == 0 and (outcome.status != 0 or outcome.artifact is None):
                print(f"{PROG}: the {plan.bot} bot failed in the baseline run (exit status "
                      f"{outcome.status}); see {outcome.log}", file=sys.stderr)
                _print_log_tail(outcome.log)
                return FAILED
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        exchange.stop()

    return _write_results(plan, out, outcomes, console, time.monotonic() - started)


def find_bot(bot: str) -> Path | None:
    """The file of an example bot (a key of BOTS): the installed ``chaos_shims.examples``,
    else the examples/ folder of the source checkout this module was imported from."""
    module = f"{EXAMPLES_PACKAGE}.{BOTS[bot]}"
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:  # no chaos_shims.examples package at all
        spec = None
    if spec is not None and spec.origin is not None and Path(spec.origin).is_file():
        return Path(spec.origin)
    # An editable install made before pyproject.toml mapped the package, or no install.
    in_checkout = CHECKOUT_EXAMPLES / f"{BOTS[bot]}.py"
    return in_checkout if in_checkout.is_file() else None


def _prepare_folder(out: Path) -> Path:
    """OUT with empty runs/ and logs/: a report must not mix two campaigns."""
    out = out.resolve()
    for name in ("runs", "logs"):
        folder = out / name
        if folder.is_dir():
            for old in folder.iterdir():
                if old.is_file() and old.suffix in (".json", ".log"):
                    old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "findings.json"):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    return out


def _environment(out: Path) -> dict[str, str]:
    """The bot's environment: this one without any chaos setting of the user's (the campaign
    says exactly what is injected), artifacts into OUT/runs."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_")}
    environ["CHAOS_SHIMS_ARTIFACTS_DIR"] = str(out)
    environ["PYTHONUNBUFFERED"] = "1"
    return environ


def _command(plan: Plan, experiment: Experiment | None, bot: Path, description: Path
             ) -> list[str]:
    sets = {"enabled": "true", "dry_run": "false", "seed": str(plan.seed),
            "burst_on_sec": f"{plan.burst_on_sec:g}", "burst_off_sec": f"{plan.burst_off_sec:g}"}
    if experiment is not None:
        sets.update(experiment.settings(plan.burst_on_sec))
    command = [sys.executable, "-m", "chaos_shims.cli", "run"]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    return [*command, "--", sys.executable, str(bot), "--embedded", str(description),
            "--seconds", f"{plan.seconds:g}", "--seed", str(plan.seed)]


def _label(experiment: Experiment | None, burst_on_sec: float) -> str:
    if experiment is None:
        return "baseline"
    return ", ".join(f"{k}={v}" for k, v in experiment.settings(burst_on_sec).items())


def _run_one(plan: Plan, experiment: Experiment | None, index: int, bot: Path,
             description: Path, out: Path, console: Console) -> RunOutcome:
    label = _label(experiment, plan.burst_on_sec)
    slug = "baseline" if experiment is None else experiment.key
    log = out / "logs" / f"{index:02d}-{slug}.log"
    console.start(index, len(plan.runs), label)
    started = time.monotonic()
    lines: list[str] = []
    with open(log, "w", encoding="utf-8") as log_file, subprocess.Popen(
            _command(plan, experiment, bot, description), stdout=subprocess.PIPE,
            stderr=log_file, text=True, env=_environment(out),
            start_new_session=True) as process:
        reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()),
                                  daemon=True)
        reader.start()
        deadline = started + plan.seconds + SHUTDOWN_GRACE_SEC
        try:
            while True:
                console.progress(time.monotonic() - started, plan.seconds)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.25)
                    break
                if time.monotonic() > deadline:
                    _stop(process)
                    break
        except BaseException:
            _stop(process)
            raise
        status = process.wait()
        reader.join(timeout=5)
    elapsed = time.monotonic() - started
    summary = _last_json(lines)
    artifact = next(iter(sorted((out / "runs").glob(f"*-{process.pid}-*.json"))), None)
    outcome = RunOutcome(label, status, elapsed, summary, artifact, log)
    console.done(outcome)
    return outcome


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the run artifact is written on it), then SIGKILL after 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _last_json(lines: Sequence[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None


def _print_log_tail(log: Path, lines: int = 15) -> None:
    with contextlib.suppress(OSError):
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        for line in tail:
            print(f"  | {line}", file=sys.stderr)


def _write_results(plan: Plan, out: Path, outcomes: list[RunOutcome], console: Console,
                   elapsed: float) -> int:
    from chaos_shims.findings import derive_findings
    from chaos_shims.report import Criteria, build_report

    criteria = Criteria(max_p95_regression=QUICK_MAX_P95_REGRESSION) if plan.quick \
        else Criteria()
    text, summary = build_report(out / "runs", criteria)
    text = _with_campaign(text, plan, outcomes)
    (out / "report.md").write_text(text, encoding="utf-8")
    findings = derive_findings(summary)
    (out / "findings.json").write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")
    console.verdicts(summary, findings, out, elapsed)
    if plan.quick:
        console.write(f"(quick: p95 judged against the baseline's +"
                      f"{QUICK_MAX_P95_REGRESSION:.0%}; the default length judges +15%)\n")
    return 0


def _with_campaign(report: str, plan: Plan, outcomes: Sequence[RunOutcome]) -> str:
    """The report with a section saying what the campaign ran (before its results)."""
    bot = f"examples/{BOTS[plan.bot]}.py"
    lines = ["## Campaign", "",
             f"`chaos-shims demo`: the {plan.bot} bot (`{bot}`) against the embedded exchange, "
             f"{plan.seconds:g} s of ticks per run, bursts of {plan.burst_on_sec:g} s ON / "
             f"{plan.burst_off_sec:g} s OFF, live (`dry_run=false`), seed {plan.seed}; baseline "
             "runs (chaos enabled, no scenario) first and last, pooled."
             + (f" A quick campaign: the p95 of 40 ticks is their second-slowest tick and moves by "
                f"up to ±50 % between runs of the same bot, so p95 is judged against the baseline's "
                f"+{QUICK_MAX_P95_REGRESSION:.0%} here; run the default length for the +15 % "
                f"criterion." if plan.quick else "")
             + (" The resilient bot's ticks take tens of microseconds (its loop never waits on "
                "the exchange): at that scale a run can come out tens of percent slower on a busy "
                "machine, so what can fail its p95 is the report's absolute floor, not the "
                "percentage (the details say which rule decided)."
                if plan.bot == "resilient" else ""), "",
             "| Run | Settings | Why | Exit | Read this row knowing |", "|---|---|---|---|---|"]
    for index, experiment in enumerate(plan.runs):
        label = _label(experiment, plan.burst_on_sec)
        status = str(outcomes[index].status) if index < len(outcomes) else "—"
        if experiment is None:
            when = "first" if index == 0 else "last"
            lines.append(f"| baseline ({when}) | chaos enabled, no scenario | what the bot does "
                         f"on a good day | {status} | |")
        else:
            lines.append(f"| {experiment.key} | `{label}` | {experiment.why} | {status} | "
                         f"{experiment.caveat} |")
    lines.append("")
    marker = "## Results"
    if marker in report:
        head, _, tail = report.partition(marker)
        return head + "\n".join(lines) + "\n" + marker + tail
    return report + "\n" + "\n".join(lines)


# -- what the terminal shows -------------------------------------------------------------------

class Console:
    """Progress lines; on a terminal the current run's elapsed time updates in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.width = shutil.get_terminal_size((100, 20)).columns
        self.prefix = ""

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def header(self, plan: Plan, rest_url: str, ws_url: str) -> None:
        self.write(f"chaos-shims demo: the {plan.bot} bot, {len(plan.runs)} runs of "
                   f"{plan.seconds:g} s (bursts {plan.burst_on_sec:g} s ON / "
                   f"{plan.burst_off_sec:g} s OFF, seed {plan.seed})\n"
                   f"embedded exchange: REST {rest_url}, streams {ws_url}\n"
                   f"results: {plan.out}\n\n")

    def start(self, index: int, total: int, label: str) -> None:
        self.prefix = f"[{index + 1:>2}/{total}] {label:<46}"
        self.write(self.prefix if self.live else "")

    def progress(self, elapsed: float, seconds: float) -> None:
        if self.live:
            self.write(f"\r{self.prefix} {elapsed:5.1f} s")

    def done(self, outcome: RunOutcome) -> None:
        parts = [f"{outcome.seconds:5.1f} s"]
        summary = outcome.summary or {}
        if "ticks" in summary:
            parts.append(f"{summary['ticks']} ticks")
        not_quoting = summary.get("not_quoting") or {}
        errors = summary.get("error_ticks")
        if not_quoting:
            parts.append("not quoting " + ", ".join(f"{k} x{v}" for k, v in not_quoting.items()))
        elif errors:
            parts.append(f"{errors} error ticks")
        if outcome.status != 0:
            parts.append(f"exit status {outcome.status}, see {outcome.log}")
        if outcome.artifact is None:
            parts.append("no run artifact")
        line = f"{self.prefix} " + ", ".join(parts)
        self.write(("\r" + line if self.live else line) + "\n")

    def verdicts(self, summary: Mapping[str, Any], findings: Sequence[Mapping[str, Any]],
                 out: Path, elapsed: float) -> None:
        rows = [("Scenario", "p95", "vs base", "misses", "recovery", "storms", "reconn.",
                 "detect", "Verdict")]
        for row in summary["rows"]:
            failed = [c["criterion"] for c in row["criteria"] if c["status"] == "fail"]
            unknown = [c["criterion"] for c in row["criteria"] if c["status"] == "unknown"]
            verdict = row["verdict"]
            if failed:
                verdict += " (" + ", ".join(failed) + ")"
            elif unknown and verdict != "BASELINE":
                verdict += " (" + ", ".join(unknown) + " not measured)"
            detection = row["reconcile"]["detection_rate"]
            rows.append((
                row["scenario"], _ms(row["p95_ms"]),
                "-" if row["baseline"] or row["p95_regression"] is None
                else f"{row['p95_regression']:+.0%}",
                "-" if row["deadline_miss_rate"] is None else f"{row['deadline_miss_rate']:.1%}",
                _recovery(row), str(row["cancel_storms"]),
                "-" if row["reconnects"] is None else str(row["reconnects"]),
                "-" if detection is None else f"{detection:.0%}", verdict))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        self.write("\n")
        for number, row_cells in enumerate(rows):
            cells = [c.ljust(w) for c, w in zip(row_cells[:-1], widths, strict=True)]
            self.write("  ".join([*cells, row_cells[-1]]).rstrip() + "\n")
            if number == 0:
                self.write("  ".join("-" * w for w in widths) + "  -------\n")
        scenario_rows = [r for r in summary["rows"] if not r["baseline"]]
        verdicts = [r["verdict"] for r in scenario_rows]
        high = sum(1 for f in findings if f["severity"] == "high")
        self.write(f"\n{verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL, "
                   f"{verdicts.count('INCONCLUSIVE')} INCONCLUSIVE; {len(findings)} findings "
                   f"({high} high) in {elapsed:.0f} s\n"
                   f"report:   {out / 'report.md'}\nfindings: {out / 'findings.json'}\n"
                   f"runs:     {out / 'runs'}\n")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.2f} ms" if value >= 1 \
        else f"{value * 1000:.0f} us"


def _recovery(row: Mapping[str, Any]) -> str:
    if row["unrecovered_bursts"]:
        return f"never ({row['unrecovered_bursts']})"
    open_ticks = [item["ticks"] for item in row["open_recoveries"]]
    worst = row["worst_recovery_ticks"]
    if open_ticks and (worst is None or max(open_ticks) > worst):
        return f">={max(open_ticks)} ticks"
    return "-" if worst is None else f"{worst} ticks"


if __name__ == "__main__":
    sys.exit(main())
