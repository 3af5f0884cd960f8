"""Configuration: the global keys, and resolving a config from its sources.

Precedence, lowest first: built-in defaults < YAML file (``CHAOS_SHIMS_CONFIG``, its ``chaos:``
mapping) < environment (``CHAOS_SHIMS_<KEY>``) < explicit layers (Python API, CLI ``--set``,
pytest ``--chaos``, pytest marker; later layers win). Every resolved value remembers its source.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

from chaos_shims.core import env
from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.frozen import Frozen
from chaos_shims.core.registry import Catalog, KeySpec
from chaos_shims.core.values import (
    Boolean,
    NameSet,
    Number,
    Probability,
    Seconds,
    Seed,
    Text,
    shown,
)

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any

    from chaos_shims.core.registry import Scenario


def snake_case(name: str) -> str:
    """ccxt's camelCase unified names in snake_case: fetchOHLCV -> fetch_ohlcv."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


#: The keys every run has, whatever scenarios are on. Scenario keys come from the catalog.
GLOBAL_KEYS: tuple[KeySpec, ...] = (
    KeySpec("enabled", Boolean(), False,
            "master switch; nothing is patched or injected while false"),
    KeySpec("dry_run", Boolean(), True,
            "shadow mode: every decision is made, logged and counted; nothing is injected"),
    KeySpec("seed", Seed(), None,
            "one seed makes a run reproducible; each scenario draws from its own stream"),
    KeySpec("burst_on_sec", Seconds(), 30.0,
            "duty cycle ON phase; the first starts at activation; 0 means always ON"),
    KeySpec("burst_off_sec", Seconds(), 90.0, "duty cycle OFF phase"),
    KeySpec("include_exchanges", NameSet(normalise=str.lower), frozenset(),
            "blast radius: only these exchange ids (empty: all)"),
    KeySpec("exclude_exchanges", NameSet(normalise=str.lower), frozenset(),
            "blast radius: never these exchange ids"),
    KeySpec("include_ops", NameSet(normalise=snake_case), frozenset(),
            "blast radius: only these unified methods (empty: all)"),
    KeySpec("exclude_ops", NameSet(normalise=snake_case), frozenset(),
            "blast radius: never these unified methods"),
    KeySpec("rollout_pct", Number(0.0, 100.0, unit="%"), 100.0,
            "canary: the share of instances (stable hash of instance_id) that inject live; "
            "the rest run as shadow (dry-run)"),
    KeySpec("instance_id", Text(), None,
            "this instance's id for the canary hash (default: host name and process id)"),
    KeySpec("kill_file", Text(), None,
            "kill switch: while this path exists no injection happens (noticed within 1 s)"),
    KeySpec("tick_deadline_ms", Number(0.0, None, unit="ms"), 200.0,
            "a tick longer than this is a deadline miss"),
    KeySpec("stop_deadline_miss", Probability(), 0.02,
            "stop condition: deadline-miss ratio over the last window above which chaos rolls "
            "itself back to dry-run"),
    KeySpec("stop_window_ticks", Number(1, None, integer=True), 100,
            "stop condition: how many recent ticks the ratio is taken over"),
)

DEFAULT = "default"
RANDOM = "random"


class ChaosConfig(Frozen):
    """A resolved, checked configuration. Read values with ``config["key"]`` or attributes."""

    __slots__ = ("catalog", "sources", "values")
    _not_compared = ("catalog",)
    _not_shown = ("catalog",)
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    catalog: Catalog

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str],
                 catalog: Catalog) -> None:
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "catalog", catalog)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def enabled(self) -> bool:
        return bool(self.values["enabled"])

    @property
    def dry_run(self) -> bool:
        return bool(self.values["dry_run"])

    @property
    def seed(self) -> int:
        return int(self.values["seed"])

    def active_scenarios(self) -> list[tuple[type[Scenario], Any]]:
        """The scenarios whose configured value turns them on, in catalog order.

        A scenario none of whose keys was given holds its default, which never turns it on
        (every scenario's contract test checks that): its module is not imported to ask.
        """
        values = self.values
        active = []
        for key in self.catalog.keys():  # noqa: SIM118 - a Catalog iterates its classes
            value = values.given(key) if isinstance(values, Resolved) else values[key]
            if value is not _NOT_GIVEN and self.catalog[key].is_active_value(value):
                active.append((self.catalog[key], value))
        return active

    def as_dict(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in self.values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    return value


def key_table(catalog: Catalog) -> dict[str, KeySpec]:
    """Every config key, global keys first, then each scenario's key and parameters."""
    table: dict[str, KeySpec] = {}
    for spec in (*GLOBAL_KEYS, *catalog.key_specs()):
        if spec.name in table:
            raise ValueError(f"config key {spec.name!r} declared twice")
        table[spec.name] = spec
    return table


# -- resolving without importing every scenario ---------------------------------------------------
# A process imports the modules of the scenarios it runs, not the others: a scenario's module is
# imported when one of its keys is given, and the keys of the scenarios left at their defaults
# are filled in (importing their modules) only when something reads them or the whole config.

class LazyKeyTable(Mapping[str, KeySpec]):
    """``key_table(catalog)`` looked up key by key: looking up a scenario's key or parameter
    imports that scenario's module only; iterating or an unknown key imports them all."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        #: the global keys and the keys of every scenario looked up so far
        self.found: dict[str, KeySpec] = {spec.name: spec for spec in GLOBAL_KEYS}
        self._full: dict[str, KeySpec] | None = None

    def __getitem__(self, name: str) -> KeySpec:
        spec = self.found.get(name)
        if spec is None:
            if not isinstance(name, str):
                raise KeyError(name)
            scenario = self.catalog.declaring(name)
            if scenario is None:
                raise KeyError(name)
            for declared in (scenario.spec(), *scenario.parameters):
                self.found.setdefault(declared.name, declared)
            spec = self.found[name]
        return spec

    def full(self) -> dict[str, KeySpec]:
        if self._full is None:
            self._full = key_table(self.catalog)
        return self._full

    def __iter__(self) -> Iterator[str]:
        return iter(self.full())

    def __len__(self) -> int:
        return len(self.full())


_NOT_GIVEN: Any = object()


class _Resolution:
    """The values and sources of a resolved config; the scenarios none of whose keys was given
    are added with their defaults the first time anything needs them (``complete``)."""

    def __init__(self, table: LazyKeyTable, values: dict[str, Any],
                 sources: dict[str, str]) -> None:
        self.table = table
        self.values = values
        self.sources = sources
        self.complete = False
        self._lock = threading.Lock()

    def completed(self) -> _Resolution:
        if not self.complete:
            with self._lock:
                if not self.complete:
                    full = self.table.full()  # imports every scenario's module
                    # Swapped in whole, in key_table's order, so that a reader never sees half.
                    self.values = {name: self.values.get(name, spec.default)
                                   for name, spec in full.items()}
                    self.sources = {name: self.sources.get(name, DEFAULT) for name in full}
                    self.complete = True
        return self


class Resolved(Mapping[str, "Any"]):  # a string: typing is not imported at run time
    """``ChaosConfig.values`` or ``.sources``: every config key, in ``key_table`` order."""

    __slots__ = ("_column", "_resolution")

    def __init__(self, resolution: _Resolution, column: str) -> None:
        self._resolution = resolution
        self._column = column

    def given(self, key: str) -> Any:
        """The entry of ``key`` if it is at hand without reading any default, else a marker
        (``_NOT_GIVEN``): the scenario was left at its default."""
        data: dict[str, Any] = getattr(self._resolution, self._column)
        return data.get(key, _NOT_GIVEN)

    def __getitem__(self, key: str) -> Any:
        data: dict[str, Any] = getattr(self._resolution, self._column)
        if key in data:
            return data[key]
        return getattr(self._resolution.completed(), self._column)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(getattr(self._resolution.completed(), self._column))

    def __len__(self) -> int:
        return len(getattr(self._resolution.completed(), self._column))

    def __repr__(self) -> str:
        return repr(getattr(self._resolution.completed(), self._column))


def _unknown(kind: str, name: str, value: Any, known: Iterable[str],
             source: str | None) -> ChaosConfigError:
    import difflib  # only on the error path

    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return ChaosConfigError(name, shown(value), f"{hint}known {kind}: {', '.join(known)}",
                            source=source)


def read_yaml_layer(path: str) -> dict[str, Any]:
    """The ``chaos:`` mapping of a YAML config file."""
    import yaml  # only when a file is named: most runs never pay for it

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path; not UTF-8
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ChaosConfigError(env.CONFIG_FILE, path,
                               f"a readable UTF-8 YAML file ({reason})") from exc
    try:
        document = yaml.safe_load(text)
    # Not only YAMLError: PyYAML's constructors raise ValueError for a date that does not exist
    # (2001-02-30) or an int too long for int(), and deep nesting raises RecursionError. Any
    # of them is a file that is not valid config, never a reason for the host to crash.
    except Exception as exc:
        raise ChaosConfigError(env.CONFIG_FILE, path,
                               f"valid YAML ({type(exc).__name__}: {exc})") from exc
    if document is None:
        return {}
    if not isinstance(document, dict) or "chaos" not in document:
        raise ChaosConfigError(env.CONFIG_FILE, path, "a YAML mapping with a top-level `chaos:` key")
    section = document["chaos"]
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ChaosConfigError("chaos", shown(section), f"a mapping of config keys (in {path})")
    return {str(key): value for key, value in section.items()}


def environment_layer(environ: Mapping[str, str], table: Mapping[str, KeySpec]) -> dict[str, Any]:
    """The config keys set in the environment; an unknown ``CHAOS_SHIMS_*`` name is an error."""
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(env.PREFIX) or name in env.PROCESS_SETTINGS:
            continue
        if name in env.INTERNAL_NAMES:
            continue
        key = env.key_of(name)
        # Only the upper-case spelling: were CHAOS_SHIMS_exch_429 read too, two variables could
        # set one key and which one won would depend on the order of the environment.
        if key not in table or name != env.env_name(key):
            known_names = [env.env_name(key) for key in table] + list(env.PROCESS_SETTINGS)
            raise _unknown("environment variables", name, value, known_names, "environment")
        layer[key] = value
    return layer


def resolve_config(
    catalog: Catalog,
    explicit: Sequence[tuple[str, Mapping[str, Any]]] = (),
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> ChaosConfig:
    """Resolve a config from defaults, YAML, environment and explicit layers (lowest first).

    ``explicit`` is a sequence of ``(source name, mapping)``; later layers win.
    """
    environ = os.environ if environ is None else environ
    table = LazyKeyTable(catalog)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    path = config_file if config_file is not None else environ.get(env.CONFIG_FILE)
    if path:
        layers.append((f"yaml:{path}", read_yaml_layer(path)))
    layers.append(("env", environment_layer(environ, table)))
    layers.extend(explicit)

    for source, layer in layers:
        for key, raw in layer.items():
            if key not in table:
                raise _unknown("keys", str(key), raw, table, source)
            where = env.env_name(key) if source == "env" else source
            kind = table[key].kind
            try:
                values[key] = kind.parse(key, raw, where)
            except ChaosConfigError:
                raise
            except Exception as exc:
                # A kind (a scenario's own, too) that trips over an input it did not foresee
                # was still given a bad value: the user is told which, the host does not crash.
                raise ChaosConfigError(key, shown(raw), kind.allowed or kind.describe(),
                                       source=where) from exc
            sources[key] = where

    # Defaults for the keys not given: every global key, and every key of the scenarios whose
    # keys were looked up above; the other scenarios' defaults are read when needed.
    for name, spec in table.found.items():
        if name not in values:
            values[name] = spec.default
            sources[name] = DEFAULT
    if values["seed"] is None:
        values["seed"] = int.from_bytes(os.urandom(4), "big")
        sources["seed"] = RANDOM
    resolution = _Resolution(table, values, sources)
    return ChaosConfig(values=Resolved(resolution, "values"),
                       sources=Resolved(resolution, "sources"), catalog=catalog)
