"""The benchmark suite keeps running: one cheap group in quick mode, in this process and through
the command. Shape only: benchmarks are not timed tests, so no number is asserted against a goal."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suite import GROUPS, MET, MISSED, Row, run_group

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

REPO = Path(__file__).resolve().parent.parent


def _check_row(row: Row, group: str) -> None:
    assert row.group == group
    assert row.goal is not None and row.what and row.unit
    assert math.isfinite(row.measured) and row.measured > 0
    assert row.verdict in (MET, MISSED)
    assert row.compare  # every goal row says what it was compared with


def test_decisions_quick_gives_a_goal_row_and_details() -> None:
    result = run_group("decisions", quick=True)
    assert result.name == "decisions"
    assert len(result.rows) == 1
    _check_row(result.rows[0], "decisions")
    assert {"plan_ns", "decisions_per_sec", "decisions_per_sec_4_scenarios"} <= set(result.details)
    # what the command writes survives a JSON round trip
    row = Row.from_json(json.loads(json.dumps(result.rows[0].as_json())))
    assert row == result.rows[0]


def test_command_quick_writes_the_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "decisions", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=50)
    assert finished.returncode == 0, finished.stderr
    assert "decisions per second, one thread" in finished.stdout
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["mode"] == "quick"
    assert document["machine"]["cpus"] >= 1
    group = document["groups"]["decisions"]
    assert group["error"] is None
    assert [row["verdict"] in (MET, MISSED) for row in group["rows"]] == [True]
    assert document["summary"]["met"] + document["summary"]["missed"] == 1


def test_every_group_is_listed_by_the_command() -> None:
    finished = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=REPO,
                              capture_output=True, text=True, timeout=30)
    assert finished.returncode == 0, finished.stderr
    assert [line.split()[0] for line in finished.stdout.splitlines()] == list(GROUPS)
