"""The same kinds of test for every scenario, driven by class attributes (one subclass per
scenario module): declaration, patch hygiene, live effect on real sync and async ccxt binance
(including "never reached the server"), dry-run, and seed reproducibility."""

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
    #: the scenario's config key (and module name)
    key: ClassVar[str]
    #: keys that make it fire on every REST request
    live_keys: ClassVar[dict[str, Any]]
    #: keys that make it fire on some requests only (seed tests); None: always fires
    partial_keys: ClassVar[dict[str, Any] | None] = None
    #: ccxt exception class names the fault raises; "ok" when the call still succeeds
    sync_outcome: ClassVar[str]
    async_outcome: ClassVar[str]
    #: whether the request still reaches the server (a delay does, an error never)
    reaches_server: ClassVar[bool] = False
    #: the call takes at least this long under the fault
    min_elapsed: ClassVar[float] = 0.0

    def activate(self, registry: Any = None, **keys: Any) -> ChaosInjector:
        settings = {"enabled": True, "dry_run": False, "burst_on_sec": 0, "seed": 1,
                    **self.live_keys, **keys}
        injector = activate(None, registry=registry, **settings)
        assert injector is not None
        return injector

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

    # -- live effect ---------------------------------------------------------------------
    def test_live_effect_sync(self, binance: Any, exchange: LoopbackExchange, registry: Any) -> None:
        injector = self.activate(registry)
        started = time.perf_counter()
        assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == self.sync_outcome
        assert time.perf_counter() - started >= self.min_elapsed
        assert exchange.request_count(DEPTH) == (1 if self.reaches_server else 0)
        [record] = injector.records(self.key)
        assert (record.mode, record.exchange, record.op) == ("live", "binance", "fetch_order_book")
        assert record.target is not None and record.target.endswith(DEPTH)
        assert registry.get_sample_value(
            "mm_chaos_injections_total", {"scenario": self.key, "mode": "live"}) == 1

    @pytest.mark.asyncio
    async def test_live_effect_async(self, async_binance: Any, exchange: LoopbackExchange) -> None:
        import asyncio

        injector = self.activate()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        result = await async_outcome(lambda: async_binance.fetch_order_book(SYMBOL))
        elapsed = time.perf_counter() - started
        task.cancel()
        assert result == self.async_outcome
        assert elapsed >= self.min_elapsed
        # asyncio-correct: a sibling task kept running while the fault was applied
        assert ticks >= int(self.min_elapsed / 0.005 * 0.5)
        assert exchange.request_count(DEPTH) == (1 if self.reaches_server else 0)
        [record] = injector.records(self.key)
        assert (record.exchange, record.op) == ("binance", "fetch_order_book")

    def test_dry_run_leaves_the_bot_untouched(self, binance: Any, exchange: LoopbackExchange) -> None:
        injector = self.activate(dry_run=True)
        started = time.perf_counter()
        assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == "ok"
        assert time.perf_counter() - started < max(self.min_elapsed, 0.05)
        assert exchange.request_count(DEPTH) == 1
        assert injector.count(self.key, "dry_run") == 1
        assert injector.count(self.key, "live") == 0

    def test_disabled_is_dormant(self, binance: Any, exchange: LoopbackExchange) -> None:
        self.activate()
        activate(None, enabled=False)  # wrappers stay in place but call straight through
        assert outcome(lambda: binance.fetch_order_book(SYMBOL)) == "ok"
        assert exchange.request_count(DEPTH) == 1

    # -- seed ----------------------------------------------------------------------------
    def test_seed_reproducible(self, binance: Any) -> None:
        keys = self.partial_keys or self.live_keys

        def run(seed: int) -> list[str]:
            self.activate(seed=seed, **keys)
            return [outcome(lambda: binance.fetch_ticker(SYMBOL)) for _ in range(12)]

        first = run(21)
        assert first == run(21)
        if self.partial_keys is not None:
            assert len(set(first)) > 1, first  # some fire, some do not
            assert any(run(seed) != first for seed in (22, 23, 24))
