"""``Frozen``: the base of the small immutable value classes activation builds (faults, key
specs, value kinds, the resolved config, injection records).

They were frozen dataclasses. Importing ``dataclasses`` pulls in inspect, ast and dis, and each
dataclass is made by compiling generated code: together a large share of what activation cost
before any target library was imported. A subclass declares its fields as a dataclass does, with
annotations in their order, lists them in ``__slots__`` too, and writes its own ``__init__``
(setting each field with ``object.__setattr__``, as a frozen dataclass's ``__init__`` does, so
creating one costs the same). This base gives it a frozen dataclass's semantics: equal when of
the same class with equal fields, hashed by its fields, shown as ``Name(field=value, ...)``,
fields that cannot be assigned or deleted, pickled and copied by its fields.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from typing import Any, ClassVar


class FrozenInstanceError(AttributeError):
    """A field of a frozen value was assigned or deleted."""


class Frozen:
    """Base of a frozen value class; see the module docstring."""

    __slots__ = ()

    #: the fields, in order: the annotated ``__slots__`` of the class and of its bases, base first
    _fields: ClassVar[tuple[str, ...]] = ()
    #: fields that equality and hashing ignore (a dataclass field's ``compare=False``)
    _not_compared: ClassVar[tuple[str, ...]] = ()
    #: fields the repr leaves out (a dataclass field's ``repr=False``)
    _not_shown: ClassVar[tuple[str, ...]] = ()
    _compared: ClassVar[tuple[str, ...]] = ()
    _shown: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = []
        for klass in reversed(cls.__mro__):
            slots = klass.__dict__.get("__slots__", ())
            slots = {slots} if isinstance(slots, str) else set(slots)
            # Not inspect.get_annotations: importing inspect is what this module is here to avoid.
            annotations = klass.__dict__.get("__annotations__", {})  # noqa: RUF063
            declared = [name for name in annotations if name in slots]
            if slots - set(declared) - {"__dict__", "__weakref__"}:
                raise TypeError(f"{klass.__qualname__}: annotate every slot, in field order "
                                f"(missing: {sorted(slots - set(declared))})")
            fields.extend(declared)
        cls._fields = tuple(fields)
        cls._compared = tuple(name for name in cls._fields if name not in cls._not_compared)
        cls._shown = tuple(name for name in cls._fields if name not in cls._not_shown)

    def _key(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._compared])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{self.__class__.__qualname__}({shown})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Every subclass's __init__ takes its fields in order, so pickle and copy rebuild it
        # through __init__ (the default would set the slots with the __setattr__ above).
        return self.__class__, tuple([getattr(self, name) for name in self._fields])
