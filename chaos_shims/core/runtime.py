"""The process-wide active injector, read by every wrapper at call time.

Wrappers do ``injector = runtime.active`` and call straight through when it is None: enabling
and disabling chaos never re-patches anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.patching import PatchPoint

logger = logging.getLogger("chaos_shims")

active: ChaosInjector | None = None
_enabled_points: dict[str, PatchPoint] = {}
_lock = threading.RLock()


def install(injector: ChaosInjector, points: Iterable[PatchPoint]) -> None:
    """Make ``injector`` the active one and make sure its patch points are in place."""
    global active
    with _lock:
        previous = active
        active = injector
        if previous is not None and previous is not injector:
            previous.close()
        for point in points:
            if point.name not in _enabled_points:
                _enabled_points[point.name] = point
                if _prepare_metrics not in point.listeners:
                    point.listeners.append(_prepare_metrics)
                point.enable()
        if any(point.is_patched() for point in _enabled_points.values()):
            _prepare_metrics()


def _prepare_metrics() -> None:
    """Build the metrics once a target is patched, so no request pays the import of
    prometheus_client and every request is counted in mm_partial_fail_rate."""
    injector = active
    if injector is not None:
        injector.metrics  # noqa: B018 - the property builds them


def uninstall(*, unpatch: bool = True) -> ChaosInjector | None:
    """Turn chaos off; with ``unpatch`` also restore every patched object."""
    global active
    with _lock:
        previous, active = active, None
        if unpatch:
            for point in list(_enabled_points.values()):
                point.disable()
            _enabled_points.clear()
    if previous is not None:
        previous.close()
    return previous


def turn_off_after_internal_error(exc: BaseException) -> None:
    """An injector's internal error: leave the wrappers dormant (no re-patching mid-call)."""
    global active
    with _lock:
        if active is not None and active.disabled_reason is not None:
            active = None


def enabled_points() -> list[str]:
    with _lock:
        return list(_enabled_points)
