"""net_loss: the request is lost on the way; ccxt raises what it raises for a lost connection."""

from __future__ import annotations

from chaos_shims.core.faults import ConnectionLoss, Fault
from chaos_shims.core.registry import REST, KeySpec, ProbabilityScenario
from chaos_shims.core.values import Milliseconds, Probability


class NetLoss(ProbabilityScenario):
    key = "net_loss"
    summary = "probability per REST request that it never reaches the exchange"
    simulates = ("packet loss or a reset connection: ccxt raises NetworkError (reset form), or "
                 "RequestTimeout after net_loss_timeout_ms when that is > 0")
    kind = Probability()
    default = 0.0
    patch_points = ("ccxt_rest",)
    surfaces = frozenset({REST})
    parameters = (
        KeySpec("net_loss_timeout_ms", Milliseconds(), 0.0,
                "net_loss: wait this long and raise RequestTimeout (0: reset at once)"),
    )

    def fault(self) -> Fault:
        return ConnectionLoss(timeout_ms=float(self.settings["net_loss_timeout_ms"]))
