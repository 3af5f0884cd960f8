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
        PatchPoint(
            "ccxt_reconcile",
            ("ccxt.base.exchange", "ccxt.async_support.base.exchange"),
            "chaos_shims.integrations.ccxt_reconcile",
            "the six reconciliation methods (fetch_open_orders ... fetch_my_trades) of every ccxt class",
        ),
        PatchPoint(
            "socket_dns",
            ("socket",),
            "chaos_shims.integrations.socket_dns",
            "socket.getaddrinfo: requests/urllib3, websockets, asyncio's default loop.getaddrinfo",
        ),
        PatchPoint(
            "aiohttp_resolver",
            ("aiohttp.resolver",),
            "chaos_shims.integrations.aiohttp_resolver",
            "aiohttp ThreadedResolver.resolve and AsyncResolver.resolve (aiodns): ccxt async, ccxt.pro",
        ),
        PatchPoint(
            "wall_clock",
            ("time", "ccxt.async_support.base.throttler"),
            "chaos_shims.integrations.wall_clock",
            "time.time and time.time_ns, and ccxt's async throttler's own `from time import time`",
        ),
        PatchPoint(
            "websockets_client",
            ("websockets.asyncio.client", "websockets.sync.client", "websockets.legacy.client"),
            "chaos_shims.integrations.websockets_client",
            "recv of the websockets asyncio, sync and legacy client classes (never the servers')",
        ),
        PatchPoint(
            "ccxt_pro",
            ("ccxt.async_support.base.ws.client",),
            "chaos_shims.integrations.ccxt_pro",
            "ccxt.pro Client.handle_message (held in a FIFO for lag), on_close, __init__ (labels)",
        ),
    )
}
