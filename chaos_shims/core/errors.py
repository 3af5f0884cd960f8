"""Errors chaos_shims raises to its own users."""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any


class ChaosConfigError(ValueError):
    """A configuration value, key or source that chaos_shims cannot accept.

    The message always names the key, the value given and what is allowed, so the person who
    wrote it can fix it without reading the source.
    """

    def __init__(self, key: str, value: Any, allowed: str, *, source: str | None = None) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"invalid chaos config {key}={value!r}{where}: allowed: {allowed}")


class InjectedFault(Exception):
    """Raised by ``ChaosInjector.inject`` at a code path no shim reaches (a bot's own client).

    Each subclass also derives from the built-in error a real failure raises, so existing
    handlers (``except ConnectionError``, ``except TimeoutError``) catch it unchanged.
    """

    scenario: str = ""


class InjectedConnectionLoss(InjectedFault, ConnectionResetError):
    """The request never reached the server: the connection was reset."""


class InjectedTimeout(InjectedFault, TimeoutError):
    """The request never reached the server and the client timed out."""


class InjectedHTTPError(InjectedFault):
    """The server answered with an HTTP error status (``status``, ``headers``)."""

    def __init__(self, status: int, headers: dict[str, str], message: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
