"""The shipped alert rules and Grafana dashboard: promtool checks and unit-tests the rules
(scripts/check_prometheus_rules.sh) and parses every dashboard query; both use only metrics of
the table in core/metrics.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos_shims.core.metrics import DEFAULT_PREFIX, METRICS

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_prometheus_rules.sh"
RULES = ROOT / "docs" / "prometheus" / "chaos_alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "chaos_alerts_test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "chaos_dashboard.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian/Ubuntu: apt-get install prometheus; CI installs it)")

KNOWN = {f"{DEFAULT_PREFIX}_{suffix}" for suffix in METRICS}
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def dashboard_queries() -> list[str]:
    found = dashboard()
    queries = [target["expr"] for panel in found["panels"] for target in panel["targets"]]
    queries += [a["expr"] for a in found["annotations"]["list"] if "expr" in a]
    return queries


def metric_names(expression: str) -> set[str]:
    names = set(re.findall(rf"\b{DEFAULT_PREFIX}_[a-z_]+", expression))
    return {HISTOGRAM_SERIES.sub("", name) if HISTOGRAM_SERIES.sub("", name) in KNOWN else name
            for name in names}


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout
    assert done.stdout.rstrip().endswith("SUCCESS")


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions in rule files: one recording rule per query, Grafana's
    # interval variables replaced by a duration ($job and $instance sit inside strings).
    grafana = {"$__rate_interval": "5m", "$__range": "3h", "$__interval": "1m"}
    recorded = []
    for number, query in enumerate(dashboard_queries()):
        for variable, duration in grafana.items():
            query = query.replace(variable, duration)
        recorded.append({"record": f"dashboard:query_{number}", "expr": query})
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}),
                         encoding="utf-8")
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(recorded)} rules found" in done.stdout


def test_the_script_says_clearly_when_promtool_is_missing() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PROMTOOL": "/nonexistent/promtool"})
    assert done.returncode == 127
    assert "promtool not found" in done.stderr and "apt-get install prometheus" in done.stderr


def test_rules_and_dashboard_use_only_metrics_of_the_table() -> None:
    used: set[str] = set()
    for expression in [rule["expr"] for rule in rules()] + dashboard_queries():
        used |= metric_names(expression)
    assert used, "no mm_ metric found: did the prefix change?"
    assert used <= KNOWN, used - KNOWN
    # and every metric of the table is on the dashboard
    dashboard_used = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert {f"{DEFAULT_PREFIX}_{suffix}" for suffix in METRICS} <= dashboard_used


def test_every_alert_has_a_severity_a_summary_a_description_and_a_unit_test() -> None:
    tested = {case["alertname"]
              for group in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
              for case in group["alert_rule_test"] if case["exp_alerts"]}
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) == 5
    for rule in alerts:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} never fires in chaos_alerts_test.yml"


def test_the_dashboard_is_well_formed() -> None:
    found = dashboard()
    assert found["uid"] == "chaos-shims"
    variables = {v["name"]: v for v in found["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"job", "instance"} <= set(variables)
    panels = found["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"]
