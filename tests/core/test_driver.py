"""The phase driver starts and ends phase scenarios with the duty cycle, and always restores."""

from __future__ import annotations

import random
from typing import Any

from chaos_shims.core.driver import PhaseDriver
from chaos_shims.core.faults import Delay, Fault
from chaos_shims.core.registry import PhaseScenario
from chaos_shims.core.schedule import DutyCycle
from chaos_shims.core.values import Milliseconds


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class Ballast(PhaseScenario):
    key = "ballast"
    summary = "test phase scenario"
    kind = Milliseconds()

    def __init__(self) -> None:
        super().__init__(5.0, {}, random.Random(0))
        self.events: list[str] = []

    def start_phase(self, live: bool) -> Fault | None:
        self.events.append(f"start live={live}")
        return Delay(self.value)

    def end_phase(self) -> None:
        self.events.append("end")


def make(clock: Clock, scenario: Ballast, live: bool = True) -> tuple[PhaseDriver, list[Any]]:
    started: list[Any] = []

    def on_start(s: PhaseScenario, is_live: bool) -> None:
        started.append(s.start_phase(is_live))

    driver = PhaseDriver(DutyCycle(30, 90, clock=clock), [scenario], live=lambda: live,
                         on_start=on_start, on_error=lambda exc: None)
    return driver, started


def test_phases_follow_the_cycle() -> None:
    clock, scenario = Clock(), Ballast()
    driver, started = make(clock, scenario)
    driver.step()
    clock.now = 10
    driver.step()
    clock.now = 31
    driver.step()
    clock.now = 121
    driver.step()
    assert scenario.events == ["start live=True", "end", "start live=True"]
    assert started == [Delay(5.0), Delay(5.0)]
    driver.stop()
    assert scenario.events[-1] == "end"


def test_dry_run_phases_decide_but_say_not_live() -> None:
    clock, scenario = Clock(), Ballast()
    driver, _ = make(clock, scenario, live=False)
    driver.step()
    assert scenario.events == ["start live=False"]
    driver.stop()


def test_thread_starts_the_first_phase_at_once_and_stop_restores() -> None:
    clock, scenario = Clock(), Ballast()
    driver, _ = make(clock, scenario)
    driver.start()
    assert scenario.events == ["start live=True"]
    driver.stop()
    driver.stop()
    assert scenario.events == ["start live=True", "end"]


def test_a_failing_first_phase_turns_chaos_off_without_raising() -> None:
    class Broken(Ballast):
        def start_phase(self, live: bool) -> Fault | None:
            raise RuntimeError("bug in a phase scenario")

    errors: list[BaseException] = []
    scenario = Broken()
    driver = PhaseDriver(DutyCycle(0, 0, clock=Clock()), [scenario], live=lambda: True,
                         on_start=lambda s, live: s.start_phase(live), on_error=errors.append)
    driver.start()
    assert [str(e) for e in errors] == ["bug in a phase scenario"]
    assert scenario.events == ["end"]
