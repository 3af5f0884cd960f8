"""Faults as data: what a scenario decided, independent of the library that will apply it.

An integration (ccxt REST, a websocket client, a bot's own HTTP client through
``ChaosInjector.inject``) turns each fault into that library's own behaviour.
"""

from __future__ import annotations

from chaos_shims.core.frozen import Frozen


class Fault(Frozen):
    """Base of all faults; ``reason_code`` and ``intensity`` go into every record.

    A fault is a frozen value (``chaos_shims.core.frozen``): a subclass annotates its fields,
    lists them in ``__slots__`` and sets them in its ``__init__`` with ``object.__setattr__``.
    A ``@dataclass(frozen=True, slots=True)`` subclass works too, but a scenario module that
    imports dataclasses makes its activation pay for it (about 6 ms).
    """

    __slots__ = ()

    @property
    def reason_code(self) -> str:
        raise NotImplementedError

    @property
    def intensity(self) -> float:
        return 1.0

    @property
    def duration_ms(self) -> float:
        return 0.0


class Delay(Fault):
    """Hold the request back for ``ms`` before it is sent."""

    __slots__ = ("ms",)
    ms: float

    def __init__(self, ms: float) -> None:
        object.__setattr__(self, "ms", ms)

    @property
    def reason_code(self) -> str:
        return "latency_spike"

    @property
    def intensity(self) -> float:
        return self.ms

    @property
    def duration_ms(self) -> float:
        return self.ms


class ConnectionLoss(Fault):
    """The request never reaches the server: a reset, or a timeout after ``timeout_ms``."""

    __slots__ = ("timeout_ms",)
    timeout_ms: float

    def __init__(self, timeout_ms: float = 0.0) -> None:
        object.__setattr__(self, "timeout_ms", timeout_ms)

    @property
    def reason_code(self) -> str:
        return "request_timeout" if self.timeout_ms > 0 else "connection_reset"

    @property
    def duration_ms(self) -> float:
        return self.timeout_ms


class HttpStatus(Fault):
    """The server answers ``status`` (with ``Retry-After`` when given) and nothing else happens."""

    __slots__ = ("code", "reason", "retry_after_s", "status")
    status: int
    retry_after_s: float | None
    reason: str
    code: str

    def __init__(self, status: int, retry_after_s: float | None = None, reason: str = "",
                 code: str = "") -> None:
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "retry_after_s", retry_after_s)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "code", code)

    @property
    def reason_code(self) -> str:
        return self.code or f"http_{self.status}"

    @property
    def intensity(self) -> float:
        return float(self.status)

    @property
    def duration_ms(self) -> float:
        return 0.0 if self.retry_after_s is None else self.retry_after_s * 1000.0

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        # Retry-After is whole seconds (RFC 9110); round up so a client never retries early.
        return {"Retry-After": str(max(1, int(-(-self.retry_after_s // 1))))}


#: Reason phrases, as a real server sends them with the status line.
HTTP_REASONS: dict[int, str] = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
