"""prometheus-client's multiprocess mode with real worker processes (PROMETHEUS_MULTIPROC_DIR),
each injecting into real ccxt calls against the loopback exchange: one scrape of the fleet sums
every counter and histogram, and mm_partial_fail_rate is the fleet's failures over its calls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos_shims.core.metrics import FailureWindow
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.exporter import METRICS_PORT, MULTIPROC_DIR, fleet_registry, window_counts

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

pytest.importorskip("ccxt")

#: One worker of a fleet: chaos from the environment (as under `chaos-shims run`), REST calls of
#: its own, then it reports what it counted itself and waits for the test to say "exit".
WORKER = textwrap.dedent("""
    import json, sys
    import chaos_shims.auto
    import ccxt
    from chaos_shims import exporter
    from chaos_shims.activation import active_injector

    exporter.TAKEOVER_SEC = 0.2
    server = exporter.start_exporter()
    config, calls, gaps = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    client = ccxt.binance({**config, "enableRateLimit": False})
    client.load_markets()
    for _ in range(calls):
        for call in (lambda: client.fetch_ticker("BTC/USDT"), lambda: client.fetch_order_book("BTC/USDT")):
            try:
                call()
            except ccxt.BaseError:
                pass
    injector = active_injector()
    metrics = injector.metrics
    for gap in gaps:
        metrics.observe_ws_gap(gap)
    metrics.count_reconnect("websockets")
    exporter.publish_fleet_window()
    print(json.dumps({
        "serving": server is not None,
        "counts": [[s, m, n] for (s, m), n in injector.counts().items()],
        "window": [[op, ex, calls, failed] for (op, ex), (calls, failed)
                   in exporter.window_counts(metrics.failures).items()],
    }), flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fleet_env(folder: Path, **extra: str) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PYTHONPATH"}
    environ.update({
        MULTIPROC_DIR: str(folder),
        "CHAOS_SHIMS_ENABLED": "1", "CHAOS_SHIMS_DRY_RUN": "0", "CHAOS_SHIMS_BURST_ON_SEC": "0",
        "CHAOS_SHIMS_EXCH_429": "0.3", "CHAOS_SHIMS_INCLUDE_OPS": "fetch_ticker,fetch_order_book",
    }, **extra)
    return environ


class Worker:
    def __init__(self, folder: Path, exchange: LoopbackExchange, seed: int, calls: int,
                 gaps: list[float], **extra: str) -> None:
        config = {**exchange.ccxt_config()}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(config), str(calls), json.dumps(gaps)],
            env=fleet_env(folder, CHAOS_SHIMS_SEED=str(seed), **extra),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.report: dict[str, Any] = {}

    def wait_ready(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(self.finish())
        self.report = json.loads(line)
        return self.report

    def finish(self) -> str:
        """Say exit; the worker's stderr."""
        try:
            _out, err = self.process.communicate("exit\n", timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _out, err = self.process.communicate()
        return err

    def injections(self) -> dict[tuple[str, str], int]:
        return {(s, m): n for s, m, n in self.report["counts"]}

    def window(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {(op, ex): (calls, failed) for op, ex, calls, failed in self.report["window"]}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        if worker.process.poll() is None:
            worker.finish()
        for stream in (worker.process.stdin, worker.process.stdout, worker.process.stderr):
            if stream is not None:
                stream.close()


def scrape_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode("utf-8"))


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def fail_rates(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[tuple[str, str], float]:
    return {(dict(labels)["op"], dict(labels)["exchange"]): v
            for (name, labels), v in found.items() if name == "mm_partial_fail_rate"}


def expected_rates(workers: list[Worker]) -> dict[tuple[str, str], float]:
    summed: dict[tuple[str, str], list[int]] = {}
    for worker in workers:
        for key, (calls, failed) in worker.window().items():
            slot = summed.setdefault(key, [0, 0])
            slot[0] += calls
            slot[1] += failed
    return {key: failed / calls for key, (calls, failed) in summed.items() if calls}


def test_one_scrape_sums_the_fleet_and_another_worker_takes_over(
        tmp_path: Path, exchange: LoopbackExchange, fleet: list[Worker]) -> None:
    port = free_port()
    gaps = [[3.0, 40.0], [700.0], [3.0, 3.0, 20000.0]]
    fleet.extend(Worker(tmp_path, exchange, seed, 12, gaps[seed], **{METRICS_PORT: str(port)})
                 for seed in range(3))
    reports = [worker.wait_ready() for worker in fleet]
    assert sorted(r["serving"] for r in reports) == [False, False, True]

    found = parse(scrape_url(f"http://127.0.0.1:{port}/metrics"))
    live = sum(w.injections().get(("exch_429", "live"), 0) for w in fleet)
    assert 0 < live < 3 * 12 * 2  # some calls faulted, not all: the rate below means something
    assert found[("mm_chaos_injections_total",
                  frozenset({("scenario", "exch_429"), ("mode", "live")}))] == live
    assert found[("mm_reconnect_attempts_total", frozenset({("kind", "websockets")}))] == 3
    assert found[("mm_ws_gap_ms_count", frozenset())] == 6
    assert found[("mm_ws_gap_ms_sum", frozenset())] == sum(map(sum, gaps))
    assert found[("mm_ws_gap_ms_bucket", frozenset({("le", "5.0")}))] == 3
    assert found[("mm_ws_gap_ms_bucket", frozenset({("le", "+Inf")}))] == 6
    # the fleet's rate is its failures over its calls: not a sum or mean of worker ratios
    rates = fail_rates(found)
    assert rates == pytest.approx(expected_rates(fleet))
    assert rates[("fetch_ticker", "binance")] > 0 and rates[("load_markets", "binance")] == 0
    # nothing of the transport between workers is served as such
    assert not [name for name, _ in found if "window" in name]

    serving = next(w for w, r in zip(fleet, reports, strict=True) if r["serving"])
    serving.finish()
    assert serving.process.returncode == 0
    others = [w for w in fleet if w is not serving]
    deadline = time.monotonic() + 10
    while True:  # another worker binds the port within a few of its publishing ticks
        try:
            found = parse(scrape_url(f"http://127.0.0.1:{port}/metrics"))
            break
        except urllib.error.URLError:
            assert time.monotonic() < deadline, "no worker took the exporter over"
            time.sleep(0.1)
    # counters still count the worker that left; the live rate no longer does
    assert found[("mm_chaos_injections_total",
                  frozenset({("scenario", "exch_429"), ("mode", "live")}))] == live
    assert fail_rates(found) == pytest.approx(expected_rates(others))

    for worker in others:
        worker.finish()
        assert worker.process.returncode == 0
    final = parse(_generate(fleet_registry(str(tmp_path))))
    assert final[("mm_chaos_injections_total",
                  frozenset({("scenario", "exch_429"), ("mode", "live")}))] == live
    assert fail_rates(final) == {}


def _generate(registry: Any) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode("utf-8")


#: A forking server (gunicorn, uwsgi): the parent activates chaos and serves the fleet; its
#: children inject, publish and report; the test then stops the parent's exporter.
FORKING = textwrap.dedent("""
    import json, os, sys, time
    import chaos_shims.auto
    import ccxt
    from chaos_shims import exporter
    from chaos_shims.activation import active_injector

    exporter.TAKEOVER_SEC = 60  # the children must not take the port over during this test
    server = exporter.start_exporter()
    config = json.loads(sys.argv[1])
    children = []
    for child in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            client = ccxt.binance({**config, "enableRateLimit": False})
            client.load_markets()
            for _ in range(10):
                try:
                    client.fetch_ticker("BTC/USDT")
                except ccxt.BaseError:
                    pass
            exporter.publish_fleet_window()
            counts = active_injector().counts()
            os.write(write, (json.dumps(counts.get(("exch_429", "live"), 0)) + "\\n").encode())
            os.close(write)
            time.sleep(60)  # a worker at work, until the parent ends it
            os._exit(0)
        os.close(write)
        children.append((pid, os.fdopen(read)))
    live = [json.loads(pipe.readline()) for _, pipe in children]
    print(json.dumps({"port": server.server_port, "live": live}), flush=True)
    sys.stdin.readline()      # the test scraped: stop serving, the children still run
    exporter.stop_exporter()
    print("stopped", flush=True)
    sys.stdin.readline()
    for pid, pipe in children:
        pipe.close()
        os.kill(pid, 9)
        os.waitpid(pid, 0)
""")


def test_forked_workers_are_counted_and_never_hold_the_parents_port(
        tmp_path: Path, exchange: LoopbackExchange) -> None:
    environ = fleet_env(tmp_path, CHAOS_SHIMS_SEED="5", CHAOS_SHIMS_INCLUDE_OPS="fetch_ticker",
                        **{METRICS_PORT: "0"})
    with subprocess.Popen([sys.executable, "-c", FORKING, json.dumps(exchange.ccxt_config())],
                          env=environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as parent:
        assert parent.stdin is not None and parent.stdout is not None
        try:
            line = parent.stdout.readline()
            assert line, parent.communicate(timeout=10)[1]
            ready = json.loads(line)
            found = parse(scrape_url(f"http://127.0.0.1:{ready['port']}/metrics"))
            assert found[("mm_chaos_injections_total",
                          frozenset({("scenario", "exch_429"), ("mode", "live")}))] == sum(ready["live"])
            assert ("fetch_ticker", "binance") in fail_rates(found)

            parent.stdin.write("scraped\n")
            parent.stdin.flush()
            assert parent.stdout.readline().strip() == "stopped"
            # no child kept a copy of the listening socket: the port is free again (the
            # scrape's connection may linger in TIME_WAIT, which SO_REUSEADDR allows)
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", ready["port"]))
                probe.listen()
            parent.stdin.write("done\n")
            parent.stdin.flush()
            assert parent.wait(timeout=20) == 0, parent.communicate()[1]
        finally:
            if parent.poll() is None:
                parent.kill()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_published_counts_are_the_ones_the_rate_is_made_of() -> None:
    clock = Clock()
    window = FailureWindow(window_sec=60, buckets=12, clock=clock)
    for failed in (True, False, False, False):
        window.record("fetch_ticker", "binance", failed)
    window.record("fetch_balance", "binance", False)
    assert window_counts(window) == {("fetch_ticker", "binance"): (4, 1),
                                     ("fetch_balance", "binance"): (1, 0)}
    clock.now = 30.0
    window.record("fetch_ticker", "binance", True)
    clock.now = 65.0  # the first calls fell out of the window
    counts = window_counts(window)
    assert counts == {("fetch_ticker", "binance"): (1, 1), ("fetch_balance", "binance"): (0, 0)}
    assert {(op, exchange): rate for op, exchange, rate in window.rates()} == {
        key: failed / calls for key, (calls, failed) in counts.items() if calls}
