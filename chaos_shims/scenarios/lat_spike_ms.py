"""lat_spike_ms: every REST request during ON waits this many ms before it is sent."""

from __future__ import annotations

from chaos_shims.core.faults import Delay, Fault
from chaos_shims.core.registry import REST, Scenario
from chaos_shims.core.values import Milliseconds


class LatSpike(Scenario):
    key = "lat_spike_ms"
    summary = "ms each REST request is delayed during ON (async paths use asyncio.sleep)"
    simulates = "a slow exchange or a congested route: every request takes this much longer"
    kind = Milliseconds()
    default = 0.0
    patch_points = ("ccxt_rest",)
    surfaces = frozenset({REST})

    def draw(self, now: float) -> Fault | None:
        return Delay(float(self.value))
