"""The wall clock patch point: hygiene when ccxt's async throttler is imported after activation,
restoring only what is ours, and living beside the two time-travel libraries of tests:
time-machine composes with a skew, freezegun makes clock_skew_ms refuse and stay off."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims.activation import activate, deactivate
from chaos_shims.core import runtime
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.integrations import PATCH_POINTS, wall_clock

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

freezegun = pytest.importorskip("freezegun")

SKEW_MS = 15_000
ORIGINAL_TIME = time.time
ORIGINAL_TIME_NS = time.time_ns
DESTINATION = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def skew(**keys: Any) -> ChaosInjector:
    settings = {"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1,
                "clock_skew_ms": SKEW_MS, **keys}
    injector = activate(None, **settings)
    assert injector is not None
    return injector


def measured_skew_s() -> float:
    return time.time() - time.clock_gettime(time.CLOCK_REALTIME)


@pytest.fixture
def original_clock() -> Iterator[None]:
    """Whatever a test does to time.time, the real functions are back after it."""
    yield
    deactivate()
    time.time, time.time_ns = ORIGINAL_TIME, ORIGINAL_TIME_NS  # type: ignore[misc]


def test_import_after_activation_patches_and_unpatches() -> None:
    # The time module is always imported first; ccxt's async throttler, with its own
    # `from time import time`, is imported after activation and gets the same wrapper.
    script = textwrap.dedent("""
        import importlib, sys, time
        import wrapt
        from chaos_shims.integrations import PATCH_POINTS
        original_time, original_time_ns = time.time, time.time_ns
        point = PATCH_POINTS["wall_clock"]
        point.enable()
        assert "ccxt" not in sys.modules, "imported too early"
        assert isinstance(time.time, wrapt.FunctionWrapper)
        assert time.time.__wrapped__ is original_time
        assert time.time_ns.__wrapped__ is original_time_ns
        throttler = importlib.import_module("ccxt.async_support.base.throttler")
        assert throttler.time is time.time, "the throttler's binding is not reached"
        point.enable()
        assert time.time.__wrapped__ is original_time, "wrapped twice"
        point.disable()
        point.disable()
        assert time.time is original_time and time.time_ns is original_time_ns
        assert throttler.time is original_time
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_unpatch_leaves_a_replacement_made_by_someone_else(original_clock: None) -> None:
    point = PATCH_POINTS["wall_clock"]
    point.enable()

    def theirs() -> float:
        return 0.0

    time.time = theirs
    point.disable()
    assert time.time is theirs
    assert time.time_ns is ORIGINAL_TIME_NS


def test_a_skew_needs_the_patch_and_removing_one_always_works() -> None:
    deactivate()
    with pytest.raises(wall_clock.ClockSkewRefused, match="not patched"):
        wall_clock.apply_skew(SKEW_MS)
    wall_clock.apply_skew(0)
    assert time.time is ORIGINAL_TIME


# -- time-machine: composes ----------------------------------------------------------------------

def test_time_machine_travel_then_skew_composes() -> None:
    time_machine = pytest.importorskip("time_machine")
    with time_machine.travel(DESTINATION, tick=False):
        monotonic = time.monotonic()
        skew()
        assert time.time() == DESTINATION.timestamp() + SKEW_MS / 1000
        assert time.time_ns() == int(DESTINATION.timestamp()) * 10**9 + SKEW_MS * 10**6
        assert 0 <= time.monotonic() - monotonic < 0.5
    assert measured_skew_s() == pytest.approx(SKEW_MS / 1000, abs=0.05)  # and on the real clock


def test_skew_then_time_machine_travel_composes() -> None:
    time_machine = pytest.importorskip("time_machine")
    skew()
    with time_machine.travel(DESTINATION, tick=False):
        assert time.time() == DESTINATION.timestamp() + SKEW_MS / 1000
    deactivate()
    assert time.time is ORIGINAL_TIME


# -- freezegun: refused ------------------------------------------------------------------------

@pytest.fixture
def freezegun_saved_the_original() -> None:
    # freezegun saves time.time when it is imported and puts that back on stop; these tests
    # describe the usual case, freezegun imported (by a test module) before chaos starts.
    if freezegun.api.real_time is not ORIGINAL_TIME:
        pytest.skip("freezegun was imported while time.time was patched")


def test_freezegun_freezing_makes_the_skew_refuse(
        freezegun_saved_the_original: None, original_clock: None,
        caplog: pytest.LogCaptureFixture) -> None:
    with freezegun.freeze_time(DESTINATION), caplog.at_level("ERROR", logger="chaos_shims"):
        injector = skew(dry_run=False, exch_429=0.5)
        assert time.time() == DESTINATION.timestamp()  # freezegun's time, untouched
    [error] = [r.getMessage() for r in caplog.records]
    assert "clock_skew_ms is off" in error and "freezegun" in error
    assert injector.count("clock_skew_ms") == 0
    # off for the rest of this activation; the other scenarios go on
    assert abs(measured_skew_s()) < 0.05
    assert runtime.active is injector and injector.disabled_reason is None
    deactivate()
    assert time.time is ORIGINAL_TIME and time.time_ns is ORIGINAL_TIME_NS


def test_freezegun_started_during_a_skew(freezegun_saved_the_original: None,
                                         original_clock: None) -> None:
    skew()
    with freezegun.freeze_time(DESTINATION):
        assert time.time() == DESTINATION.timestamp()  # the frozen time a test asked for
    # freezegun's stop put back the original it saved: the skew is gone for this phase...
    assert time.time is ORIGINAL_TIME
    assert abs(measured_skew_s()) < 0.05
    # ...and the next phase (here: the next activation) lays it on again, on the same wrapper
    skew()
    assert measured_skew_s() == pytest.approx(SKEW_MS / 1000, abs=0.05)
    deactivate()
    assert time.time is ORIGINAL_TIME
