"""exch_5xx: the exchange answers 500, 502, 503 or 504, through its own ccxt error handling."""

from __future__ import annotations

from chaos_shims.core.faults import Fault, HttpStatus
from chaos_shims.core.registry import REST, ProbabilityScenario
from chaos_shims.core.values import Probability

STATUSES = (500, 502, 503, 504)


class Exch5xx(ProbabilityScenario):
    key = "exch_5xx"
    summary = "probability per REST request of an HTTP 500/502/503/504"
    simulates = ("an exchange outage or maintenance: ExchangeNotAvailable, and RequestTimeout "
                 "for 504")
    kind = Probability()
    default = 0.0
    patch_points = ("ccxt_rest",)
    surfaces = frozenset({REST})

    def fault(self) -> Fault:
        # The status comes from the scenario's own stream too, so a seed fixes it.
        return HttpStatus(STATUSES[int(self.stream.random() * len(STATUSES))])
