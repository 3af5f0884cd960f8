"""The wraps an integration makes in each target module, recorded so that ``unpatch`` undoes
exactly those (the last made first) and a second ``patch`` does nothing. The integration keeps
its own lock around both.

Most wraps are wrapt wrappers. A method on a request's hot path may instead be replaced by a
plain function made from the original (``PlainWrap``): wrapt's proxy costs about 0.5 µs a call,
which is a quarter of the REST budget. Such a function carries ``__wrapped__`` (the original)
and ``PLAIN_MARK``, and unpatching restores the owner's own slot exactly as it was."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import wrapt

#: (owner, attribute, wrapper) of one wrap to make
Wrap = tuple[Any, str, Callable[..., Any]]
#: (owner, attribute, factory): factory(original) returns the plain function to put there
PlainWrap = tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]

#: set on every plain-function wrapper chaos_shims installs
PLAIN_MARK = "__chaos_shims_wrapper__"
_ABSENT = object()


def is_chaos_wrapper(value: Any) -> bool:
    """A wrapper chaos_shims installed: a wrapt FunctionWrapper or a marked plain function."""
    return isinstance(value, wrapt.FunctionWrapper) or bool(getattr(value, PLAIN_MARK, False))


def subclasses_of(base: type) -> list[type]:
    """``base`` and every class that inherits from it, now (wraps that live on subclasses:
    ccxt's per-exchange classes)."""
    found: list[type] = [base]
    seen = {base}
    for cls in found:
        subclasses: list[type] = cls.__subclasses__()
        for sub in subclasses:
            if sub not in seen:
                seen.add(sub)
                found.append(sub)
    return found


class ModuleWraps:
    def __init__(self) -> None:
        # module name -> [(owner, attribute, handle)] of the wraps made there, in order
        self._made: dict[str, list[tuple[Any, str, Any]]] = {}

    def is_patched(self, module: ModuleType) -> bool:
        return module.__name__ in self._made

    def __contains__(self, module_name: str) -> bool:
        return module_name in self._made

    def wrap(self, module: ModuleType, wraps: Iterable[Wrap],
             plain: Iterable[PlainWrap] = ()) -> bool:
        """Make ``wraps`` (wrapt) and ``plain`` (plain functions) for ``module``; False
        (nothing made) when it is patched already."""
        if module.__name__ in self._made:
            return False
        made: list[tuple[Any, str, Any]] = []
        for owner, attribute, factory in plain:
            own = owner.__dict__.get(attribute, _ABSENT)
            original = inspect.getattr_static(owner, attribute)
            replacement = functools.update_wrapper(factory(original), original)
            setattr(replacement, PLAIN_MARK, True)
            setattr(owner, attribute, replacement)
            made.append((owner, attribute, (replacement, own)))
        made.extend((owner, attribute, wrapt.wrap_function_wrapper(owner, attribute, wrapper))
                    for owner, attribute, wrapper in wraps)
        self._made[module.__name__] = made
        return True

    def unwrap(self, module: ModuleType) -> bool:
        """Undo the wraps made for ``module``; False when there were none."""
        made = self._made.pop(module.__name__, None)
        if made is None:
            return False
        for owner, attribute, handle in reversed(made):
            if isinstance(handle, tuple):
                replacement, own = handle
                if owner.__dict__.get(attribute) is not replacement:
                    continue  # somebody replaced ours since: theirs stays (ours is dormant)
                if own is _ABSENT:
                    delattr(owner, attribute)
                else:
                    setattr(owner, attribute, own)
            else:
                wrapt.unwrap_object(owner, attribute, handle)
        return True
