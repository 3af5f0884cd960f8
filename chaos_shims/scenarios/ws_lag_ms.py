"""ws_lag_ms: every websocket message handed to the application during ON arrives this many ms
late, in order.

One event is one message arriving for the application (a ``recv`` of a ``websockets`` client,
a data frame ccxt.pro hands to its exchange). The integrations hold each message in a FIFO per
connection until its arrival time plus the lag, so order is kept, a message that arrived during
an OFF phase is never overtaken, and a cancelled ``recv`` loses nothing.
"""

from __future__ import annotations

from chaos_shims.core.faults import Delay, Fault
from chaos_shims.core.registry import WS_MESSAGE, Scenario
from chaos_shims.core.values import Milliseconds


class WsLag(Scenario):
    key = "ws_lag_ms"
    summary = "ms each websocket message handed to the app during ON arrives late (order kept)"
    simulates = ("a congested route or an overloaded exchange gateway: market data keeps "
                 "flowing, in order, but every message is this much older when the bot sees it")
    kind = Milliseconds()
    default = 0.0
    patch_points = ("websockets_client", "ccxt_pro")
    surfaces = frozenset({WS_MESSAGE})

    def draw(self, now: float) -> Fault | None:
        return Delay(float(self.value))
