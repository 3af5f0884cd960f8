"""exch_429: the exchange answers 429 Too Many Requests, through its own ccxt error handling."""

from __future__ import annotations

from chaos_shims.core.faults import Fault, HttpStatus
from chaos_shims.core.registry import REST, ProbabilityScenario
from chaos_shims.core.values import Probability

#: Retry-After sent with a single 429; exchanges commonly ask for about a second.
RETRY_AFTER_S = 1.0


class Exch429(ProbabilityScenario):
    key = "exch_429"
    summary = "probability per REST request of an HTTP 429 with Retry-After"
    simulates = ("a request-weight limit hit: binance raises DDoSProtection, exchanges without "
                 "their own mapping RateLimitExceeded")
    kind = Probability()
    default = 0.0
    patch_points = ("ccxt_rest",)
    surfaces = frozenset({REST})

    def fault(self) -> Fault:
        return HttpStatus(429, retry_after_s=RETRY_AFTER_S)
