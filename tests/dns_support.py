"""Shared by the DNS test modules (socket_dns, aiohttp_resolver, dns_flap): the host name they
resolve and live dns_flap activation."""

from __future__ import annotations

from typing import Any

from chaos_shims.activation import activate
from chaos_shims.core.injector import ChaosInjector

HOST_NAME = "localhost"  # answered by the hosts file: resolved on loopback, never by a DNS server


def flap(**keys: Any) -> ChaosInjector:
    """dns_flap live on every resolution (``keys`` override), no duty cycle, seed 1."""
    settings = {"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1,
                "dns_flap": 1.0, **keys}
    injector = activate(None, **settings)
    assert injector is not None
    return injector
