"""ccxt reconciliation calls: the unified ``fetch_open_orders``, ``fetch_orders``,
``fetch_order``, ``fetch_balance``, ``fetch_positions`` and ``fetch_my_trades`` (sync and async)
return, when ``reconcile_mismatch`` fires, a deep copy of their result with one mismatch in it.
ccxt's own objects (the response, ``exchange.orders``, ``exchange.balance``...) are never touched.

Where: every definition of those six methods in the ccxt class family (``Exchange``'s generic
ones, each exchange's own) is replaced by a thin plain function, at patch time for the classes
that exist then, and at the first instance (a ``BaseExchange.__init__`` wrapper) for classes
defined later (ccxt's exchange modules load after ``ccxt.base.exchange``). Instances made before
activation are covered too.

Living with ``ccxt_rest``: its request labels are plain functions on the same class slots,
wrapping whatever the slot held when the class was labelled, and its unpatch puts back exactly
that. So the reconciliation wrappers always sit directly on ccxt's own methods, with the labels
on top: whenever this module wraps or unwraps, it does so inside ``ccxt_rest.labels_lifted()``
(the labels off, then back on top, under ``ccxt_rest``'s lock). Either integration can then be
unpatched first. Importing ``ccxt_rest`` patches nothing: its labels exist only while it is
patched.

Only the outermost call mutates: ``fetch_open_orders`` built on ``fetch_orders`` mutates once,
and (when ``ccxt_rest`` labels are in place) a ``fetch_order`` made inside ``create_order`` is
left alone. Imported only once ccxt has been imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from chaos_shims import signals
from chaos_shims.core import runtime
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.registry import RECONCILE
from chaos_shims.integrations import ccxt_rest
from chaos_shims.integrations.wrapping import ModuleWraps, subclasses_of
from chaos_shims.scenarios import reconcile_mismatch
from chaos_shims.scenarios.reconcile_mismatch import (
    BALANCE_CHANGED,
    FILL_CHANGED,
    ORDER_DROPPED,
    PHANTOM_ORDER,
    POSITION_CHANGED,
    TRADE_DROPPED,
    Mismatch,
)

logger = logging.getLogger("chaos_shims")

SYNC_MODULE = "ccxt.base.exchange"
ASYNC_MODULE = "ccxt.async_support.base.exchange"

RECONCILE_METHODS: tuple[str, ...] = ("fetch_open_orders", "fetch_orders", "fetch_order",
                                      "fetch_balance", "fetch_positions", "fetch_my_trades")

#: True inside a reconciliation call: nested ones (fetch_open_orders -> fetch_orders) pass
#: their result through untouched; the outermost decides.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "chaos_shims_reconciling", default=False)

_lock = threading.RLock()
_base_wraps = ModuleWraps()
# (class, method name) -> (our wrapper, the function the class held before)
_method_wraps: dict[tuple[type, str], tuple[Callable[..., Any], Callable[..., Any]]] = {}
# classes whose whole MRO is wrapped: the __init__ wrapper's fast path
_covered: set[type] = set()


# -- the wrappers on the six methods ----------------------------------------------------------

def _sync_reconciled(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def reconciled(self: Any, *args: Any, **kwargs: Any) -> Any:
        injector = runtime.active
        if injector is None or _inside.get() or not injector.armed(RECONCILE):
            return original(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            result = original(self, *args, **kwargs)
        finally:
            _inside.reset(token)
        return _mismatched(injector, self, name, args, kwargs, result)
    return functools.update_wrapper(reconciled, original)


def _async_reconciled(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    async def reconciled(self: Any, *args: Any, **kwargs: Any) -> Any:
        injector = runtime.active
        if injector is None or _inside.get() or not injector.armed(RECONCILE):
            return await original(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            result = await original(self, *args, **kwargs)
        finally:
            _inside.reset(token)
        return _mismatched(injector, self, name, args, kwargs, result)
    return functools.update_wrapper(reconciled, original)


def _inside_another_unified_method(name: str) -> bool:
    op = ccxt_rest.current_op.get()  # None unless ccxt_rest labels are in place
    return op is not None and op != name


def _mismatched(injector: ChaosInjector, exchange: Any, name: str, args: tuple[Any, ...],
                kwargs: dict[str, Any], result: Any) -> Any:
    """``result``, or a deep copy of it with the mismatch the scenario decided on."""
    try:
        if _inside_another_unified_method(name):
            return result
        kinds = applicable_mutations(name, result)
        if not kinds:
            return result  # nothing to mutate: no decision, nothing recorded
        token = reconcile_mismatch.applicable.set(kinds)
        try:
            faults = injector.plan(RECONCILE, exchange.id, name, None)
        finally:
            reconcile_mismatch.applicable.reset(token)
        for fault in faults:
            if isinstance(fault, Mismatch):
                mutated = copy.deepcopy(result)
                mutate(exchange, name, _symbol_argument(args, kwargs), mutated, fault)
                signals.count(injector, signals.INJECTED, fault.kind)
                return mutated
        return result
    except Exception as exc:  # chaos_shims' own bug: turn off, hand back the real result
        injector.fail(exc)
        return result


def _symbol_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    symbol = args[0] if args else kwargs.get("symbol")
    return symbol if isinstance(symbol, str) else None


# -- the mutations, on ccxt's unified structures -------------------------------------------------

#: keys of a unified balance that are not currencies
BALANCE_KEYS = frozenset({"info", "timestamp", "datetime", "free", "used", "total", "debt"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fillable(order: Any) -> bool:
    return isinstance(order, dict) and _number(order.get("amount")) and order["amount"] > 0


def _droppable(name: str, orders: list[Any]) -> list[int]:
    """Indices of the open orders a list could miss (every one in ``fetch_open_orders``)."""
    return [index for index, order in enumerate(orders) if isinstance(order, dict)
            and (name == "fetch_open_orders" or order.get("status") == "open")]


def _currencies(balance: dict[str, Any]) -> list[str]:
    return [code for code, entry in balance.items()
            if code not in BALANCE_KEYS and isinstance(entry, dict)
            and (_positive(entry.get("free")) or _positive(entry.get("used")))]


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _sized_positions(positions: list[Any]) -> list[int]:
    return [index for index, position in enumerate(positions)
            if isinstance(position, dict) and _number(position.get("contracts"))
            and position["contracts"] != 0]


def applicable_mutations(name: str, result: Any) -> tuple[str, ...]:
    """The mutation types that can be applied to this call's result, in a fixed order.

    Empty open orders still take a phantom order; an empty balance, position list or trade
    list takes nothing (then no decision is made and nothing is recorded).
    """
    if name in ("fetch_open_orders", "fetch_orders"):
        if not isinstance(result, list):
            return ()
        kinds = [ORDER_DROPPED] if _droppable(name, result) else []
        kinds.append(PHANTOM_ORDER)
        if any(_fillable(order) for order in result):
            kinds.append(FILL_CHANGED)
        return tuple(kinds)
    if name == "fetch_order":
        return (FILL_CHANGED,) if _fillable(result) else ()
    if name == "fetch_balance":
        return (BALANCE_CHANGED,) if isinstance(result, dict) and _currencies(result) else ()
    if name == "fetch_positions":
        return (POSITION_CHANGED,) if isinstance(result, list) and _sized_positions(result) else ()
    if name == "fetch_my_trades":
        return (TRADE_DROPPED,) if isinstance(result, list) and result else ()
    return ()


def mutate(exchange: Any, name: str, symbol: str | None, result: Any, fault: Mismatch) -> None:
    """Apply ``fault`` to ``result`` (already a copy) in place."""
    kind = fault.kind
    if kind == ORDER_DROPPED:
        indices = _droppable(name, result)
        del result[_choose(indices, fault.pick)]
    elif kind == PHANTOM_ORDER:
        result.append(phantom_order(exchange, result, symbol, fault))
    elif kind == FILL_CHANGED:
        if isinstance(result, list):
            order = result[_choose([i for i, o in enumerate(result) if _fillable(o)], fault.pick)]
        else:
            order = result
        change_fill(exchange, order, fault.scale)
    elif kind == BALANCE_CHANGED:
        change_balance(result, _choose(_currencies(result), fault.pick), fault.scale)
    elif kind == POSITION_CHANGED:
        position = result[_choose(_sized_positions(result), fault.pick)]
        factor = _factor(fault.scale)
        for field in ("contracts", "notional", "initialMargin", "maintenanceMargin",
                      "unrealizedPnl"):
            if _number(position.get(field)):
                position[field] = _round(position[field] * factor)
    elif kind == TRADE_DROPPED:
        del result[_choose(list(range(len(result))), fault.pick)]
    else:
        raise ValueError(f"reconcile_mismatch cannot apply {kind!r} to {name}")


def _choose(items: list[Any], pick: float) -> Any:
    return items[min(len(items) - 1, int(pick * len(items)))]


def _factor(scale: float) -> float:
    """A change of 5% to 50%, down for scale < 0.5, up above: never a no-op."""
    change = 0.05 + 0.9 * (scale % 0.5)
    return 1.0 - change if scale < 0.5 else 1.0 + change


def _round(value: float) -> float:
    return round(value, 10)


def _amount(exchange: Any, symbol: Any, value: float) -> float:
    """``value`` at the market's amount precision, as the exchange would report it."""
    try:
        return float(exchange.amount_to_precision(symbol, value))
    except Exception:  # unknown market, or below its minimum: plain rounding is shaped enough
        return _round(value)


def change_fill(exchange: Any, order: dict[str, Any], scale: float) -> None:
    """A fill the bot has not seen (open orders), or one reported lower than it was."""
    amount = float(order["amount"])
    filled = float(order.get("filled") or 0.0)
    status: Any = order.get("status")
    new_status: Any
    fraction = (0.25, 0.5, 0.75, 1.0)[min(3, int(scale * 4))]
    if status in (None, "open") and filled < amount:
        new_filled = _amount(exchange, order.get("symbol"), filled + (amount - filled) * fraction)
        new_status = "closed" if new_filled >= amount else "open"
    elif filled > 0:
        new_filled = _amount(exchange, order.get("symbol"), filled * (1.0 - fraction))
        new_status = "open" if status == "closed" else status
    else:  # canceled or expired with nothing filled: a partial fill that was never reported
        new_filled = _amount(exchange, order.get("symbol"), amount * min(fraction, 0.75))
        new_status = status
    if new_filled == filled:  # precision ate the change: make it a whole one
        new_filled = amount if filled < amount else 0.0
        new_status = "closed" if new_filled >= amount else status
    order["filled"] = new_filled
    order["remaining"] = _round(max(0.0, amount - new_filled))
    order["status"] = new_status
    price: Any = order.get("average") or order.get("price")
    if _number(price):
        order["cost"] = _round(new_filled * price)
        order["average"] = price if new_filled > 0 else None


def change_balance(balance: dict[str, Any], code: str, scale: float) -> None:
    """One currency's free (or, when nothing is free, used) amount differs; totals follow."""
    entry = balance[code]
    field = "free" if _positive(entry.get("free")) else "used"
    entry[field] = _round(entry[field] * _factor(scale))
    free, used = entry.get("free") or 0.0, entry.get("used") or 0.0
    entry["total"] = _round(free + used)
    for aggregate in (field, "total"):
        table = balance.get(aggregate)
        if isinstance(table, dict) and code in table:
            table[code] = entry[aggregate]


def phantom_order(exchange: Any, orders: list[Any], symbol: str | None,
                  fault: Mismatch) -> dict[str, Any]:
    """An open order the exchange does not have, shaped by ccxt's own ``safe_order`` and, when
    the list has one, like a real order of it (symbol, side, size, client id prefix)."""
    templates = [order for order in orders if isinstance(order, dict)
                 and (symbol is None or order.get("symbol") == symbol)]
    template: dict[str, Any] = _choose(templates, fault.pick) if templates else {}
    symbol = symbol or template.get("symbol") or _first_symbol(exchange)
    market = (getattr(exchange, "markets", None) or {}).get(symbol) or {}
    price: Any = template.get("price")
    if _number(price):
        # a price near the real one, at the market's precision
        price = price * (1.0 + (fault.scale - 0.5) * 0.02)
        with contextlib.suppress(Exception):
            price = float(exchange.price_to_precision(symbol, price))
    else:
        price = _limit(market, "price") or 1.0
    amount = template.get("amount") if _number(template.get("amount")) else (
        _limit(market, "amount") or 1.0)
    side = template.get("side") or ("buy" if fault.scale < 0.5 else "sell")
    now = int(exchange.milliseconds())
    return exchange.safe_order({
        "id": _phantom_id(orders, fault.pick),
        "clientOrderId": _phantom_client_id(template.get("clientOrderId"), fault),
        "timestamp": now,
        "datetime": exchange.iso8601(now),
        "lastUpdateTimestamp": now,
        "symbol": symbol,
        "type": template.get("type") or "limit",
        "timeInForce": template.get("timeInForce") or "GTC",
        "side": side,
        "price": price,
        "amount": amount,
        "filled": 0.0,
        "remaining": amount,
        "cost": 0.0,
        "status": "open",
        "trades": [],
        "info": {},
    })


def _first_symbol(exchange: Any) -> str | None:
    symbols = getattr(exchange, "symbols", None) or []
    return symbols[0] if symbols else None


def _limit(market: dict[str, Any], name: str) -> float | None:
    value: Any = ((market.get("limits") or {}).get(name) or {}).get("min")
    return float(value) if _number(value) and value > 0 else None


def _phantom_id(orders: list[Any], pick: float) -> str:
    # Numeric like the exchange's own ids, well above the newest so it names no real order.
    numeric = [int(order["id"]) for order in orders
               if isinstance(order, dict) and str(order.get("id", "")).isdigit()]
    newest = max(numeric, default=0)
    return str(newest + 10**9 + int(pick * 10**8))


def _phantom_client_id(template: Any, fault: Mismatch) -> str:
    # Keep a real client id's prefix (bots recognise their own orders by it), new tail.
    tail = f"{int(fault.pick * 2**32):08x}{int(fault.scale * 2**32):08x}"
    if isinstance(template, str) and len(template) > len(tail):
        return template[: len(template) - len(tail)] + tail
    return tail


# -- wrapping the classes ------------------------------------------------------------------------

def _wrap_definitions(classes: Iterable[type]) -> None:
    for cls in classes:
        for name in RECONCILE_METHODS:
            if (cls, name) in _method_wraps:
                continue
            function = cls.__dict__.get(name)
            if not inspect.isfunction(function):
                continue
            maker = _async_reconciled if inspect.iscoroutinefunction(function) else _sync_reconciled
            wrapper = maker(name, function)
            _method_wraps[(cls, name)] = (wrapper, function)
            setattr(cls, name, wrapper)


def _cover(cls: type) -> None:
    """Wrap the definitions along ``cls``'s MRO (a class defined after the patch)."""
    with _lock:
        if cls in _covered:
            return
        family = ccxt_rest.family_of(cls)
        if family is None or family not in _base_wraps:
            return
        classes = [c for c in cls.__mro__ if ccxt_rest.family_of(c) == family]
        if any((c, name) not in _method_wraps for c in classes for name in RECONCILE_METHODS
               if inspect.isfunction(c.__dict__.get(name))):
            with ccxt_rest.labels_lifted():
                _wrap_definitions(classes)
                ccxt_rest.resync_camelcase_copies(classes, RECONCILE_METHODS)
        _covered.add(cls)


def _init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    if type(instance) not in _covered:
        try:
            _cover(type(instance))
        except Exception:  # never break an exchange's constructor
            logger.exception("chaos_shims: could not wrap the reconciliation methods of %s",
                             type(instance))
    return result


# -- the integration surface ---------------------------------------------------------------------

def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    """The attributes ``patch`` wraps with wrapt (the six methods are replaced per class)."""
    return [(module.BaseExchange, "__init__")]


def wrapped_methods() -> list[tuple[type, str]]:
    """(class, method) pairs that hold a reconciliation wrapper now."""
    with _lock:
        return list(_method_wraps)


def is_patched(module: ModuleType) -> bool:
    return _base_wraps.is_patched(module)


def patch(module: ModuleType) -> None:
    with _lock:
        base = module.BaseExchange
        if not _base_wraps.wrap(module, [(base, "__init__", _init)]):
            return
        # Classes that exist already (instances made before activation included).
        classes = [cls for cls in subclasses_of(base)
                   if ccxt_rest.family_of(cls) == module.__name__]
        with ccxt_rest.labels_lifted():
            _wrap_definitions(classes)
            ccxt_rest.resync_camelcase_copies(classes, RECONCILE_METHODS)
        _covered.update(classes)


def unpatch(module: ModuleType) -> None:
    with _lock:
        if not _base_wraps.unwrap(module):
            return
        mine = [key for key in _method_wraps if ccxt_rest.family_of(key[0]) == module.__name__]
        with ccxt_rest.labels_lifted():
            for cls, name in mine:
                wrapper, previous = _method_wraps.pop((cls, name))
                # Only our own wrapper is replaced: a later patch by someone else stays.
                if cls.__dict__.get(name) is wrapper:
                    setattr(cls, name, previous)
            family = [cls for cls in subclasses_of(module.BaseExchange)
                      if ccxt_rest.family_of(cls) == module.__name__]
            ccxt_rest.resync_camelcase_copies(family, RECONCILE_METHODS)
        _covered.difference_update([cls for cls in _covered if ccxt_rest.family_of(cls) == module.__name__])
