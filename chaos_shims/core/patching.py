"""Patch points: a set of wrappers installed into target modules when they are imported.

A patch point is patched once and stays dormant while chaos is off (its wrappers read the active
injector at call time and call straight through when there is none). ``enable``/``disable`` are
idempotent; ``disable`` restores every original object exactly.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType

from chaos_shims.core import importhooks

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Integration(Protocol):
        """What an integration module provides for each module it patches."""

        def patch(self, module: ModuleType) -> None: ...
        def unpatch(self, module: ModuleType) -> None: ...
        def is_patched(self, module: ModuleType) -> bool: ...
        def patched_attributes(self, module: ModuleType) -> list[tuple[Any, str]]: ...

logger = logging.getLogger("chaos_shims")


class PatchPoint:
    def __init__(self, name: str, modules: tuple[str, ...], integration: str, summary: str) -> None:
        self.name = name
        self.modules = modules
        #: dotted name of the integration module; imported only when a target module is.
        self.integration_name = integration
        self.summary = summary
        self.wanted = False
        #: called after each module is patched (e.g. to build metrics before the first call)
        self.listeners: list[Callable[[], None]] = []
        self._lock = threading.RLock()

    def integration(self) -> Integration:
        module: Integration = importlib.import_module(self.integration_name)
        return module

    def enable(self) -> None:
        with self._lock:
            self.wanted = True
        for name in self.modules:
            if not importhooks.when_imported(name, self._on_import):
                # registered by an earlier enable: patch what is already imported again
                module = sys.modules.get(name)
                if module is not None:
                    importhooks.run_hook(self._on_import, module)

    def _on_import(self, module: ModuleType) -> None:
        with self._lock:
            if not self.wanted:
                return
            self.integration().patch(module)
        for listener in list(self.listeners):
            listener()

    def disable(self) -> None:
        with self._lock:
            self.wanted = False
            if self.integration_name not in sys.modules:
                return  # nothing was ever patched
            integration = self.integration()
            for name in self.modules:
                module = sys.modules.get(name)
                if module is not None:
                    integration.unpatch(module)

    def is_patched(self) -> bool:
        if self.integration_name not in sys.modules:
            return False
        integration = self.integration()
        return any(integration.is_patched(sys.modules[name])
                   for name in self.modules if name in sys.modules)
