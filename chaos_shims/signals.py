"""What the bot tells chaos_shims about its reconciliation: ``report_discrepancy(kind)``.

::

    for order in books.open_orders():
        if order.id not in exchange_ids:
            chaos_shims.report_discrepancy("order_dropped")

The bot's own reconciler calls it for every mismatch it finds between its books and what the
exchange says. Compared with the mismatches ``reconcile_mismatch`` injected, this gives the
detection rate, per type and overall. The standard kinds are the mutation types of
``reconcile_mismatch``: ``order_dropped``, ``phantom_order``, ``fill_changed``,
``balance_changed``, ``position_changed``, ``trade_dropped``; any other string is accepted and
counted under its own name.

With chaos off a report costs a function call and a dictionary look-up: nothing is imported,
nothing is counted. It never raises.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos_shims.core.injector import ChaosInjector

__all__ = ["STANDARD_KINDS", "detection_report", "report_discrepancy"]

logger = logging.getLogger("chaos_shims")

_modules = sys.modules
_RUNTIME = "chaos_shims.core.runtime"

#: The mutation types of reconcile_mismatch (kept here as plain strings so a report imports
#: nothing; a test checks they match the scenario's).
STANDARD_KINDS: tuple[str, ...] = ("order_dropped", "phantom_order", "fill_changed",
                                   "balance_changed", "position_changed", "trade_dropped")
INJECTED = "injected"
DETECTED = "detected"
#: Kinds are metric labels: beyond this many distinct non-standard ones, the rest count as
#: OTHER, so a bot passing order ids by mistake cannot flood Prometheus.
MAX_CUSTOM_KINDS = 32
MAX_KIND_LENGTH = 64
OTHER = "other"
UNKNOWN = "unknown"


class DiscrepancyLedger:
    """Injected and detected mismatches by kind, for one injector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}
        self.detected: dict[str, int] = {}

    def add(self, source: str, kind: str) -> str:
        """Count one mismatch; returns the kind it was counted under."""
        side = self.injected if source == INJECTED else self.detected
        with self._lock:
            if (kind not in STANDARD_KINDS and kind not in self.injected
                    and kind not in self.detected and self._custom_kinds() >= MAX_CUSTOM_KINDS):
                kind = OTHER
            side[kind] = side.get(kind, 0) + 1
        return kind

    def _custom_kinds(self) -> int:
        return len((set(self.injected) | set(self.detected)) - set(STANDARD_KINDS))

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.injected), dict(self.detected)


# Keyed by the injector itself, weakly: an injector's counts go when it does.
# (Belongs on ChaosInjector; kept here until the core has a place for it.)
_ledgers: weakref.WeakKeyDictionary[Any, DiscrepancyLedger] = weakref.WeakKeyDictionary()
_ledgers_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child shares its parent's injector object, not its run: its artifact counts
    only the mismatches injected and detected in the child (as its injection counts do)."""
    global _ledgers_lock
    _ledgers_lock = threading.Lock()
    _ledgers.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def ledger_for(injector: ChaosInjector) -> DiscrepancyLedger:
    found = _ledgers.get(injector)
    if found is None:
        with _ledgers_lock:
            found = _ledgers.get(injector)
            if found is None:
                found = _ledgers[injector] = DiscrepancyLedger()
    return found


def _kind_of(kind: object) -> str:
    text = kind if isinstance(kind, str) else str(getattr(kind, "value", kind))
    text = text.strip()[:MAX_KIND_LENGTH]
    return text or UNKNOWN


def count(injector: ChaosInjector, source: str, kind: object) -> None:
    """Count one mismatch from ``source`` (``injected`` by chaos, ``detected`` by the bot)
    in the ledger and in ``mm_reconcile_discrepancies_total{type, source}``."""
    counted = ledger_for(injector).add(source, _kind_of(kind))
    metrics = injector.metrics
    if metrics is not None:
        metrics.count_discrepancy(counted, source)


def report_discrepancy(kind: str) -> None:
    """The bot's own reconciler found a mismatch of ``kind`` (see the module docstring)."""
    runtime = _modules.get(_RUNTIME)  # not imported: chaos was never activated here
    if runtime is None:
        return
    injector = runtime.active
    if injector is None:
        return
    try:
        count(injector, DETECTED, kind)
    except Exception:
        # A report is a convenience for the run's statistics: it never breaks the bot.
        logger.warning("chaos_shims: could not count a reported discrepancy", exc_info=True)


def detection_report(injector: ChaosInjector | None = None) -> dict[str, Any]:
    """Injected vs detected mismatches of ``injector`` (default: the active one): totals, the
    detection rate overall and per type, as in the run artifact (a rate is None when nothing of
    that kind was injected; it never exceeds 1)."""
    from chaos_shims.core.artifacts import detection

    if injector is None:
        runtime = _modules.get(_RUNTIME)
        injector = None if runtime is None else runtime.active
    if injector is None:
        return detection({}, {})
    injected, detected = ledger_for(injector).counts()
    return detection({k: float(v) for k, v in injected.items()},
                     {k: float(v) for k, v in detected.items()})
