"""clock_skew_ms: the scenario contract on the wall clock, then what a bot sees: ccxt's
timestamps and nonces move and binance answers -1021 (InvalidNonce), while monotonic clocks and
the event loop never move; phases apply and remove the skew; a rollback removes it at once."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims.activation import activate, deactivate
from chaos_shims.core.injector import ChaosInjector
from tests.scenarios.contract import ScenarioContract

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")

SKEW_MS = 15_000  # beyond binance's 1 s ahead, and beyond the 10 s recvWindow ccxt sends behind
ORIGINAL_TIME = time.time
ORIGINAL_TIME_NS = time.time_ns


def measured_skew_s() -> float:
    """How far the wall clock the process sees is from the real one (a clock we never patch)."""
    return time.time() - time.clock_gettime(time.CLOCK_REALTIME)


def measured_skew_ns() -> int:
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_REALTIME)


def wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def exchange_elsewhere() -> Iterator[dict[str, Any]]:
    """A loopback exchange in another process, with its own clock: an in-process server
    would read the skewed time.time too and agree with the client."""
    script = textwrap.dedent("""
        import json, sys
        from chaos_shims.exchange import LoopbackExchange
        with LoopbackExchange() as exchange:
            print(json.dumps(exchange.ccxt_config()), flush=True)
            sys.stdin.read()  # until the test closes our stdin
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        config: dict[str, Any] = json.loads(process.stdout.readline())
        yield {**config, "enableRateLimit": False}
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


class TestClockSkewMs(ScenarioContract):
    key = "clock_skew_ms"
    live_keys = {"clock_skew_ms": SKEW_MS}
    live_outcome = "skewed"

    def provoke(self, target: Any) -> str:
        skewed_s = abs(measured_skew_s()) > 1.0
        skewed_ns = abs(measured_skew_ns()) > 1_000_000_000
        assert skewed_s == skewed_ns
        return "skewed" if skewed_s else "ok"

    # -- the clock itself -------------------------------------------------------------------
    def test_skew_is_exact_and_signed(self) -> None:
        for skew_ms in (SKEW_MS, -2_500, 0.5):
            injector = self.activate(clock_skew_ms=skew_ms)
            assert measured_skew_s() == pytest.approx(skew_ms / 1000, abs=0.05)
            assert measured_skew_ns() == pytest.approx(skew_ms * 1_000_000, abs=50_000_000)
            [record] = injector.records("clock_skew_ms")
            assert (record.mode, record.reason_code, record.intensity) == \
                ("live", "clock_skew", skew_ms)

    def test_chaos_off_leaves_no_wrapper(self) -> None:
        self.activate()
        assert time.time is not ORIGINAL_TIME and time.time_ns is not ORIGINAL_TIME_NS
        activate(None, enabled=False)  # dormant: the wrapper stays, the offset is 0
        assert abs(measured_skew_s()) < 0.05
        deactivate()
        assert time.time is ORIGINAL_TIME and time.time_ns is ORIGINAL_TIME_NS

    @pytest.mark.asyncio
    async def test_monotonic_perf_counter_and_event_loop_never_move(self) -> None:
        loop = asyncio.get_running_loop()
        before = (time.monotonic(), time.perf_counter(), loop.time(), time.time())
        self.activate()
        after = (time.monotonic(), time.perf_counter(), loop.time(), time.time())
        for clock, was, now in zip(("monotonic", "perf_counter", "loop"), before[:3], after[:3],
                                   strict=True):
            assert 0 <= now - was < 0.5, clock
        assert after[3] - before[3] == pytest.approx(SKEW_MS / 1000, abs=0.5)
        started = time.perf_counter()
        await asyncio.sleep(0.05)  # timers run on the loop's monotonic clock
        assert 0.045 <= time.perf_counter() - started < 0.5

    def test_ccxt_timestamps_and_nonces_move(self, binance: Any) -> None:
        # `import ccxt.async_support.base.throttler as m` fails in this ccxt build
        async_throttler = importlib.import_module("ccxt.async_support.base.throttler")
        before = (ccxt.Exchange.milliseconds(), ccxt.Exchange.seconds(),
                  ccxt.Exchange.microseconds(), binance.nonce(), async_throttler.time())
        self.activate()
        after = (ccxt.Exchange.milliseconds(), ccxt.Exchange.seconds(),
                 ccxt.Exchange.microseconds(), binance.nonce(), async_throttler.time())
        units = (1, 1000, 0.001, 1, 1000)  # ms per unit of each
        for name, was, now, unit in zip(("milliseconds", "seconds", "microseconds", "nonce",
                                         "async throttler"), before, after, units, strict=True):
            assert (now - was) * unit == pytest.approx(SKEW_MS, abs=1500), name

    # -- what the exchange says -------------------------------------------------------------
    @pytest.mark.parametrize("skew_ms", [SKEW_MS, -SKEW_MS])
    def test_signed_request_gets_invalid_nonce(self, exchange_elsewhere: dict[str, Any],
                                               skew_ms: int) -> None:
        client = ccxt.binance(exchange_elsewhere)
        client.load_markets()
        assert client.fetch_balance()["free"]  # in sync with the exchange: accepted
        self.activate(clock_skew_ms=skew_ms)
        with pytest.raises(ccxt.InvalidNonce) as raised:
            client.fetch_balance()
        assert '"code":-1021' in str(raised.value).replace(" ", "")
        deactivate()
        assert client.fetch_balance()["free"]  # the skew is gone with chaos

    def test_load_time_difference_repairs_it(self, exchange_elsewhere: dict[str, Any]) -> None:
        # what a healthy bot does on -1021: measure the offset to the exchange and sign with it
        client = ccxt.binance(exchange_elsewhere)
        client.load_markets()
        self.activate()
        with pytest.raises(ccxt.InvalidNonce):
            client.fetch_balance()
        client.load_time_difference()
        assert client.options["timeDifference"] == pytest.approx(SKEW_MS, abs=1500)
        assert client.fetch_balance()["free"]

    # -- phases -----------------------------------------------------------------------------
    def test_skew_follows_the_duty_cycle(self) -> None:
        injector = self.activate(burst_on_sec=0.3, burst_off_sec=0.3)
        assert self.provoke(None) == "skewed"  # the first ON phase starts at activation
        wait_for(lambda: self.provoke(None) == "ok")
        wait_for(lambda: self.provoke(None) == "skewed")
        assert injector.count("clock_skew_ms", "live") == 2
        assert [r.duration_ms for r in injector.records("clock_skew_ms")] == [300.0, 300.0]

    def test_rollback_removes_the_skew_at_once(self) -> None:
        injector: ChaosInjector = self.activate()
        assert self.provoke(None) == "skewed"
        injector.roll_back("test", "deadline misses")
        assert self.provoke(None) == "ok"
        assert injector.count("clock_skew_ms", "dry_run") == 1  # the phase goes on in shadow
