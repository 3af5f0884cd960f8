"""The engine of chaos_shims: configuration, schedule, decisions, registry, records, metrics.

Nothing in this package imports or knows about ccxt, websockets or aiohttp; integrations and
scenarios build on it.
"""
