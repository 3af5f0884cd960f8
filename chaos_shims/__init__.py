"""chaos_shims: in-process fault injection for trading bots built on ccxt and websockets.

The public names are loaded on first use, so ``import chaos_shims.auto`` in a process with
chaos off imports nothing but this file.
"""

from __future__ import annotations

from chaos_shims._version import __version__

# Not `from typing import TYPE_CHECKING`: importing typing would cost an inactive process
# about a millisecond; type checkers treat this constant the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chaos_shims.activation import activate, active_injector, deactivate, resolve
    from chaos_shims.core.config import ChaosConfig
    from chaos_shims.core.errors import (
        ChaosConfigError,
        InjectedConnectionLoss,
        InjectedFault,
        InjectedHTTPError,
        InjectedTimeout,
    )
    from chaos_shims.core.injector import ChaosInjector, Decision
    from chaos_shims.core.records import InjectionRecord
    from chaos_shims.signals import report_discrepancy
    from chaos_shims.ticks import report_cancels, tick

_LAZY = {
    "activate": "chaos_shims.activation",
    "deactivate": "chaos_shims.activation",
    "active_injector": "chaos_shims.activation",
    "resolve": "chaos_shims.activation",
    "ChaosConfig": "chaos_shims.core.config",
    "ChaosConfigError": "chaos_shims.core.errors",
    "InjectedFault": "chaos_shims.core.errors",
    "InjectedConnectionLoss": "chaos_shims.core.errors",
    "InjectedTimeout": "chaos_shims.core.errors",
    "InjectedHTTPError": "chaos_shims.core.errors",
    "ChaosInjector": "chaos_shims.core.injector",
    "Decision": "chaos_shims.core.injector",
    "InjectionRecord": "chaos_shims.core.records",
    "tick": "chaos_shims.ticks",
    "report_cancels": "chaos_shims.ticks",
    "report_discrepancy": "chaos_shims.signals",
}

__all__ = [
    "ChaosConfig",
    "ChaosConfigError",
    "ChaosInjector",
    "Decision",
    "InjectedConnectionLoss",
    "InjectedFault",
    "InjectedHTTPError",
    "InjectedTimeout",
    "InjectionRecord",
    "__version__",
    "activate",
    "active_injector",
    "deactivate",
    "report_cancels",
    "report_discrepancy",
    "resolve",
    "tick",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chaos_shims' has no attribute {name!r}")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value
