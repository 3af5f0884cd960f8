"""Value kinds of config keys: how a raw value (a string from the environment or the command
line, or a typed value from YAML, a marker or Python) becomes a checked one.

Contract: a number out of range is clamped with one WARNING naming the key, the given and the
clamped value; a value of the wrong type or an unknown level raises ``ChaosConfigError`` naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import reprlib

from chaos_shims.core.errors import ChaosConfigError
from chaos_shims.core.frozen import Frozen

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs activation ~2 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

logger = logging.getLogger("chaos_shims")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ValueKind:
    """How one key's values are parsed and checked.

    The kinds here are frozen values (``chaos_shims.core.frozen``): their settings are
    ``__slots__`` fields, and two kinds with equal settings are equal.
    """

    allowed: str = ""

    def parse(self, key: str, raw: Any, source: str | None = None) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return self.allowed

    def _reject(self, key: str, raw: Any, source: str | None) -> ChaosConfigError:
        return ChaosConfigError(key, shown(raw), self.allowed, source=source)


class _BoundedRepr(reprlib.Repr):
    """reprlib's bounded repr, also for ints too long to print (``repr`` raises for those)."""

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:
            return f"<an integer of {x.bit_length()} bits>"


_BOUNDED = _BoundedRepr()
_BOUNDED.maxlevel, _BOUNDED.maxstring, _BOUNDED.maxother = 3, 200, 200


class Shown:
    """A value as an error message shows it: a bounded repr made once."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def shown(raw: Any) -> Any:
    """``raw`` itself when its repr is cheap and cannot fail, else a ``Shown`` stand-in.

    Why: ``ChaosConfigError`` puts ``repr(value)`` in its message, and a value from a marker or
    a YAML file can be an int too long to print (repr raises), an object whose repr raises, or
    YAML aliases nested ten deep (a repr of 10**9 elements: the host would hang, not start).
    """
    if raw is None or type(raw) in (str, float, bool) or (type(raw) is int and _printable(raw)):
        return raw
    return Shown(_BOUNDED.repr(raw))


class Boolean(ValueKind, Frozen):
    __slots__ = ("allowed",)
    allowed: str

    def __init__(self, allowed: str = "a boolean: 1/0, true/false, yes/no, on/off") -> None:
        object.__setattr__(self, "allowed", allowed)

    def parse(self, key: str, raw: Any, source: str | None = None) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str):
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
        raise self._reject(key, raw, source)


def _number(raw: Any) -> float | None:
    """A finite number from a raw value, or None when it is not one (bools are not numbers)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:  # an int beyond any float: as unusable as "1e999" is
            return None
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


class Number(ValueKind, Frozen):
    """A number, clamped into [minimum, maximum] with a warning."""

    __slots__ = ("allowed", "integer", "maximum", "minimum", "unit")
    _not_compared = ("allowed",)
    minimum: float | None
    maximum: float | None
    integer: bool
    unit: str
    allowed: str

    def __init__(self, minimum: float | None = None, maximum: float | None = None,
                 integer: bool = False, unit: str = "", allowed: str = "") -> None:
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "maximum", maximum)
        object.__setattr__(self, "integer", integer)
        object.__setattr__(self, "unit", unit)
        if not allowed:
            low = "-inf" if minimum is None else _fmt(minimum)
            high = "inf" if maximum is None else _fmt(maximum)
            what = "an integer" if integer else "a number"
            allowed = f"{what}{f' {unit}' if unit else ''} in [{low}, {high}]"
        object.__setattr__(self, "allowed", allowed)

    def parse(self, key: str, raw: Any, source: str | None = None) -> float | int:
        value = _number(raw)
        if value is None or (self.integer and not value.is_integer()):
            raise self._reject(key, raw, source)
        clamped = value
        if self.minimum is not None and clamped < self.minimum:
            clamped = self.minimum
        if self.maximum is not None and clamped > self.maximum:
            clamped = self.maximum
        if clamped != value:
            where = f" (from {source})" if source else ""
            logger.warning(
                "chaos config %s=%s%s is out of range %s; clamped to %s",
                key, _fmt(value), where, self.allowed, _fmt(clamped),
            )
        return int(clamped) if self.integer else clamped


def Probability() -> Number:  # noqa: N802 - reads as a kind, like the classes beside it
    return Number(0.0, 1.0, allowed="a probability in [0, 1]")


def Milliseconds(*, signed: bool = False) -> Number:  # noqa: N802
    return Number(None if signed else 0.0, None, unit="ms")


def Seconds() -> Number:  # noqa: N802
    return Number(0.0, None, unit="s")


class Seed(ValueKind, Frozen):
    """A non-negative integer seed; ``None``/``random`` means pick one at activation."""

    __slots__ = ("allowed",)
    allowed: str

    def __init__(self, allowed: str = "a non-negative integer, or 'random'") -> None:
        object.__setattr__(self, "allowed", allowed)

    def parse(self, key: str, raw: Any, source: str | None = None) -> int | None:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "random")):
            return None
        if isinstance(raw, bool):
            raise self._reject(key, raw, source)
        if isinstance(raw, int) and raw >= 0 and _printable(raw):
            return int(raw)
        # isdecimal, not isdigit: int() reads "٣" but not "²"; and a decimal string too long
        # for int() is as bad as any other non-seed.
        if isinstance(raw, str) and raw.strip().isdecimal():
            with contextlib.suppress(ValueError):
                return int(raw.strip())
        raise self._reject(key, raw, source)


class Text(ValueKind, Frozen):
    """A short single-line string (a path, an instance id); empty means none."""

    __slots__ = ("allowed",)
    allowed: str

    def __init__(self, allowed: str = "a single-line string of at most 1024 characters") -> None:
        object.__setattr__(self, "allowed", allowed)

    def parse(self, key: str, raw: Any, source: str | None = None) -> str | None:
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise self._reject(key, raw, source)
        if not isinstance(raw, str) and not _printable(raw):
            raise self._reject(key, raw, source)
        text = str(raw).strip()
        if len(text) > 1024 or "\n" in text or "\x00" in text:
            raise self._reject(key, raw, source)
        return text or None


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_NAMES_ALLOWED = "names separated by commas (letters, digits, _ . -), or a list of them"


class NameSet(ValueKind, Frozen):
    """A set of names (exchange ids, unified method names): comma-separated or a list."""

    __slots__ = ("allowed", "normalise")
    allowed: str
    normalise: Callable[[str], str]

    def __init__(self, allowed: str = _NAMES_ALLOWED,
                 normalise: Callable[[str], str] = str.strip) -> None:
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "normalise", normalise)

    def parse(self, key: str, raw: Any, source: str | None = None) -> frozenset[str]:
        if raw is None:
            return frozenset()
        if isinstance(raw, str):
            items: list[Any] = [part for part in raw.split(",") if part.strip()]
        elif isinstance(raw, (list, tuple, set, frozenset)):
            items = list(raw)
        else:
            raise self._reject(key, raw, source)
        names = set()
        for item in items:
            if not isinstance(item, str) or not _NAME.match(item.strip()):
                raise self._reject(key, raw, source)
            names.add(self.normalise(item.strip()))
        return frozenset(names)


def _printable(number: int) -> bool:
    """Whether ``str(number)`` works: it is what the run artifact, the logs and the seed's
    random streams are made of, and it raises past sys.get_int_max_str_digits()."""
    try:
        str(number)
    except ValueError:
        return False
    return True


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
