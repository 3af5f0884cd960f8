"""ws_disconnect: the websocket connection fails as a network failure would (close code 1006).

One event is one message arriving for the application. When the scenario fires, that message
and whatever arrives after it are lost with the connection; messages that arrived before it are
still handed over, in order. The integrations abort the transport (the socket really closes and
the server sees the client go away) and let the library report the failure its own way:
``websockets`` raises ``ConnectionClosedError`` with code 1006, ccxt.pro rejects the watchers
with ``NetworkError`` and the next ``watch_*`` opens a new connection.
"""

from __future__ import annotations

from chaos_shims.core.faults import Fault
from chaos_shims.core.registry import WS_MESSAGE, ProbabilityScenario
from chaos_shims.core.values import Probability

#: RFC 6455: the connection was closed without a close frame (a network failure).
ABNORMAL_CLOSURE = 1006


class AbnormalClosure(Fault):
    """The connection drops without a closing handshake."""

    __slots__ = ("code",)
    code: int

    def __init__(self, code: int = ABNORMAL_CLOSURE) -> None:
        object.__setattr__(self, "code", code)

    @property
    def reason_code(self) -> str:
        return f"ws_abnormal_closure_{self.code}"

    @property
    def intensity(self) -> float:
        return float(self.code)


class WsDisconnect(ProbabilityScenario):
    key = "ws_disconnect"
    summary = "probability per received websocket message that the connection drops (1006)"
    simulates = ("a dropped connection (NAT timeout, load balancer restart, network blip): "
                 "websockets raises ConnectionClosedError 1006, ccxt.pro NetworkError; the bot "
                 "must notice, reconnect and resynchronise")
    kind = Probability()
    default = 0.0
    patch_points = ("websockets_client", "ccxt_pro")
    surfaces = frozenset({WS_MESSAGE})

    def fault(self) -> Fault:
        return AbnormalClosure()
