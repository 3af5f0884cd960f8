"""The wrapt wraps an integration makes in each target module, recorded so that ``unpatch``
undoes exactly those (one ``unwrap_object`` per wrap, the last made first) and a second
``patch`` does nothing. The integration keeps its own lock around both."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import wrapt

#: (owner, attribute, wrapper) of one wrap to make
Wrap = tuple[Any, str, Callable[..., Any]]


class ModuleWraps:
    def __init__(self) -> None:
        # module name -> [(owner, attribute, handle)] of the wraps made there, in order
        self._made: dict[str, list[tuple[Any, str, Any]]] = {}

    def is_patched(self, module: ModuleType) -> bool:
        return module.__name__ in self._made

    def __contains__(self, module_name: str) -> bool:
        return module_name in self._made

    def wrap(self, module: ModuleType, wraps: Iterable[Wrap]) -> bool:
        """Make ``wraps`` for ``module``; False (nothing made) when it is patched already."""
        if module.__name__ in self._made:
            return False
        self._made[module.__name__] = [
            (owner, attribute, wrapt.wrap_function_wrapper(owner, attribute, wrapper))
            for owner, attribute, wrapper in wraps]
        return True

    def unwrap(self, module: ModuleType) -> bool:
        """Undo the wraps made for ``module``; False when there were none."""
        made = self._made.pop(module.__name__, None)
        if made is None:
            return False
        for owner, attribute, handle in reversed(made):
            wrapt.unwrap_object(owner, attribute, handle)
        return True
