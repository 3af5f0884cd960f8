"""The phase driver: a daemon thread that follows the duty cycle for phase scenarios.

Per-event scenarios need no thread (they look at the schedule when an event happens); phase
scenarios (clock skew, memory ballast) must start and stop with the ON phases even when the
bot makes no calls. The thread looks at the schedule every MAX_SLEEP_SEC (phase changes land
within that), and stops when chaos is turned off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from chaos_shims.core.registry import PhaseScenario
from chaos_shims.core.schedule import DutyCycle

logger = logging.getLogger("chaos_shims")

#: the longest the driver sleeps between looks (also how fast it notices a stop)
MAX_SLEEP_SEC = 0.25


class PhaseDriver:
    def __init__(
        self,
        schedule: DutyCycle,
        scenarios: Sequence[PhaseScenario],
        *,
        live: Callable[[], bool],
        on_start: Callable[[PhaseScenario, bool], None],
        on_error: Callable[[BaseException], None],
        on_look: Callable[[], None] | None = None,
    ) -> None:
        self._schedule = schedule
        self._scenarios = list(scenarios)
        self._live = live
        self._on_start = on_start
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_look = on_look
        self._in_phase = False
        self._phase_live = False
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None and self._scenarios:
            try:
                self.step()  # the first ON phase starts at activation, not a tick later
            except Exception as exc:  # as in _run: undo, turn chaos off, never raise
                self._end_all()
                self._on_error(exc)
                return
            self._thread = threading.Thread(target=self._run, name="chaos_shims-phases",
                                            daemon=True)
            self._thread.start()

    def step(self) -> None:
        """Bring the scenarios in line with the schedule and with live/dry-run now.

        A phase whose mode changed (kill switch, rollback) is ended and started again in the
        new mode, so a rolled-back clock skew or ballast is undone at once.
        """
        if self._on_look is not None:
            self._on_look()
        on = self._schedule.is_on()
        live = self._live()
        with self._lock:
            if on == self._in_phase and (not on or live == self._phase_live):
                return
            if self._in_phase:
                for scenario in self._scenarios:
                    scenario.end_phase()
            self._in_phase = on
            self._phase_live = live
            if on:
                for scenario in self._scenarios:
                    self._on_start(scenario, live)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # chaos turns itself off; the host goes on
                self._end_all()
                self._on_error(exc)
                return
            self._stop.wait(MAX_SLEEP_SEC)

    def _end_all(self) -> None:
        with self._lock:
            if self._in_phase:
                self._in_phase = False
                for scenario in self._scenarios:
                    try:
                        scenario.end_phase()
                    except Exception:
                        logger.exception("chaos_shims: could not end the phase of %s",
                                         scenario.key)

    def after_fork_in_child(self) -> None:
        """Only the forking thread lives on in a child: without a thread of its own, a clock
        skew or ballast would stay in whatever phase it was in at the fork."""
        self._lock = threading.Lock()  # the parent's thread may have held it
        if self._thread is None or self._stop.is_set():
            return
        self._stop = threading.Event()
        self._thread = None
        self.start()

    def stop(self) -> None:
        """End any phase in progress (restoring what it changed) and stop the thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self._end_all()
