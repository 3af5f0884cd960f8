"""The duty cycle, on an injected clock and on freezegun's: a 30 s / 90 s cycle in milliseconds."""

from __future__ import annotations

import time

import pytest

from chaos_shims.activation import resolve
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.core.schedule import DutyCycle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_on_phase_starts_at_activation() -> None:
    clock = FakeClock()
    cycle = DutyCycle(30, 90, clock=clock)
    expected = {0: True, 29.999: True, 30: False, 119.999: False, 120: True, 149: True, 150: False}
    for offset, on in expected.items():
        clock.now = 1000.0 + offset
        assert cycle.is_on() is on, offset
    assert cycle.cycle_index(1000.0 + 250) == 2


@pytest.mark.parametrize(("on", "off"), [(0, 90), (30, 0)])
def test_no_cycle_means_always_on(on: float, off: float) -> None:
    cycle = DutyCycle(on, off, clock=FakeClock())
    assert all(cycle.is_on(t) for t in (0.0, 1e3, 1e6))


def test_injector_fires_only_during_on() -> None:
    clock = FakeClock()
    config = resolve({"enabled": True, "dry_run": False, "exch_429": 1.0, "seed": 1}, environ={})
    injector = ChaosInjector(config, clock=clock, export_metrics=False)
    fired = []
    for second in range(0, 240):
        clock.now = 1000.0 + second
        fired.append(bool(injector.should_fire("exch_429")))
    assert fired[:30] == [True] * 30
    assert fired[30:120] == [False] * 90
    assert fired[120:150] == [True] * 30
    assert injector.count("exch_429") == 60


def test_cycle_under_freezegun() -> None:
    freezegun = pytest.importorskip("freezegun")
    with freezegun.freeze_time("2026-01-01 00:00:00") as frozen:
        cycle = DutyCycle(30, 90, clock=time.time)
        assert cycle.is_on()
        frozen.tick(31)
        assert not cycle.is_on()
        frozen.tick(89)
        assert cycle.is_on()
