"""clock_skew_ms: during each ON phase the process's wall clock runs this many ms ahead
(negative: behind) of the real one, as a drifting or badly synced host clock does; ccxt's
timestamps and nonces move with it, so binance answers -1021 (``InvalidNonce``) once the skew
leaves its window. Monotonic clocks and the event loop's clock never move.
"""

from __future__ import annotations

import logging

from chaos_shims.core.faults import Fault
from chaos_shims.core.registry import PhaseScenario
from chaos_shims.core.values import Milliseconds

logger = logging.getLogger("chaos_shims")


class ClockSkew(Fault):
    """The wall clock is shifted by ``ms`` for the phase (``duration_ms``; 0: until chaos stops)."""

    __slots__ = ("ms", "phase_ms")
    ms: float
    phase_ms: float

    def __init__(self, ms: float, phase_ms: float = 0.0) -> None:
        object.__setattr__(self, "ms", ms)
        object.__setattr__(self, "phase_ms", phase_ms)

    @property
    def reason_code(self) -> str:
        return "clock_skew"

    @property
    def intensity(self) -> float:
        return self.ms

    @property
    def duration_ms(self) -> float:
        return self.phase_ms


class ClockSkewMs(PhaseScenario):
    key = "clock_skew_ms"
    summary = "signed ms the wall clock (time.time, time.time_ns) is shifted by during ON"
    simulates = ("clock drift against the exchange: timestamps and nonces are off by this much, "
                 "so signed requests leave the exchange's window (binance -1021, InvalidNonce); "
                 "time.monotonic, perf_counter and the event loop clock never move")
    kind = Milliseconds(signed=True)
    default = 0.0
    patch_points = ("wall_clock",)

    #: set when the skew was refused (freezegun freezing): the scenario is off from then on
    refused: str | None = None

    def start_phase(self, live: bool) -> Fault | None:
        fault = ClockSkew(float(self.value), float(self.settings["burst_on_sec"]) * 1000.0)
        if not live:
            return fault  # dry-run: decided and recorded, the clock untouched
        if self.refused is not None:
            return None
        # The integration is loaded by now: activation patched the (always imported) time module.
        from chaos_shims.integrations import wall_clock

        try:
            wall_clock.apply_skew(fault.ms)
        except wall_clock.ClockSkewRefused as exc:
            self.refused = str(exc)
            logger.error("chaos_shims: clock_skew_ms is off for this activation: %s", exc)
            return None
        return fault

    def end_phase(self) -> None:
        from chaos_shims.integrations import wall_clock

        wall_clock.apply_skew(0)
