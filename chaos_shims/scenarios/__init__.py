"""The scenario table: one module per scenario, in the order the docs list them.

Importing this package is cheap: scenario modules declare faults as data and import no target
library.
"""

from __future__ import annotations

from chaos_shims.core.registry import Catalog
from chaos_shims.scenarios.clock_skew_ms import ClockSkewMs
from chaos_shims.scenarios.dns_flap import DnsFlap
from chaos_shims.scenarios.exch_5xx import Exch5xx
from chaos_shims.scenarios.exch_429 import Exch429
from chaos_shims.scenarios.lat_spike_ms import LatSpike
from chaos_shims.scenarios.mem_pressure import MemPressure
from chaos_shims.scenarios.net_loss import NetLoss
from chaos_shims.scenarios.rate_limit_storm import RateLimitStorm
from chaos_shims.scenarios.reconcile_mismatch import ReconcileMismatch
from chaos_shims.scenarios.ws_disconnect import WsDisconnect
from chaos_shims.scenarios.ws_lag_ms import WsLag

CATALOG = Catalog([NetLoss, Exch429, Exch5xx, LatSpike, WsLag, WsDisconnect, DnsFlap, ClockSkewMs,
                   MemPressure, RateLimitStorm, ReconcileMismatch])

__all__ = ["CATALOG"]
