"""The run artifact: built from a real injector and tick statistics, written atomically, checked
before it is read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.activation import activate, resolve
from chaos_shims.core import artifacts
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.ticks import TickStats

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]


def injector_with(registry: Any, **keys: Any) -> ChaosInjector:
    injector = activate(enabled=True, burst_on_sec=0, registry=registry, **keys)
    assert injector is not None
    return injector


def build(injector: ChaosInjector, stats: TickStats | None = None,
          info: artifacts.RunInfo | None = None, **options: Any) -> dict[str, Any]:
    return artifacts.build_artifact(
        info or artifacts.RunInfo.now(1_700_000_000.0), injector, stats or TickStats(),
        ended_by=options.pop("ended_by", artifacts.ENDED_BY_EXIT), ended_ts=1_700_000_012.5,
        **options)


def test_artifact_of_a_scenario_run(registry: Any) -> None:
    injector = injector_with(registry, exch_429=1.0, lat_spike_ms=5, seed=7)
    for _ in range(3):
        injector.should_fire("exch_429")
    stats = TickStats(deadline_ms=50)
    for ms in (10, 20, 60):
        stats.record(ms)
    document = build(injector, stats)
    assert artifacts.problems(document) is None
    assert document["schema"] == "chaos_shims.run/1"
    assert document["started_at"] == "2023-11-14T22:13:20.000+00:00"
    assert document["duration_sec"] == 12.5
    assert document["ended_by"] == "exit" and document["complete"] is True
    assert (document["mode"], document["dry_run"], document["baseline"]) == ("dry_run", True, False)
    assert document["active_scenarios"] == {"exch_429": 1.0, "lat_spike_ms": 5.0}
    assert document["label"] == "exch_429=1, lat_spike_ms=5 (dry-run)"
    assert document["seed"] == 7 and document["config_sources"]["seed"] == "explicit"
    assert document["config"]["include_ops"] == []  # sets as sorted lists
    assert document["injections"] == {"total": 3, "by_scenario": {"exch_429": {"dry_run": 3}}}
    assert document["ticks"]["count"] == 3 and document["ticks"]["deadline_misses"] == 1
    assert {"recovery", "cancels", "reconnects", "reconcile", "rollbacks", "jsonl"} <= set(document)
    assert document["instance_id"] == injector.instance_id
    assert document["pid"] == os.getpid()
    json.dumps(document, allow_nan=False)  # plain JSON, no NaN or infinity


def test_a_run_with_no_scenario_is_a_baseline(registry: Any) -> None:
    document = build(injector_with(registry))
    assert document["baseline"] is True
    assert document["label"] == "baseline"
    assert document["ticks"]["latency_ms"]["p95"] is None  # no ticks: said, not invented


def test_reconnects_and_reconciliation_count_from_the_run_start(registry: Any) -> None:
    injector = injector_with(registry, lat_spike_ms=5)
    metrics = injector.metrics
    assert metrics is not None
    metrics.count_reconnect("websockets")  # before the run: not the run's
    info = artifacts.RunInfo.now(1_700_000_000.0)
    info.counters_at_start = artifacts.read_counters(injector, build=True)
    for _ in range(2):
        metrics.count_reconnect("websockets")
    metrics.count_reconnect("ccxt.pro")
    for _ in range(4):
        metrics.count_discrepancy("order_dropped", "injected")
    for _ in range(3):
        metrics.count_discrepancy("order_dropped", "detected")
    metrics.count_discrepancy("phantom_order", "injected")
    document = build(injector, info=info)
    assert document["reconnects"] == {"total": 3, "by_kind": {"websockets": 2, "ccxt.pro": 1}}
    assert document["reconcile"] == {
        "injected": 5, "detected": 3, "detection_rate": 0.6,
        "by_type": {"order_dropped": {"injected": 4, "detected": 3, "detection_rate": 0.75},
                    "phantom_order": {"injected": 1, "detected": 0, "detection_rate": 0.0}}}


def test_reconciliation_given_by_the_caller_wins(registry: Any) -> None:
    given = artifacts.detection({"fill_changed": 2.0}, {"fill_changed": 5.0})
    assert given["detection_rate"] == 1.0  # more reports than injections do not score above 1
    document = build(injector_with(registry), reconcile=given)
    assert document["reconcile"] == given


def test_without_metrics_the_counts_are_said_to_be_unknown() -> None:
    injector = ChaosInjector(resolve({"enabled": True}), export_metrics=False)
    document = build(injector)
    assert document["reconnects"] is None and document["reconcile"] is None


def test_a_lockless_artifact_names_what_it_left_out(registry: Any) -> None:
    injector = injector_with(registry, lat_spike_ms=5)
    stats = TickStats()
    stats.record(1)
    with stats._lock:
        document = build(injector, stats, lockless=True, ended_by=artifacts.ENDED_BY_SIGTERM)
    assert document["complete"] is False
    assert document["incomplete"] == ["injections", "reconnects", "reconcile"]
    assert document["injections"] is None
    assert document["ticks"]["count"] == 1
    assert artifacts.problems(document) is None


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path, registry: Any) -> None:
    document = build(injector_with(registry))
    folder = tmp_path / "runs"
    path = artifacts.write_artifact(document, folder)
    assert path == folder / f"{document['run_id']}.json"
    assert json.loads(path.read_text()) == document
    # A failed rewrite (here: a value JSON cannot hold) keeps the previous file whole.
    broken = {**document, "duration_sec": float("nan")}
    with pytest.raises(ValueError):
        artifacts.write_artifact(broken, folder)
    assert json.loads(path.read_text()) == document
    assert sorted(p.name for p in folder.iterdir()) == [path.name]


def test_write_to_an_unusable_folder_raises_oserror(tmp_path: Path, registry: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        artifacts.write_artifact(build(injector_with(registry)), blocker / "runs")


def test_runs_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert artifacts.runs_dir({}) == tmp_path / "artifacts" / "chaos" / "runs"
    assert artifacts.runs_dir({"CHAOS_SHIMS_ARTIFACTS_DIR": "out"}) == tmp_path / "out" / "runs"


def test_run_ids_are_sortable_and_unique() -> None:
    first = artifacts.new_run_id(1_700_000_000.0, 42)
    assert first.startswith("20231114T221320Z-42-")
    assert artifacts.new_run_id(1_700_000_000.0, 42) != first
    assert artifacts.new_run_id(1_700_000_001.0, 1) > first


def test_secrets_on_the_command_line_are_redacted() -> None:
    command = ["python", "bot.py", "--api-key", "K", "--secret=S", "--symbol", "BTC/USDT",
               "PASSWORD=p", '{"apiKey": "k", "secret": "s", "urls": {"api": "http://x"}}']
    assert artifacts.redact_command(command) == [
        "python", "bot.py", "--api-key", "***", "--secret=***", "--symbol", "BTC/USDT",
        "PASSWORD=***", '{"apiKey": "***", "secret": "***", "urls": {"api": "http://x"}}']


@pytest.mark.parametrize(("document", "problem"), [
    ([1, 2], "not a JSON object"),
    ({"name": "my-package", "version": "1.0"}, "not a chaos_shims run artifact"),
    ({"schema": "chaos_shims.run/2"}, "schema chaos_shims.run/2 is not supported"),
    ({"schema": "chaos_shims.run/1", "run_id": "x"}, "field 'baseline' is missing"),
])
def test_problems_say_why_a_document_is_not_usable(document: Any, problem: str) -> None:
    found = artifacts.problems(document)
    assert found is not None and problem in found


def test_load_names_unreadable_and_invalid_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "chaos_shims.run/1", "ticks": {')
    with pytest.raises(artifacts.ArtifactError, match="not valid JSON"):
        artifacts.load_artifact(broken)
    with pytest.raises(artifacts.ArtifactError, match="cannot be read"):
        artifacts.load_artifact(tmp_path / "missing.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(artifacts.ArtifactError, match="not valid JSON"):
        artifacts.load_artifact(binary)


def test_shadow_runs_are_labelled_apart_from_live_ones() -> None:
    assert artifacts.scenario_label({"exch_429": 0.2}, False) == "exch_429=0.2"
    assert artifacts.scenario_label({"exch_429": 0.2}, False, shadow=True) == "exch_429=0.2 (shadow)"
    assert artifacts.scenario_label({"exch_429": 0.2}, True) == "exch_429=0.2 (dry-run)"
