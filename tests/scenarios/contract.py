"""The same kinds of test for every scenario, driven by class attributes (one subclass per
scenario module): declaration, patch hygiene, live effect, dry-run, dormancy and seed
reproducibility; REST scenarios add live effects on real sync and async ccxt binance
(including "never reached the server")."""

from __future__ import annotations

import importlib
import time
from typing import Any, ClassVar

import pytest

from chaos_shims.activation import activate
from chaos_shims.core.injector import ChaosInjector
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.integrations import PATCH_POINTS
from chaos_shims.scenarios import CATALOG
from tests.loop_watch import watched
from tests.patch_hygiene import assert_hygiene_when_imported_first

ccxt = pytest.importorskip("ccxt")

DEPTH = "/api/v3/depth"
SYMBOL = "BTC/USDT"


def outcome(call: Any) -> str:
    try:
        call()
    except ccxt.BaseError as exc:
        return type(exc).__name__
    return "ok"


async def async_outcome(call: Any) -> str:
    try:
        await call()
    except ccxt.BaseError as exc:
        return type(exc).__name__
    return "ok"


class ScenarioContract:
    """The tests every scenario has. A subclass names the scenario, the keys that make it fire,
    and how to provoke one event (``provoke``: one REST call, one websocket message, one name
    resolution...) whose outcome is a short label ("ok" when the application is unharmed)."""

    #: the scenario's config key (and module name)
    key: ClassVar[str]
    #: keys that make it fire on every event
    live_keys: ClassVar[dict[str, Any]]
    #: keys that make it fire on some events only (seed tests); None: it always fires
    partial_keys: ClassVar[dict[str, Any] | None] = None
    #: the outcome of one provoked event while it fires live
    live_outcome: ClassVar[str]
    #: how many events the seed test provokes
    seed_events: ClassVar[int] = 12

    def activate(self, registry: Any = None, **keys: Any) -> ChaosInjector:
        settings = {"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1,
                    **self.live_keys, **keys}
        injector = activate(None, registry=registry, **settings)
        assert injector is not None
        return injector

    def provoke(self, target: Any) -> str:
        """Make one event happen against ``target`` (the ``scenario_target`` fixture)."""
        raise NotImplementedError

    @pytest.fixture
    def scenario_target(self) -> Any:
        """What ``provoke`` acts on; subclasses override with a fixture of their own."""
        return None

    # -- declaration ---------------------------------------------------------------------
    def test_declared_in_its_own_module(self) -> None:
        module = importlib.import_module(f"chaos_shims.scenarios.{self.key}")
        scenario = CATALOG[self.key]
        assert scenario.__module__ == module.__name__
        assert scenario.summary and scenario.simulates
        assert scenario.patch_points and all(p in PATCH_POINTS for p in scenario.patch_points)
        assert not scenario.is_active_value(scenario.default)

    def test_patch_hygiene(self) -> None:
        for point in CATALOG[self.key].patch_points:
            assert_hygiene_when_imported_first(point)

    # -- behaviour -----------------------------------------------------------------------
    def test_live_effect(self, scenario_target: Any, registry: Any) -> None:
        injector = self.activate(registry)
        assert self.provoke(scenario_target) == self.live_outcome
        assert injector.count(self.key, "live") >= 1
        assert registry.get_sample_value(
            "mm_chaos_injections_total", {"scenario": self.key, "mode": "live"}) >= 1

    def test_dry_run_leaves_the_application_untouched(self, scenario_target: Any) -> None:
        injector = self.activate(dry_run=True)
        assert self.provoke(scenario_target) == "ok"
        assert injector.count(self.key, "dry_run") >= 1
        assert injector.count(self.key, "live") == 0

    def test_disabled_is_dormant(self, scenario_target: Any) -> None:
        self.activate()
        activate(None, enabled=False)  # wrappers stay in place but call straight through
        assert self.provoke(scenario_target) == "ok"

    def test_seed_reproducible(self, scenario_target: Any) -> None:
        keys = self.partial_keys or self.live_keys

        def run(seed: int) -> list[str]:
            self.activate(seed=seed, **keys)
            return [self.provoke(scenario_target) for _ in range(self.seed_events)]

        first = run(21)
        assert first == run(21)
        if self.partial_keys is not None:
            assert len(set(first)) > 1, first  # some fire, some do not
            assert any(run(seed) != first for seed in (22, 23, 24))


class RestScenarioContract(ScenarioContract):
    """REST scenarios: real sync and async ccxt binance against the loopback exchange."""

    #: ccxt exception class names the fault raises; "ok" when the call still succeeds
    sync_outcome: ClassVar[str]
    async_outcome: ClassVar[str]
    #: whether the request still reaches the server (a delay does, an error never)
    reaches_server: ClassVar[bool] = False
    #: the call takes at least this long under the fault
    min_elapsed: ClassVar[float] = 0.0

    @property
    def live_outcome(self) -> str:  # type: ignore[override]
        return self.sync_outcome

    @pytest.fixture
    def scenario_target(self, binance: Any) -> Any:
        return binance

    def provoke(self, target: Any) -> str:
        return outcome(lambda: target.fetch_ticker(SYMBOL))

    def test_live_effect_sync(self, binance: Any, exchange: LoopbackExchange, registry: Any) -> None:
        injector = self.activate(registry)
        started = time.perf_counter()
        assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == self.sync_outcome
        assert time.perf_counter() - started >= self.min_elapsed
        assert exchange.request_count(DEPTH) == (1 if self.reaches_server else 0)
        [record] = injector.records(self.key)
        assert (record.mode, record.exchange, record.op) == ("live", "binance", "fetch_order_book")
        assert record.target is not None and record.target.endswith(DEPTH)

    @pytest.mark.asyncio
    async def test_live_effect_async(self, async_binance: Any, exchange: LoopbackExchange) -> None:
        injector = self.activate()
        result, elapsed, ticks = await watched(
            async_outcome(lambda: async_binance.fetch_order_book(SYMBOL)))
        assert result == self.async_outcome
        assert elapsed >= self.min_elapsed
        # asyncio-correct: a sibling task kept running while the fault was applied
        assert ticks >= int(self.min_elapsed / 0.005 * 0.5)
        assert exchange.request_count(DEPTH) == (1 if self.reaches_server else 0)
        [record] = injector.records(self.key)
        assert (record.exchange, record.op) == ("binance", "fetch_order_book")

    def test_dry_run_reaches_the_server_at_once(self, binance: Any, exchange: LoopbackExchange) -> None:
        self.activate(dry_run=True)
        started = time.perf_counter()
        assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == "ok"
        assert time.perf_counter() - started < max(self.min_elapsed, 0.05)
        assert exchange.request_count(DEPTH) == 1
