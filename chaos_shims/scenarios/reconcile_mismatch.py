"""reconcile_mismatch: the order state a bot reconciles against disagrees with its own books.

Per reconciliation call (``fetch_open_orders``, ``fetch_orders``, ``fetch_order``,
``fetch_balance``, ``fetch_positions``, ``fetch_my_trades``), with the configured probability,
one mutation that applies to that call's result is picked from this scenario's own stream. The
integration applies it to a deep copy handed to the caller (ccxt's own state is never touched);
each record's ``reason_code`` is the mutation type, which is also the ``kind`` a bot passes to
``chaos_shims.report_discrepancy`` so detected can be compared with injected.
"""

from __future__ import annotations

import contextvars

from chaos_shims.core.faults import Fault
from chaos_shims.core.registry import RECONCILE, ProbabilityScenario
from chaos_shims.core.values import Probability

ORDER_DROPPED = "order_dropped"  # an open order is missing from the list
PHANTOM_ORDER = "phantom_order"  # an order the exchange does not have is in the list
FILL_CHANGED = "fill_changed"  # an order's filled / remaining / status differ
BALANCE_CHANGED = "balance_changed"  # a currency's free / total differ
POSITION_CHANGED = "position_changed"  # a position's size differs
TRADE_DROPPED = "trade_dropped"  # a trade is missing from the list

MUTATION_TYPES: tuple[str, ...] = (ORDER_DROPPED, PHANTOM_ORDER, FILL_CHANGED, BALANCE_CHANGED,
                                   POSITION_CHANGED, TRADE_DROPPED)

#: The mutation types that apply to the result of the call being decided, set by the
#: integration around ``ChaosInjector.plan`` (``draw`` sees no event details yet). Unset (a bot
#: asking ``should_fire`` itself), any type may be picked.
applicable: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "chaos_shims_reconcile_applicable", default=MUTATION_TYPES)


class Mismatch(Fault):
    """Mutate one reconciliation result: ``kind`` says how; ``pick`` (which element) and
    ``scale`` (by how much) are in [0, 1) and come from the scenario's stream, so a seed fixes
    the whole mutation."""

    __slots__ = ("kind", "pick", "scale")
    kind: str
    pick: float
    scale: float

    def __init__(self, kind: str, pick: float, scale: float) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "pick", pick)
        object.__setattr__(self, "scale", scale)

    @property
    def reason_code(self) -> str:
        return self.kind


class ReconcileMismatch(ProbabilityScenario):
    key = "reconcile_mismatch"
    summary = ("probability per reconciliation call (fetch_open_orders, fetch_balance, ...) that "
               "its result disagrees with the exchange")
    simulates = ("order state that disagrees with the bot's books: an order missed or invented by "
                 "a lagging replica, a fill not yet reported, a stale balance or position")
    kind = Probability()
    default = 0.0
    patch_points = ("ccxt_reconcile",)
    surfaces = frozenset({RECONCILE})

    def fault(self) -> Fault:
        kinds = applicable.get() or MUTATION_TYPES
        kind = kinds[int(self.stream.random() * len(kinds))]
        return Mismatch(kind, self.stream.random(), self.stream.random())
