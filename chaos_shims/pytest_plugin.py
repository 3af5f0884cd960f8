"""pytest plugin: ``@pytest.mark.chaos(...)``, ``pytest --chaos KEY=VALUE``, the ``chaos`` fixture.

Loaded by the ``pytest11`` entry point. A test is *under chaos* when it (or its class or module)
carries ``@pytest.mark.chaos(**keys)``, or when ``--chaos`` / the ini option ``chaos`` give
values and the test has no ``no_chaos`` marker. Chaos is activated before the test's
function-scoped fixtures are set up and undone after their teardown, pass or fail; whatever
chaos was in force before the test (``chaos-shims run pytest``, ``import chaos_shims.auto``) is
put back afterwards.

A test's config, lowest precedence first::

    defaults < YAML < environment < TEST_DEFAULTS < ini ``chaos`` < ``--chaos`` < marker

``TEST_DEFAULTS`` (enabled, live, always ON) make the fault happen *in this test*, whatever the
environment's shadow-mode and duty-cycle defaults; they give way to the ini lines, the command
line and the marker. The ini lines give way to the environment key by key (marker > CLI > env >
ini, as time-machine and pytest-socket do).

The core is imported only when a run or a test needs it: an installed plugin costs a pytest run
with no chaos nothing but this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chaos_shims.core.config import ChaosConfig
    from chaos_shims.core.injector import ChaosInjector
    from chaos_shims.core.records import InjectionRecord

__all__ = ["TEST_DEFAULTS", "ChaosOptions", "ChaosSession", "RuntimeSnapshot"]

CHAOS = "chaos"
NO_CHAOS = "no_chaos"

#: What a test under chaos gets unless the ini lines, ``--chaos`` or the marker say otherwise.
TEST_DEFAULTS: Mapping[str, Any] = {"enabled": True, "dry_run": False, "burst_on_sec": 0}

# Source names: they appear in ChaosConfig.sources and in every ChaosConfigError message.
DEFAULTS_SOURCE = "pytest (a test under chaos is live and always ON)"
INI_SOURCE = "ini option chaos"
CLI_SOURCE = "--chaos"
MARKER_SOURCE = "@pytest.mark.chaos"
ACTIVATE_SOURCE = "chaos.activate()"

Layer = tuple[str, Mapping[str, Any]]

_RUNTIME = "chaos_shims.core.runtime"


def _is_chaos_active() -> bool:
    # Nothing can be active before the core is imported; checking costs no import.
    runtime = sys.modules.get(_RUNTIME)
    return runtime is not None and getattr(runtime, "active", None) is not None


# -- the run's options ----------------------------------------------------------------------


def parse_assignments(items: Sequence[str], option: str) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` as a mapping (later wins); the values are checked at resolve."""
    layer: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise pytest.UsageError(
                f"chaos_shims: {option} expects KEY=VALUE (e.g. exch_429=0.5), got {item!r}")
        layer[key] = value.strip()
    return layer


@dataclass(frozen=True)
class ChaosOptions:
    """The run-wide chaos of a pytest session: the ``--chaos`` values and the ini lines."""

    cli: Mapping[str, str] = field(default_factory=dict)
    ini: Mapping[str, str] = field(default_factory=dict)

    @property
    def everywhere(self) -> bool:
        """Every test without ``no_chaos`` is under chaos."""
        return bool(self.cli or self.ini)

    def layers(self, environ: Mapping[str, str], *, run_wide: bool = True) -> list[Layer]:
        """The explicit layers of a test, above the environment (``run_wide=False``: a test
        marked ``no_chaos`` that turns chaos on itself gets the test defaults only)."""
        from chaos_shims.core.env import env_name

        ini = self.ini if run_wide else {}
        layers: list[Layer] = [
            (DEFAULTS_SOURCE, {k: v for k, v in TEST_DEFAULTS.items() if k not in ini}),
        ]
        below_env = {k: v for k, v in ini.items() if env_name(k) not in environ}
        if below_env:
            layers.append((INI_SOURCE, below_env))
        if run_wide and self.cli:
            layers.append((CLI_SOURCE, self.cli))
        return layers

    def describe(self) -> str:
        merged = {**self.ini, **self.cli}
        return " ".join(f"{key}={value}" for key, value in merged.items())


_OPTIONS = pytest.StashKey[ChaosOptions]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos_shims", "chaos_shims fault injection")
    group.addoption(
        "--chaos", action="append", dest="chaos", default=[], metavar="KEY=VALUE",
        help="chaos_shims config for every test without a no_chaos marker, live and always ON "
             "unless set otherwise (repeatable, e.g. --chaos exch_5xx=0.2 --chaos seed=7); "
             "a chaos marker's keys win",
    )
    parser.addini(
        CHAOS, type="linelist", default=[],
        help="chaos_shims KEY=VALUE lines, as --chaos (which wins, as does the environment)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos(**keys): run this test under chaos_shims with these config keys, live and always "
        "ON unless the keys say otherwise, e.g. chaos(exch_429=1.0, seed=3); restored after it",
    )
    config.addinivalue_line(
        "markers",
        "no_chaos: run this test without chaos: --chaos does not apply and chaos activated for "
        "the whole process is suspended during it",
    )
    options = ChaosOptions(
        cli=parse_assignments(config.getoption(CHAOS) or [], "--chaos"),
        ini=parse_assignments(config.getini(CHAOS), INI_SOURCE),
    )
    if options.everywhere:
        # A bad value is a usage error now, not the same error in every test.
        from chaos_shims.activation import resolve
        from chaos_shims.core.errors import ChaosConfigError

        try:
            resolve(layers=options.layers(os.environ))
        except ChaosConfigError as exc:
            raise pytest.UsageError(f"chaos_shims: {exc}") from None
    config.stash[_OPTIONS] = options


def pytest_report_header(config: pytest.Config) -> str | None:
    options = config.stash.get(_OPTIONS, None)
    if options is None or not options.everywhere:
        return None
    return f"chaos_shims: every test without no_chaos runs with {options.describe()}"


# -- restoring what was there before ---------------------------------------------------------


@dataclass(frozen=True)
class RuntimeSnapshot:
    """The process-wide chaos state (active injector, enabled patch points), to put back."""

    active: ChaosInjector | None
    points: tuple[str, ...]

    @classmethod
    def take(cls) -> RuntimeSnapshot:
        from chaos_shims.core import runtime

        return cls(runtime.active, tuple(runtime.enabled_points()))

    def restore(self) -> None:
        """Turn off and unpatch whatever is in force, then reinstall the saved injector.

        Patch points enabled before without an active injector (dormant) stay unpatched.
        """
        from chaos_shims.core import runtime
        from chaos_shims.integrations import PATCH_POINTS

        runtime.uninstall(unpatch=True)
        if self.active is not None and self.active.disabled_reason is None:
            runtime.install(self.active,
                            [PATCH_POINTS[name] for name in self.points if name in PATCH_POINTS])


def _put_back_if_changed(saved: RuntimeSnapshot | None) -> None:
    runtime = sys.modules.get(_RUNTIME)
    if runtime is None:
        return
    before = None if saved is None else saved.active
    if runtime.active is not before:
        (saved or RuntimeSnapshot(None, ())).restore()


@dataclass(frozen=True)
class _Watch:
    """An injector and its counts when the test started watching it."""

    injector: ChaosInjector
    last_seq: int = 0
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_now(cls, injector: ChaosInjector) -> _Watch:
        records = injector.records()
        return cls(injector, records[-1].seq if records else 0, injector.counts())

    def injections(self) -> list[InjectionRecord]:
        return [r for r in self.injector.records() if r.seq > self.last_seq]

    def count(self, scenario: str | None, mode: str | None) -> int:
        return sum(n - self.counts.get(key, 0) for key, n in self.injector.counts().items()
                   if (scenario is None or key[0] == scenario) and (mode is None or key[1] == mode))


# -- one test's chaos ------------------------------------------------------------------------


class ChaosSession:
    """The chaos of one test: what is in force, what it injected, and a way to change it.

    The ``chaos`` fixture returns it. ``injections`` and ``count`` cover every injector in force
    during the test (a process-wide one only from the test's start). Whatever it changes is
    undone by ``restore``, which the plugin calls after the test, pass or fail.
    """

    def __init__(self, base_layers: Sequence[Layer] = (), *,
                 node: pytest.Item | None = None) -> None:
        self._base_layers = list(base_layers)
        self._node = node
        self._saved = RuntimeSnapshot.take()
        self._changed = False
        self._injector = self._saved.active
        self._config = None if self._injector is None else self._injector.config
        self._watched = [] if self._injector is None else [_Watch.from_now(self._injector)]

    @property
    def injector(self) -> ChaosInjector | None:
        """The injector in force for this test, or None when chaos is off."""
        return self._injector

    @property
    def config(self) -> ChaosConfig | None:
        """The config of this test's chaos (None when the test never had any)."""
        return self._config

    @property
    def injections(self) -> list[InjectionRecord]:
        """The records of every decision that fired during this test, oldest first."""
        return [record for watch in self._watched for record in watch.injections()]

    def count(self, scenario: str | None = None, mode: str | None = None) -> int:
        """How many decisions fired during this test (``mode``: ``live`` or ``dry_run``)."""
        return sum(watch.count(scenario, mode) for watch in self._watched)

    def activate(self, **keys: Any) -> ChaosInjector | None:
        """Turn chaos on as ``keys`` say, over the test's marker and ``--chaos`` values and
        the test defaults (live, always ON); replaces the chaos in force. Undone after the test.

        Raises ``ChaosConfigError`` for a bad key or value, before anything changes.
        """
        return self._apply([*self._base_layers, (ACTIVATE_SOURCE, keys)], when="call")

    def deactivate(self) -> None:
        """Chaos off for the rest of the test (the records made so far stay readable)."""
        from chaos_shims.core import runtime

        self._changed = True
        runtime.uninstall(unpatch=False)
        self._injector = self._config = None

    def restore(self) -> None:
        """Undo every change this session made and reinstall what was in force before."""
        if self._changed:
            self._changed = False
            self._saved.restore()

    def _apply(self, layers: Sequence[Layer], *, when: str) -> ChaosInjector | None:
        from chaos_shims.activation import activate, resolve

        config = resolve(layers=layers)
        self._changed = True
        injector = activate(config)
        self._config, self._injector = config, injector
        if injector is not None:
            self._watched.append(_Watch(injector))
        if self._node is not None:
            self._node.add_report_section(when, CHAOS, _describe(config, injector))
        return injector

    def _suspend(self) -> None:
        if self._injector is not None:
            self.deactivate()

    def __repr__(self) -> str:
        keys = [] if self._injector is None else self._injector.scenario_keys
        state = "off" if self._injector is None else (
            "dry-run" if self._injector.config.dry_run else "LIVE")
        return f"<ChaosSession {state} scenarios={keys} injections={self.count()}>"


def _describe(config: ChaosConfig, injector: ChaosInjector | None) -> str:
    if injector is None:
        return "chaos_shims: off"
    scenarios = ", ".join(f"{s.key}={v}" for s, v in config.active_scenarios()) or "none"
    return (f"chaos_shims: {'dry-run' if config.dry_run else 'LIVE'}, seed={config.seed} "
            f"({config.sources['seed']}), {injector.schedule.describe()}, scenarios: {scenarios}")


def closest_chaos_marker(item: pytest.Item) -> pytest.Mark | None:
    """The ``chaos`` or ``no_chaos`` marker nearest to the test (``no_chaos`` wins a tie)."""
    for node in reversed(item.listchain()):
        own = [mark for mark in node.own_markers if mark.name in (CHAOS, NO_CHAOS)]
        if own:
            return next((mark for mark in own if mark.name == NO_CHAOS), own[0])
    return None


def _marker_layer(mark: pytest.Mark) -> Layer:
    if mark.args:
        pytest.fail(f"chaos_shims: {MARKER_SOURCE} takes config keys as keyword arguments only, "
                    f"e.g. @pytest.mark.chaos(exch_429=1.0, seed=3); got {mark.args!r}",
                    pytrace=False)
    return (MARKER_SOURCE, dict(mark.kwargs))


# Why an autouse fixture: pytest sets up a test's fixtures highest scope first, then the
# function-scoped ones with plugins' autouse fixtures before conftest and test fixtures. So chaos
# is on before any function-scoped fixture builds a client or makes a request, and off after
# their teardown (finalizers run last-in first-out, also when a later fixture's setup fails).
# Session-, module- and class-scoped fixtures are shared between tests and stay outside any one
# test's chaos: a pytest_runtest_setup hookwrapper would put the first test's chaos on them
# (results depending on test order), and pytest_runtest_call would miss fixtures altogether.
@pytest.fixture(autouse=True)
def _chaos_shims(request: pytest.FixtureRequest) -> Iterator[ChaosSession | None]:
    options = request.config.stash.get(_OPTIONS, None) or ChaosOptions()
    item = request.node
    assert isinstance(item, pytest.Item)
    mark = closest_chaos_marker(item)
    opted_out = mark is not None and mark.name == NO_CHAOS
    if (mark is None and not options.everywhere) or (opted_out and not _is_chaos_active()):
        # No chaos asked for: nothing imported, activated or patched. Chaos the test turned
        # on itself (chaos_shims.activate) and left on is still put back: it never leaks.
        saved = RuntimeSnapshot.take() if _RUNTIME in sys.modules else None
        yield None
        _put_back_if_changed(saved)
        return
    if opted_out:
        session = ChaosSession(options.layers(os.environ, run_wide=False), node=item)
        try:
            session._suspend()
            yield session
        finally:
            session.restore()
        return

    from chaos_shims.core.errors import ChaosConfigError

    layers = options.layers(os.environ)
    if mark is not None:
        layers.append(_marker_layer(mark))
    session = ChaosSession(layers, node=item)
    try:
        try:
            session._apply(layers, when="setup")
        except ChaosConfigError as exc:
            pytest.fail(f"chaos_shims: {exc}", pytrace=False)
        yield session
    finally:
        session.restore()


@pytest.fixture
def chaos(_chaos_shims: ChaosSession | None, request: pytest.FixtureRequest
          ) -> Iterator[ChaosSession]:
    """This test's chaos: ``injector``, ``config``, ``injections``, ``count()``, and
    ``activate(**keys)`` / ``deactivate()`` to change it from inside the test (undone after)."""
    if _chaos_shims is not None:
        yield _chaos_shims
        return
    options = request.config.stash.get(_OPTIONS, None) or ChaosOptions()
    item = request.node
    assert isinstance(item, pytest.Item)
    mark = closest_chaos_marker(item)
    run_wide = mark is None or mark.name != NO_CHAOS
    session = ChaosSession(options.layers(os.environ, run_wide=run_wide), node=item)
    try:
        yield session
    finally:
        session.restore()
