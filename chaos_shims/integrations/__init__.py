"""The table of patch points. Each names the modules it waits for and the integration module
that patches them; the integration is imported only once a target module has been imported.
"""

from __future__ import annotations

from chaos_shims.core.patching import PatchPoint

PATCH_POINTS: dict[str, PatchPoint] = {
    point.name: point
    for point in (
        PatchPoint(
            "ccxt_rest",
            ("ccxt.base.exchange", "ccxt.async_support.base.exchange"),
            "chaos_shims.integrations.ccxt_rest",
            "BaseExchange.fetch (sync and async), and the unified methods that label each request",
        ),
    )
}
