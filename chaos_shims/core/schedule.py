"""The duty cycle: chaos is ON for ``burst_on_sec``, then OFF for ``burst_off_sec``, repeating.

The first ON phase starts at activation. ``burst_on_sec == 0`` means always ON. The clock is
injectable so a 30 s / 90 s cycle is tested in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class DutyCycle:
    __slots__ = ("_always_on", "_clock", "_period", "off_sec", "on_sec", "started_at")

    def __init__(
        self, on_sec: float, off_sec: float, *, clock: Clock = time.monotonic,
        started_at: float | None = None,
    ) -> None:
        self.on_sec = float(on_sec)
        self.off_sec = float(off_sec)
        self._clock = clock
        self.started_at = clock() if started_at is None else started_at
        self._period = self.on_sec + self.off_sec
        # With no OFF phase there is nothing to cycle through.
        self._always_on = self.on_sec <= 0 or self.off_sec <= 0

    @property
    def always_on(self) -> bool:
        return self._always_on

    def is_on(self, now: float | None = None) -> bool:
        if self._always_on:
            return True
        if now is None:
            now = self._clock()
        return (now - self.started_at) % self._period < self.on_sec

    def cycle_index(self, now: float | None = None) -> int:
        """Which ON/OFF cycle ``now`` falls in, counting from 0 at activation."""
        if self._always_on:
            return 0
        if now is None:
            now = self._clock()
        return int((now - self.started_at) // self._period)

    def describe(self) -> str:
        if self._always_on:
            return "always ON"
        return f"ON {self.on_sec:g}s / OFF {self.off_sec:g}s"
