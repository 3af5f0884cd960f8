"""The run lifecycle with real processes: a ccxt bot with chaos from the environment leaves a
complete artifact when it exits, when it raises, and when SIGTERM ends it (with the exit status
SIGTERM gives, or its own handler's). In-process: restarts, a blocked writer at a signal, a
folder that cannot be written, and the reconciliation counts of chaos_shims.signals."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chaos_shims import run, signals, ticks
from chaos_shims.activation import activate
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.exchange import LoopbackExchange

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning"),
              pytest.mark.usefixtures("no_run_left")]

BOT = str(Path(__file__).parent / "run_programs" / "bot.py")


def bot_env(folder: Path, **chaos: str) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_ARTIFACTS_DIR": str(folder)})
    environ.update({f"CHAOS_SHIMS_{key.upper()}": value for key, value in chaos.items()})
    return environ


def bot_args(exchange: LoopbackExchange, mode: str, count: int) -> list[str]:
    config = json.dumps({**exchange.ccxt_config(), "enableRateLimit": False})
    return [sys.executable, BOT, config, mode, str(count)]


def the_artifact(folder: Path) -> dict[str, Any]:
    files = sorted((folder / "runs").glob("*.json"))
    assert len(files) == 1, files
    assert not list((folder / "runs").glob(".*.tmp"))  # no temporary file left behind
    document = json.loads(files[0].read_text())
    assert files[0].name == f"{document['run_id']}.json"
    return document


def run_bot(exchange: LoopbackExchange, folder: Path, mode: str, count: int,
            **chaos: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bot_args(exchange, mode, count), env=bot_env(folder, **chaos),
                          capture_output=True, text=True, timeout=45, check=False)


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.strip() == expected:
            return
    raise AssertionError(f"the bot never printed {expected!r}")


def terminate_bot(exchange: LoopbackExchange, folder: Path, mode: str
                  ) -> tuple[int, str, str]:
    with subprocess.Popen(bot_args(exchange, mode, 5), env=bot_env(folder, lat_spike_ms="2",
                                                                  dry_run="0"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_for_line(proc, "ready")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return proc.returncode, out, err


# -- real processes ------------------------------------------------------------------------------

def test_a_normal_exit_leaves_the_artifact_with_the_rollback(exchange: LoopbackExchange,
                                                            tmp_path: Path) -> None:
    result = run_bot(exchange, tmp_path, "exit", 8, lat_spike_ms="60", dry_run="0",
                     burst_on_sec="0", tick_deadline_ms="30", stop_window_ticks="5",
                     stop_deadline_miss="0.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    document = the_artifact(tmp_path)
    assert (document["ended_by"], document["complete"], document["exit_detail"]) == (
        "exit", True, None)
    assert document["pid"] > 0 and document["pid"] != os.getpid()
    assert document["baseline"] is False and document["label"] == "lat_spike_ms=60"
    assert document["ticks"]["count"] == 8
    assert document["ticks"]["deadline_misses"] >= 5
    assert document["cancels"]["total"] == 8
    # The stop condition tripped at the fifth tick: rolled back, said everywhere.
    assert document["mode"] == "rolled_back"
    assert [(r["reason"], r["detail"]) for r in document["rollbacks"]] == [
        ("deadline_miss", "5 of 5 ticks over 30 ms")]
    assert document["ticks"]["stop_condition"]["at_tick"] == 5
    by_mode = document["injections"]["by_scenario"]["lat_spike_ms"]
    assert by_mode["live"] >= 5 and by_mode["dry_run"] >= 3
    assert document["command"][1] == BOT
    assert '"secret": "***"' in document["command"][2]  # the API secret stays out of it
    assert document["reconnects"] == {"total": 0, "by_kind": {}}
    assert document["reconcile"]["detection_rate"] is None


def test_sigterm_mid_run_leaves_a_complete_artifact_and_the_sigterm_status(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    status, out, err = terminate_bot(exchange, tmp_path, "wait")
    assert status == -signal.SIGTERM, err
    assert "done" not in out
    document = the_artifact(tmp_path)
    assert (document["ended_by"], document["complete"]) == ("SIGTERM", True)
    assert document["ticks"]["count"] >= 5
    assert document["injections"]["by_scenario"]["lat_spike_ms"]["live"] >= 5


def test_a_bots_own_sigterm_handler_decides_and_the_artifact_follows(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    # The bot installs its handler after activation, replacing ours: its graceful shutdown
    # runs as written and the artifact is written at the exit it makes.
    status, out, err = terminate_bot(exchange, tmp_path, "handler")
    assert status == 3, err
    assert "graceful" in out
    document = the_artifact(tmp_path)
    assert (document["ended_by"], document["complete"]) == ("exit", True)
    assert document["ticks"]["count"] >= 5


def test_an_exception_exit_leaves_an_artifact_naming_it(exchange: LoopbackExchange,
                                                       tmp_path: Path) -> None:
    result = run_bot(exchange, tmp_path, "raise", 3)  # chaos enabled, no scenario: a baseline
    assert result.returncode == 1
    assert "RuntimeError: the bot gave up" in result.stderr  # the traceback, as without chaos
    document = the_artifact(tmp_path)
    assert document["ended_by"] == "exception"
    assert document["exit_detail"] == "RuntimeError: the bot gave up"
    assert document["baseline"] is True and document["label"] == "baseline"
    assert document["ticks"]["count"] == 3


# -- in process ------------------------------------------------------------------------------

def active(registry: Any, **keys: Any) -> ChaosInjector:
    injector = activate(enabled=True, burst_on_sec=0, registry=registry, **keys)
    assert injector is not None
    return injector


def test_chaos_off_starts_no_run() -> None:
    assert run.start_run(None) is None
    assert run.current_run() is None and run.finish_run() is None


def test_a_second_start_finishes_the_first_run(registry: Any, tmp_path: Path) -> None:
    first = active(registry, lat_spike_ms=1)
    assert run.start_run(first, directory=tmp_path) is first
    with ticks.tick():
        pass
    run.start_run(active(registry), directory=tmp_path)
    written = {json.loads(p.read_text())["ended_by"]: json.loads(p.read_text())
               for p in tmp_path.glob("*.json")}
    assert list(written) == ["restarted"]
    assert written["restarted"]["ticks"]["count"] == 1
    path = run.finish_run()
    assert path is not None and json.loads(path.read_text())["ended_by"] == "finish_run"
    assert ticks.current_stats() is not None  # the active injector still measures ticks
    assert run.current_run() is None


def test_a_process_that_ignores_sigterm_keeps_ignoring_it(registry: Any, tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        run.start_run(active(registry), directory=tmp_path)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_handler_installed_before_is_chained(registry: Any, tmp_path: Path) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        run.start_run(active(registry), directory=tmp_path)
        assert signal.getsignal(signal.SIGTERM) is run._on_sigterm
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs between bytecodes of this thread
            if seen:
                break
            time.sleep(0.01)
        assert seen == [signal.SIGTERM]
        assert json.loads(next(tmp_path.glob("*.json")).read_text())["ended_by"] == "SIGTERM"
    finally:
        run._reset_for_tests()
        signal.signal(signal.SIGTERM, previous)


def test_a_blocked_writer_at_a_signal_does_not_hang_the_exit(
        registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    injector = active(registry, lat_spike_ms=1)
    run.start_run(injector, directory=tmp_path)
    current = run.current_run()
    assert current is not None
    monkeypatch.setattr(run, "SIGNAL_WRITE_TIMEOUT_SEC", 0.2)
    # As if SIGTERM landed while this thread was inside the injector's bookkeeping.
    with injector._lock:
        started = time.monotonic()
        run._write_at_signal(current, "SIGTERM")
        assert time.monotonic() - started < 2
        document = json.loads(current.path.read_text())
        assert document["complete"] is False
        assert document["incomplete"] == ["injections", "reconnects", "reconcile"]
        assert document["ended_by"] == "SIGTERM"
    # Once the lock is free the blocked writer finishes and the full artifact replaces it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not json.loads(current.path.read_text())["complete"]:
        time.sleep(0.02)
    assert json.loads(current.path.read_text())["complete"] is True
    for thread in threading.enumerate():
        if thread.name == "chaos_shims-artifact":
            thread.join(5)


def test_an_unwritable_folder_is_logged_and_the_host_goes_on(
        registry: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run.start_run(active(registry), directory=blocker / "runs")
    assert run.finish_run() is None
    assert any("could not write the run artifact" in r.getMessage() for r in caplog.records)


def test_the_artifact_reconciles_what_signals_counted(registry: Any, tmp_path: Path) -> None:
    injector = active(registry, lat_spike_ms=1)
    run.start_run(injector, directory=tmp_path)
    for _ in range(2):
        signals.count(injector, signals.INJECTED, "order_dropped")
    signals.count(injector, signals.INJECTED, "phantom_order")
    signals.report_discrepancy("order_dropped")
    path = run.finish_run()
    assert path is not None
    reconcile = json.loads(path.read_text())["reconcile"]
    assert (reconcile["injected"], reconcile["detected"]) == (3, 1)
    assert reconcile["detection_rate"] == pytest.approx(1 / 3)
    assert reconcile["by_type"]["order_dropped"]["detection_rate"] == 0.5
