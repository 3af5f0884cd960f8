"""One helper for the patch hygiene of every patch point: whatever the order of import and
patch, nothing is double-wrapped and unpatching restores the original objects by identity.

A wrap may shadow an inherited method (websockets' client classes inherit ``recv``): the
original is what the owner resolves (``inspect.getattr_static``), and after unpatching the
owner's own ``__dict__`` is as it was, the shadowing slot gone again."""

from __future__ import annotations

import functools
import importlib
import inspect
import subprocess
import sys
import textwrap
import warnings
from typing import Any

from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.integrations.wrapping import is_chaos_wrapper, subclasses_of

#: what ``owner.__dict__`` holds for an inherited attribute: nothing
ABSENT = object()


def import_targets(name: str) -> None:
    """Import every module a patch point waits for (the legacy websockets client warns on
    import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module_name in PATCH_POINTS[name].modules:
            importlib.import_module(module_name)


def _targets(name: str) -> list[tuple[Any, str]]:
    point = PATCH_POINTS[name]
    integration = point.integration()
    return [pair for module_name in point.modules
            for pair in integration.patched_attributes(sys.modules[module_name])]


def assert_hygiene_when_imported_first(name: str) -> None:
    """Targets imported before activation; patch twice, unpatch twice, and again: each wrap
    wraps what the owner resolved before (its own or inherited) exactly once, and unpatching
    leaves the owner's ``__dict__`` as it was."""
    point = PATCH_POINTS[name]
    import_targets(name)
    point.disable()
    before = {(owner, attribute): (owner.__dict__.get(attribute, ABSENT),
                                   inspect.getattr_static(owner, attribute))
              for owner, attribute in _targets(name)}
    assert before and not any(is_chaos_wrapper(resolved) for _, resolved in before.values())
    try:
        for _round in range(2):
            point.enable()
            point.enable()
            assert point.is_patched()
            for (owner, attribute), (_, resolved) in before.items():
                current = owner.__dict__[attribute]
                assert is_chaos_wrapper(current), (owner, attribute)
                # wrapped exactly once: the wrapper's target is the original itself
                assert current.__wrapped__ is resolved, (owner, attribute)
            point.disable()
            point.disable()
            assert not point.is_patched()
            for (owner, attribute), (own, resolved) in before.items():
                assert owner.__dict__.get(attribute, ABSENT) is own, (owner, attribute)
                assert inspect.getattr_static(owner, attribute) is resolved, (owner, attribute)
    finally:
        point.disable()


def assert_hygiene_when_imported_after(name: str) -> None:
    """In a fresh interpreter: activation first, then the import patches, a second enable
    changes nothing, then unpatch (twice) restores. wrapt (imported by the wrapping helpers) comes
    only after the targets: it imports ``socket`` itself, which would hide ``socket_dns``'s hook."""
    point = PATCH_POINTS[name]
    script = textwrap.dedent(f"""
        import importlib, inspect, sys, warnings
        from chaos_shims.integrations import PATCH_POINTS
        point = PATCH_POINTS[{name!r}]
        point.enable()
        assert not any(m in sys.modules for m in {point.modules!r}), "imported too early"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for module_name in {point.modules!r}:
                importlib.import_module(module_name)
        from chaos_shims.integrations.wrapping import is_chaos_wrapper
        integration = point.integration()
        wrapped = []
        for module_name in {point.modules!r}:
            for owner, attribute in integration.patched_attributes(sys.modules[module_name]):
                current = owner.__dict__[attribute]
                assert is_chaos_wrapper(current), (owner, attribute)
                assert not is_chaos_wrapper(current.__wrapped__)
                wrapped.append((owner, attribute, current, current.__wrapped__))
        point.enable()
        for owner, attribute, current, _ in wrapped:
            assert owner.__dict__[attribute] is current, ("wrapped twice", owner, attribute)
        point.disable()
        point.disable()
        for owner, attribute, _, original in wrapped:
            assert inspect.getattr_static(owner, attribute) is original, (owner, attribute)
        print("ok", len(wrapped))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


# -- every order of import and activation, checked slot by slot -------------------------------
#
# A run is a list of steps in a small language (plain strings, so that the same run can be
# handed to a fresh interpreter as JSON):
#
#   "activate:k1,k2"     activate(...) with exactly these scenarios on (dry-run, always ON)
#   "off"                activate(enabled=False): chaos off, the wraps stay (dormant)
#   "deactivate"         deactivate(): chaos off and every patched object restored
#   "targets:POINT"      import every module POINT waits for (already imported: nothing)
#   "import:MOD:P1,P2"   import MOD for the first time; it must bring in the targets of exactly
#                        the patch points P1, P2 (the plan says what it is testing)
#   "imported"           every target module of every patch point is imported by now
#   "exercise"           make what is patched lazily happen (ccxt labels a class at its first
#                        instance, ccxt_reconcile covers a class defined later)
#
# After every step, ``OrderRun.check`` compares each slot a patch point may touch with what
# the activation semantics say (``OrderRun.enabled``):
#
# * activation is global and additive: each ``activate`` enables the patch points of its
#   scenarios in addition to those enabled before (a point no longer needed stays patched,
#   dormant); ``activate(enabled=False)`` leaves every wrap in place; only ``deactivate()``
#   (``unpatch=True``) unpatches, and then all of them;
# * a wrap is a chain of chaos_shims wrappers above the library's own object: at most one
#   wrapper of each kind (never double-wrapped), only wrappers of enabled points, and the
#   innermost object is the original by identity. Two points may wrap one attribute
#   (``ccxt_rest`` and ``ccxt_reconcile`` both wrap ``BaseExchange.__init__``): the chain has
#   one wrapper of each;
# * an enabled point whose target is imported has its wrapper on every attribute it lists
#   (``patched_attributes``); nothing else is patched;
# * unpatched, a slot is exactly what it was: a class's own ``__dict__`` entry (or its absence,
#   when the wrap shadowed an inherited method) is the original object;
# * an activation that enables no new point changes nothing at all (no re-wrap).
#
# Every class that a listed attribute belongs to is watched whole, with all its subclasses
# (ccxt's labels and reconciliation wrappers live on the concrete exchange classes).
#
# One known gap is kept apart: ccxt's ``__init__`` copies every snake_case method of the class
# to its camelCase name on the class (``cls.fetchBalance = cls.fetch_balance``) at each
# instance. A copy made while patched holds a chaos_shims wrapper that unpatching does not
# restore (until the next instance copies again). A slot holding a wrapper under another name
# than the wrapper's own is such a copy: a stale one is counted (``OrderRun.stale_copies``)
# rather than failed, unless the run is strict (then ``StaleAliasCopies`` at the end of a run
# that is otherwise clean). Everything else about a copy is checked like any slot.


class StaleAliasCopies(AssertionError):
    """Unpatched, copies of chaos_shims wrappers that the library made under other names are
    still in place (everything else was restored)."""


@functools.cache
def active_value(key: str) -> Any:
    """A value that turns scenario ``key`` on (probabilities, milliseconds, a memory level)."""
    from chaos_shims.activation import resolve
    from chaos_shims.core.errors import ChaosConfigError
    from chaos_shims.scenarios import CATALOG

    for candidate in (0.5, "low"):
        try:
            config = resolve({"enabled": True, key: candidate}, environ={})
        except ChaosConfigError:
            continue
        if any(scenario is CATALOG[key] for scenario, _ in config.active_scenarios()):
            return candidate
    raise AssertionError(f"no candidate value turns {key} on")


def points_of(keys: Any) -> set[str]:
    from chaos_shims.scenarios import CATALOG

    return {point for key in keys for point in CATALOG[key].patch_points}


class _State:
    """A mapping's keys and the identities of its values (kept alive, so no id is reused):
    equal states hold the very same objects. Compared in C: a check over ccxt's ~290 exchange
    classes (~20,000 entries) skips the classes that did not move."""

    __slots__ = ("identities", "values")

    def __init__(self, identities: tuple[Any, ...], values: tuple[Any, ...]) -> None:
        self.identities = identities
        self.values = values

    @classmethod
    def of(cls, mapping: Any) -> _State:
        values = tuple(mapping.values())
        return cls((tuple(mapping), tuple(map(id, values))), values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _State) and self.identities == other.identities

    __hash__ = None  # type: ignore[assignment]


def _integration_files() -> dict[str, str]:
    """The source file of each integration module -> its patch point (found, not imported)."""
    import importlib.util

    files: dict[str, str] = {}
    for point in PATCH_POINTS.values():
        spec = importlib.util.find_spec(point.integration_name)
        assert spec is not None and spec.origin is not None, point.integration_name
        files[spec.origin] = point.name
    return files


def _name(owner: Any, key: str) -> str:
    return f"{getattr(owner, '__qualname__', getattr(owner, '__name__', owner))}.{key}"


class OrderRun:
    """Runs steps (see above) and checks every watched slot after each."""

    def __init__(self, *, strict_copies: bool = False) -> None:
        import wrapt  # here, after the activation import: wrapt imports socket, as it does

        self._wrapper_type = wrapt.FunctionWrapper
        self._files = _integration_files()
        self._package = next(iter(self._files)).rsplit("/integrations/", 1)[0]
        self.strict_copies = strict_copies
        #: the patch points the activations so far have enabled (the model)
        self.enabled: set[str] = set()
        #: id(owner) -> {key: its unpatched own value (ABSENT: inherited)}, learnt at first sight
        self._baseline: dict[int, dict[str, Any]] = {}
        self._owners: dict[int, Any] = {}  # keeps watched owners alive, so ids stay theirs
        self._classes_seen: set[type] = set()
        #: slots first seen patched: their original was derived from the wrap
        self._derived: set[tuple[int, str]] = set()
        #: classes all original at their last check, and their state then
        self._clean: dict[type, _State] = {}
        #: stale copies ((id(owner), key) -> the copy), and those there at the first check
        self.stale_copies: dict[tuple[int, str], Any] = {}
        self._stale_before: dict[tuple[int, str], Any] | None = None
        self.states: dict[Any, _State] = {}
        self.checks = 0

    # -- the wrappers ------------------------------------------------------------------------
    def layer(self, value: Any) -> tuple[str, str] | None:
        """(patch point, wrapper kind) when ``value`` is a chaos_shims wrapper, else None."""
        if isinstance(value, self._wrapper_type):
            code = getattr(getattr(value, "_self_wrapper", None), "__code__", None)
        elif inspect.isfunction(value):
            code = value.__code__
        else:
            return None
        if code is None or not code.co_filename.startswith(self._package):
            return None
        point = self._files.get(code.co_filename)
        assert point is not None, f"a chaos_shims function outside the integrations: {value!r}"
        return point, getattr(code, "co_qualname", code.co_name)

    def chain(self, value: Any) -> tuple[list[tuple[str, str]], Any]:
        """The chaos_shims wrappers stacked on ``value`` (outermost first) and what is under."""
        layers: list[tuple[str, str]] = []
        while (layer := self.layer(value)) is not None:
            layers.append(layer)
            value = value.__wrapped__
            assert len(layers) <= 10, f"a chain of {len(layers)} wrappers: {layers}"
        return layers, value

    def _inherited(self, owner: Any, key: str) -> Any:
        for base in getattr(owner, "__mro__", ())[1:]:
            if key in base.__dict__:
                return self.chain(base.__dict__[key])[1]
        return ABSENT

    def _unpatched_own(self, owner: Any, key: str, value: Any) -> Any:
        """What ``owner.__dict__[key]`` holds unpatched, from what it holds now."""
        layers, bottom = self.chain(value)
        if not layers:
            return value
        # a wrap over an inherited attribute shadows it on the owner: unpatched, it is absent
        return ABSENT if self._inherited(owner, key) is bottom else bottom

    def _baseline_of(self, owner: Any, key: str, value: Any) -> Any:
        originals = self._baseline.get(id(owner))
        if originals is None:
            self._owners[id(owner)] = owner
            originals = self._baseline[id(owner)] = {}
        if key not in originals:
            originals[key] = self._unpatched_own(owner, key, value)
            if originals[key] is not value:
                self._derived.add((id(owner), key))
        return originals[key]

    # -- what is watched ---------------------------------------------------------------------
    def listed(self) -> list[tuple[str, Any, str]]:
        """(point, owner, attribute) of every attribute a point lists in an imported module."""
        found = []
        for point in PATCH_POINTS.values():
            modules = [sys.modules[name] for name in point.modules if name in sys.modules]
            if modules:
                integration = point.integration()
                found += [(point.name, owner, attribute) for module in modules
                          for owner, attribute in integration.patched_attributes(module)]
        return found

    @staticmethod
    def watched_classes(listed: list[tuple[str, Any, str]]) -> list[type]:
        classes: dict[type, None] = {}
        for owner in dict.fromkeys(owner for _, owner, _ in listed):
            if isinstance(owner, type) and owner not in classes:
                classes.update(dict.fromkeys(subclasses_of(owner)))
        return list(classes)

    # -- the check ---------------------------------------------------------------------------
    def _check_slot(self, owner: Any, key: str, required: set[str]) -> None:
        where = _name(owner, key)
        current = owner.__dict__.get(key, ABSENT)
        baseline = self._baseline_of(owner, key, current)
        layers, bottom = self.chain(current) if current is not ABSENT else ([], ABSENT)
        assert len(set(layers)) == len(layers), f"{where} double-wrapped: {layers}"
        points = {point for point, _ in layers}
        copy = bool(layers) and getattr(current, "__name__", key) != key
        if copy and not points <= self.enabled:
            self.stale_copies[id(owner), key] = current
        else:
            self.stale_copies.pop((id(owner), key), None)
            assert points <= self.enabled, (
                f"{where} still wrapped by {sorted(points - self.enabled)} (enabled: "
                f"{sorted(self.enabled)})")
        assert required <= points, f"{where} not wrapped by {sorted(required - points)}"
        if not layers:
            # First seen wrapped over an inherited method, a slot's original is "absent"; a
            # slot holding that very inherited object resolves the same (ccxt copies methods
            # onto subclasses), and which of the two it was cannot be told.
            copied = ((id(owner), key) in self._derived and baseline is ABSENT
                      and current is self._inherited(owner, key))
            assert current is baseline or copied, (
                f"{where} is {current!r}, not the original "
                f"{'(absent: inherited)' if baseline is ABSENT else repr(baseline)}")
        else:
            original = self._inherited(owner, key) if baseline is ABSENT else baseline
            assert bottom is original, f"{where} wraps {bottom!r}, not the original {original!r}"

    def _check_class(self, cls: type, state: _State) -> None:
        own = cls.__dict__
        if cls not in self._classes_seen:  # first sight: learn every entry's original
            self._classes_seen.add(cls)
            for key, value in own.items():
                self._baseline_of(cls, key, value)
        if self._clean.get(cls) == state:
            return  # nothing moved in a class that was all original at its last check
        originals = self._baseline.get(id(cls), {})
        moved = {key for key, value in own.items() if originals.get(key, ABSENT) is not value}
        moved |= {key for key, original in originals.items()
                  if original is not ABSENT and key not in own}
        for slot in [slot for slot in self.stale_copies if slot[0] == id(cls)]:
            if slot[1] not in moved:  # copied again by the library since: original now
                del self.stale_copies[slot]
        for key in moved:
            self._check_slot(cls, key, set())
        if moved:
            self._clean.pop(cls, None)
        else:
            self._clean[cls] = state

    def check(self) -> None:
        from chaos_shims.core import runtime

        self.checks += 1
        assert set(runtime.enabled_points()) == self.enabled, (
            f"runtime enabled {sorted(runtime.enabled_points())}, expected {sorted(self.enabled)}")
        for point in PATCH_POINTS.values():
            imported = any(name in sys.modules for name in point.modules)
            expected = point.name in self.enabled and imported
            assert point.is_patched() is expected, f"{point.name}.is_patched() is not {expected}"
        listed = self.listed()
        required: dict[tuple[int, str], set[str]] = {}
        for point_name, owner, attribute in listed:
            self._owners[id(owner)] = owner
            needs = required.setdefault((id(owner), attribute), set())
            if point_name in self.enabled:
                needs.add(point_name)
        states: dict[Any, _State] = {}
        for (owner_id, attribute), needs in required.items():
            owner = self._owners[owner_id]
            states[owner_id, attribute] = _State.of({attribute: owner.__dict__.get(attribute, ABSENT)})
            self._check_slot(owner, attribute, needs)
        for cls in self.watched_classes(listed):
            states[cls] = _State.of(cls.__dict__)
            self._check_class(cls, states[cls])
        #: every watched owner's state (a listed attribute's value, a class's whole dict)
        self.states = states
        if self._stale_before is None:  # left by whatever ran before: not this run's doing
            self._stale_before = dict(self.stale_copies)

    def new_stale_copies(self) -> list[str]:
        before = self._stale_before or {}
        return sorted(_name(self._owners[slot[0]], slot[1])
                      for slot, copy in self.stale_copies.items() if before.get(slot) is not copy)

    # -- the steps ---------------------------------------------------------------------------
    def step(self, step: str) -> None:
        from chaos_shims.activation import activate, deactivate

        kind, _, argument = step.partition(":")
        enabled_before = set(self.enabled)
        states_before = self.states
        if kind == "activate":
            keys = [key for key in argument.split(",") if key]
            settings = {"enabled": True, "dry_run": True, "burst_on_sec": 0, "seed": 1}
            injector = activate(None, **settings, **{key: active_value(key) for key in keys})
            assert injector is not None
            self.enabled |= points_of(keys)
        elif kind == "off":
            assert activate(None, enabled=False) is None
        elif kind == "deactivate":
            deactivate()
            self.enabled.clear()
        elif kind == "targets":
            import_targets(argument)
        elif kind == "import":
            module_name, _, points = argument.partition(":")
            self._import_fresh(module_name, set(points.split(",")))
        elif kind == "imported":
            missing = [name for point in PATCH_POINTS.values() for name in point.modules
                       if name not in sys.modules]
            assert not missing, f"never imported: {missing}"
        elif kind == "exercise":
            _exercise()
        else:
            raise ValueError(f"unknown step {step!r}")
        self.check()
        if kind in ("activate", "off", "deactivate") and self.enabled == enabled_before:
            moved = [owner for owner, state in self.states.items()
                     if states_before.get(owner) != state]
            assert not moved, f"enabled no new point, yet changed: {moved[:3]}"

    @staticmethod
    def _import_fresh(module_name: str, points: set[str]) -> None:
        assert module_name not in sys.modules, f"{module_name} is imported already"
        before = {name for point in PATCH_POINTS.values() for name in point.modules
                  if name in sys.modules}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # websockets.legacy warns
            importlib.import_module(module_name)
        brought = {point.name for point in PATCH_POINTS.values()
                   if any(name in sys.modules and name not in before for name in point.modules)}
        assert brought == points, f"importing {module_name} brought in {sorted(brought)}"

    def run(self, steps: list[str]) -> None:
        self.check()
        for number, step in enumerate(steps, 1):
            try:
                self.step(step)
            except AssertionError as exc:
                raise AssertionError(f"after step {number} {step!r} of {steps}:\n{exc}") from exc
        stale = self.new_stale_copies()
        if stale and self.strict_copies:
            raise StaleAliasCopies(f"{len(stale)} copies of chaos_shims wrappers made by the "
                                   f"library stayed after unpatching, e.g. {stale[:3]}")


def _exercise() -> None:
    """Make an instance of an exchange class in each imported ccxt family: ccxt_rest labels
    the unified methods of a class at its first instance (and ccxt copies every method to
    its camelCase name on the class, at every instance)."""
    for package in ("ccxt", "ccxt.async_support", "ccxt.pro"):
        module = sys.modules.get(package)
        if module is not None and hasattr(module, "binance"):
            module.binance()


def run_orders(steps: list[str], *, strict_copies: bool = False) -> dict[str, int]:
    """Run ``steps`` in this interpreter, checking after each: how many checks were made and
    how many stale copies (see ``StaleAliasCopies``) the run left."""
    run = OrderRun(strict_copies=strict_copies)
    run.run(steps)
    return {"checks": run.checks, "stale_copies": len(run.new_stale_copies())}


def run_orders_in_fresh_interpreter(steps: list[str], *, strict_copies: bool = False,
                                    timeout: float = 60) -> dict[str, int]:
    """``run_orders`` in a new interpreter, where no target library is imported yet (the
    activation module itself imports ``socket`` and ``time``: those two always are)."""
    import json
    from pathlib import Path

    script = textwrap.dedent("""
        import json, sys
        from chaos_shims import activation  # first, as a bot's bootstrap would
        from tests.patch_hygiene import StaleAliasCopies, run_orders
        try:
            print(json.dumps(run_orders(json.loads(sys.argv[1]), strict_copies=sys.argv[2] == "1")))
        except StaleAliasCopies as exc:
            print(json.dumps({"stale_alias_copies": str(exc)}))
    """)
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(steps), "1" if strict_copies else "0"],
        cwd=root, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    if "stale_alias_copies" in outcome:
        raise StaleAliasCopies(outcome["stale_alias_copies"])
    return outcome
