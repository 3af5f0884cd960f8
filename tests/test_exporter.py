"""The Prometheus exporter, scraped over real HTTP on loopback: every metric of the table under
its prefix, the bind address, bad values naming their variable, a port already in use."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims import activation
from chaos_shims.activation import activate
from chaos_shims.core import env
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.metrics import METRICS
from chaos_shims.exporter import (
    METRICS_ADDR,
    METRICS_PORT,
    MULTIPROC_DIR,
    ExporterServer,
    exporter_server,
    exporter_settings,
    start_exporter,
    stop_exporter,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")

SYMBOL = "BTC/USDT"
TICKER = "/api/v3/ticker/24hr"
ANY_PORT = {METRICS_PORT: "0"}


@pytest.fixture(autouse=True)
def _exporter_stopped() -> Iterator[None]:
    yield
    stop_exporter()


def scrape(server: ExporterServer, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{server.server_port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return str(reply.read().decode("utf-8"))


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def live_429(registry: Any = None, **keys: Any) -> Any:
    injector = activate(None, registry=registry, enabled=True, dry_run=False, burst_on_sec=0,
                        exch_429=1.0, seed=1, **keys)
    assert injector is not None
    return injector


def fails_with_429(binance: Any) -> bool:
    try:
        binance.fetch_ticker(SYMBOL)
    except ccxt.DDoSProtection:
        return True
    return False


@pytest.mark.parametrize("prefix", [None, "bot"])
def test_every_metric_of_the_table_is_served_under_the_prefix(
        binance: Any, registry: Any, monkeypatch: pytest.MonkeyPatch, prefix: str | None) -> None:
    if prefix is None:
        monkeypatch.delenv(env.METRICS_PREFIX, raising=False)
    else:
        monkeypatch.setenv(env.METRICS_PREFIX, prefix)
    name = f"{prefix or 'mm'}_"
    injector = live_429(registry)
    for _ in range(3):
        assert fails_with_429(binance)
    metrics = injector.metrics
    metrics.count_reconnect("websockets")
    metrics.observe_ws_gap(42.0)
    metrics.count_discrepancy("order_dropped", "injected")
    injector.roll_back("deadline_miss", "a test")

    server = start_exporter(ANY_PORT, registry=registry)
    assert server is not None
    text = scrape(server)

    for spec in METRICS.values():
        assert f"# TYPE {name}{spec.suffix} {spec.type}\n" in text, spec.suffix
    assert value(text, f"{name}chaos_injections_total", scenario="exch_429", mode="live") == 3
    assert value(text, f"{name}partial_fail_rate", op="fetch_ticker", exchange="binance") == 1.0
    assert value(text, f"{name}chaos_rollbacks_total", reason="deadline_miss") == 1
    assert value(text, f"{name}reconnect_attempts_total", kind="websockets") == 1
    assert value(text, f"{name}ws_gap_ms_bucket", le="50.0") == 1
    assert value(text, f"{name}ws_gap_ms_count") == 1
    assert value(text, f"{name}reconcile_discrepancies_total", type="order_dropped",
                 source="injected") == 1


def test_without_a_registry_it_serves_the_default_one(binance: Any) -> None:
    import prometheus_client

    injector = live_429()
    assert injector.metrics.registry is prometheus_client.REGISTRY
    assert fails_with_429(binance)
    server = start_exporter(ANY_PORT)
    assert server is not None
    # cumulative over the session: the default registry is shared by every test
    assert (value(scrape(server), "mm_chaos_injections_total", scenario="exch_429", mode="live")
            or 0) >= 1


def test_it_binds_to_loopback_unless_metrics_addr_says_otherwise(registry: Any) -> None:
    server = start_exporter(ANY_PORT, registry=registry)
    assert server is not None
    assert server.server_address[0] == "127.0.0.1"
    assert exporter_settings({}).addr == "127.0.0.1"
    stop_exporter()

    # another loopback address shows the variable is honoured without leaving the machine
    server = start_exporter({**ANY_PORT, METRICS_ADDR: "127.0.0.2"}, registry=registry)
    assert server is not None
    assert server.server_address[0] == "127.0.0.2"
    scrape(server, host="127.0.0.2")
    with pytest.raises(urllib.error.URLError):
        scrape(server, host="127.0.0.1")


def test_a_host_name_and_an_ipv6_address_are_bound_where_they_resolve(registry: Any) -> None:
    server = start_exporter({**ANY_PORT, METRICS_ADDR: "localhost"}, registry=registry)
    assert server is not None
    assert server.server_address[0] in ("127.0.0.1", "::1")
    stop_exporter()
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    server = start_exporter({**ANY_PORT, METRICS_ADDR: "[::1]"}, registry=registry)
    assert server is not None
    assert server.server_address[0] == "::1"
    scrape(server, host="[::1]")


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_a_second_start_returns_the_running_server(registry: Any) -> None:
    server = start_exporter(ANY_PORT, registry=registry)
    assert server is not None
    assert start_exporter(ANY_PORT, registry=registry) is server
    assert exporter_server() is server


@pytest.mark.parametrize("environ", [{}, {METRICS_PORT: ""}, {METRICS_PORT: "  "}])
def test_no_port_no_exporter(environ: dict[str, str]) -> None:
    assert start_exporter(environ) is None
    assert exporter_server() is None


@pytest.mark.parametrize(("variable", "given"), [
    (METRICS_PORT, "abc"),
    (METRICS_PORT, "-1"),
    (METRICS_PORT, "65536"),
    (METRICS_PORT, "9464.0"),
    (METRICS_PORT, "127.0.0.1:9464"),
    (METRICS_ADDR, "127.0.0.1:9464"),
    (METRICS_ADDR, "http://127.0.0.1"),
    (METRICS_ADDR, "not a host"),
    (METRICS_ADDR, "999.1.1.1"),
    (env.METRICS_PREFIX, "my-bot"),
    (env.METRICS_PREFIX, "9mm"),
    (MULTIPROC_DIR, "/nonexistent/chaos_shims/metrics"),
])
def test_a_bad_value_is_an_error_naming_the_variable(variable: str, given: str) -> None:
    with pytest.raises(ChaosConfigError) as raised:
        start_exporter({METRICS_PORT: "0", variable: given})
    message = str(raised.value)
    assert variable in message and repr(given) in message and "allowed" in message
    assert raised.value.key == variable
    assert exporter_server() is None


def test_the_variables_are_listed_with_the_process_settings() -> None:
    assert {METRICS_PORT, METRICS_ADDR} <= set(env.PROCESS_SETTINGS)


def test_a_port_in_use_is_logged_and_chaos_keeps_running(
        binance: Any, registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    injector = live_429(registry)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="chaos_shims"):
            assert start_exporter({METRICS_PORT: str(port)}, registry=registry) is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(port) in errors[0] and METRICS_PORT in errors[0]
    assert "chaos keeps running" in errors[0]
    assert activation.active_injector() is injector
    assert fails_with_429(binance)


# -- under automatic activation (activation.py calls start_exporter) --------------------------

def _wired() -> bool:
    return "start_exporter" in inspect.getsource(activation)


AUTO_HOST = textwrap.dedent("""
    import chaos_shims.auto
    from chaos_shims.activation import active_injector
    from chaos_shims.exporter import exporter_server
    server = exporter_server()
    print("host alive", active_injector() is not None, server and server.server_address[0])
""")


def _auto_host(**extra: str) -> subprocess.CompletedProcess[str]:
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != MULTIPROC_DIR}
    environ.update({env.ENABLED: "1", "CHAOS_SHIMS_EXCH_429": "0.1"}, **extra)
    return subprocess.run([sys.executable, "-c", AUTO_HOST], env=environ, capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.skipif(not _wired(), reason="activation.py does not call start_exporter yet")
def test_automatic_activation_starts_the_exporter_on_loopback() -> None:
    done = _auto_host(**{METRICS_PORT: "0"})
    assert done.returncode == 0, done.stderr
    assert "host alive True 127.0.0.1" in done.stdout


@pytest.mark.skipif(not _wired(), reason="activation.py does not call start_exporter yet")
def test_a_bad_port_under_automatic_activation_never_stops_the_host() -> None:
    done = _auto_host(**{METRICS_PORT: "nine"})
    assert done.returncode == 0, done.stderr
    assert "host alive" in done.stdout
    assert METRICS_PORT in done.stderr and "'nine'" in done.stderr


def test_a_multiprocess_folder_set_too_late_is_said_and_the_fleet_is_still_served(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    # this test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: its
    # metrics live in memory, so it cannot publish to the folder, only serve what is there
    with caplog.at_level(logging.WARNING, logger="chaos_shims"):
        server = start_exporter({**ANY_PORT, MULTIPROC_DIR: str(tmp_path)})
    assert server is not None
    assert any(MULTIPROC_DIR in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert "mm_chaos_injections_total" not in scrape(server)  # an empty folder: an empty fleet
