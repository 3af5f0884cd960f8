"""ccxt REST: one wrapper on each ``BaseExchange.fetch`` (sync and async) dispatching to every
active REST scenario, and thin wrappers on the unified methods that label each request.

Errors are made by the exchange instance's own ``handle_errors`` and ``handle_http_status_code``
(then ccxt's ``ExchangeError`` fallback), exactly as a real response would be handled; a request
with an injected fault never reaches the server. Imported only once ccxt has been imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from ccxt.base.errors import (
    BaseError,
    ExchangeError,
    ExchangeNotAvailable,
    NetworkError,
    RequestTimeout,
)

from chaos_shims.core import runtime
from chaos_shims.core.config import snake_case
from chaos_shims.core.faults import HTTP_REASONS, ConnectionLoss, Delay, Fault, HttpStatus
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.registry import REST
from chaos_shims.integrations.waiting import sleep_precisely
from chaos_shims.integrations.wrapping import ModuleWraps, subclasses_of

logger = logging.getLogger("chaos_shims")

SYNC_MODULE = "ccxt.base.exchange"
ASYNC_MODULE = "ccxt.async_support.base.exchange"
#: op of a request made outside any unified method (an implicit endpoint called directly)
UNLABELLED = "request"

#: The unified method a request belongs to: set by the outermost labelled call. A ContextVar,
#: so async code, asyncio.gather and the child tasks of fetch_markets all see the right one.
current_op: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chaos_shims_ccxt_op", default=None)

_lock = threading.RLock()
_base_wraps = ModuleWraps()
# class -> [(attribute, what the class held before)] of its labelled unified methods
_label_wraps: dict[type, list[tuple[str, Any]]] = {}
_unified_names: dict[type, frozenset[str]] = {}


def _request_target(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    url = args[0] if args else kwargs.get("url", "")
    method = args[1] if len(args) > 1 else kwargs.get("method", "GET")
    return str(url), str(method)


def _error_for(instance: Any, fault: Fault, url: str, method: str, *, is_async: bool) -> BaseException:
    """The exception ccxt itself raises for this failure, from the instance's own handlers."""
    details = " ".join([instance.id, method, url])
    if isinstance(fault, ConnectionLoss):
        if fault.timeout_ms > 0:
            return RequestTimeout(details)
        # requests reports a reset as ConnectionError -> NetworkError; aiohttp as a
        # ClientConnectionError -> ExchangeNotAvailable (see ccxt's two fetch implementations).
        error: BaseException = ExchangeNotAvailable(details) if is_async else NetworkError(details)
        error.__cause__ = ConnectionResetError(104, "Connection reset by peer")
        return error
    if isinstance(fault, HttpStatus):
        reason = fault.reason or HTTP_REASONS.get(fault.status, "")
        headers = {"Content-Type": "text/html", **fault.headers()}
        body = ""
        # What a bot reads to honour Retry-After: ccxt keeps it here for real responses too.
        if instance.enableLastResponseHeaders:
            instance.last_response_headers = headers
        if instance.enableLastHttpResponse:
            instance.last_http_response = body
        try:
            skip = instance.handle_errors(fault.status, reason, url, method, headers, body, None,
                                          None, None)
            if is_async or not skip:
                instance.handle_http_status_code(fault.status, reason, url, method, body)
        except BaseError as exc:
            return exc
        return ExchangeError(details)
    raise TypeError(f"ccxt REST cannot apply {fault!r}")


def _split(faults: tuple[Fault, ...]) -> tuple[float, Fault | None]:
    """Total delay in seconds, and the first fault that ends the request (delays come first)."""
    delay = 0.0
    ending: Fault | None = None
    for fault in faults:
        if isinstance(fault, Delay):
            delay += fault.ms
        elif ending is None:
            ending = fault
    if isinstance(ending, ConnectionLoss):
        delay += ending.timeout_ms
    return delay / 1000.0, ending


def _op_of(instance: Any) -> str:
    op = current_op.get()
    if op is None:
        # An instance made before chaos was active, or an implicit endpoint called directly.
        _label_class(type(instance), instance)
        op = _op_from_stack(instance)
    return op


def _faulted(instance: Any, faults: tuple[Fault, ...], args: tuple[Any, ...],
             kwargs: dict[str, Any], is_async: bool) -> tuple[float, BaseException | None]:
    """The delay to apply and the ccxt error to raise for the live faults of one request."""
    url, method = _request_target(args, kwargs)
    delay, ending = _split(faults)
    error = None if ending is None else _error_for(instance, ending, url, method, is_async=is_async)
    return delay, error


def _sync_fetch(original: Callable[..., Any]) -> Callable[..., Any]:
    """``BaseExchange.fetch`` (sync) as chaos_shims serves it: a plain function, not a wrapt
    proxy, because every REST request goes through it (see integrations/wrapping.py)."""

    def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        injector = runtime.active
        if injector is None:
            return original(self, *args, **kwargs)
        try:
            exchange = self.id
            op = current_op.get() or _op_of(self)
            faults = injector.plan(REST, exchange, op, args[0] if args else kwargs.get("url"))
            if faults:
                delay, error = _faulted(self, faults, args, kwargs, False)
                if delay:
                    time.sleep(delay)
                if error is not None:
                    injector.observe(op, exchange, True)
                    raise error
        except BaseError:
            raise
        except Exception as exc:  # chaos_shims' own bug: turn off, let the call through
            injector.fail(exc)
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            injector.observe(op, exchange, True)
            raise
        injector.observe(op, exchange, False)
        return result

    return fetch


def _async_fetch(original: Callable[..., Any]) -> Callable[..., Any]:
    """``BaseExchange.fetch`` (async): a plain function returning the coroutine, so the
    dormant path adds no coroutine frame."""

    def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        injector = runtime.active
        if injector is None:
            return original(self, *args, **kwargs)
        return _fetch_async_active(injector, original, self, args, kwargs)

    return fetch


async def _fetch_async_active(injector: ChaosInjector, original: Callable[..., Any], instance: Any,
                              args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        exchange = instance.id
        op = current_op.get() or _op_of(instance)
        faults = injector.plan(REST, exchange, op, args[0] if args else kwargs.get("url"))
        if faults:
            delay, error = _faulted(instance, faults, args, kwargs, True)
            if delay:
                await sleep_precisely(delay)
            if error is not None:
                injector.observe(op, exchange, True)
                raise error
    except BaseError:
        raise
    except Exception as exc:
        injector.fail(exc)
        return await original(instance, *args, **kwargs)
    try:
        result = await original(instance, *args, **kwargs)
    except BaseException:
        injector.observe(op, exchange, True)
        raise
    injector.observe(op, exchange, False)
    return result


# -- labelling requests with their unified method -------------------------------------------

def _op_from_stack(instance: Any) -> str:
    """The outermost unified method of ``instance`` on the current stack (sync and awaited
    calls; child tasks have their own stacks, which is why the ContextVar is the main path)."""
    names = _unified_names.get(type(instance), ())
    found = UNLABELLED
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name in names and frame.f_locals.get("self") is instance:
            found = frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return found


# Labels are plain functions set on the class, not wrapt proxies: a unified method is looked
# up on every call and wrapt would build a bound proxy each time; this keeps the labelling
# to a ContextVar get/set/reset. They are recorded and restored exactly like wraps.
LABEL_MARK = "__chaos_shims_label__"


def _sync_label(op: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def labelled(self: Any, *args: Any, **kwargs: Any) -> Any:
        if current_op.get() is not None:  # keep the outermost: create_order's load_markets
            return original(self, *args, **kwargs)
        token = current_op.set(op)
        try:
            return original(self, *args, **kwargs)
        finally:
            current_op.reset(token)
    return _mark(labelled, original)


def _async_label(op: str, original: Callable[..., Any]) -> Callable[..., Any]:
    async def labelled(self: Any, *args: Any, **kwargs: Any) -> Any:
        if current_op.get() is not None:
            return await original(self, *args, **kwargs)
        token = current_op.set(op)
        try:
            return await original(self, *args, **kwargs)
        finally:
            current_op.reset(token)
    return _mark(labelled, original)


def _mark(labelled: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    functools.update_wrapper(labelled, original)
    setattr(labelled, LABEL_MARK, True)
    return labelled


def unified_methods(cls: type, has: dict[str, Any]) -> list[str]:
    """The unified method names of an exchange class: its ``has`` entries, plus load_markets."""
    names = {snake_case(name) for name, supported in has.items() if supported}
    names.add("load_markets")
    return _defined(cls, names)


def _defined(cls: type, names: Iterable[str]) -> list[str]:
    return sorted(name for name in names if inspect.isfunction(inspect.getattr_static(cls, name, None)))


_MISSING = object()


def _label_class(cls: type, instance: Any) -> None:
    if cls in _label_wraps:
        return
    with _lock:
        if cls in _label_wraps:
            return
        _label(cls, unified_methods(cls, getattr(instance, "has", None) or {}))


def _label(cls: type, names: list[str]) -> None:
    """Label ``names`` on ``cls`` (under the lock)."""
    # (name, what cls.__dict__ held before, or _MISSING when the method was inherited)
    saved: list[tuple[str, Any]] = []
    _unified_names[cls] = frozenset(names)
    for name in names:
        function = inspect.getattr_static(cls, name)
        if getattr(function, LABEL_MARK, False):
            continue  # a labelled base class already covers this subclass
        maker = _async_label if inspect.iscoroutinefunction(function) else _sync_label
        saved.append((name, cls.__dict__.get(name, _MISSING)))
        setattr(cls, name, maker(name, function))
    _label_wraps[cls] = saved
    # the constructor that made the first instance copied the names before they were labelled
    resync_camelcase_copies(subclasses_of(cls), [name for name, _ in saved])


def _unlabel_class(cls: type) -> None:
    _unified_names.pop(cls, None)
    saved = _label_wraps.pop(cls, [])
    for name, previous in reversed(saved):
        if previous is _MISSING:
            delattr(cls, name)
        else:
            setattr(cls, name, previous)
    resync_camelcase_copies(subclasses_of(cls), [name for name, _ in saved])


def _innermost(function: Any) -> Any:
    for _ in range(16):  # a chain of wrappers, never a cycle
        inner = getattr(function, "__wrapped__", None)
        if inner is None:
            break
        function = inner
    return function


def resync_camelcase_copies(classes: Iterable[type], names: Iterable[str]) -> None:
    """Do for ``names`` now what ccxt's constructor does at every instance: copy each snake_case
    method to its camelCase name on the class (``cls.fetchBalance = cls.fetch_balance``).

    Why: a copy made before a wrap (or during one) keeps what the snake name held then, so
    ``exchange.fetchBalance()`` would miss a wrap made after the last instance, and keep a
    dormant one after unpatching. Only slots ccxt made are touched (it records each name in
    ``_camelcase_cache``), and only when they copy the same method: a class's own camelCase
    override stays."""
    names = list(names)
    for cls in classes:
        conversions = getattr(cls, "_camelcase_cache", None)
        if not conversions:
            continue
        own = cls.__dict__
        for name in names:
            camel = conversions.get(name)
            copy = own.get(camel) if camel and camel != name else None
            if copy is None:
                continue
            current = inspect.getattr_static(cls, name, None)
            if current is not None and copy is not current and _innermost(copy) is _innermost(current):
                setattr(cls, camel, current)


def _unlabel_classes(classes: list[type]) -> None:
    # subclasses first, so a class is restored after the classes that inherit from it
    for cls in sorted(classes, key=lambda c: len(c.__mro__), reverse=True):
        _unlabel_class(cls)


@contextlib.contextmanager
def labels_lifted() -> Iterator[None]:
    """Every label taken off its class for the duration, then put back on top, under the lock.

    For an integration that replaces methods under the labels (``ccxt_reconcile``): done in
    here, its wrappers sit directly on ccxt's own methods with the labels outermost, and each
    unpatch (ours, or theirs) restores exactly what it found, whichever goes first."""
    with _lock:
        labelled = list(_label_wraps)
        if not labelled:
            yield
            return
        names = {cls: _unified_names.get(cls, frozenset()) for cls in labelled}
        _unlabel_classes(labelled)
        try:
            yield
        finally:
            for cls in sorted(labelled, key=lambda c: len(c.__mro__)):
                _label(cls, _defined(cls, names[cls]))


def _init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        _label_class(type(instance), instance)
    except Exception:  # labelling is a convenience; never break an exchange's constructor
        logger.exception("chaos_shims: could not label the unified methods of %s", type(instance))
    return result


# -- the integration surface ------------------------------------------------------------------

def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    """The attributes ``patch`` replaces in ``module`` (unified methods are labelled per class)."""
    base = module.BaseExchange
    return [(base, "fetch"), (base, "__init__")]


def labelled_classes() -> list[type]:
    with _lock:
        return list(_label_wraps)


def is_patched(module: ModuleType) -> bool:
    return _base_wraps.is_patched(module)


def patch(module: ModuleType) -> None:
    with _lock:
        base = module.BaseExchange
        fetch = _async_fetch if module.__name__ == ASYNC_MODULE else _sync_fetch
        _base_wraps.wrap(module, [(base, "__init__", _init)], plain=[(base, "fetch", fetch)])


def unpatch(module: ModuleType) -> None:
    with _lock:
        if not _base_wraps.unwrap(module):
            return
        _unlabel_classes([c for c in _label_wraps if family_of(c) == module.__name__])


def family_of(cls: type) -> str | None:
    """The module whose BaseExchange a class belongs to (async first: it subclasses sync)."""
    for name in (ASYNC_MODULE, SYNC_MODULE):
        module = sys.modules.get(name)
        if module is not None and issubclass(cls, module.BaseExchange):
            return name
    return None
