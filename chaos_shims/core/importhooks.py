"""Post-import hooks: run a function when a module has been imported, or at once if it already is.

chaos_shims patches target libraries when *they* are imported and never imports them itself.
wrapt has the same mechanism, but importing wrapt 2.5 costs about 60 ms (it pulls in asyncio),
which an inactive or not-yet-targeted process must not pay; this small finder costs nothing
until a watched module is imported, and wrapt is loaded by the integration only then.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    # importlib.abc pulls in importlib.resources: not worth it at start-up
    from importlib.machinery import ModuleSpec
    from typing import Any

logger = logging.getLogger("chaos_shims")

Hook = Callable[[ModuleType], None]

_lock = threading.RLock()
_hooks: dict[str, list[Hook]] = {}


def when_imported(module_name: str, hook: Hook) -> bool:
    """Call ``hook(module)`` once ``module_name`` is imported; now if it already is.

    Registering the same hook twice for a module does nothing and returns False. A hook that
    raises is logged and never breaks the import of the module.
    """
    with _lock:
        hooks = _hooks.setdefault(module_name, [])
        if hook in hooks:
            return False
        else:
            hooks.append(hook)
            already = sys.modules.get(module_name)
        _install_finder()
    if already is not None and getattr(already, "__spec__", None) is not None:
        run_hook(hook, already)
    return True


#: per thread: the hooks waiting for the hook that runs now (None: no hook runs)
_running = threading.local()


def run_hook(hook: Hook, module: ModuleType) -> None:
    """Call ``hook(module)``. A hook fired while another one runs on this thread (by an import
    the running hook makes: an integration importing wrapt, which imports asyncio, which imports
    socket) runs once that one is done, not in the middle of it: the running hook may be
    halfway through importing what the other one needs."""
    waiting: list[tuple[Hook, ModuleType]] | None = getattr(_running, "waiting", None)
    if waiting is not None:
        waiting.append((hook, module))
        return
    _running.waiting = waiting = [(hook, module)]
    try:
        while waiting:
            hook, module = waiting.pop(0)
            try:
                hook(module)
            except Exception:  # a chaos hook must never break the host's import
                logger.exception("chaos_shims: post-import hook for %s failed", module.__name__)
    finally:
        _running.waiting = None


def _fire(module: ModuleType) -> None:
    with _lock:
        hooks = list(_hooks.get(module.__name__, ()))
    for hook in hooks:
        run_hook(hook, module)


class _HookedLoader:
    """Delegates to the real loader and fires the hooks once the module has executed."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        # Give the module its real loader back before its code runs, so that nothing that
        # inspects __loader__ or __spec__.loader (importlib.resources, pkgutil) sees this proxy.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _fire(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder:
    """First on ``sys.meta_path``; only acts on watched names, and asks the other finders."""

    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _hooks:
            return None
        busy: set[str] = self._busy.__dict__.setdefault("names", set())
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader)  # type: ignore[assignment]  # duck-typed Loader
        return spec


_finder: _PostImportFinder | None = None


def _install_finder() -> None:
    global _finder
    if _finder is None:
        _finder = _PostImportFinder()
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
