"""The wall clock: ``time.time`` and ``time.time_ns``, plus ccxt's async throttler, which holds
its own ``from time import time`` binding (``ccxt.async_support.base.throttler.time``).

Each is wrapped ONCE, when chaos activates, by a wrapper that adds one module-level offset:
0 while no ``clock_skew_ms`` phase is live, so applying or removing a skew is two assignments
and never re-patches anything. ``time.monotonic``, ``time.perf_counter`` and so the asyncio
event loop's clock are never touched.

Not reached (see docs/scenarios/clock_skew_ms.md): other ``from time import time`` bindings
made before activation, ``datetime.datetime.now()`` (an immutable built-in type),
``time.clock_gettime(CLOCK_REALTIME)``, ``time.localtime()``/``gmtime()``/``strftime()``
without an argument, and clocks read in C.

Coexistence: time-machine moves the clock underneath our wrapper (it patches the built-in
functions themselves), so a skew composes with its travel. freezegun replaces ``time.time``
wholesale, freezes ``monotonic`` too, and on stop puts back what it saved: while it freezes,
``apply_skew`` refuses (``ClockSkewRefused``) and the scenario turns itself off.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import wrapt

logger = logging.getLogger("chaos_shims")

TIME_MODULE = "time"
THROTTLER_MODULE = "ccxt.async_support.base.throttler"
#: what each patched module holds that we wrap: attribute -> the time function it is bound to
_ATTRIBUTES: dict[str, dict[str, str]] = {
    TIME_MODULE: {"time": "time", "time_ns": "time_ns"},
    THROTTLER_MODULE: {"time": "time"},
}

# The skew in force. Read by the wrappers on every call: keep them two plain globals.
_offset_s: float = 0.0
_offset_ns: int = 0

_lock = threading.RLock()
#: the wrappers of this patch cycle, by time function name ("time", "time_ns")
_wrappers: dict[str, SkewedClock] = {}
#: (module name, attribute) -> the wrapper we put there
_installed: dict[tuple[str, str], SkewedClock] = {}


class ClockSkewRefused(RuntimeError):
    """The skew cannot be applied without breaking what another clock library is doing."""


class SkewedClock(wrapt.FunctionWrapper):
    """Our wrapper type, so a binding to a wrapper of an earlier patch cycle (a
    ``from time import time`` made while patched) is still recognised as ours."""


def _time_with_offset(wrapped: Callable[..., float], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> float:
    return wrapped(*args, **kwargs) + _offset_s


def _time_ns_with_offset(wrapped: Callable[..., int], instance: Any, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> int:
    return wrapped(*args, **kwargs) + _offset_ns


_WRAPPER_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "time": _time_with_offset,
    "time_ns": _time_ns_with_offset,
}


def current_skew_ms() -> float:
    return _offset_ns / 1_000_000


def freezegun_freezing() -> bool:
    """Whether a freezegun ``freeze_time`` is active (its factories stack is not empty)."""
    api = sys.modules.get("freezegun.api")
    return api is not None and bool(getattr(api, "freeze_factories", None))


def apply_skew(ms: float) -> None:
    """Shift ``time.time``/``time.time_ns`` by ``ms`` (0: back to the real clock).

    Raises ``ClockSkewRefused`` (and changes nothing) when a non-zero skew cannot be applied:
    the wall clock is not patched, freezegun is freezing time, or somebody else replaced
    ``time.time``. Removing a skew never fails.
    """
    global _offset_s, _offset_ns
    if ms == 0:
        _offset_s, _offset_ns = 0.0, 0
        return
    with _lock:
        _ensure_in_place()
        # ns first: a reader between the two sees at most one of them skewed, never a mix
        # of two different skews.
        _offset_ns = round(ms * 1_000_000)
        _offset_s = ms / 1000.0


def _ensure_in_place() -> None:
    if freezegun_freezing():
        raise ClockSkewRefused(
            "freezegun is freezing time (freeze_time is active): it replaces time.time and "
            "also freezes time.monotonic and the event loop clock, so a skew cannot be laid on "
            "top of it; use time-machine (which composes with clock_skew_ms), or start chaos "
            "outside freeze_time")
    time_module = sys.modules[TIME_MODULE]
    if not _wrappers:
        raise ClockSkewRefused("the wall clock is not patched (the wall_clock patch point is off)")
    for name, wrapper in _wrappers.items():
        current = time_module.__dict__.get(name)
        if current is wrapper:
            continue
        if current is wrapper.__wrapped__:
            # Put back by someone who saved the original before we patched (freezegun's
            # stop() does this): the very object we wrap, so wrapping it again is exact.
            setattr(time_module, name, wrapper)
            _installed[(TIME_MODULE, name)] = wrapper
            continue
        raise ClockSkewRefused(
            f"time.{name} was replaced by {current!r} after chaos_shims patched it; "
            "a skew would not be seen")


# -- the integration surface ------------------------------------------------------------------

def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    return [(module, attribute) for attribute in _ATTRIBUTES.get(module.__name__, {})]


def is_patched(module: ModuleType) -> bool:
    with _lock:
        return any(module.__dict__.get(attribute) is wrapper
                   for (name, attribute), wrapper in _installed.items()
                   if name == module.__name__)


def patch(module: ModuleType) -> None:
    with _lock:
        if module.__name__ != TIME_MODULE:
            patch(sys.modules[TIME_MODULE])  # the wrappers come from the time module's own
        elif not _wrappers:
            for name in ("time", "time_ns"):
                _wrappers[name] = SkewedClock(getattr(module, name), _WRAPPER_FUNCTIONS[name])
        for attribute, function in _ATTRIBUTES.get(module.__name__, {}).items():
            key = (module.__name__, attribute)
            wrapper = _wrappers[function]
            if key in _installed:
                continue
            current = module.__dict__.get(attribute)
            # Only where the module holds the very function we wrap, or a wrapper of ours (it
            # imported while patched): a binding to something else (freezegun's fake, another
            # library's patch) is not ours to replace.
            if current is wrapper.__wrapped__ or isinstance(current, SkewedClock):
                setattr(module, attribute, wrapper)
                _installed[key] = wrapper


def unpatch(module: ModuleType) -> None:
    global _offset_s, _offset_ns
    with _lock:
        for attribute in _ATTRIBUTES.get(module.__name__, {}):
            key = (module.__name__, attribute)
            if key not in _installed:
                continue
            wrapper = _installed.pop(key)
            # pytest-socket style: restore only where the current value is ours.
            if module.__dict__.get(attribute) is wrapper:
                setattr(module, attribute, wrapper.__wrapped__)
        if module.__name__ == TIME_MODULE:
            _offset_s, _offset_ns = 0.0, 0
        if not any(name == TIME_MODULE for name, _ in _installed):
            # No wrapper of this cycle left in the time module: the next patch wraps afresh
            # whatever time.time is then. Throttler bindings still holding ours keep working.
            _wrappers.clear()
