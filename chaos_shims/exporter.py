"""The Prometheus exporter, and chaos_shims' metrics in prometheus-client's multiprocess mode.

``CHAOS_SHIMS_METRICS_PORT`` starts an HTTP exporter bound to 127.0.0.1 unless
``CHAOS_SHIMS_METRICS_ADDR`` says otherwise. A value that is not a port or an address is a
``ChaosConfigError`` naming the variable; a port that cannot be bound (in use, no such address)
is logged at ERROR and chaos keeps running without the exporter.

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported, as for
gunicorn or uwsgi workers): prometheus_client writes every counter and histogram of every process
to files in that folder and its ``MultiProcessCollector`` sums them, so the injection, rollback,
reconnect and discrepancy counters and the websocket gap histogram are fleet totals with nothing
more to do. ``mm_partial_fail_rate`` is different: each process computes it at scrape time from its
own sliding window, which the process that serves the fleet cannot see, and a ratio cannot be
summed or averaged (a worker at 1 failure in 1 call and one at 0 in 99 are a fleet at 1 in 100,
not 50 %). So each worker publishes the two counts of its window, calls and failures per op and
exchange, to ``livesum`` gauges once a second, and the fleet exporter serves
``mm_partial_fail_rate`` as the sum of failures over the sum of calls: the same name, labels and
meaning as for one process, for the whole fleet. Like every ``live*`` gauge, a worker that dies
without exiting cleanly keeps its last counts until the server calls
``prometheus_client.multiprocess.mark_process_dead(pid)`` (gunicorn: in ``child_exit``).

Every process of a fleet may be given the same port: the first to bind it serves the fleet's
metrics, the others publish and try again every few seconds, so the fleet keeps an exporter when
the serving worker is recycled.
"""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from chaos_shims.core import env, runtime
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.metrics import DEFAULT_PREFIX, METRICS, ChaosMetrics, FailureWindow

logger = logging.getLogger("chaos_shims")

#: The environment variables the exporter reads (listed with the other process settings in
#: core/env.py); PROMETHEUS_MULTIPROC_DIR is prometheus_client's own.
METRICS_PORT = env.METRICS_PORT
METRICS_ADDR = env.METRICS_ADDR
MULTIPROC_DIR = env.MULTIPROC_DIR
DEFAULT_ADDR = "127.0.0.1"

#: How often a worker writes its failure window for the fleet (the window moves in 5 s steps).
PUBLISH_SEC = 1.0
#: How often a worker whose port was taken tries to become the fleet's exporter.
TAKEOVER_SEC = 5.0

_FAIL_RATE = METRICS["partial_fail_rate"]
#: The per-worker window counts behind the fleet's mm_partial_fail_rate: a transport between
#: processes, never served as such (the fleet exporter turns them into the rate).
FAIL_WINDOW_SUFFIX = f"{_FAIL_RATE.suffix}_window"
_CALLS = "calls"
_FAILED = "failed"

# Patterns as strings: re compiles (and caches) them only when a value is given.
_PREFIX_SHAPE = r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?\Z"


@dataclass(frozen=True)
class ExporterSettings:
    """What the environment asks of the exporter, checked."""

    #: None: no exporter; 0: any free port (the server says which)
    port: int | None
    addr: str
    #: prometheus_client's multiprocess folder, or None in single-process mode
    multiprocess_dir: str | None
    prefix: str


def exporter_settings(environ: Mapping[str, str] | None = None) -> ExporterSettings:
    """The exporter settings of ``environ`` (default ``os.environ``); ``ChaosConfigError`` on a
    value that cannot be right, naming the variable."""
    environ = os.environ if environ is None else environ
    return ExporterSettings(
        port=_port(environ.get(METRICS_PORT, "")),
        addr=_addr(environ.get(METRICS_ADDR, "")),
        multiprocess_dir=_multiprocess_dir(environ.get(MULTIPROC_DIR, "")),
        prefix=_prefix(environ.get(env.METRICS_PREFIX, "")),
    )


def _port(raw: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    # isdecimal, not isdigit: "²" is a digit that int() does not read.
    try:
        port = int(text) if text.isdecimal() else -1
    except ValueError:  # more digits than int() reads
        port = -1
    if not 0 <= port <= 65535:
        raise ChaosConfigError(METRICS_PORT, raw, "a TCP port number from 1 to 65535 (0: any free port)",
                               source="environment")
    return port


def _addr(raw: str) -> str:
    text = raw.strip()
    if not text:
        return DEFAULT_ADDR
    import ipaddress  # only when an address is given

    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        pass
    if re.match(_HOST_NAME, text) and not text.replace(".", "").isdigit():
        return text
    raise ChaosConfigError(METRICS_ADDR, raw,
                           f"an IP address or host name to bind to, without a port (default "
                           f"{DEFAULT_ADDR}; the port goes in {METRICS_PORT})", source="environment")


def _multiprocess_dir(raw: str) -> str | None:
    if not raw:
        return None
    if not os.path.isdir(raw):
        raise ChaosConfigError(MULTIPROC_DIR, raw,
                               "an existing folder that every process of the fleet can write to",
                               source="environment")
    return raw


def _prefix(raw: str) -> str:
    text = raw.strip()
    if not text:
        return DEFAULT_PREFIX
    if not re.match(_PREFIX_SHAPE, text):
        raise ChaosConfigError(env.METRICS_PREFIX, raw,
                               "a Prometheus metric name prefix: letters, digits, _ and :, "
                               "not starting with a digit", source="environment")
    return text


# -- the fleet: one worker's window out, the fleet's rate in -----------------------------------

def window_counts(window: FailureWindow) -> dict[tuple[str, str], tuple[int, int]]:
    """(calls, failed) per (op, exchange) over the window, as ``FailureWindow.rates()`` uses."""
    return {(op, exchange): (calls, failed) for op, exchange, calls, failed in window.counts()}


class WindowPublisher:
    """Writes this process's failure window to ``livesum`` gauges in the multiprocess folder,
    every ``PUBLISH_SEC`` on a daemon thread, and zeroes them when it stops (a worker that
    exits leaves the live fleet)."""

    def __init__(self, on_tick: Callable[[], None] | None = None) -> None:
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: held while writing to the folder (and across a fork: see _Exporter.before_fork)
        self.writing = threading.Lock()
        self._gauges: dict[str, Any] = {}
        #: (prefix, op, exchange) written by the last publish
        self._published: set[tuple[str, str, str]] = set()
        self._metrics: ChaosMetrics | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chaos_shims-fleet-window",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self.zero()

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_SEC):
            try:
                self.publish()
                if self._on_tick is not None:
                    self._on_tick()
            except Exception:  # never the host's problem: the fleet just loses this gauge
                logger.exception("chaos_shims: cannot publish the failure window for the fleet")
                return

    def publish(self) -> None:
        """Write the window of the metrics chaos is counting into now (or counted into last)."""
        injector = runtime.active
        if injector is not None and injector.metrics is not None:
            self._metrics = injector.metrics
        metrics = self._metrics
        if metrics is None:
            return
        counts = window_counts(metrics.failures)
        with self.writing:
            gauge = self._gauge(metrics.prefix)
            written = {(metrics.prefix, op, exchange) for op, exchange in counts}
            for prefix, op, exchange in self._published - written:
                self._write(self._gauge(prefix), op, exchange, 0, 0)
            for (op, exchange), (calls, failed) in counts.items():
                self._write(gauge, op, exchange, calls, failed)
            self._published = written

    def zero(self) -> None:
        with self.writing:
            for prefix, op, exchange in self._published:
                self._write(self._gauge(prefix), op, exchange, 0, 0)
            self._published = set()

    @staticmethod
    def _write(gauge: Any, op: str, exchange: str, calls: int, failed: int) -> None:
        gauge.labels(op=op, exchange=exchange, count=_CALLS).set(calls)
        gauge.labels(op=op, exchange=exchange, count=_FAILED).set(failed)

    def _gauge(self, prefix: str) -> Any:
        gauge = self._gauges.get(prefix)
        if gauge is None:
            from prometheus_client import Gauge

            # In no registry: the worker serves its own rate; only the files carry these.
            gauge = self._gauges[prefix] = Gauge(
                f"{prefix}_{FAIL_WINDOW_SUFFIX}",
                f"calls and failures in one worker's {_FAIL_RATE.suffix} window; chaos_shims' "
                f"fleet exporter serves their ratio as {prefix}_{_FAIL_RATE.suffix}",
                ("op", "exchange", "count"), registry=None, multiprocess_mode="livesum")
        return gauge


class FleetCollector:
    """Every process's metrics from the multiprocess folder, with ``mm_partial_fail_rate`` of
    the whole fleet (failures over calls, summed over the live workers' windows)."""

    def __init__(self, path: str | None = None) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._files = MultiProcessCollector(None, path)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        # prefix -> (op, exchange) -> [calls, failed], summed over the workers by livesum
        windows: dict[str, dict[tuple[str, str], list[float]]] = {}
        for metric in self._files.collect():
            if metric.type != "gauge" or not metric.name.endswith("_" + FAIL_WINDOW_SUFFIX):
                yield metric
                continue
            prefix = metric.name[: -len(FAIL_WINDOW_SUFFIX) - 1]
            counts = windows.setdefault(prefix, {})
            for sample in metric.samples:
                key = (sample.labels.get("op", ""), sample.labels.get("exchange", ""))
                slot = counts.setdefault(key, [0.0, 0.0])
                slot[0 if sample.labels.get("count") == _CALLS else 1] += sample.value
        for prefix, counts in windows.items():
            family = GaugeMetricFamily(f"{prefix}_{_FAIL_RATE.suffix}",
                                       f"{_FAIL_RATE.help} Whole fleet: every live worker.",
                                       labels=list(_FAIL_RATE.labels))
            for (op, exchange), (calls, failed) in sorted(counts.items()):
                if calls > 0:
                    family.add_metric([op, exchange], failed / calls)
            yield family


def fleet_registry(path: str | None = None) -> Any:
    """A registry of the whole fleet's metrics (the multiprocess folder, default
    ``PROMETHEUS_MULTIPROC_DIR``): serve it from any one process."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(FleetCollector(path))
    return registry


def multiprocess_values() -> bool:
    """Whether prometheus_client writes this process's metrics to the multiprocess folder
    (decided once, when it is first imported)."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


# -- the HTTP server -----------------------------------------------------------------------

#: The exporter's HTTP server: a threading WSGI server (``server_address``, ``server_port``).
ExporterServer = Any


@functools.cache
def _server_classes() -> tuple[type, type, type]:
    """(IPv4 server, IPv6 server, request handler), built on first use: the HTTP server
    modules cost more to import than the rest of chaos_shims' activation."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """A scrape every few seconds is not worth a line on the host's stderr."""

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a slow scraper never holds up the host's exit

    class Server6(Server):
        address_family = socket.AF_INET6

    return Server, Server6, QuietHandler


def _is_ipv6(addr: str, port: int) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(addr).version == 6
    except ValueError:  # a host name: bind where it resolves first, as prometheus_client does
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        return bool(family == socket.AF_INET6)


def _bind(addr: str, port: int, registry: Any) -> tuple[ExporterServer, threading.Thread]:
    from prometheus_client import make_wsgi_app

    server4, server6, handler = _server_classes()
    # A server that cannot bind closes its socket before it raises: nothing to clean up here.
    server = (server6 if _is_ipv6(addr, port) else server4)((addr, port), handler)
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="chaos_shims-exporter", daemon=True)
    thread.start()
    return server, thread


class _Exporter:
    """The process's one exporter: its server, and in multiprocess mode its window publisher
    and the address it waits to take over."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.server: ExporterServer | None = None
        self.thread: threading.Thread | None = None
        self.publisher: WindowPublisher | None = None
        #: what the server serves
        self.registry: Any = None
        #: (addr, port, registry) another worker holds; tried again every TAKEOVER_SEC
        self.wanted: tuple[str, int, Any] | None = None
        self.next_takeover = 0.0
        self._held_for_fork: WindowPublisher | None = None

    def start(self, settings: ExporterSettings, registry: Any) -> ExporterServer | None:
        with self.lock:
            if settings.multiprocess_dir is not None:
                self._start_publisher()
            if settings.port is None:
                return None
            if self.server is not None:
                return self.server
            if registry is None:
                if settings.multiprocess_dir is not None:
                    registry = fleet_registry(settings.multiprocess_dir)
                else:
                    import prometheus_client

                    registry = prometheus_client.REGISTRY
            try:
                self._serve(settings.addr, settings.port, registry)
            except OSError as exc:
                if settings.multiprocess_dir is not None and exc.errno == errno.EADDRINUSE:
                    self.wanted = (settings.addr, settings.port, registry)
                    self.next_takeover = time.monotonic() + TAKEOVER_SEC
                    logger.info("chaos_shims: %s:%d is in use, presumably by the worker serving "
                                "the fleet's metrics; this one takes over if it goes away",
                                settings.addr, settings.port)
                else:
                    logger.error("chaos_shims: cannot start the Prometheus exporter on %s:%d "
                                 "(%s=%s, %s=%s): %s; chaos keeps running without it",
                                 settings.addr, settings.port, METRICS_ADDR, settings.addr,
                                 METRICS_PORT, settings.port, exc.strerror or exc)
                return None
            return self.server

    def _serve(self, addr: str, port: int, registry: Any) -> None:
        self.server, self.thread = _bind(addr, port, registry)
        self.registry = registry
        host, bound_port = str(self.server.server_address[0]), self.server.server_address[1]
        logger.info("chaos_shims: Prometheus metrics on http://%s:%d/metrics%s",
                    f"[{host}]" if ":" in host else host, bound_port,
                    " (the whole fleet)" if self.publisher is not None else "")

    def _start_publisher(self) -> None:
        if self.publisher is not None:
            return
        if not multiprocess_values():
            logger.warning("chaos_shims: %s is set but prometheus_client was imported before it "
                           "was: this process's metrics stay out of the fleet's", MULTIPROC_DIR)
            return
        self.publisher = WindowPublisher(on_tick=self.take_over)
        self.publisher.start()

    def take_over(self) -> None:
        """Serve the fleet's metrics if the worker that served them has gone."""
        with self.lock:
            if self.server is not None or self.wanted is None:
                return
            now = time.monotonic()
            if now < self.next_takeover:
                return
            self.next_takeover = now + TAKEOVER_SEC
            addr, port, registry = self.wanted
            try:
                self._serve(addr, port, registry)
            except OSError:
                return
            self.wanted = None

    def stop(self) -> None:
        with self.lock:
            server, thread, publisher = self.server, self.thread, self.publisher
            self.server = self.thread = self.publisher = None
            self.wanted = None
        if publisher is not None:
            publisher.stop()
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def before_fork(self) -> None:
        # prometheus_client's multiprocess values share one lock that nothing re-creates after
        # a fork: a child forked while our thread writes would deadlock on its first metric.
        publisher = self.publisher
        if publisher is not None and publisher.writing.acquire(timeout=1.0):
            self._held_for_fork = publisher

    def after_fork_in_parent(self) -> None:
        publisher, self._held_for_fork = self._held_for_fork, None
        if publisher is not None:
            publisher.writing.release()

    def after_fork_in_child(self) -> None:
        self._held_for_fork = None  # the child's copy of that publisher is dropped below
        # The parent keeps serving; this copy of its listening socket must not hold the port
        # after the parent exits. Threads do not survive fork: start our own publisher.
        self.lock = threading.RLock()  # another thread may have held it at the fork
        server, self.server, self.thread = self.server, None, None
        publisher, self.publisher = self.publisher, None
        if server is not None:
            server.socket.close()
            if publisher is None:
                logger.warning("chaos_shims: a forked worker's chaos metrics are not exported "
                               "(only its parent's are): set %s for a fleet", MULTIPROC_DIR)
            else:
                host, port = server.server_address[:2]
                self.wanted = (str(host), int(port), self.registry)
                self.next_takeover = time.monotonic() + TAKEOVER_SEC
        if publisher is not None:
            self._start_publisher()


_exporter = _Exporter()
os.register_at_fork(before=_exporter.before_fork, after_in_parent=_exporter.after_fork_in_parent,
                    after_in_child=_exporter.after_fork_in_child)


@atexit.register
def _leave_the_fleet() -> None:
    publisher = _exporter.publisher
    if publisher is not None:
        publisher.stop()


def start_exporter(environ: Mapping[str, str] | None = None, *,
                   registry: Any = None) -> ExporterServer | None:
    """Start what the environment asks for (default ``os.environ``) and return the server.

    - ``CHAOS_SHIMS_METRICS_PORT``: serve ``registry`` (default: prometheus_client's default
      registry; in multiprocess mode the whole fleet's) on ``CHAOS_SHIMS_METRICS_ADDR``
      (default 127.0.0.1). None when the port is unset or cannot be bound (logged at ERROR).
    - ``PROMETHEUS_MULTIPROC_DIR``: publish this process's failure window for the fleet.

    Raises ``ChaosConfigError`` naming the variable whose value cannot be right. Calling it
    again returns the server already running.
    """
    return _exporter.start(exporter_settings(environ), registry)


def exporter_server() -> ExporterServer | None:
    """The server this process runs now (it may have taken over from another worker)."""
    return _exporter.server


def publish_fleet_window() -> None:
    """Publish this process's failure window now rather than within the next second."""
    publisher = _exporter.publisher
    if publisher is not None:
        publisher.publish()


def stop_exporter() -> None:
    """Stop the server and the publisher (the published window is zeroed)."""
    _exporter.stop()
