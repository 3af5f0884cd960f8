"""The README against the code: its scenario table lists exactly the catalog's scenarios, in its
order; its piece of a real report has the shape the report writer gives reports now."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaos_shims.demo import DEFAULT_SEED
from chaos_shims.scenarios import CATALOG

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ROOT = Path(__file__).resolve().parents[1]


def test_readme_scenario_table_matches_the_catalog() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Scenarios", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE)
    assert keys == CATALOG.keys()


def _run_cli(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "chaos_shims.cli", *args], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_report_excerpt_has_the_shape_of_a_real_report(tmp_path: Path) -> None:
    """The README quotes a real report of ``chaos-shims demo --quick``: its results table and one
    finding. They must keep the shape ``chaos-shims report`` and ``chaos-shims findings``
    write now (a report made here, of a run made here)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    excerpt = readme.split("A piece of a real report", 1)[1].split("\n## ", 1)[0]
    table = [line for line in excerpt.splitlines() if line.startswith("|")]
    [finding_block] = re.findall(r"```json\n(.*?)\n```", excerpt, flags=re.DOTALL)
    assert f"seed {DEFAULT_SEED}" in excerpt

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_SHIMS_")}
    env["CHAOS_SHIMS_ARTIFACTS_DIR"] = str(tmp_path)
    ticks = "import chaos_shims\nfor _ in range(5):\n    with chaos_shims.tick():\n        pass\n"
    _run_cli("run", "--set", "enabled=true", "--set", "exch_5xx=0.1", "--",
             sys.executable, "-c", ticks, env=env)
    _run_cli("report", "--runs", str(tmp_path / "runs"), "--output", str(tmp_path / "report.md"),
             env=env)
    _run_cli("findings", "--report", str(tmp_path / "report.md"),
             "--output", str(tmp_path / "findings.json"), env=env)
    report = (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()
    findings = json.loads((tmp_path / "findings.json").read_text(encoding="utf-8"))

    header, separator, *rows = table
    assert header in report and separator in report  # the report's own results table
    assert report.index(header) > report.index("## Results")
    columns = header.count(" | ") + 1
    assert rows and all(row.count(" | ") + 1 == columns for row in rows), rows
    assert findings and all(set(json.loads(finding_block)) == set(f) for f in findings)
