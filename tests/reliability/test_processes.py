"""Processes: children of a bot running under chaos, made by multiprocessing ('fork' and 'spawn'
contexts) and by a bare ``os.fork()``. Each child draws its own stream derived from the seed
(never its parent's decisions again, the same in every run), writes its own artifact (never the
parent's file), and its injections add up with everyone's in prometheus-client's multiprocess
mode as the exporter serves them.

How a child's stream is derived (chaos_shims.core.injector.stream_seed): the process that
activated chaos seeds scenario ``key`` with ``chaos_shims:<seed>:<key>``; a child appends its
lineage, ``process-<multiprocessing identity>`` ("process-1:2" for the second child of the first
child, whatever the start method) or ``<parent lineage>/fork-<n>`` for the n-th bare fork.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.activation import activate, deactivate
from chaos_shims.core.injector import scenario_stream
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.exporter import MULTIPROC_DIR, fleet_registry

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("error::ResourceWarning")]

pytest.importorskip("ccxt")

CLI = str(Path(sys.executable).parent / "chaos-shims")
CALLS = 24  # decisions per sequence: two equal by chance once in 16 million
SEED = "21"

#: The bot: REST calls in the parent around three children, each child making the same number
#: of calls; every sequence is the calls' outcomes (1: the injected 429). The parent prints what
#: every process saw and counted.
BOT = textwrap.dedent("""
    import json, multiprocessing, os, sys
    import ccxt
    from chaos_shims import run
    from chaos_shims.activation import active_injector

    CALLS = int(os.environ["BOT_CALLS"])

    def calls():
        client = ccxt.binance({**json.loads(os.environ["BOT_CCXT"]), "enableRateLimit": False})
        client.load_markets()  # outside the blast radius: only fetch_ticker is faulted
        bits = []
        for _ in range(CALLS):
            try:
                client.fetch_ticker("BTC/USDT")
                bits.append("0")
            except ccxt.DDoSProtection:
                bits.append("1")
        return "".join(bits)

    def seen():
        injector = active_injector()
        return {"bits": calls(), "pid": os.getpid(), "lineage": injector.lineage,
                "run_id": run.current_run().info.run_id,
                "counts": [[s, m, n] for (s, m), n in injector.counts().items()]}

    def child(queue):
        queue.put(seen())

    def in_a_child(method):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start()
        found = queue.get(timeout=60)
        process.join(timeout=60)
        queue.close()
        queue.join_thread()
        return {**found, "exitcode": process.exitcode}

    def in_a_bare_fork():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # leaves through sys.exit: atexit runs here as in any program
            os.close(read)
            with os.fdopen(write, "w") as pipe:
                pipe.write(json.dumps(seen()))
            sys.exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            found = json.loads(pipe.read())
        return {**found, "exitcode": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}

    if __name__ == "__main__":
        parent = [calls()]
        fork = in_a_child("fork")
        parent.append(calls())  # what a forked child that copied our streams would repeat
        spawn = in_a_child("spawn")
        bare = in_a_bare_fork()
        parent.append(calls())
        injector = active_injector()
        print(json.dumps({
            "parent": {"bits": parent, "pid": os.getpid(), "lineage": injector.lineage,
                       "run_id": run.current_run().info.run_id,
                       "counts": [[s, m, n] for (s, m), n in injector.counts().items()]},
            "fork": fork, "spawn": spawn, "bare": bare,
        }))
""")


def run_bot(exchange: LoopbackExchange, folder: Path) -> dict[str, Any]:
    """The bot under ``chaos-shims run`` with the metrics of every process in ``folder``."""
    folder.mkdir()
    (folder / "metrics").mkdir()
    program = folder / "bot.py"  # a file: spawned children import their target from it
    program.write_text(BOT)
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({"CHAOS_SHIMS_ARTIFACTS_DIR": str(folder / "artifacts"),
                    "CHAOS_SHIMS_LOG_FILE": str(folder / "chaos.jsonl"),
                    MULTIPROC_DIR: str(folder / "metrics"),
                    "BOT_CALLS": str(CALLS), "BOT_CCXT": json.dumps(exchange.ccxt_config())})
    sets = [arg for key, value in {"exch_429": "0.5", "dry_run": "false", "burst_on_sec": "0",
                                   "seed": SEED, "include_ops": "fetch_ticker"}.items()
            for arg in ("--set", f"{key}={value}")]
    result = subprocess.run([CLI, "run", *sets, "--", sys.executable, str(program)],
                            env=environ, cwd=folder, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def live_429(process: dict[str, Any]) -> int:
    counts = {(s, m): n for s, m, n in process["counts"]}
    assert set(counts) <= {("exch_429", "live")}
    return counts.get(("exch_429", "live"), 0)


def fleet_injections(folder: Path) -> float:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(fleet_registry(str(folder))).decode("utf-8")
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "mm_chaos_injections_total"
               and sample.labels == {"scenario": "exch_429", "mode": "live"})


def test_children_draw_their_own_streams_and_write_their_own_artifacts(
        exchange: LoopbackExchange, tmp_path: Path) -> None:
    first = run_bot(exchange, tmp_path / "first")
    second = run_bot(exchange, tmp_path / "second")
    children = ("fork", "spawn", "bare")

    # Reproducible: the same seed gives every process the same decisions in both runs.
    for name in ("parent", *children):
        assert first[name]["bits"] == second[name]["bits"], name
    parent = first["parent"]
    assert [first[name]["lineage"] for name in ("parent", *children)] == [
        "", "process-1", "process-2", "fork-2"]  # the fork context's child was the 1st fork
    # Nobody repeats the parent: not the forked child (which copies its streams at the fork),
    # not the spawned one (which resolves the same seed afresh), not the bare fork.
    assert first["fork"]["bits"] != parent["bits"][1]
    assert first["spawn"]["bits"] != parent["bits"][0]
    assert first["bare"]["bits"] != parent["bits"][2]
    assert len({first[name]["bits"] for name in children}) == 3
    for name in children:
        assert first[name]["exitcode"] == 0, name
        # Each process counted its own decisions only.
        assert live_429(first[name]) == first[name]["bits"].count("1"), name
    assert live_429(parent) == "".join(parent["bits"]).count("1")

    for run in (first, second):
        folder = tmp_path / ("first" if run is first else "second")
        processes = {name: run[name] for name in ("parent", *children)}
        # One artifact per process, named by its own run id (nobody wrote the parent's file),
        # and nothing from multiprocessing's resource tracker, which runs no bot code.
        artifacts = {}
        for path in (folder / "artifacts" / "runs").glob("*.json"):
            document = json.loads(path.read_text())
            artifacts[document["pid"]] = document
        assert sorted(artifacts) == sorted(p["pid"] for p in processes.values())
        for name, process in processes.items():
            document = artifacts[process["pid"]]
            assert document["run_id"] == process["run_id"], name
            assert (document["ended_by"], document["complete"]) == ("exit", True), name
            assert document["injections"]["by_scenario"] == (
                {"exch_429": {"live": live_429(process)}} if live_429(process) else {}), name
        total = sum(live_429(p) for p in processes.values())
        # The one JSON lines log holds every process's records, whole.
        with open(folder / "chaos.jsonl", encoding="utf-8") as log:
            records = [json.loads(line) for line in log]
        assert Counter((r["scenario"], r["mode"]) for r in records) == {
            ("exch_429", "live"): total}
        assert sum(a["jsonl"]["written"] for a in artifacts.values()) == total
        # Each record names its process, whose own seq runs 1..n.
        by_pid = Counter(r["pid"] for r in records)
        assert by_pid == {p["pid"]: live_429(p) for p in processes.values() if live_429(p)}
        for pid, n in by_pid.items():
            assert sorted(r["seq"] for r in records if r["pid"] == pid) == list(range(1, n + 1))
        # The exporter's fleet view sums every process, children included.
        assert fleet_injections(folder / "metrics") == total


def test_a_forked_child_continues_on_the_documented_stream(
        registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with the injector itself: the child's stream is exactly
    ``scenario_stream(seed, key, "fork-1")``; its counts, records and JSONL sink are its own."""
    log = tmp_path / "chaos.jsonl"
    monkeypatch.setenv("CHAOS_SHIMS_LOG_FILE", str(log))
    injector = activate(enabled=True, burst_on_sec=0, dry_run=False, exch_429=0.5, seed=5,
                        registry=registry)
    assert injector is not None and injector.sink is not None

    def draws(n: int) -> str:
        return "".join("1" if injector.should_fire("exch_429") else "0" for _ in range(n))

    before = draws(CALLS)
    sink = injector.sink
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and leaves at once
        try:
            os.close(read)
            child = {"bits": draws(CALLS), "lineage": injector.lineage,
                     "count": injector.count(), "seqs": [r.seq for r in injector.records()],
                     "written": injector.sink.written if injector.sink else -1,
                     "sink_is_new": injector.sink is not sink}
            os.write(write, json.dumps(child).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    after = draws(CALLS)

    expected = scenario_stream(5, "exch_429", "fork-1")
    assert child["bits"] == "".join("1" if expected.random() < 0.5 else "0"
                                    for _ in range(CALLS))
    assert child["bits"] != after  # the parent's continuation, which the child used to repeat
    root = scenario_stream(5, "exch_429")
    assert before + after == "".join("1" if root.random() < 0.5 else "0"
                                     for _ in range(2 * CALLS))  # the parent's own: unchanged
    assert child["lineage"] == "fork-1" and injector.lineage == "" and injector.forks == 1
    ones = child["bits"].count("1")
    assert (child["count"], child["written"], child["sink_is_new"]) == (ones, ones, True)
    assert child["seqs"] == list(range(1, ones + 1))
    assert injector.count() == (before + after).count("1")
    lines = log.read_text().splitlines()
    assert len(lines) == injector.count() + ones  # both processes' records, each line whole
    assert all(json.loads(line)["scenario"] == "exch_429" for line in lines)


def test_chaos_follows_multiprocessing_children_only_while_active(registry: Any) -> None:
    """The one stdlib wrap (``BaseProcess._bootstrap``) comes off with everything else, by
    identity, and goes back on with the next activation."""
    from multiprocessing import process

    def bootstrap() -> Any:
        return vars(process.BaseProcess)["_bootstrap"]

    original = bootstrap()
    for _ in range(2):
        activate(enabled=True, exch_429=0.1, registry=registry)
        wrapped = bootstrap()
        assert wrapped is not original and wrapped.__wrapped__ is original
        activate(enabled=True, exch_429=0.1, registry=registry)
        assert bootstrap() is wrapped  # never wrapped twice
        deactivate(unpatch=True)
        assert bootstrap() is original


def _in_forked_child(report: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``report`` in a forked child and return what it returned (through a pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and leaves at once
        try:
            os.close(read)
            os.write(write, json.dumps(report()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result: dict[str, Any] = json.loads(pipe.read())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    return result


def test_a_forked_child_keeps_following_the_duty_cycle(registry: Any) -> None:
    """Phase scenarios need the driver's thread, which a fork does not copy: the child must
    start its own, or a clock skew stays in whatever phase it was in at the fork."""
    injector = activate(enabled=True, dry_run=False, clock_skew_ms=60_000, seed=3,
                        burst_on_sec=0.3, burst_off_sec=0.3, registry=registry)
    assert injector is not None

    def offsets_seen() -> dict[str, Any]:
        seen = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen.add(round((time.time() - time.monotonic()) / 60) * 60)  # minutes of skew
            time.sleep(0.02)
        return {"distinct_offsets": len(seen)}

    assert _in_forked_child(offsets_seen)["distinct_offsets"] == 2  # ON and OFF phases


def test_a_forked_childs_discrepancy_counts_are_its_own(registry: Any) -> None:
    from chaos_shims.signals import count, ledger_for

    injector = activate(enabled=True, dry_run=False, reconcile_mismatch=0.5, seed=3,
                        burst_on_sec=0, registry=registry)
    assert injector is not None
    count(injector, "injected", "order_missing")
    count(injector, "detected", "order_missing")

    def child_counts() -> dict[str, Any]:
        injected, detected = ledger_for(injector).counts()
        return {"injected": injected, "detected": detected}

    assert _in_forked_child(child_counts) == {"injected": {}, "detected": {}}
    assert ledger_for(injector).counts()[0] == {"order_missing": 1}  # the parent's stay
