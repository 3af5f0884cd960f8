"""Loopback exchanges that real exchange clients (ccxt) can talk to unmodified."""

from chaos_shims.exchange.rest import BinanceApiError, LoopbackExchange, RecordedRequest

__all__ = ["BinanceApiError", "LoopbackExchange", "RecordedRequest"]
