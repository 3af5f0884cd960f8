"""aiohttp's resolvers: ``ThreadedResolver.resolve`` and ``AsyncResolver.resolve`` (aiodns), the
name resolution of ccxt async REST and of ccxt.pro's websockets.

- ``AsyncResolver`` asks c-ares, which ``socket.getaddrinfo`` never sees: the fault is decided
  here and raised as aiohttp raises a c-ares failure, ``OSError(None, message)`` caused by
  ``aiodns.error.DNSError(ARES_ETIMEOUT, message)`` (c-ares' "temporary failure").
- ``ThreadedResolver`` calls ``loop.getaddrinfo``. On asyncio's own loops that runs
  ``socket.getaddrinfo`` in the executor, where the ``socket_dns`` wrapper decides, so this
  wrapper stands aside (one lookup, one decision). On other loops (uvloop resolves inside
  libuv) it decides here and raises the loop's own ``socket.gaierror(EAI_AGAIN, ...)``.

Either way aiohttp's connector turns the error into ``ClientConnectorDNSError`` and ccxt into
``ExchangeNotAvailable`` (REST) or ``NetworkError`` (ccxt.pro). Lookups the connector answers
from its DNS cache (``use_dns_cache``, 10 s by default) never reach a resolver, and so never
flap: that is what a real outage does to a warm cache too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, NoReturn

import wrapt

from chaos_shims.core import runtime
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.integrations import socket_dns

logger = logging.getLogger("chaos_shims")

MODULE = "aiohttp.resolver"
#: c-ares' text for ARES_ETIMEOUT, used when pycares cannot be asked
ARES_ETIMEOUT_FALLBACK = "Timeout while contacting DNS servers"

_lock = threading.Lock()
_handles: list[tuple[Any, str, Any]] = []  # (class, attribute, FunctionWrapper)


def c_ares_temporary_failure(resolver_module: ModuleType) -> OSError:
    """What ``AsyncResolver.resolve`` raises when c-ares times out contacting its servers."""
    aiodns = resolver_module.aiodns  # aiohttp's own reference: we never import aiodns
    code = aiodns.error.ARES_ETIMEOUT
    errno_module = sys.modules.get("pycares.errno")
    message = (errno_module.strerror(code) if errno_module is not None
               else ARES_ETIMEOUT_FALLBACK)
    error = OSError(None, message)
    error.__cause__ = aiodns.error.DNSError(code, message)
    return error


async def _fail_when_awaited(error: BaseException) -> NoReturn:
    raise error


def _decide(injector: ChaosInjector, wrapped: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any], make_error: Callable[[], BaseException]) -> Any:
    try:
        host = args[0] if args else kwargs.get("host")
        error = socket_dns.resolution_error(injector, host, 0, make_error)
    except Exception as exc:  # chaos_shims' own bug: turn off, let the lookup through
        injector.fail(exc)
        return wrapped(*args, **kwargs)
    if error is None:
        return wrapped(*args, **kwargs)
    return _fail_when_awaited(error)


def _reaches_socket_getaddrinfo(resolver: Any) -> bool:
    """Whether this ThreadedResolver's lookups run through the patched socket.getaddrinfo."""
    loop = getattr(resolver, "_loop", None)
    if getattr(type(loop), "getaddrinfo", None) is not asyncio.BaseEventLoop.getaddrinfo:
        return False
    return socket_dns.is_patched(sys.modules["socket"])


def _threaded_resolve(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    # A plain function returning the coroutine: the dormant path adds no coroutine frame.
    injector = runtime.active
    if injector is None or _reaches_socket_getaddrinfo(instance):
        return wrapped(*args, **kwargs)
    return _decide(injector, wrapped, args, kwargs, socket_dns.temporary_failure)


def _async_resolve(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    injector = runtime.active
    if injector is None:
        return wrapped(*args, **kwargs)
    module = sys.modules[MODULE]
    return _decide(injector, wrapped, args, kwargs, lambda: c_ares_temporary_failure(module))


# -- the integration surface ------------------------------------------------------------------

def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    return [(module.ThreadedResolver, "resolve"), (module.AsyncResolver, "resolve")]


def is_patched(module: ModuleType) -> bool:
    with _lock:
        return any(owner.__dict__.get(name) is handle for owner, name, handle in _handles)


def patch(module: ModuleType) -> None:
    with _lock:
        if _handles:
            return
        for owner, wrapper in ((module.ThreadedResolver, _threaded_resolve),
                               (module.AsyncResolver, _async_resolve)):
            _handles.append((owner, "resolve",
                             wrapt.wrap_function_wrapper(owner, "resolve", wrapper)))


def unpatch(module: ModuleType) -> None:
    with _lock:
        kept = []
        for owner, name, handle in reversed(_handles):
            try:
                # missing_ok: someone replaced the method wholesale; theirs stays.
                wrapt.unwrap_object(owner, name, handle, missing_ok=True)
            except wrapt.WrapperNotOutermostError:
                logger.warning("chaos_shims: %s.%s was patched over; leaving it in place",
                               owner.__name__, name)
                kept.append((owner, name, handle))
        _handles[:] = kept
