"""pytest plugin loaded (``-p transparency_probe``) into a target library's own test run, with
and without chaos_shims, by tests/reliability/test_transparency.py.

It changes nothing the target's tests see; it only writes a JSON report to the path in
``TRANSPARENCY_PROBE_REPORT``:

- ``outcomes``: node id -> passed / failed / error / skipped / xfailed / xpassed, as pytest
  itself reports them (setup, call and teardown folded into one word per test);
- ``chaos``: what chaos_shims did in this process. In a baseline run, the chaos_shims modules
  imported (none: nothing can have been patched). In a chaos run, the injector in force, which
  patch points have their target imported and patched, how many decisions each armed scenario
  made (its ``draw`` was asked), how many ``plan`` calls each surface had, what fired, and
  whether chaos turned itself off after an internal error;
- ``network``: connections and name lookups to anything but this machine, which the audit hook
  below refuses (the same in both runs, so the comparison stays fair), so a target test can
  never send traffic off the machine.

It imports nothing of chaos_shims at module level: loading the probe in a baseline run must not
be what brings chaos_shims into the process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

REPORT_ENV = "TRANSPARENCY_PROBE_REPORT"
CHAOS_PREFIX = "chaos_shims"

_outcomes: dict[str, str] = {}
_refused: list[str] = []
_decisions: Counter[str] = Counter()  # scenario -> draws made
_decisions_by_test: Counter[str] = Counter()  # node id -> draws made while it ran
_current_test: list[str] = [""]  # the node id running now (tests run one at a time)
_plans: Counter[str] = Counter()  # surface -> plan() calls
_counting_lock = threading.Lock()
_imported_at_configure: list[str] = []
_at_configure: dict[str, Any] = {}
_instrumented: dict[str, Any] = {}


# -- network: nothing but this machine ------------------------------------------------------

def _local_host(host: Any) -> bool:
    if host is None or host in ("", b"", "localhost", b"localhost"):
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.endswith(".localhost") or host == "localhost.":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _literal(host: Any) -> bool:
    """An IP literal: getaddrinfo only parses it, nothing is sent."""
    try:
        text = host.decode("ascii") if isinstance(host, bytes) else str(host)
        ipaddress.ip_address(text.split("%", 1)[0])
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" or event == "socket.sendto":
        address = args[1]
        if isinstance(address, tuple) and address and not _local_host(address[0]):
            _refused.append(f"{event} {address[0]}:{address[1] if len(address) > 1 else ''}")
            raise OSError(101, "Network is unreachable (transparency probe: loopback only)")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if not _local_host(host) and not _literal(host):
            _refused.append(f"{event} {host!r}")
            raise socket.gaierror(socket.EAI_NONAME,
                                  "Name or service not known (transparency probe: loopback only)")


sys.addaudithook(_audit)  # audit hooks cannot be removed: this process is a throwaway run


# -- outcomes ----------------------------------------------------------------------------------

_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "error": 3, "failed": 4}


def _word(report: pytest.TestReport) -> str:
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if report.when == "call" and hasattr(report, "wasxfail"):
        return "xpassed"
    return "passed"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    word = _word(report)
    previous = _outcomes.get(report.nodeid)
    if previous is None or _RANK[word] > _RANK[previous]:
        _outcomes[report.nodeid] = word


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # a module that fails to import, or skips itself whole (pytest.importorskip), has no tests
    if report.failed or report.skipped:
        _outcomes[f"{report.nodeid}::<collection>"] = "error" if report.failed else "skipped"


# -- chaos: what is in force -------------------------------------------------------------------

def _chaos_modules() -> list[str]:
    return sorted(name for name in sys.modules
                  if name == CHAOS_PREFIX or name.startswith(CHAOS_PREFIX + "."))


def _counting_draws(key: str, draw: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        with _counting_lock:
            _decisions[key] += 1
            _decisions_by_test[_current_test[0]] += 1
        return draw(*args, **kwargs)
    return counted


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _current_test[0] = item.nodeid
    try:
        return (yield)
    finally:
        _current_test[0] = ""


def _instrument_injector() -> None:
    """Count the decisions of the injector that activation (the bootstrap) put in force.

    The injector records only decisions that fire; a transparency run must show that the
    wrappers did decide, so each armed scenario's ``draw`` and each surface's ``plan`` is
    counted through an instance attribute (the injector and scenarios look them up per call).
    """
    from chaos_shims.core import runtime
    from chaos_shims.core.registry import DNS, RECONCILE, REST, WS_MESSAGE

    injector = runtime.active
    if injector is None:
        return
    _instrumented["injector"] = injector
    plan = injector.plan

    def counted_plan(surface: str, *args: Any, **kwargs: Any) -> Any:
        with _counting_lock:
            _plans[surface] += 1
        return plan(surface, *args, **kwargs)

    injector.plan = counted_plan  # type: ignore[method-assign]
    seen: set[int] = set()
    for surface in (REST, WS_MESSAGE, DNS, RECONCILE):
        for scenario in injector.armed(surface):
            if id(scenario) not in seen:
                seen.add(id(scenario))
                scenario.draw = _counting_draws(scenario.key, scenario.draw)  # type: ignore[method-assign]


def _chaos_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "modules_at_configure": _imported_at_configure,
        "at_configure": _at_configure,
        "modules_at_finish": _chaos_modules(),
    }
    if CHAOS_PREFIX + ".core.runtime" not in sys.modules:
        state["active"] = False
        return state
    from chaos_shims.core import runtime
    from chaos_shims.integrations import PATCH_POINTS

    injector = runtime.active
    configured = _instrumented.get("injector")
    state["active"] = injector is not None
    state["same_injector_throughout"] = configured is not None and injector is configured
    watched = configured or injector
    points: dict[str, Any] = {}
    for name, point in PATCH_POINTS.items():
        imported = [module for module in point.modules if module in sys.modules]
        points[name] = {
            "enabled": name in runtime.enabled_points(),
            "targets_imported": imported,
            "patched": point.is_patched(),
        }
    state["patch_points"] = points
    if watched is not None:
        config = watched.config
        state.update(
            mode=watched.mode,
            live=watched.live,
            seed=config.seed,
            schedule=watched.schedule.describe(),
            armed={scenario.key: value for scenario, value in config.active_scenarios()},
            disabled_reason=watched.disabled_reason,
            fired=[[scenario, mode, count] for (scenario, mode), count in watched.counts().items()],
            decisions=dict(_decisions),
            decisions_by_test=dict(_decisions_by_test),
            plans=dict(_plans),
        )
    if "chaos_shims.integrations.wall_clock" in sys.modules:
        from chaos_shims.integrations import wall_clock

        state["clock_skew_ms_at_finish"] = wall_clock.current_skew_ms()
        state["clock_offset_s_at_finish"] = wall_clock._offset_s
    return state


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _imported_at_configure.extend(_chaos_modules())
    if CHAOS_PREFIX + ".core.runtime" in sys.modules:
        _instrument_injector()
    wall_clock = sys.modules.get(CHAOS_PREFIX + ".integrations.wall_clock")
    if wall_clock is not None:
        _at_configure["clock_skew_ms"] = wall_clock.current_skew_ms()
        _at_configure["clock_offset_s"] = wall_clock._offset_s


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    report = {
        "exitstatus": int(exitstatus),
        "outcomes": _outcomes,
        "chaos": _chaos_state(),
        "network_refused": _refused,
        "python": sys.executable,
        "target_files": _target_files(),
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)


def _target_files() -> dict[str, str]:
    """Where the libraries under test were imported from (the installed ones, not the sdist's)."""
    found: dict[str, str] = {}
    for name in ("aiohttp", "ccxt", "websockets"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__file__", ""))
    return found
