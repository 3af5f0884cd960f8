"""``socket.getaddrinfo``: every name resolution made through the socket module.

That is requests/urllib3 (sync ccxt), ``socket.create_connection`` (the sync websockets
client), and asyncio's default ``loop.getaddrinfo``, which runs ``socket.getaddrinfo`` in the
executor (the asyncio websockets client, aiohttp's ``ThreadedResolver``). Not reached: uvloop,
which resolves inside libuv (``aiohttp_resolver`` covers aiohttp there), and aiodns/c-ares.

A fault raises ``socket.gaierror(EAI_AGAIN, ...)`` with the C library's own message, exactly
what a real temporary resolver failure raises, before any lookup is made. Unpatching restores
``socket.getaddrinfo`` only where our wrapper still is: a later patch by someone else stays.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import wrapt

from chaos_shims.core import runtime
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.registry import DNS
from chaos_shims.scenarios.dns_flap import NameResolutionFailure, lookup_target

logger = logging.getLogger("chaos_shims")

MODULE = "socket"
#: glibc's text for EAI_AGAIN, used when the C library cannot be asked
EAI_AGAIN_FALLBACK = "Temporary failure in name resolution"
_FLAGS_POSITION = 5  # getaddrinfo(host, port, family, type, proto, flags)

_lock = threading.Lock()
_handle: Any = None  # the FunctionWrapper installed on socket.getaddrinfo


@functools.cache
def eai_again_message() -> str:
    """The message this platform's resolver gives for EAI_AGAIN (CPython takes it from
    ``gai_strerror`` too), so an injected failure reads exactly like a real one."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.gai_strerror.restype = ctypes.c_char_p
        message = libc.gai_strerror(socket.EAI_AGAIN)
        if message:
            return str(message.decode("utf-8", "replace"))
    except Exception:  # no libc to ask (Windows, a static build): glibc's wording
        logger.debug("chaos_shims: gai_strerror unavailable", exc_info=True)
    return EAI_AGAIN_FALLBACK


def temporary_failure() -> socket.gaierror:
    """The error a temporary resolver failure raises: ``gaierror(EAI_AGAIN, message)``."""
    return socket.gaierror(socket.EAI_AGAIN, eai_again_message())


def resolution_error(injector: ChaosInjector, host: Any, flags: int,
                     make_error: Callable[[], BaseException]) -> BaseException | None:
    """Decide one name resolution: the error to raise instead of resolving, or None.

    Calls that look up no name (IP literals, AI_NUMERICHOST) are not events.
    """
    target = lookup_target(host, flags)
    if target is None:
        return None
    error: BaseException | None = None
    for fault in injector.plan(DNS, None, None, target):
        if not isinstance(fault, NameResolutionFailure):
            raise TypeError(f"name resolution cannot apply {fault!r}")
        error = make_error()
    return error


def _getaddrinfo(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
    injector = runtime.active
    if injector is None:
        return wrapped(*args, **kwargs)
    try:
        host = args[0] if args else kwargs.get("host")
        flags = args[_FLAGS_POSITION] if len(args) > _FLAGS_POSITION else kwargs.get("flags", 0)
        error = resolution_error(injector, host, flags or 0, temporary_failure)
    except Exception as exc:  # chaos_shims' own bug: turn off, let the lookup through
        injector.fail(exc)
        return wrapped(*args, **kwargs)
    if error is not None:
        raise error
    return wrapped(*args, **kwargs)


# -- the integration surface ------------------------------------------------------------------

def patched_attributes(module: ModuleType) -> list[tuple[Any, str]]:
    return [(module, "getaddrinfo")]


def is_patched(module: ModuleType) -> bool:
    """Whether our wrapper is in ``socket.getaddrinfo`` (outermost) right now."""
    return _handle is not None and module.__dict__.get("getaddrinfo") is _handle


def patch(module: ModuleType) -> None:
    global _handle
    with _lock:
        if _handle is not None:
            return
        _handle = wrapt.wrap_function_wrapper(module, "getaddrinfo", _getaddrinfo)


def unpatch(module: ModuleType) -> None:
    global _handle
    with _lock:
        if _handle is None:
            return
        try:
            # missing_ok: someone replaced socket.getaddrinfo wholesale; theirs stays.
            wrapt.unwrap_object(module, "getaddrinfo", _handle, missing_ok=True)
        except wrapt.WrapperNotOutermostError:
            # A plain (non-wrapt) patch sits on top of ours and calls it: leave both. Ours
            # stays known (so a later patch does not add a second one) and dormant.
            logger.warning("chaos_shims: socket.getaddrinfo was patched over by %r; "
                           "leaving it in place", module.__dict__.get("getaddrinfo"))
            return
        _handle = None
