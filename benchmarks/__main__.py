"""``python -m benchmarks``: run every benchmark group, each in a fresh interpreter, and print one
table of goals, medians, comparisons and verdicts; write all numbers to a JSON file.

Each group runs in its own process so that none inherits another's patches, imported modules
or heap (tracemalloc and start-up numbers depend on them), and one that fails or hangs is
reported without losing the others. A missed goal is a finding, not a failure: the exit status
is 1 only when a group could not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.suite import GROUPS, MET, MISSED, Row, run_group

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "benchmarks" / "results" / "latest.json"
#: seconds one group may take before it is stopped and reported as failed
TIMEOUT_S = {"full": 900, "quick": 240}
LIBRARIES = ("chaos-shims", "ccxt", "websockets", "aiohttp", "wrapt", "freezegun", "time-machine",
             "prometheus-client")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="chaos_shims benchmarks against the goals of issue 6 (docs/PERFORMANCE.md).")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (about a minute): same rows, fewer repetitions")
    parser.add_argument("--only", default="",
                        help="comma-separated groups to run: " + ", ".join(GROUPS))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    args.groups = names or list(GROUPS)
    return args


def _worker(name: str, quick: bool, out: Path) -> int:
    """Run one group here and write its rows and details as JSON to ``out``."""
    result = run_group(name, quick)
    document = {"rows": [row.as_json() for row in result.rows], "details": result.details}
    out.write_text(json.dumps(document, default=str), encoding="utf-8")
    return 0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _worker_env(artifacts: str) -> dict[str, str]:
    # No chaos settings of the caller's shell; run artifacts of activations go to a temp folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_SHIMS_")}
    return {**env, "CHAOS_SHIMS_ARTIFACTS_DIR": artifacts}


def _run_group(name: str, quick: bool, folder: str) -> dict[str, Any]:
    out = Path(folder) / f"{name}.json"
    command = [sys.executable, "-m", "benchmarks", "--worker", name, "--worker-out", str(out)]
    if quick:
        command.append("--quick")
    load_before = _load()
    started = time.perf_counter()
    error = None
    try:
        finished = subprocess.run(command, cwd=REPO, env=_worker_env(folder), capture_output=True,
                                  text=True, timeout=TIMEOUT_S["quick" if quick else "full"])
        if finished.returncode != 0 or not out.exists():
            error = (finished.stderr or finished.stdout).strip().splitlines()[-12:]
    except subprocess.TimeoutExpired as exc:
        error = [f"timed out after {exc.timeout:.0f} s"]
    document: dict[str, Any] = (json.loads(out.read_text(encoding="utf-8")) if error is None
                                else {"rows": [], "details": {}})
    return {**document, "error": error, "seconds": round(time.perf_counter() - started, 1),
            "load_before": load_before, "load_after": _load()}


def _machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import wrapt._wrappers  # noqa: F401 - present when wrapt runs its C extension

        wrapt_c = True
    except ImportError:
        wrapt_c = False
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "libraries": versions,
        "wrapt_c_extension": wrapt_c,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _table(rows: list[Row]) -> str:
    header = ("what", "goal", "measured", "verdict")
    cells = [(row.what, row.goal.text if row.goal else "-", row.shown(), row.verdict)
             for row in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)).rstrip()]
    for row, cell in zip(rows, cells, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cell, [*widths, 0], strict=True)).rstrip())
        if row.compare:
            lines.append(f"    vs: {row.compare}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return _worker(args.worker, args.quick, args.worker_out)
    if args.list:
        for name, (what, _) in GROUPS.items():
            print(f"{name:<12} {what}")
        return 0

    mode = "quick" if args.quick else "full"
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"chaos_shims benchmarks, {mode} run: {', '.join(args.groups)}", flush=True)
    groups: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chaos_shims_bench_") as folder:
        for index, name in enumerate(args.groups, 1):
            print(f"[{index}/{len(args.groups)}] {name}: {GROUPS[name][0]} ...", end=" ", flush=True)
            groups[name] = result = _run_group(name, args.quick, folder)
            print(f"{result['seconds']:.0f} s (load {result['load_before'][0]} -> "
                  f"{result['load_after'][0]})" + (" FAILED" if result["error"] else ""), flush=True)
    finished = datetime.datetime.now(datetime.timezone.utc)

    rows = [Row.from_json(raw) for group in groups.values() for raw in group["rows"]]
    machine = _machine()
    document: dict[str, Any] = {
        "suite": "chaos_shims benchmarks (issue 6)",
        "command": "python -m benchmarks" + (" --quick" if args.quick else "")
                   + (f" --only {','.join(args.groups)}" if args.only else ""),
        "mode": mode,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_1min": {"before": groups[args.groups[0]]["load_before"][0],
                              "after": groups[args.groups[-1]]["load_after"][0]},
        "summary": {"met": sum(r.verdict == MET for r in rows),
                    "missed": sum(r.verdict == MISSED for r in rows),
                    "failed_groups": [n for n, g in groups.items() if g["error"]]},
        "groups": groups,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")

    print()
    print(f"{started:%Y-%m-%d %H:%M} UTC, {mode} run, Python {machine['python']}, "
          f"{machine['cpus']} cores, load average {document['load_average_1min']['before']} -> "
          f"{document['load_average_1min']['after']} (medians; noisy when the machine is busy)")
    print(_table(rows))
    for name, group in groups.items():
        if group["error"]:
            print(f"\n{name} FAILED:\n  " + "\n  ".join(group["error"]))
    summary = document["summary"]
    print(f"\n{summary['met']} goals met, {summary['missed']} missed"
          + (f", {len(summary['failed_groups'])} group(s) failed" if summary["failed_groups"] else "")
          + f"; all numbers in {args.json}")
    return 1 if summary["failed_groups"] else 0


if __name__ == "__main__":
    sys.exit(main())
