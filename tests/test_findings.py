"""``chaos-shims findings``: the report's machine-readable block becomes a list of findings by
severity; a missing or unusable report exits 2 with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos_shims import findings
from chaos_shims.core import artifacts
from chaos_shims.findings import FindingsError, embed_summary, extract_summary, main
from chaos_shims.report import build_report
from tests.test_report import Tick, craft, cycles

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

KEYS = {"severity", "scenario", "criterion", "evidence", "recommendation"}


def write_report(tmp_path: Path, runs: Path) -> Path:
    text, _ = build_report(runs)
    path = tmp_path / "report.md"
    path.write_text(text)
    return path


def findings_of(tmp_path: Path, report: Path) -> list[dict[str, Any]]:
    output = tmp_path / "findings.json"
    assert main(["--report", str(report), "--output", str(output)]) == 0
    found = json.loads(output.read_text())
    assert isinstance(found, list)
    return found


def test_findings_by_severity_from_a_report(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    craft(runs, "fine", cycles(), scenarios={"exch_429": 0.1})
    craft(runs, "many-misses", cycles(bad_on=2), scenarios={"net_loss": 0.5})  # 10 %
    craft(runs, "few-misses", [*cycles(count=5), *[Tick(150.0, 10.5)] * 3],
          scenarios={"net_loss": 0.1})  # 3 of 103: 2.9 %
    craft(runs, "storm", cycles(cancels_on=6), scenarios={"rate_limit_storm": 0.1})
    craft(runs, "slow-recovery", cycles(error_after=4), scenarios={"exch_5xx": 0.5})
    craft(runs, "rec", cycles(), scenarios={"reconcile_mismatch": 0.2},
          reconcile=artifacts.detection({"order_dropped": 4.0, "phantom_order": 2.0},
                                        {"order_dropped": 1.0}))
    (runs / "junk.json").write_text("{")
    found = findings_of(tmp_path, write_report(tmp_path, runs))

    assert all(set(f) == KEYS for f in found)
    order = [findings.SEVERITIES.index(f["severity"]) for f in found]
    assert order == sorted(order)  # most severe first
    by = {(f["scenario"], f["criterion"]): f for f in found}
    assert by[("net_loss=0.5", "deadline_miss_rate")]["severity"] == "high"  # >= 2x the limit
    assert by[("net_loss=0.1", "deadline_miss_rate")]["severity"] == "medium"
    assert "3 of 103 ticks over 100 ms" in by[("net_loss=0.1", "deadline_miss_rate")]["evidence"]
    assert "ccxt `timeout`" in by[("net_loss=0.1", "deadline_miss_rate")]["recommendation"]
    assert by[("rate_limit_storm=0.1", "cancel_storms")]["severity"] == "high"
    assert by[("exch_5xx=0.5", "recovery_ticks")]["severity"] == "medium"
    assert by[("exch_5xx=0.5", "error_ticks")]["severity"] == "medium"
    detection = by[("reconcile_mismatch=0.2", "detection_rate")]
    assert detection["severity"] == "high"  # 1 of 6 detected
    assert "missed types: order_dropped, phantom_order" in detection["evidence"]
    assert "report_discrepancy" in detection["recommendation"]
    assert by[(None, "data")]["severity"] == "low"
    assert "junk.json" in by[(None, "data")]["evidence"]
    assert not [f for f in found if f["scenario"] == "exch_429=0.1"]  # passing: nothing to say


def test_no_baseline_and_no_ticks_are_findings(tmp_path: Path, runs: Path) -> None:
    craft(runs, "quiet", [], scenarios={"exch_429": 0.1})
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    criteria = {(f["criterion"], f["severity"]) for f in found}
    assert ("baseline", "low") in criteria
    assert ("ticks", "medium") in criteria


def test_a_baseline_that_misses_deadlines_is_a_finding(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles(bad_on=2))
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    assert [(f["scenario"], f["criterion"], f["severity"]) for f in found] == [
        ("baseline", "deadline_miss_rate", "medium")]
    assert found[0]["evidence"].startswith("without chaos:")


def test_a_rollback_is_a_finding(tmp_path: Path, runs: Path) -> None:
    craft(runs, "base", cycles())
    path = craft(runs, "rolled", cycles(), scenarios={"lat_spike_ms": 300})
    document = json.loads(path.read_text())
    document["ticks"]["stop_condition"].update(tripped=True, at_tick=100, misses=5)
    path.write_text(json.dumps(document))
    found = findings_of(tmp_path, write_report(tmp_path, runs))
    stop = [f for f in found if f["criterion"] == "stop_condition"]
    assert len(stop) == 1 and stop[0]["severity"] == "medium"
    assert "rolled itself back" in stop[0]["evidence"]


def test_standard_output(tmp_path: Path, runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    craft(runs, "base", cycles())
    report = write_report(tmp_path, runs)
    assert main(["--report", str(report), "--output", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# -- unusable input ------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    ("# a report someone wrote by hand\n", "has no chaos_shims summary block"),
    ("<!-- chaos_shims.report/1\n{not json\n-->", "summary block is not valid JSON"),
    ("<!-- chaos_shims.report/7\n{}\n-->", "this version reads chaos_shims.report/1"),
    ('<!-- chaos_shims.report/1\n{"schema": "chaos_shims.report/1", "rows": 3}\n-->',
     "does not have the report's fields"),
    ('<!-- chaos_shims.report/1\n{"schema": "chaos_shims.report/1", "criteria": {}, '
     '"rows": [{"scenario": "x"}], "baseline": {"found": true}}\n-->', "malformed"),
])
def test_a_report_without_a_usable_block_exits_2(tmp_path: Path, content: str, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.md"
    report.write_text(content)
    output = tmp_path / "findings.json"
    assert main(["--report", str(report), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(report) in err
    assert "Traceback" not in err
    assert not output.exists()


def test_a_missing_or_unreadable_report_exits_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--report", str(tmp_path / "absent.md")]) == 2
    assert "no such report" in capsys.readouterr().err
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"\xff\xfe\xfa")
    assert main(["--report", str(binary)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["--report", str(tmp_path)]) == 2  # a folder
    assert "cannot read" in capsys.readouterr().err


def test_the_block_survives_any_text_inside_it() -> None:
    summary = {"schema": "chaos_shims.report/1", "rows": [], "criteria": {},
               "note": "--> <!-- & </script>"}
    embedded = embed_summary(summary)
    assert embedded.count("-->") == 1
    assert extract_summary(f"# report\n\n{embedded}\n") == summary
    with pytest.raises(FindingsError):
        extract_summary("no block")
