"""Faults to chaos_shims itself: the host never pays for them.

- A bug in a scenario's decision code (per event, sync and async, or in a phase scenario's
  thread) turns chaos off, says so once, and the ccxt call the bot made goes on to the exchange
  and returns the real answer.
- The JSONL log cannot be written: a full disk (/dev/full, and a real 64 KiB tmpfs filled up and
  then freed), a read-only filesystem (a read-only bind mount made in a private mount namespace
  with ``unshare -m``: a real EROFS, and the mount vanishes with the process). Nothing simpler is
  real here: the tests run as root, whom chmod does not stop, and /proc and /sys are mounted
  read-write on this machine (procfs refuses a new file with ENOENT, sysfs with EACCES: that one
  is a third, in-process case, and EROFS where a container mounts /sys read-only). The bot keeps
  making calls, the loss is logged once, and the Prometheus counter, the injector's counts, the
  server's request count and the sink's written + lost all agree.
- SIGTERM lands while threads are in the middle of ccxt calls under ``chaos-shims run``: the
  process dies with the SIGTERM status, leaving one valid artifact that ``chaos-shims report``
  reads, consistent with the JSONL log written up to the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from chaos_shims import report
from chaos_shims.activation import activate
from chaos_shims.core import artifacts, runtime
from chaos_shims.core.faults import Fault
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.records import now_wall
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.scenarios.clock_skew_ms import ClockSkewMs
from chaos_shims.scenarios.exch_429 import Exch429
from tests.conftest import client_config
from tests.test_run_lifecycle import wait_for_line

ccxt = pytest.importorskip("ccxt")

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("error::ResourceWarning")]

CLI = str(Path(sys.executable).with_name("chaos-shims"))
INTERNAL_ERROR = "internal error, chaos is now off"
CANNOT_WRITE = "cannot write the JSONL log"


class ScenarioBug(Exception):
    """What a bug in a scenario raises (any exception: this one is easy to recognise)."""


def _broken_draw(self: Exch429, now: float) -> Fault | None:
    raise ScenarioBug("a bug in exch_429's draw")


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "chaos_shims" and text in r.getMessage()]


def _balances(balance: Mapping[str, Any]) -> dict[str, Any]:
    """What an account holds (ccxt's parsed balance without its timestamps)."""
    return {"free": balance["free"], "used": balance["used"], "total": balance["total"]}


def _live(registry: Any, **keys: Any) -> ChaosInjector:
    injector = activate(enabled=True, dry_run=False, burst_on_sec=0, seed=11, registry=registry,
                        **keys)
    assert injector is not None
    return injector


# -- (a) an exception inside a scenario --------------------------------------------------------------

def test_a_scenario_that_raises_turns_chaos_off_and_the_sync_call_gets_the_real_answer(
        binance: Any, exchange: LoopbackExchange, registry: Any,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    expected = _balances(binance.fetch_balance())  # the real answer, chaos off
    monkeypatch.setattr(Exch429, "draw", _broken_draw)
    # exch_429 at 1.0 and a latency spike: had chaos stayed on, every call would fail or wait.
    injector = _live(registry, exch_429=1.0, lat_spike_ms=2000)
    exchange.clear_requests()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="chaos_shims"):
        answers = [_balances(binance.fetch_balance()) for _ in range(3)]
    assert answers == [expected] * 3
    assert time.monotonic() - started < 1.5  # no 2 s spike was applied to any of them
    assert exchange.request_count("/api/v3/account") == 3  # each reached the exchange
    assert injector.disabled_reason == "ScenarioBug: a bug in exch_429's draw"
    assert runtime.active is None  # chaos is off for the rest of the process
    assert injector.count() == 0
    [logged] = _messages(caplog, INTERNAL_ERROR)  # said once, with the traceback
    assert logged.levelno == logging.ERROR and logged.exc_info is not None
    assert registry.get_sample_value("mm_chaos_injections_total",
                                     {"scenario": "exch_429", "mode": "live"}) is None


@pytest.mark.asyncio
async def test_a_scenario_that_raises_turns_chaos_off_and_the_async_call_gets_the_real_answer(
        async_binance: Any, exchange: LoopbackExchange, registry: Any,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    expected = _balances(await async_binance.fetch_balance())
    monkeypatch.setattr(Exch429, "draw", _broken_draw)
    injector = _live(registry, exch_429=1.0, lat_spike_ms=2000)
    exchange.clear_requests()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="chaos_shims"):
        # Concurrent calls, as an async bot makes them: every one gets the real answer.
        answers = await asyncio.wait_for(
            asyncio.gather(*(async_binance.fetch_balance() for _ in range(4))), timeout=10)
    assert [_balances(a) for a in answers] == [expected] * 4
    assert time.monotonic() - started < 1.5  # no 2 s spike
    assert exchange.request_count("/api/v3/account") == 4
    assert injector.disabled_reason == "ScenarioBug: a bug in exch_429's draw"
    assert runtime.active is None
    assert len(_messages(caplog, INTERNAL_ERROR)) == 1


def test_a_phase_scenario_that_raises_leaves_the_clock_alone_and_signed_calls_work(
        binance: Any, registry: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken_start(self: ClockSkewMs, live: bool) -> Fault | None:
        raise ScenarioBug("a bug in clock_skew_ms")

    monkeypatch.setattr(ClockSkewMs, "start_phase", broken_start)
    with caplog.at_level(logging.ERROR, logger="chaos_shims"):
        # A minute of skew would make every signed request fail with binance -1021.
        injector = _live(registry, clock_skew_ms=60_000)
        balance = binance.fetch_balance()
    assert balance["total"]
    assert abs(time.time() - now_wall()) < 1.0  # the wall clock was never shifted
    assert injector.disabled_reason == "ScenarioBug: a bug in clock_skew_ms"
    assert runtime.active is None
    assert len(_messages(caplog, INTERNAL_ERROR)) == 1


class SlowToSay(ScenarioBug):
    """A scenario bug whose message takes a while to make (formatting it is part of fail())."""

    def __str__(self) -> str:
        time.sleep(0.3)  # widens the window that exists anyway, so the test is deterministic
        return "a bug that is slow to describe"


def test_a_scenario_bug_hit_by_several_threads_at_once_is_logged_once(
        exchange: LoopbackExchange, registry: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: Exch429, now: float) -> Fault | None:
        raise SlowToSay()

    monkeypatch.setattr(Exch429, "draw", broken)
    clients = [ccxt.binance(client_config(exchange)) for _ in range(4)]
    _live(registry, exch_429=1.0)
    answers: list[Any] = []
    together = threading.Barrier(len(clients))

    def call(client: Any) -> None:
        together.wait(10)
        answers.append(client.fetch_time())

    with caplog.at_level(logging.ERROR, logger="chaos_shims"):
        threads = [threading.Thread(target=call, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(answers) == 4  # every call went through, whatever was logged
    assert len(_messages(caplog, INTERNAL_ERROR)) == 1


# -- (b) the JSONL log cannot be written ----------------------------------------------------------

#: Paths that no write reaches on this machine, in process: /dev/full is a real full disk
#: (ENOSPC on every write); sysfs refuses to create a file even for root (EACCES; EROFS where
#: /sys is mounted read-only, as in most containers).
UNWRITABLE = {"/dev/full": ("No space left on device",),
              "/sys/chaos_shims-decisions.jsonl": ("Permission denied", "Read-only file system")}


def _hammer(exchange: LoopbackExchange, threads: int, calls: int) -> list[str]:
    """The bot's work: ``calls`` order books from each of ``threads`` threads, each its own
    client (ccxt clients are not shared across threads). What each call ended in."""
    ended: list[str] = []

    def work() -> None:
        client = ccxt.binance(client_config(exchange))
        client.load_markets()
        for _ in range(calls):
            try:
                ended.append("ok" if client.fetch_order_book("BTC/USDT")["bids"] else "empty")
            except Exception as exc:
                ended.append(type(exc).__name__)

    workers = [threading.Thread(target=work, name=f"bot-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return ended


@pytest.mark.parametrize("log_file", list(UNWRITABLE))
def test_an_unwritable_log_loses_records_once_said_and_counts_stay_right(
        exchange: LoopbackExchange, registry: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, log_file: str) -> None:
    monkeypatch.setenv("CHAOS_SHIMS_LOG_FILE", log_file)
    # Dry-run exch_429 at 1.0: every REST request is a decision that fires and is logged, and
    # the bot's calls still succeed, so the bot's own results show it kept running.
    injector = activate(enabled=True, dry_run=True, burst_on_sec=0, exch_429=1.0, seed=3,
                        registry=registry)
    assert injector is not None and injector.sink is not None
    exchange.clear_requests()
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        ended = _hammer(exchange, threads=4, calls=15)
    assert ended == ["ok"] * 60
    requests = exchange.request_count()  # each one decided once (load_markets' included)
    assert requests >= 60
    assert injector.count("exch_429", "dry_run") == requests
    assert registry.get_sample_value(
        "mm_chaos_injections_total", {"scenario": "exch_429", "mode": "dry_run"}) == requests
    assert (injector.sink.written, injector.sink.lost) == (0, requests)
    [said] = _messages(caplog, CANNOT_WRITE)  # once, not once per record
    assert said.levelno == logging.ERROR
    assert log_file in said.getMessage()
    assert any(reason in said.getMessage() for reason in UNWRITABLE[log_file])
    assert [r for r in caplog.records  # nothing else was said about it
            if r.name == "chaos_shims" and r.levelno >= logging.WARNING] == [said]


# A bot in a process of its own, for the cases that need a filesystem of their own.
LOG_BOT = r'''
import chaos_shims.auto  # noqa: I001  (first thing, as a user would)

import json
import os
import sys
import threading

import ccxt
from prometheus_client import REGISTRY

import chaos_shims

spec = json.loads(sys.argv[1])
ended = []


def work(calls):
    client = ccxt.binance(spec["ccxt"])
    client.load_markets()
    for _ in range(calls):
        ended.append("ok" if client.fetch_order_book("BTC/USDT")["bids"] else "empty")


def fill(path):
    """The disk fills up: a ballast file takes every byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    for size in (65536, 4096, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)


for step in spec["steps"]:
    if step == "fill":
        fill(spec["ballast"])
    elif step == "free":
        os.unlink(spec["ballast"])
    else:
        threads = [threading.Thread(target=work, args=(step,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
injector = chaos_shims.active_injector()
log = []  # the log file as it is now: each line's seq, or None for a line that is no record
if os.path.exists(injector.sink.path):
    with open(injector.sink.path, "rb") as handle:
        for line in handle.read().split(b"\n")[:-1]:
            try:
                log.append(json.loads(line)["seq"])
            except ValueError:
                log.append(None)
print(json.dumps({
    "log": log,
    "ended": ended,
    "decisions": injector.count("exch_429", "dry_run"),
    "prometheus": REGISTRY.get_sample_value("mm_chaos_injections_total",
                                            {"scenario": "exch_429", "mode": "dry_run"}),
    "written": injector.sink.written,
    "lost": injector.sink.lost,
}))
'''


def _bot_environment(folder: Path, log_file: Path) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_DRY_RUN": "1",
                    "CHAOS_SHIMS_EXCH_429": "1.0", "CHAOS_SHIMS_BURST_ON_SEC": "0",
                    "CHAOS_SHIMS_SEED": "3", "CHAOS_SHIMS_LOG_FILE": str(log_file),
                    "CHAOS_SHIMS_ARTIFACTS_DIR": str(folder / "artifacts")})
    return environ


@pytest.fixture(scope="module")
def mount_namespaces(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless this machine lets a process mount in a private mount namespace
    (``unshare -m``: root with CAP_SYS_ADMIN, as here; many CI containers do not)."""
    probe = tmp_path_factory.mktemp("mount-probe")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1): cannot make a real read-only or full filesystem")
    made = subprocess.run([unshare, "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {probe}"],
                          capture_output=True, text=True, timeout=30, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount in a private mount namespace: {made.stderr.strip()}")


def run_bot_in_namespace(exchange: LoopbackExchange, folder: Path, mounts: list[list[str]],
                         log_file: Path, steps: list[Any], ballast: Path | None = None
                         ) -> tuple[dict[str, Any], str]:
    """Run LOG_BOT in a private mount namespace after ``mounts`` (mount(8) argument lists):
    the mounts vanish with the process, nothing on the machine sees them."""
    spec = {"ccxt": client_config(exchange), "steps": steps,
            "ballast": None if ballast is None else str(ballast)}
    command = [sys.executable, "-c", LOG_BOT, json.dumps(spec)]
    script = " && ".join([*(shlex.join(["mount", *m]) for m in mounts),
                          "exec " + shlex.join(command)])
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=_bot_environment(folder, log_file), timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _artifact_in(folder: Path) -> dict[str, Any]:
    [path] = (folder / "artifacts" / "runs").glob("*.json")
    return artifacts.load_artifact(path)


@pytest.mark.usefixtures("mount_namespaces")
def test_a_read_only_filesystem_loses_the_log_once_said_and_the_bot_runs_on(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    exchange.clear_requests()
    seen, stderr = run_bot_in_namespace(
        exchange, tmp_path, [["--bind", str(readonly), str(readonly)],
                             ["-o", "remount,bind,ro", str(readonly)]],
        readonly / "logs" / "decisions.jsonl", steps=[10])
    assert seen["ended"] == ["ok"] * 40
    requests = exchange.request_count()
    assert seen["decisions"] == seen["prometheus"] == seen["lost"] == requests
    assert seen["written"] == 0 and seen["log"] == []
    assert stderr.count(CANNOT_WRITE) == 1
    assert "Read-only file system" in stderr
    assert not (readonly / "logs").exists()
    document = _artifact_in(tmp_path)  # the run artifact says what was lost
    assert document["jsonl"] == {"path": str(readonly / "logs" / "decisions.jsonl"),
                                 "written": 0, "lost": requests}
    assert document["injections"]["by_scenario"] == {"exch_429": {"dry_run": requests}}


@pytest.mark.usefixtures("mount_namespaces")
def test_a_disk_that_fills_up_and_frees_again_keeps_the_log_exact(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    """Records lost while the disk was full stay lost: none turns up in the file later, and the
    file holds exactly the records counted as written, each on a whole line."""
    disk = tmp_path / "disk"
    disk.mkdir()
    log_file = disk / "decisions.jsonl"
    exchange.clear_requests()
    seen, stderr = run_bot_in_namespace(
        exchange, tmp_path, [["-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]],
        log_file, steps=["fill", 5, "free", 5], ballast=disk / "ballast")
    assert seen["ended"] == ["ok"] * 40
    requests = exchange.request_count()
    assert seen["decisions"] == seen["prometheus"] == seen["written"] + seen["lost"] == requests
    assert seen["lost"] > 0 and seen["written"] > 0
    assert stderr.count(CANNOT_WRITE) == 1 and "No space left on device" in stderr
    # The decisions made while the disk was full are seq 1..lost: none of them is in the file,
    # which holds each decision made after, once, on a line of its own.
    lost = seen["lost"]
    assert seen["log"] == list(range(lost + 1, requests + 1))
    document = _artifact_in(tmp_path)
    assert document["jsonl"]["written"] == seen["written"]
    assert document["jsonl"]["lost"] == seen["lost"]


# -- (c) SIGTERM while threads are in the middle of calls ---------------------------------------------

BUSY_BOT = r'''
import json
import sys
import threading
import time

import ccxt

import chaos_shims

spec = json.loads(sys.argv[1])
ticks = []


def loop():
    client = ccxt.binance(spec["ccxt"])
    while not client.markets:
        try:
            client.load_markets()
        except ccxt.NetworkError:  # an injected 429 (binance: DDoSProtection)
            pass
    deadline = time.monotonic() + 30  # never outlive the test
    while time.monotonic() < deadline:
        try:
            with chaos_shims.tick():
                client.fetch_order_book("BTC/USDT")
                chaos_shims.report_cancels(1)
        except ccxt.NetworkError:  # an injected 429 (binance: DDoSProtection)
            pass
        ticks.append(1)


workers = [threading.Thread(target=loop, daemon=True) for _ in range(spec["workers"])]
for worker in workers:
    worker.start()
while len(ticks) < 10 * spec["workers"]:  # every thread is under way
    time.sleep(0.005)
print("ready", flush=True)
if spec["main"] == "calls":
    loop()
else:  # the main thread waits for its workers, as a bot's often does
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(0.05)
print("done", flush=True)
'''


@contextlib.contextmanager
def busy_bot(exchange: LoopbackExchange, folder: Path, main: str) -> Iterator[subprocess.Popen[str]]:
    """BUSY_BOT under ``chaos-shims run``: live exch_429 at 0.3, every decision logged to JSONL."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ARTIFACTS_DIR": str(folder / "artifacts"),
                    "CHAOS_SHIMS_LOG_FILE": str(folder / "decisions.jsonl")})
    spec = {"ccxt": client_config(exchange), "workers": 4, "main": main}
    command = [CLI, "run", "--set", "exch_429=0.3", "--set", "dry_run=0", "--set",
               "burst_on_sec=0", "--set", "seed=9", "--",
               sys.executable, "-c", BUSY_BOT, json.dumps(spec)]
    with subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.mark.parametrize("main", ["waits", "calls"])
def test_sigterm_mid_run_with_threads_busy_leaves_a_valid_artifact_and_the_sigterm_status(
        exchange: LoopbackExchange, tmp_path: Path, main: str) -> None:
    with busy_bot(exchange, tmp_path, main) as proc:
        wait_for_line(proc, "ready", timeout=60)
        time.sleep(0.2)  # the threads are in the middle of calls now
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, err  # as if chaos_shims were not there
    assert "done" not in out
    assert "Traceback" not in err

    runs = tmp_path / "artifacts" / "runs"
    [path] = runs.glob("*.json")
    assert not list(runs.glob(".*.tmp"))  # no temporary file left behind
    document = artifacts.load_artifact(path)  # valid: the reader's own checks pass
    assert document["ended_by"] == "SIGTERM"
    assert document["ticks"]["count"] >= 40
    assert 0 < document["cancels"]["total"] <= document["ticks"]["count"]
    if main == "waits":
        # No thread of the bot holds chaos_shims' locks for long: the whole artifact is written.
        assert document["complete"] is True, document["incomplete"]
    else:
        # The signal may land while the main thread is inside chaos_shims' bookkeeping: then
        # what needs its locks is left out, and the artifact says which.
        assert document["complete"] or document["incomplete"] == [
            "injections", "reconnects", "reconcile"]
    if document["complete"]:
        assert document["injections"]["by_scenario"]["exch_429"]["live"] > 0

    # The JSONL log up to the signal: whole lines, each decision once; the artifact counted a
    # snapshot of them (the workers went on while it was written).
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    seqs = [json.loads(line)["seq"] for line in lines]
    assert len(set(seqs)) == len(seqs) and max(seqs) - len(seqs) <= 5
    assert document["jsonl"]["lost"] == 0 and document["jsonl"]["written"] <= len(lines)
    if document["complete"]:
        assert document["injections"]["total"] <= len(lines)

    out_buffer, err_buffer = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out_buffer), contextlib.redirect_stderr(err_buffer):
        code = report.main(["--runs", str(tmp_path / "artifacts"), "--output",
                            str(tmp_path / "report.md")])
    assert code == 0, err_buffer.getvalue()
    assert f"ended by SIGTERM, {document['ticks']['count']} ticks" in (
        tmp_path / "report.md").read_text()


SECOND_SIGTERM_BOT = r'''
import chaos_shims.auto  # noqa: I001  (first thing, as a user would)

import os
import signal
import time

from chaos_shims.core import artifacts

write_artifact = artifacts.write_artifact


def written_while_a_second_sigterm_arrives(document, directory):
    os.kill(os.getpid(), signal.SIGTERM)  # a supervisor (or a process group) signals again
    time.sleep(0.2)  # the write is still under way when the second signal is handled
    return write_artifact(document, directory)


artifacts.write_artifact = written_while_a_second_sigterm_arrives
print("ready", flush=True)
time.sleep(30)
'''


def test_a_second_sigterm_during_the_write_still_leaves_the_artifact(tmp_path: Path) -> None:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_ARTIFACTS_DIR": str(tmp_path)})
    with subprocess.Popen([sys.executable, "-c", SECOND_SIGTERM_BOT], env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_for_line(proc, "ready", timeout=60)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == -signal.SIGTERM
    assert [path.name.endswith(".json") for path in (tmp_path / "runs").glob("*")] == [True]
