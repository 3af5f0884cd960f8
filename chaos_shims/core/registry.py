"""Scenarios and the catalog of them.

A scenario module declares one ``Scenario`` subclass: its config key, value kind, default, the
patch points it needs and the surfaces it acts on, and how it decides (``draw``). The engine
arms one instance per activation with the configured value and the scenario's own random
stream.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from chaos_shims.core.faults import Fault
from chaos_shims.core.values import ValueKind


@dataclass(frozen=True)
class KeySpec:
    """One config key: its name, kind of value, default and a one-line meaning."""

    name: str
    kind: ValueKind
    default: Any
    summary: str


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
    """An ordered table of scenario classes, looked up by key."""

    def __init__(self, scenarios: Iterable[type[Scenario]]) -> None:
        self._by_key: dict[str, type[Scenario]] = {}
        for scenario in scenarios:
            if scenario.key in self._by_key:
                raise ValueError(f"two scenarios declare the key {scenario.key!r}")
            self._by_key[scenario.key] = scenario

    def __iter__(self) -> Iterator[type[Scenario]]:
        return iter(self._by_key.values())

    def __getitem__(self, key: str) -> type[Scenario]:
        return self._by_key[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def keys(self) -> list[str]:
        return list(self._by_key)

    def key_specs(self) -> list[KeySpec]:
        specs: list[KeySpec] = []
        for scenario in self:
            specs.append(scenario.spec())
            specs.extend(scenario.parameters)
        return specs
