"""Scenarios and the catalog of them.

A scenario module declares one ``Scenario`` subclass: its config key, value kind, default, the
patch points it needs and the surfaces it acts on, and how it decides (``draw``). The engine
arms one instance per activation with the configured value and the scenario's own random
stream.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Iterator, Mapping

from chaos_shims.core.frozen import Frozen

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    import random
    from typing import Any, ClassVar

    from chaos_shims.core.faults import Fault
    from chaos_shims.core.values import ValueKind


class KeySpec(Frozen):
    """One config key: its name, kind of value, default and a one-line meaning."""

    __slots__ = ("default", "kind", "name", "summary")
    name: str
    kind: ValueKind
    default: Any
    summary: str

    def __init__(self, name: str, kind: ValueKind, default: Any, summary: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "summary", summary)


#: Surfaces a scenario can act on; an integration asks for the armed scenarios of its surface
#: with ``ChaosInjector.plan(surface, ...)`` for each event there.
REST = "rest"  # one ccxt REST request
WS_MESSAGE = "ws_message"  # one websocket message handed to the application
DNS = "dns"  # one name resolution
RECONCILE = "reconcile"  # one call of a ccxt method whose result a bot reconciles against


class Scenario:
    """Base of every fault scenario. Subclasses are declarations plus ``draw``."""

    key: ClassVar[str]
    summary: ClassVar[str]
    #: the real failure this stands for, in plain words (for docs and `chaos-shims scenarios`)
    simulates: ClassVar[str] = ""
    kind: ClassVar[ValueKind]
    default: ClassVar[Any] = 0.0
    patch_points: ClassVar[tuple[str, ...]] = ()
    surfaces: ClassVar[frozenset[str]] = frozenset()
    #: extra keys that tune this scenario (e.g. rate_limit_storm_sec)
    parameters: ClassVar[tuple[KeySpec, ...]] = ()

    def __init__(self, value: Any, settings: Mapping[str, Any], stream: random.Random) -> None:
        self.value = value
        self.settings = settings
        self.stream = stream
        # random.Random.random() is a single C call, safe across threads; the lock guards the
        # few scenarios that keep state between decisions.
        self.lock = threading.Lock()

    @classmethod
    def spec(cls) -> KeySpec:
        return KeySpec(cls.key, cls.kind, cls.default, cls.summary)

    @classmethod
    def is_active_value(cls, value: Any) -> bool:
        """Whether a configured value turns this scenario on (0 and none mean off)."""
        return bool(value)

    def draw(self, now: float) -> Fault | None:
        """Decide for one event at monotonic time ``now``: the fault to inject, or None."""
        raise NotImplementedError


class ProbabilityScenario(Scenario):
    """Fires with probability ``value`` per event; the fault comes from ``fault()``."""

    def draw(self, now: float) -> Fault | None:
        if self.stream.random() < self.value:
            return self.fault()
        return None

    def fault(self) -> Fault:
        raise NotImplementedError


class PhaseScenario(Scenario):
    """Acts for whole ON phases of the duty cycle (clock skew, memory ballast), not per event.

    The injector's phase driver calls ``start_phase`` when an ON phase begins (``live`` False
    in dry-run: decide and describe, change nothing) and ``end_phase`` when it ends or chaos is
    turned off. ``start_phase`` returns the fault it applies, which is recorded like any other.
    """

    def draw(self, now: float) -> Fault | None:
        return None

    def start_phase(self, live: bool) -> Fault | None:
        raise NotImplementedError

    def end_phase(self) -> None:
        raise NotImplementedError


class Catalog:
    """An ordered table of scenario classes, looked up by key.

    A scenario is given as its class, or as the string ``"module:Class"``: its module is then
    imported only when the scenario itself is first needed, so a process imports the modules of
    the scenarios it runs and not the others. Keys, order and membership never import anything;
    iterating imports every module.
    """

    def __init__(self, scenarios: Mapping[str, str | type[Scenario]] | Iterable[type[Scenario]]
                 ) -> None:
        if isinstance(scenarios, Mapping):
            declared: dict[str, str | type[Scenario]] = dict(scenarios)
        else:
            declared = {}
            for scenario in scenarios:
                if scenario.key in declared:
                    raise ValueError(f"two scenarios declare the key {scenario.key!r}")
                declared[scenario.key] = scenario
        self._declared = declared
        #: the classes at hand: given as classes, or imported since
        self._by_key: dict[str, type[Scenario]] = {
            key: scenario for key, scenario in declared.items() if not isinstance(scenario, str)}

    def _load(self, key: str) -> type[Scenario]:
        # No lock of our own: the import system imports a module once, whatever the threads.
        module_name, _, class_name = str(self._declared[key]).partition(":")
        scenario: type[Scenario] = getattr(importlib.import_module(module_name), class_name)
        if scenario.key != key:
            raise ValueError(f"the scenario table names {self._declared[key]} for {key!r}, "
                             f"which declares the key {scenario.key!r}")
        self._by_key[key] = scenario
        return scenario

    def __iter__(self) -> Iterator[type[Scenario]]:
        return iter([self[key] for key in self._declared])

    def __getitem__(self, key: str) -> type[Scenario]:
        scenario = self._by_key.get(key)
        if scenario is None:
            if key not in self._declared:
                raise KeyError(key)
            scenario = self._load(key)
        return scenario

    def __contains__(self, key: object) -> bool:
        return key in self._declared

    def keys(self) -> list[str]:
        return list(self._declared)

    def declaring(self, name: str) -> type[Scenario] | None:
        """The scenario whose key or one of whose parameters is the config key ``name``, or
        None. Imports as few modules as it can: a parameter's own scenario is looked for first
        among those whose key its name starts with (``net_loss_timeout_ms``: ``net_loss``)."""
        if name in self._declared:
            return self[name]
        prefixed = [key for key in self._declared if name.startswith(f"{key}_")]
        rest = [key for key in self._declared if key not in prefixed]
        for key in (*prefixed, *rest):
            scenario = self[key]
            if any(parameter.name == name for parameter in scenario.parameters):
                return scenario
        return None

    def key_specs(self) -> list[KeySpec]:
        specs: list[KeySpec] = []
        for scenario in self:
            specs.append(scenario.spec())
            specs.extend(scenario.parameters)
        return specs
