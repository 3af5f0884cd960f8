"""The scenario table: one module per scenario, in the order the docs list them.

Each entry is the scenario's key and its class as ``"module:Class"``: a module is imported the
first time its scenario is needed (configured, armed, listed), so activating one scenario never
imports the others. Importing this package imports none of them.
"""

from __future__ import annotations

from chaos_shims.core.registry import Catalog

CATALOG = Catalog({
    "net_loss": "chaos_shims.scenarios.net_loss:NetLoss",
    "exch_429": "chaos_shims.scenarios.exch_429:Exch429",
    "exch_5xx": "chaos_shims.scenarios.exch_5xx:Exch5xx",
    "lat_spike_ms": "chaos_shims.scenarios.lat_spike_ms:LatSpike",
    "ws_lag_ms": "chaos_shims.scenarios.ws_lag_ms:WsLag",
    "ws_disconnect": "chaos_shims.scenarios.ws_disconnect:WsDisconnect",
    "dns_flap": "chaos_shims.scenarios.dns_flap:DnsFlap",
    "clock_skew_ms": "chaos_shims.scenarios.clock_skew_ms:ClockSkewMs",
    "mem_pressure": "chaos_shims.scenarios.mem_pressure:MemPressure",
    "rate_limit_storm": "chaos_shims.scenarios.rate_limit_storm:RateLimitStorm",
    "reconcile_mismatch": "chaos_shims.scenarios.reconcile_mismatch:ReconcileMismatch",
})

__all__ = ["CATALOG"]
