"""The run artifact: one versioned JSON file per run, what ``chaos-shims report`` reads.

``build_artifact`` assembles it from the injector of the run and the run's tick statistics;
``write_artifact`` writes it atomically (a temporary file in the same folder, fsync, then
``os.replace``), so a reader sees the old file or the new one, never half of one. The schema is
described field by field in docs/METRICS_AND_REPORTS.md; ``problems`` is the check a reader
applies before trusting a file.

A run imports this module when it starts (its id, command line and folder come from here), so
what only writing and reading need (json, datetime, pathlib) is imported when they happen.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from chaos_shims._version import __version__
from chaos_shims.core import env

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from chaos_shims.core.injector import ChaosInjector
    from chaos_shims.core.ticks import TickStats

SCHEMA = "chaos_shims.run/1"
SCHEMA_FAMILY = "chaos_shims.run/"
ARTIFACTS_DIR_ENV = env.ARTIFACTS_DIR
DEFAULT_ARTIFACTS_DIR = os.path.join("artifacts", "chaos")
RUNS_FOLDER = "runs"

#: How a run ended, as ``ended_by`` says it.
ENDED_BY_EXIT = "exit"
ENDED_BY_EXCEPTION = "exception"
ENDED_BY_SIGTERM = "SIGTERM"
ENDED_BY_FINISH = "finish_run"
ENDED_BY_RESTART = "restarted"
RUNNING = "running"

#: The fields a reader needs, with the JSON types they must have.
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (str,),
    "run_id": (str,),
    "baseline": (bool,),
    "dry_run": (bool,),
    "active_scenarios": (dict,),
    "ticks": (dict,),
    "recovery": (dict,),
    "cancels": (dict,),
    "injections": (dict, type(None)),
    "reconcile": (dict, type(None)),
    "reconnects": (dict, type(None)),
    "rollbacks": (list,),
}


def runs_folder(environ: Mapping[str, str] | None = None) -> str:
    """Where run artifacts go: ``$CHAOS_SHIMS_ARTIFACTS_DIR/runs`` (default artifacts/chaos)."""
    environ = os.environ if environ is None else environ
    base = environ.get(ARTIFACTS_DIR_ENV) or DEFAULT_ARTIFACTS_DIR
    # Absolute now: a bot may change directory before it exits.
    return os.path.join(os.path.abspath(base), RUNS_FOLDER)


def runs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``runs_folder`` as a Path."""
    from pathlib import Path

    return Path(runs_folder(environ))


def iso(ts: float) -> str:
    from datetime import datetime, timezone  # when an artifact is built

    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def new_run_id(started_ts: float, pid: int) -> str:
    """Sortable by start time, unique across hosts and processes."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started_ts))  # UTC
    return f"{stamp}Z-{pid}-{os.urandom(3).hex()}"


# -- counters read from the Prometheus metrics ---------------------------------------------------

Labels = tuple[tuple[str, str], ...]


def metric_totals(metrics: Any, suffix: str) -> dict[Labels, float]:
    """The current value of each label set of counter ``suffix`` in ``metrics``."""
    counter = metrics.plain.get(suffix)
    if counter is None:
        return {}
    totals: dict[Labels, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[tuple(sorted(sample.labels.items()))] = sample.value
    return totals


def _minus(now: Mapping[Labels, float], before: Mapping[Labels, float]) -> dict[Labels, float]:
    return {labels: value - before.get(labels, 0.0) for labels, value in now.items()
            if value - before.get(labels, 0.0) > 0}


class RunInfo:
    """What is known about a run from its start."""

    def __init__(self, run_id: str, started_ts: float, pid: int, command: list[str],
                 counters_at_start: dict[str, dict[Labels, float]] | None = None) -> None:
        self.run_id = run_id
        self.started_ts = started_ts
        self.pid = pid
        #: the process's command line, secrets redacted
        self.command = command
        #: counter values when the run started, so a second run in one process counts its own
        self.counters_at_start = {} if counters_at_start is None else counters_at_start

    @classmethod
    def now(cls, started_ts: float) -> RunInfo:
        pid = os.getpid()
        return cls(run_id=new_run_id(started_ts, pid), started_ts=started_ts, pid=pid,
                   command=redact_command(getattr(sys, "orig_argv", sys.argv)))


# Artifacts get shared: keys and passwords given on a command line must not travel with them.
_SECRET_NAME = r"(?:secret|passw(?:or)?d|token|api[-_]?key|private[-_]?key|credential)"
_SECRET_OPTION = re.compile(rf"^(--?[\w-]*{_SECRET_NAME}[\w-]*)(=.*)?$", re.IGNORECASE)
_SECRET_JSON = re.compile(rf"(\"\w*{_SECRET_NAME}\w*\"\s*:\s*)\"[^\"]*\"", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(rf"^(\w*{_SECRET_NAME}\w*=).+$", re.IGNORECASE)
REDACTED = "***"


def redact_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of secret-looking options, assignments and JSON keys hidden."""
    redacted: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            redacted.append(REDACTED)
            hide_next = False
            continue
        option = _SECRET_OPTION.match(arg)
        if option:
            if option.group(2) is None:
                hide_next = True
                redacted.append(arg)
            else:
                redacted.append(f"{option.group(1)}={REDACTED}")
            continue
        arg = _SECRET_ASSIGNMENT.sub(rf"\g<1>{REDACTED}", arg)
        redacted.append(_SECRET_JSON.sub(rf'\g<1>"{REDACTED}"', arg))
    return redacted


COUNTERS = ("reconnect_attempts_total", "reconcile_discrepancies_total")


def read_counters(injector: ChaosInjector, *, build: bool) -> dict[str, dict[Labels, float]]:
    """The counters the artifact reports, or {} when there are no metrics (or, unless
    ``build``, when they were never built: then every count is still zero)."""
    if not build and "prometheus_client" not in sys.modules:
        return {}
    metrics = injector.metrics
    if metrics is None:
        return {}
    return {suffix: metric_totals(metrics, suffix) for suffix in COUNTERS}


# -- building ------------------------------------------------------------------------------------

def scenario_label(active_scenarios: Mapping[str, Any], dry_run: bool,
                   shadow: bool = False) -> str:
    """How reports name a run's experiment: its scenarios and values, and whether nothing was
    injected because of dry-run or because the instance was outside the canary (shadow)."""
    if not active_scenarios:
        return "baseline"
    label = ", ".join(f"{key}={_plain_value(value)}" for key, value in sorted(
        active_scenarios.items()))
    if dry_run:
        return f"{label} (dry-run)"
    return f"{label} (shadow)" if shadow else label


def _plain_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(sorted(str(item) for item in value))
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


def detection(injected: Mapping[str, float], detected: Mapping[str, float]) -> dict[str, Any]:
    """Injected vs detected order-state mismatches per type, and the detection rate.

    The rate is min(detected, injected) / injected: a bot that reports more mismatches than
    were injected (real ones, or the same one twice) does not score above 1.
    """
    kinds = sorted(set(injected) | set(detected))
    by_type: dict[str, Any] = {}
    caught = 0.0
    for kind in kinds:
        made, seen = injected.get(kind, 0.0), detected.get(kind, 0.0)
        caught += min(made, seen)
        by_type[kind] = {"injected": int(made), "detected": int(seen),
                         "detection_rate": min(made, seen) / made if made else None}
    total_injected = sum(injected.values())
    return {
        "injected": int(total_injected),
        "detected": int(sum(detected.values())),
        "detection_rate": caught / total_injected if total_injected else None,
        "by_type": by_type,
    }


def _reconcile_from_metrics(found: Mapping[Labels, float]) -> dict[str, Any]:
    sides: dict[str, dict[str, float]] = {"injected": {}, "detected": {}}
    for labels, value in found.items():
        named = dict(labels)
        side = sides.get(named.get("source", ""))
        if side is not None:
            kind = named.get("type", "")
            side[kind] = side.get(kind, 0.0) + value
    return detection(sides["injected"], sides["detected"])


def build_artifact(
    info: RunInfo,
    injector: ChaosInjector,
    stats: TickStats,
    *,
    ended_by: str,
    ended_ts: float,
    exit_detail: str | None = None,
    reconcile: Mapping[str, Any] | None = None,
    lockless: bool = False,
) -> dict[str, Any]:
    """The artifact of a run.

    ``reconcile`` is the injected/detected reconciliation (``detection``'s shape) when the
    caller has it (chaos_shims.signals keeps it per injector); without it, it is read from
    ``mm_reconcile_discrepancies_total``. ``lockless`` (a signal arrived while a lock may be
    held) leaves out what only a lock can read, and names it under ``incomplete``.
    """
    import platform  # only when a run ends: activation stays light

    config = injector.config
    values = config.as_dict()
    active = {scenario.key: _jsonable(value) for scenario, value in config.active_scenarios()}
    incomplete: list[str] = []

    injections: dict[str, Any] | None = None
    if lockless:
        incomplete.append("injections")
    else:
        by_scenario: dict[str, dict[str, int]] = {}
        for (scenario, mode), n in sorted(injector.counts().items()):
            by_scenario.setdefault(scenario, {})[mode] = n
        injections = {"total": sum(sum(m.values()) for m in by_scenario.values()),
                      "by_scenario": by_scenario}

    reconnects: dict[str, Any] | None = None
    if lockless:
        incomplete.append("reconnects")
        if reconcile is None:
            incomplete.append("reconcile")
    else:
        counters = read_counters(injector, build=True)
        if counters:
            before = info.counters_at_start
            kinds = _minus(counters["reconnect_attempts_total"],
                           before.get("reconnect_attempts_total", {}))
            by_kind = {dict(labels).get("kind", ""): int(n) for labels, n in kinds.items()}
            reconnects = {"total": sum(by_kind.values()), "by_kind": by_kind}
            if reconcile is None:
                reconcile = _reconcile_from_metrics(
                    _minus(counters["reconcile_discrepancies_total"],
                           before.get("reconcile_discrepancies_total", {})))

    measured = stats.snapshot(lock_timeout=0.0 if lockless else 1.0)
    sink = injector.sink
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": info.run_id,
        "started_at": iso(info.started_ts),
        "ended_at": iso(ended_ts),
        "duration_sec": round(max(0.0, ended_ts - info.started_ts), 3),
        "ended_by": ended_by,
        "exit_detail": exit_detail,
        "complete": not incomplete,
        "incomplete": incomplete,
        "command": info.command,
        "pid": info.pid,
        "host": platform.node(),
        "python": platform.python_version(),
        "chaos_shims_version": __version__,
        "instance_id": injector.instance_id,
        "canary": injector.canary,
        "mode": injector.mode,
        "dry_run": config.dry_run,
        "baseline": not config.enabled or not active,
        "label": scenario_label(active, config.dry_run, shadow=not injector.canary),
        "disabled_reason": injector.disabled_reason,
        "killed": injector.killed,
        "seed": config.seed,
        "schedule": {"burst_on_sec": injector.schedule.on_sec,
                     "burst_off_sec": injector.schedule.off_sec,
                     "always_on": injector.schedule.always_on},
        "config": {key: _jsonable(value) for key, value in values.items()},
        "config_sources": dict(config.sources),
        "active_scenarios": active,
        **measured,
        "reconnects": reconnects,
        "injections": injections,
        "reconcile": None if reconcile is None else dict(reconcile),
        "rollbacks": [dict(rollback) for rollback in injector.rollbacks],
        "jsonl": None if sink is None else {"path": sink.path, "written": sink.written,
                                            "lost": sink.lost},
    }
    return document


# -- writing and reading --------------------------------------------------------------------------

_temp_names = itertools.count()


def write_artifact(document: Mapping[str, Any], directory: Path | str) -> Path:
    """Write ``document`` as ``<directory>/<run_id>.json`` atomically; the path written.

    Raises OSError when the folder cannot be written (the caller logs it: the host goes on).
    """
    import json
    from pathlib import Path

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{document['run_id']}.json"
    # Unique per writer: the atexit writer and a signal-time writer never share a temp file.
    temp = folder / (f".{document['run_id']}.{os.getpid()}.{threading.get_ident()}."
                     f"{next(_temp_names)}.tmp")
    data = json.dumps(document, indent=2, sort_keys=False, default=str, allow_nan=False)
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(folder)
    return target


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder is synced (where the OS allows it).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ArtifactError(Exception):
    """A file that is not a usable run artifact; the message says why."""


def problems(document: Any) -> str | None:
    """Why ``document`` is not a run artifact this version can read, or None."""
    if not isinstance(document, dict):
        return "not a JSON object"
    schema = document.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_FAMILY):
        return "not a chaos_shims run artifact (no \"schema\": \"chaos_shims.run/…\")"
    if schema != SCHEMA:
        return f"schema {schema} is not supported (this version reads {SCHEMA})"
    for name, types in REQUIRED_FIELDS.items():
        if name not in document:
            return f"field {name!r} is missing"
        if not isinstance(document[name], types):
            return f"field {name!r} has the wrong type ({type(document[name]).__name__})"
    ticks = document["ticks"]
    for name in ("count", "deadline_ms", "deadline_misses", "error_ticks", "histogram"):
        if name not in ticks:
            return f"field 'ticks.{name}' is missing"
    return None


# -- reading JSON that chaos_shims wrote ----------------------------------------------------------

#: Far deeper than a run artifact nests (4 levels) and far below the interpreter's recursion
#: limit, so code that walks a document recursively after reading it (json.dumps, the repr in a
#: message) cannot run out of stack.
MAX_JSON_DEPTH = 64

#: A longer integer literal cannot be held by a float (1.8e308 has 309 digits, and a sign).
_FLOAT_INT_CHARS = len(str(int(sys.float_info.max))) + 1


class CorruptJSON(ValueError):
    """JSON that parses but that no file chaos_shims writes can hold: a number no float holds
    (NaN and Infinity, which Python's reader accepts, or beyond ±1.8e308), or nesting deeper
    than the reader allows. The message says which, briefly."""


def _brief(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}…{text[-4:]} ({len(text)} characters)"


def _refuse_constant(name: str) -> Any:
    raise CorruptJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CorruptJSON(f"the number {_brief(text)} is beyond what a float holds")
    return value


def _float_sized_int(text: str) -> int:
    # Measured before int(): thousands of digits cost int() time, and past 4300 it refuses.
    value = int(text) if len(text) <= _FLOAT_INT_CHARS else None
    if value is None or abs(value) > sys.float_info.max:
        raise CorruptJSON(f"the number {_brief(text)} is beyond what a float holds")
    return value


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether ``document`` nests more than ``limit`` lists and objects (without recursion)."""
    stack = [(document, 1)] if isinstance(document, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``text`` read as JSON, each number one a float holds, nested at most ``max_depth``
    levels: what run artifacts and reports hold, so a reader's arithmetic cannot overflow and
    its recursion cannot run out of stack. json.JSONDecodeError when it is not JSON,
    CorruptJSON when it is JSON that chaos_shims never writes."""
    import json

    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                              parse_int=_float_sized_int)
    except RecursionError:  # nested past the interpreter's limit, so past ours too
        too_deep = True
    else:
        too_deep = _deeper_than(document, max_depth)
    if too_deep:
        raise CorruptJSON(f"it nests lists and objects deeper than {max_depth} levels")
    return document


def load_artifact(path: Path | str) -> dict[str, Any]:
    """Read and check one artifact; ArtifactError says why a file is not usable."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            document = loads_json(handle.read())
    except OSError as exc:
        raise ArtifactError(f"cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"is not valid JSON ({exc})") from exc
    except CorruptJSON as exc:
        raise ArtifactError(f"is corrupt: {exc}") from exc
    problem = problems(document)
    if problem is not None:
        raise ArtifactError(problem)
    return document


def artifact_paths(folder: Path | str) -> Iterable[Path]:
    """The ``*.json`` files of ``folder``, by name (run ids sort by start time)."""
    from pathlib import Path

    return sorted(p for p in Path(folder).glob("*.json") if p.is_file())
