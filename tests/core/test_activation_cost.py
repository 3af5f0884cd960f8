"""What activation imports, before any target library is: only the armed scenarios' modules, and
none of what it does not need yet (the exporter and socket without a metrics setting, hashlib
without a canary rollout, what writing the run artifact needs before the run ends, dataclasses,
typing).
Structural, not timed: the time is benchmarks/bench_spine.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chaos_shims.activation import resolve
from chaos_shims.core import env, importhooks
from chaos_shims.core.config import key_table
from chaos_shims.core.registry import PhaseScenario
from chaos_shims.exporter import exporter_settings
from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.scenarios import CATALOG

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

#: A value that arms each scenario (the runs are dry-run: nothing is injected).
ARMING: dict[str, str] = {
    "net_loss": "0.1", "exch_429": "0.1", "exch_5xx": "0.1", "lat_spike_ms": "100",
    "ws_lag_ms": "100", "ws_disconnect": "0.1", "dns_flap": "0.1", "clock_skew_ms": "100",
    "mem_pressure": "low", "rate_limit_storm": "0.1", "reconcile_mismatch": "0.1",
}

#: Never imported by activation itself (modules the interpreter had already are not counted).
NOT_AT_ACTIVATION = (
    # what the targets bring: chaos_shims never imports them
    "wrapt", "prometheus_client", "yaml", "asyncio", "ccxt", "aiohttp", "websockets", "requests",
    # the exporter, only with a metrics setting; the metrics, once a target is patched
    "chaos_shims.exporter", "socket", "chaos_shims.core.metrics",
    # the canary hash, only with rollout_pct < 100; the JSON-lines log, only with a log file
    "hashlib", "_hashlib", "json",
    # what writing the run artifact needs, when the run ends
    "datetime", "pathlib", "shutil",
    # value classes and annotations
    "dataclasses", "inspect", "typing",
)

_PROGRAM = """
import json, sys
before = set(sys.modules)
import chaos_shims.auto
from chaos_shims.core import runtime
injector = runtime.active
print(json.dumps({"armed": None if injector is None else injector.scenario_keys,
                  "new": sorted(set(sys.modules) - before)}))
"""


def activation_imports(tmp_path: Path, **settings: str) -> dict[str, Any]:
    """``import chaos_shims.auto`` first thing in a fresh interpreter: what it armed, and the
    modules it imported."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_") and name != "PROMETHEUS_MULTIPROC_DIR"}
    environ.update(CHAOS_SHIMS_ENABLED="1", CHAOS_SHIMS_ARTIFACTS_DIR=str(tmp_path), **settings)
    result = subprocess.run([sys.executable, "-c", _PROGRAM], env=environ, capture_output=True,
                            text=True, timeout=30, check=True)
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def brought_by(*modules: str) -> set[str]:
    """The modules importing ``modules`` brings into a fresh interpreter."""
    program = (f"import json, sys; before = set(sys.modules); import {', '.join(modules)}; "
               "print(json.dumps(sorted(set(sys.modules) - before)))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=30, check=True)
    return set(json.loads(result.stdout))


def allowed_for(key: str) -> set[str]:
    """What activating scenario ``key`` may import beyond the rest of activation: a phase
    scenario's first ON phase starts at activation and its decision is counted in the metrics
    at once (prometheus_client); a patch point whose target every interpreter has imported
    (``time``, for clock_skew_ms) is patched at once (its integration, and wrapt)."""
    scenario = CATALOG[key]
    allowed: set[str] = set()
    if issubclass(scenario, PhaseScenario):
        allowed |= brought_by("chaos_shims.core.metrics", "prometheus_client")
    for name in scenario.patch_points:
        point = PATCH_POINTS[name]
        if any(module in sys.builtin_module_names for module in point.modules):
            allowed |= brought_by(point.integration_name)
    return allowed


@pytest.mark.parametrize("key", CATALOG.keys())
def test_activation_imports_only_what_the_armed_scenario_needs(key: str, tmp_path: Path) -> None:
    found = activation_imports(tmp_path, **{env.env_name(key): ARMING[key]})
    assert found["armed"] == [key]
    new = set(found["new"])
    scenario_modules = {name for name in new if name.startswith("chaos_shims.scenarios.")}
    assert scenario_modules == {f"chaos_shims.scenarios.{key}"}
    assert sorted((new - allowed_for(key)).intersection(NOT_AT_ACTIVATION)) == []


def test_every_scenario_has_an_arming_value() -> None:
    assert set(ARMING) == set(CATALOG.keys())


def test_a_canary_rollout_and_a_metrics_port_bring_what_they_need(tmp_path: Path) -> None:
    found = activation_imports(tmp_path, CHAOS_SHIMS_EXCH_429="0.1", CHAOS_SHIMS_ROLLOUT_PCT="50",
                               CHAOS_SHIMS_METRICS_PORT="0")
    assert found["armed"] == ["exch_429"]
    assert {"hashlib", "chaos_shims.exporter", "socket"} <= set(found["new"])


@pytest.mark.parametrize(("variable", "given"), [
    (env.METRICS_PORT, "abc"), (env.METRICS_ADDR, "not a host"), (env.METRICS_PREFIX, "9mm"),
    (env.MULTIPROC_DIR, "/nonexistent/chaos_shims/metrics"),
])
def test_a_bad_exporter_setting_alone_still_keeps_chaos_off(variable: str, given: str,
                                                            tmp_path: Path) -> None:
    found = activation_imports(tmp_path, CHAOS_SHIMS_EXCH_429="0.1", **{variable: given})
    assert found["armed"] is None


def test_activation_imports_the_exporter_whenever_it_has_something_to_read() -> None:
    """Activation skips the exporter when every variable of env.EXPORTER_SETTINGS is unset:
    those must be all the exporter reads."""
    read: list[str] = []

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.append(key)
            return super().get(key, default)

    exporter_settings(Recording())
    assert set(read) <= set(env.EXPORTER_SETTINGS)


# -- the config, resolved without importing every scenario ----------------------------------------

_RESOLVE = """
import json, sys
from chaos_shims.activation import resolve
config = resolve(environ=json.loads(sys.argv[1]))
imported = sorted(m for m in sys.modules if m.startswith("chaos_shims.scenarios."))
active = [scenario.key for scenario, _ in config.active_scenarios()]
values = dict(config.values)
print(json.dumps({"imported": imported, "active": active, "keys": list(values)}))
"""


@pytest.mark.parametrize(("environ", "imported", "active"), [
    ({}, [], []),
    ({"CHAOS_SHIMS_WS_LAG_MS": "5", "CHAOS_SHIMS_EXCH_429": "0"}, ["exch_429", "ws_lag_ms"],
     ["ws_lag_ms"]),
    ({"CHAOS_SHIMS_NET_LOSS_TIMEOUT_MS": "5"}, ["net_loss"], []),  # a parameter: its scenario's
])
def test_resolving_imports_the_scenarios_whose_keys_are_given(
        environ: Mapping[str, str], imported: list[str], active: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", _RESOLVE, json.dumps(environ)],
                            capture_output=True, text=True, timeout=30, check=True)
    found = json.loads(result.stdout)
    assert found["imported"] == [f"chaos_shims.scenarios.{key}" for key in imported]
    assert found["active"] == active
    # Reading the whole config then reads every default (and imports every scenario).
    assert found["keys"] == list(key_table(CATALOG))


def test_the_whole_config_reads_every_default_in_key_table_order() -> None:
    config = resolve(environ={"CHAOS_SHIMS_EXCH_5XX": "0.2"})
    table = key_table(CATALOG)
    assert list(config.values) == list(table) == list(config.sources)
    assert config["exch_5xx"] == 0.2
    assert {name: config[name] for name in table if name not in ("exch_5xx", "seed")} == {
        name: spec.default for name, spec in table.items() if name not in ("exch_5xx", "seed")}
    assert config.sources["exch_5xx"] == "CHAOS_SHIMS_EXCH_5XX"
    assert {config.sources[name] for name in table if name not in ("exch_5xx", "seed")} == {
        "default"}
    assert [s.key for s, _ in config.active_scenarios()] == ["exch_5xx"]
    same = resolve(environ={"CHAOS_SHIMS_EXCH_5XX": "0.2", "CHAOS_SHIMS_SEED": str(config.seed)})
    assert dict(same.values) == dict(config.values)


def test_an_unknown_key_still_names_the_known_ones() -> None:
    with pytest.raises(Exception, match="did you mean net_loss_timeout_ms") as raised:
        resolve({"net_loss_timeot_ms": 1})
    assert "rate_limit_storm_sec" in str(raised.value)


# -- post-import hooks fired by an import another hook makes ---------------------------------------

@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``<name>.outer`` imports ``<name>.inner`` halfway, before its own ``READY`` is set."""
    name = f"chaos_nested_{id(tmp_path)}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "inner.py").write_text("VALUE = 1\n")
    (tmp_path / name / "outer.py").write_text(f"import {name}.inner\nREADY = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_a_hook_fired_inside_another_runs_after_it(packages: str) -> None:
    """An integration importing wrapt (which imports asyncio, which imports socket) fires the
    socket hook halfway through: that hook must wait until wrapt is whole."""
    events: list[str] = []

    def on_inner(module: ModuleType) -> None:
        outer = sys.modules.get(f"{packages}.outer")
        events.append(f"inner hook, outer ready: {getattr(outer, 'READY', False)}")

    def on_trigger(module: ModuleType) -> None:
        __import__(f"{packages}.outer")  # as an integration imports wrapt
        events.append("trigger hook done")

    importhooks.when_imported(f"{packages}.inner", on_inner)
    importhooks.when_imported(packages, on_trigger)
    __import__(packages)
    assert events == ["trigger hook done", "inner hook, outer ready: True"]


def test_dns_flap_is_patched_when_socket_first_comes_with_wrapt(tmp_path: Path) -> None:
    """clock_skew_ms patches the (always imported) time module at activation: its integration
    imports wrapt, and wrapt imports socket, which dns_flap's patch point waits for."""
    program = ("import sys, chaos_shims.auto, socket\n"
               "from chaos_shims.integrations import PATCH_POINTS\n"
               "print(PATCH_POINTS['socket_dns'].is_patched())\n")
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CHAOS_SHIMS_")}
    environ.update(CHAOS_SHIMS_ENABLED="1", CHAOS_SHIMS_DNS_FLAP="0.1",
                   CHAOS_SHIMS_CLOCK_SKEW_MS="100", CHAOS_SHIMS_ARTIFACTS_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", program], env=environ, capture_output=True,
                            text=True, timeout=30, check=True)
    assert result.stdout.strip() == "True", result.stderr
    assert "hook" not in result.stderr, result.stderr
