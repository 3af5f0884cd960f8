"""The pytest plugin, run as pytest inside pytest (``pytester``).

Every inner test talks to a real ``LoopbackExchange`` through real ccxt (sync and async). Most
inner runs are in-process (fast); the ones that need a fresh interpreter (activation from the
environment at import, nothing imported for an unmarked test) run in a subprocess.
"""

from __future__ import annotations

import textwrap

import pytest

# Imported here, not first inside an inner run: pytester drops the modules an in-process run
# imported, and the patched ccxt must stay the same module objects for every run.
import chaos_shims.activation
import chaos_shims.integrations.ccxt_rest
import chaos_shims.pytest_plugin  # noqa: F401
from chaos_shims.core import runtime

pytest.importorskip("ccxt")
pytest.importorskip("ccxt.async_support")

pytestmark = pytest.mark.timeout(120)

INNER_INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error::pytest.PytestUnraisableExceptionWarning
"""

INNER_CONFTEST = '''
import ccxt
import pytest
import pytest_asyncio
import ccxt.async_support as ccxt_async

from chaos_shims.core import runtime
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.integrations import PATCH_POINTS


@pytest.fixture(scope="session")
def loopback():
    with LoopbackExchange() as exchange:
        yield exchange


def client_config(exchange):
    return {**exchange.ccxt_config(), "enableRateLimit": False}


@pytest.fixture(scope="session")
def markets(loopback):
    # A session fixture: set up before, and outside, any one test's chaos.
    client = ccxt.binance(client_config(loopback))
    client.load_markets()
    return client.markets, client.currencies


@pytest.fixture
def exchange(loopback):
    loopback.clear_requests()
    return loopback


@pytest.fixture
def binance(exchange, markets):
    client = ccxt.binance(client_config(exchange))
    client.set_markets(*markets)  # no request: markets were loaded by the session fixture
    return client


@pytest_asyncio.fixture
async def async_binance(exchange, markets):
    client = ccxt_async.binance(client_config(exchange))
    client.set_markets(*markets)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def chaos_off():
    """A check that no chaos is in force and nothing is patched."""
    def check():
        assert runtime.active is None
        assert runtime.enabled_points() == []
        assert not PATCH_POINTS["ccxt_rest"].is_patched()
    return check
'''

HEADER = """
import asyncio
import time

import ccxt
import pytest

from chaos_shims.core import runtime
from chaos_shims.core.errors import ChaosConfigError

DEPTH = "/api/v3/depth"
SYMBOL = "BTC/USDT"
# exch_5xx answers 500/502/503 (ExchangeNotAvailable) or 504 (RequestTimeout)
FIVE_XX = (ccxt.ExchangeNotAvailable, ccxt.RequestTimeout)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INNER_INI)
    pytester.makeconftest(INNER_CONFTEST)
    return pytester


def write_tests(pytester: pytest.Pytester, body: str, name: str = "test_inner") -> None:
    pytester.makepyfile(**{name: HEADER + textwrap.dedent(body)})


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA", *args)
    # The outer process's chaos state is untouched by an inner run.
    assert runtime.active is None
    assert runtime.enabled_points() == []
    return result


# -- 1. markers ---------------------------------------------------------------------------------


def test_markers_are_registered(inner: pytest.Pytester) -> None:
    result = run(inner, "--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.chaos(**keys): run this test under chaos_shims*",
        "@pytest.mark.no_chaos: run this test without chaos*",
    ])
    assert result.ret == 0


def test_unmarked_test_costs_nothing(pytester: pytest.Pytester) -> None:
    """No --chaos, no marker: the core is never even imported (fresh interpreter)."""
    pytester.makepyfile(test_plain="""
        import sys

        import pytest

        CORE = ("chaos_shims.core.runtime", "chaos_shims.activation", "chaos_shims.core.config")

        def test_plain():
            assert "chaos_shims.pytest_plugin" in sys.modules
            assert not [name for name in CORE if name in sys.modules]

        @pytest.mark.no_chaos
        def test_opted_out():
            assert not [name for name in CORE if name in sys.modules]
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)


# -- 2. the marker: on for that test only -------------------------------------------------------


def test_marker_turns_chaos_on_for_that_test_only(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        @pytest.mark.chaos(exch_429=1.0, seed=3)
        def test_marked(binance, exchange):
            with pytest.raises(ccxt.DDoSProtection):
                binance.fetch_order_book(SYMBOL)
            assert exchange.request_count(DEPTH) == 0
            assert not runtime.active.config.dry_run

        def test_next_unmarked(binance, exchange, chaos_off):
            chaos_off()
            assert binance.fetch_order_book(SYMBOL)["bids"]
            assert exchange.request_count(DEPTH) == 1

        @pytest.fixture
        def book_in_setup(binance):
            try:
                return binance.fetch_order_book(SYMBOL)
            except ccxt.BaseError as exc:
                return type(exc).__name__

        @pytest.mark.chaos(exch_5xx=1.0, seed=3)
        def test_function_fixture_setup_is_covered(book_in_setup, exchange):
            assert book_in_setup in ("ExchangeNotAvailable", "RequestTimeout")

        class TestClassMarker:
            pytestmark = pytest.mark.chaos(exch_5xx=1.0, seed=3)

            def test_from_class(self, binance):
                with pytest.raises(FIVE_XX):
                    binance.fetch_order_book(SYMBOL)

            @pytest.mark.chaos(exch_429=1.0)
            def test_closest_marker_wins(self, binance):
                with pytest.raises(ccxt.DDoSProtection):
                    binance.fetch_order_book(SYMBOL)
                assert runtime.active.scenario_keys == ["exch_429"]

            @pytest.mark.no_chaos
            def test_no_chaos_in_class(self, binance, chaos_off):
                chaos_off()
                assert binance.fetch_order_book(SYMBOL)["bids"]

        def test_last_unmarked(binance, exchange, chaos_off):
            chaos_off()
            binance.fetch_order_book(SYMBOL)
            assert exchange.request_count(DEPTH) == 1
    """)
    result = run(inner, "--strict-markers")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines([
        "*Captured chaos setup*",
        "chaos_shims: LIVE, seed=3 (@pytest.mark.chaos), always ON, scenarios: exch_429=1.0",
    ])


# -- 3. restored when the test fails -----------------------------------------------------------


def test_restored_after_failure_and_setup_error(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        @pytest.mark.chaos(exch_429=1.0, seed=3)
        def test_fails(binance):
            binance.fetch_order_book(SYMBOL)  # raises DDoSProtection: the test fails

        @pytest.fixture
        def broken(binance):
            raise RuntimeError("a later fixture broke")

        @pytest.mark.chaos(exch_429=1.0, seed=3)
        def test_setup_error(broken):
            pass

        def test_after(binance, exchange, chaos_off):
            chaos_off()
            assert binance.fetch_order_book(SYMBOL)["bids"]
            assert exchange.request_count(DEPTH) == 1
    """)
    result = run(inner)
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*DDoSProtection*", "*RuntimeError: a later fixture broke*"])
    # the seed of a failing test is in its report, to reproduce it
    result.stdout.fnmatch_lines(["*Captured chaos setup*", "chaos_shims: LIVE, seed=3*"])


# -- 4. --chaos applies to every test except no_chaos ------------------------------------------


def test_cli_chaos_applies_to_every_test_but_no_chaos(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        def test_unmarked(binance, exchange, chaos):
            with pytest.raises(FIVE_XX):
                binance.fetch_order_book(SYMBOL)
            assert exchange.request_count(DEPTH) == 0
            assert chaos.config.sources["exch_5xx"] == "--chaos"
            assert chaos.config.sources["dry_run"].startswith("pytest")

        @pytest.mark.asyncio
        async def test_unmarked_async(async_binance, exchange):
            with pytest.raises(FIVE_XX):
                await async_binance.fetch_order_book(SYMBOL)
            assert exchange.request_count(DEPTH) == 0

        @pytest.mark.no_chaos
        def test_opted_out(binance, exchange, chaos):
            assert chaos.injector is None
            assert binance.fetch_order_book(SYMBOL)["bids"]
            assert exchange.request_count(DEPTH) == 1

        class TestOptedOut:
            pytestmark = pytest.mark.no_chaos

            def test_in_class(self, binance, chaos_off):
                chaos_off()
                binance.fetch_order_book(SYMBOL)

            @pytest.mark.chaos(exch_429=1.0, exch_5xx=0)
            def test_marker_closer_than_no_chaos(self, binance):
                with pytest.raises(ccxt.DDoSProtection):
                    binance.fetch_order_book(SYMBOL)
    """)
    result = run(inner, "--chaos", "exch_5xx=1.0", "--chaos", "seed=4")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["chaos_shims: every test without no_chaos runs with exch_5xx=1.0 seed=4"])


# -- 5. precedence: marker > --chaos > env > ini ------------------------------------------------


def test_marker_beats_cli_and_dry_run_counts(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        @pytest.mark.chaos(exch_429=0)
        def test_marker_beats_cli(binance, exchange, chaos):
            assert binance.fetch_order_book(SYMBOL)["bids"]
            assert chaos.config.sources["exch_429"] == "@pytest.mark.chaos"
            assert chaos.count() == 0

        @pytest.mark.chaos(dry_run=True)
        def test_marker_dry_run(binance, exchange, chaos):
            for _ in range(2):
                assert binance.fetch_order_book(SYMBOL)["bids"]
            assert exchange.request_count(DEPTH) == 2
            assert chaos.count(mode="dry_run") == 2
            assert chaos.count("exch_429", mode="live") == 0
            assert {r.mode for r in chaos.injections} == {"dry_run"}

        def test_cli_alone(binance):
            with pytest.raises(ccxt.DDoSProtection):
                binance.fetch_order_book(SYMBOL)
    """)
    result = run(inner, "--chaos", "exch_429=1.0")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize(("cli", "env", "outcome"), [
    ((), None, "5xx"),                              # the ini lines apply to every test
    (("--chaos", "exch_5xx=0"), None, "ok"),        # --chaos beats ini
    ((), "0", "ok"),                                # the environment beats ini
])
def test_ini_option_precedence(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                               cli: tuple[str, ...], env: str | None, outcome: str) -> None:
    inner.makeini(INNER_INI + "chaos =\n    exch_5xx=1.0\n    seed=9\n    dry_run=false\n")
    if env is not None:
        monkeypatch.setenv("CHAOS_SHIMS_EXCH_5XX", env)
    write_tests(inner, f"""
        def test_ini(binance, chaos):
            try:
                binance.fetch_order_book(SYMBOL)
                outcome = "ok"
            except FIVE_XX:
                outcome = "5xx"
            assert outcome == {outcome!r}
            assert chaos.config.seed == 9
            assert chaos.config.sources["seed"] == "ini option chaos"
    """)
    result = run(inner, *cli)
    result.assert_outcomes(passed=1)


# -- 6. async ---------------------------------------------------------------------------------


def test_async_test_under_marker_does_not_block_the_loop(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        @pytest.mark.asyncio
        @pytest.mark.chaos(lat_spike_ms=200, seed=3)
        async def test_spike(async_binance, exchange, chaos):
            ticks = 0
            done = asyncio.Event()

            async def ticker():
                nonlocal ticks
                while not done.is_set():
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            started = time.perf_counter()
            book = await async_binance.fetch_order_book(SYMBOL)
            elapsed = time.perf_counter() - started
            done.set()
            await task
            assert book["bids"]
            assert elapsed >= 0.2
            assert ticks >= 8, ticks  # the loop kept running during the spike
            assert exchange.request_count(DEPTH) == 1  # a delay still reaches the server
            assert chaos.count("lat_spike_ms", mode="live") == 1

        @pytest.mark.asyncio
        async def test_next_async_is_unfaulted(async_binance, exchange, chaos_off):
            chaos_off()
            assert (await async_binance.fetch_order_book(SYMBOL))["bids"]
            assert exchange.request_count(DEPTH) == 1
    """)
    result = run(inner)
    result.assert_outcomes(passed=2)


# -- 7. the chaos fixture ---------------------------------------------------------------------


def test_chaos_fixture(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        @pytest.mark.chaos(exch_5xx=1.0, seed=3, include_ops="fetch_order_book")
        def test_injections_are_this_tests(binance, exchange, chaos):
            for _ in range(3):
                with pytest.raises(FIVE_XX):
                    binance.fetch_order_book(SYMBOL)
            binance.fetch_ticker(SYMBOL)  # outside the blast radius: no injection
            records = chaos.injections
            assert len(records) == 3 == chaos.count() == chaos.count("exch_5xx", "live")
            assert {(r.exchange, r.op, r.scenario, r.mode) for r in records} == {
                ("binance", "fetch_order_book", "exch_5xx", "live")}
            assert [r.seq for r in records] == [1, 2, 3]
            assert chaos.injector is runtime.active
            assert chaos.injector.scenario_keys == ["exch_5xx"]
            assert chaos.config.seed == 3

        def test_activate_inside_the_test(binance, exchange, chaos, chaos_off):
            chaos_off()
            assert chaos.injector is None and chaos.injections == [] and chaos.count() == 0
            binance.fetch_order_book(SYMBOL)
            injector = chaos.activate(exch_429=1.0, seed=1)
            assert injector is runtime.active is chaos.injector
            assert not injector.config.dry_run and injector.config.sources["seed"] == "chaos.activate()"
            with pytest.raises(ccxt.DDoSProtection):
                binance.fetch_order_book(SYMBOL)
            assert chaos.count("exch_429", "live") == 1
            chaos.deactivate()
            assert runtime.active is None
            binance.fetch_order_book(SYMBOL)
            assert exchange.request_count(DEPTH) == 2
            assert [r.op for r in chaos.injections] == ["fetch_order_book"]
            with pytest.raises(ChaosConfigError, match="exch_492"):
                chaos.activate(exch_492=1.0)

        def test_activate_and_leave_it_on(chaos):
            assert chaos.activate(exch_429=1.0) is runtime.active

        def test_after(binance, exchange, chaos_off):
            chaos_off()
            assert binance.fetch_order_book(SYMBOL)["bids"]

        def test_core_api_left_on():
            # no marker, no fixture: the plugin still puts chaos back after the test
            import chaos_shims
            assert chaos_shims.activate(None, enabled=True, exch_429=1.0) is runtime.active

        def test_after_core_api(binance, chaos_off):
            chaos_off()
            assert binance.fetch_order_book(SYMBOL)["bids"]
    """)
    result = run(inner)
    result.assert_outcomes(passed=6)


# -- 8. bad config ----------------------------------------------------------------------------


def test_bad_marker_errors_that_test_with_the_config_message(inner: pytest.Pytester) -> None:
    write_tests(inner, """
        @pytest.mark.chaos(exch_429="lots")
        def test_bad_value():
            pass

        @pytest.mark.chaos(exch_492=1.0)
        def test_unknown_key():
            pass

        @pytest.mark.chaos("exch_429=1.0")
        def test_positional():
            pass

        def test_after(chaos_off):
            chaos_off()
    """)
    result = run(inner)
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines([
        "*chaos_shims: invalid chaos config exch_429='lots' (from @pytest.mark.chaos): "
        "allowed: a probability in [[]0, 1[]]",
    ])
    result.stdout.fnmatch_lines(["*invalid chaos config exch_492=1.0*did you mean exch_429?*"])
    result.stdout.fnmatch_lines(["*keyword arguments only*"])
    assert "def _chaos_shims" not in result.stdout.str()  # a message, not a traceback


@pytest.mark.parametrize(("args", "ini", "named"), [
    (("--chaos", "exch_429=lots"), None, "exch_429='lots' (from --chaos)"),
    (("--chaos", "exch_492=1"), None, "exch_492='1' (from --chaos): allowed: did you mean exch_429?"),
    (("--chaos", "exch_429"), None, "--chaos expects KEY=VALUE (e.g. exch_429=0.5), got 'exch_429'"),
    ((), "exch_5xx=maybe", "exch_5xx='maybe' (from ini option chaos)"),
])
def test_bad_run_config_is_a_usage_error(inner: pytest.Pytester, args: tuple[str, ...],
                                         ini: str | None, named: str) -> None:
    if ini is not None:
        inner.makeini(INNER_INI + f"chaos = {ini}\n")
    write_tests(inner, """
        def test_never_runs():
            pass
    """)
    result = run(inner, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: chaos_shims: " in result.stderr.str()
    assert named in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


# -- 9. process-wide chaos is put back --------------------------------------------------------


def test_process_wide_activation_is_restored(inner: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"ENABLED": "1", "DRY_RUN": "1", "EXCH_5XX": "1.0",
                        "BURST_ON_SEC": "0", "SEED": "11"}.items():
        monkeypatch.setenv(f"CHAOS_SHIMS_{name}", value)
    inner.makeconftest("import chaos_shims.auto  # noqa: F401\\n" + INNER_CONFTEST)
    write_tests(inner, """
        SEEN = {}

        def test_before(binance, exchange, chaos):
            injector = runtime.active
            assert injector is not None and injector.config.dry_run and injector.config.seed == 11
            SEEN["injector"] = injector
            binance.fetch_order_book(SYMBOL)  # shadow mode: the request goes through
            assert exchange.request_count(DEPTH) == 1
            assert chaos.injector is injector
            assert chaos.count("exch_5xx", "dry_run") == 1 == len(chaos.injections)
            SEEN["count"] = injector.count()  # with the session fixture's load_markets

        @pytest.mark.chaos(exch_429=1.0, exch_5xx=0, seed=3)
        def test_marked(binance, exchange, chaos):
            assert runtime.active is chaos.injector is not SEEN["injector"]
            with pytest.raises(ccxt.DDoSProtection):
                binance.fetch_order_book(SYMBOL)
            assert exchange.request_count(DEPTH) == 0
            assert chaos.count() == chaos.count("exch_429", "live") == 1
            assert chaos.config.sources["exch_5xx"] == "@pytest.mark.chaos"

        @pytest.mark.no_chaos
        def test_no_chaos_suspends_it(binance, exchange, chaos):
            assert runtime.active is None and chaos.injector is None
            binance.fetch_order_book(SYMBOL)
            assert SEEN["injector"].count() == SEEN["count"]

        def test_after(binance, exchange, chaos):
            assert runtime.active is SEEN["injector"]
            assert runtime.enabled_points() == ["ccxt_rest"]
            binance.fetch_order_book(SYMBOL)
            assert SEEN["injector"].count() == SEEN["count"] + 1
            assert chaos.count() == chaos.count("exch_5xx", "dry_run") == 1
            assert chaos.injections[0].seq == SEEN["count"] + 1
    """)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=4)
