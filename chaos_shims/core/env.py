"""The one table of environment variable names chaos_shims reads.

Config keys map to ``CHAOS_SHIMS_<KEY>``; the process settings below are read from the
environment only (they say where things go, not what chaos does).
"""

from __future__ import annotations

PREFIX = "CHAOS_SHIMS_"

#: Process settings read from the environment only, with what each is for.
PROCESS_SETTINGS: dict[str, str] = {
    "CHAOS_SHIMS_CONFIG": "path of a YAML file whose top-level `chaos:` mapping holds config keys",
    "CHAOS_SHIMS_LOG_FILE": "path of the JSON-lines log of every decision that fires",
    "CHAOS_SHIMS_METRICS_PREFIX": "prefix of the Prometheus metric names (default mm)",
    "CHAOS_SHIMS_METRICS_PORT": "port of a Prometheus exporter to start",
    "CHAOS_SHIMS_METRICS_ADDR": "address the exporter binds to (default 127.0.0.1)",
    "CHAOS_SHIMS_ARTIFACTS_DIR": "folder of run artifacts (default artifacts/chaos)",
}

#: Internal: the bootstrap folder `chaos-shims run` put on PYTHONPATH.
BOOTSTRAP_DIR = "CHAOS_SHIMS_BOOTSTRAP_DIR"

INTERNAL_NAMES = frozenset({BOOTSTRAP_DIR})

CONFIG_FILE = "CHAOS_SHIMS_CONFIG"
METRICS_PORT = "CHAOS_SHIMS_METRICS_PORT"
METRICS_ADDR = "CHAOS_SHIMS_METRICS_ADDR"
ARTIFACTS_DIR = "CHAOS_SHIMS_ARTIFACTS_DIR"
LOG_FILE = "CHAOS_SHIMS_LOG_FILE"
METRICS_PREFIX = "CHAOS_SHIMS_METRICS_PREFIX"
ENABLED = "CHAOS_SHIMS_ENABLED"
#: prometheus_client's own: its multiprocess mode's folder
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: What the exporter reads (chaos_shims.exporter.exporter_settings). With all of them unset or
#: empty it starts nothing, and activation does not import it.
EXPORTER_SETTINGS = (METRICS_PORT, METRICS_ADDR, METRICS_PREFIX, MULTIPROC_DIR)


def env_name(key: str) -> str:
    """The environment variable that sets config key ``key``."""
    return PREFIX + key.upper()


def key_of(name: str) -> str:
    """The config key an environment variable name stands for (no check that it exists)."""
    return name[len(PREFIX):].lower()
