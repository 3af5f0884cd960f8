"""``chaos-shims demo`` end to end: the embedded exchange, the example bot in subprocesses under
``chaos-shims run``, one artifact per run, report.md and findings.json, the verdict table."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.demo import DEFAULT_SEED, EXPERIMENTS
from chaos_shims.findings import extract_summary

pytestmark = [pytest.mark.filterwarnings("error::ResourceWarning")]

pytest.importorskip("ccxt")


def demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The demo as a user runs it, in a process of its own (``chaos-shims demo`` once wired)."""
    code = "import sys; from chaos_shims.demo import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAOS_SHIMS_")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def check_results(out: Path, scenarios: list[str], stdout: str) -> dict[str, Any]:
    """One artifact and one log per run (a baseline first and last), a report row each."""
    labels = ["baseline", *scenarios, "baseline"]
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == len(labels), runs
    artifacts = [json.loads(path.read_text()) for path in runs]
    assert sorted(a["label"] for a in artifacts) == sorted(labels)
    for artifact in artifacts:
        assert artifact["ticks"]["count"] > 0, artifact["label"]
        assert artifact["dry_run"] is False and artifact["seed"] == DEFAULT_SEED
        assert artifact["schedule"]["burst_on_sec"] == 1.0
    assert len(list((out / "logs").glob("*.log"))) == len(labels)

    report = (out / "report.md").read_text()
    summary = extract_summary(report)
    rows = {row["scenario"]: row for row in summary["rows"]}
    assert sorted(rows) == sorted({*labels})
    assert summary["baseline"]["found"] is True
    assert len(summary["baseline"]["run_ids"]) == 2
    for label in labels:
        runs_in_row = 2 if label == "baseline" else 1
        assert re.search(rf"^\| {re.escape(label)} \| {runs_in_row} \| \d+ \|", report,
                         re.MULTILINE), label
        assert label in stdout  # the verdict table
        if label != "baseline":
            assert rows[label]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert "## Campaign" in report and report.index("## Campaign") < report.index("## Results")

    findings = json.loads((out / "findings.json").read_text())
    assert isinstance(findings, list)
    for finding in findings:
        assert set(finding) == {"severity", "scenario", "criterion", "evidence", "recommendation"}
    return rows


@pytest.mark.timeout(150)
def test_quick_demo_runs_the_whole_campaign(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = demo("--quick", "--out", str(out), timeout=140)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = check_results(out, [f"{e.key}={e.value}" for e in EXPERIMENTS], result.stdout)
    # every scenario really injected something into the bot, live
    for experiment in EXPERIMENTS:
        if experiment.key == "dns_flap":
            continue  # warm connections look nothing up: a run may see no lookup at all
        injections = rows[f"{experiment.key}={experiment.value}"]["injections"]
        assert injections[experiment.key].get("live", 0) >= 1, (experiment.key, injections)
    assert "PASS" in result.stdout and "report:" in result.stdout


@pytest.mark.timeout(90)
def test_scenario_picks_a_subset_and_replaces_earlier_results(tmp_path: Path) -> None:
    out = tmp_path / "subset"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "from-an-earlier-campaign.json").write_text("{}")
    result = demo("--quick", "--seconds", "1.5", "--scenario", "ws_disconnect", "--scenario",
                  "exch_429", "--out", str(out), timeout=80)
    assert result.returncode == 0, result.stdout + result.stderr
    check_results(out, ["exch_429=0.1", "ws_disconnect=0.05"], result.stdout)
    assert not (out / "runs" / "from-an-earlier-campaign.json").exists()
    assert "Skipped files" not in (out / "report.md").read_text()


@pytest.mark.timeout(30)
def test_a_port_in_use_stops_the_demo_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = demo("--quick", "--rest-port", str(port), "--out", str(tmp_path / "x"),
                      timeout=25)
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (REST) is already in use" in result.stderr
    assert not list((tmp_path / "x" / "runs").glob("*.json"))


@pytest.mark.timeout(30)
def test_an_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    result = demo("--scenario", "nope", "--out", str(tmp_path / "x"), timeout=25)
    assert result.returncode == 2
    assert "unknown scenario 'nope'" in result.stderr and "net_loss" in result.stderr


@pytest.mark.timeout(60)
def test_a_bot_that_fails_at_start_stops_the_campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from chaos_shims import demo as demo_module

    bot = tmp_path / "market_maker.py"
    bot.write_text(
        "import sys\nprint('cannot reach the exchange', file=sys.stderr)\nsys.exit(3)\n")
    monkeypatch.setattr(demo_module, "find_bot", lambda name: bot)
    status = demo_module.main(["--quick", "--out", str(tmp_path / "out")])
    assert status == 1
    err = capsys.readouterr().err
    assert "the resilient bot failed in the baseline run (exit status 3)" in err
    assert "cannot reach the exchange" in err  # the end of its log, where to look first
    assert not (tmp_path / "out" / "report.md").exists()


@pytest.mark.timeout(30)
def test_a_missing_bot_stops_the_demo_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from chaos_shims import demo as demo_module

    monkeypatch.setattr(demo_module, "find_bot", lambda name: None)
    assert demo_module.main(["--quick", "--bot", "naive", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "chaos_shims.examples.naive_bot is not installed" in err
    assert not (tmp_path / "out").exists()


def test_the_bots_are_found_in_the_package_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Here chaos_shims is this checkout (editable or on the path): the bots are its examples/
    files, found by import when the install maps chaos_shims.examples, else beside it."""
    from chaos_shims.demo import BOTS, find_bot

    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    assert {bot: find_bot(bot) for bot in BOTS} == {
        bot: root / "examples" / f"{module}.py" for bot, module in BOTS.items()}
