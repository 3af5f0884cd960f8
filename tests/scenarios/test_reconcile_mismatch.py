"""reconcile_mismatch: the scenario contract on a reconciliation (fetch_open_orders compared
with the exchange's own books), then each method and mutation type through real sync and async
ccxt binance against a loopback exchange with real orders and trades: the caller sees exactly
the recorded type, ccxt's own state never changes, and injected vs detected are counted."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

import chaos_shims.signals as signals
from chaos_shims.activation import deactivate
from chaos_shims.core import runtime
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.integrations import ccxt_reconcile
from chaos_shims.scenarios.reconcile_mismatch import MUTATION_TYPES
from tests.conftest import client_config
from tests.scenarios.contract import ScenarioContract

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")
import ccxt.async_support as ccxt_async  # noqa: E402

TRADED = "ETH/USDT"  # resting orders, a filled market order, a cancelled order, a trade
QUIET = "BTC/USDT"  # nothing at all
ORDER_KINDS = {"order_dropped", "phantom_order", "fill_changed"}


@pytest.fixture(scope="module")
def venue() -> Iterator[LoopbackExchange]:
    """A loopback exchange of this module's own, with known books."""
    with LoopbackExchange() as exchange:
        client = ccxt.binance(client_config(exchange))
        client.load_markets()
        for price in (1000, 1001, 1002):
            client.create_order(TRADED, "limit", "buy", 0.1, price)
        client.create_order(TRADED, "market", "buy", 0.2)
        cancelled = client.create_order(TRADED, "limit", "sell", 0.3, 9000)
        client.cancel_order(cancelled["id"], TRADED)
        yield exchange


@pytest.fixture
def client(venue: LoopbackExchange) -> Any:
    """A sync binance made before chaos is activated (as a bot's usually is)."""
    made = ccxt.binance(client_config(venue))
    made.load_markets()
    return made


@pytest_asyncio.fixture
async def async_client(venue: LoopbackExchange) -> AsyncIterator[Any]:
    made = ccxt_async.binance(client_config(venue))
    try:
        await made.load_markets()
        yield made
    finally:
        await made.close()


def difference(truth: Any, seen: Any) -> str:
    """The mismatch type a reconciler finds between what is true and what it was told."""
    if truth == seen:
        return "ok"
    if isinstance(truth, list) and truth and "order" in truth[0] and "takerOrMaker" in truth[0]:
        return "trade_dropped" if len(seen) < len(truth) else "other"
    if isinstance(truth, list) and truth and all("contracts" in p for p in truth):
        return "position_changed"
    if isinstance(truth, list):
        ids, seen_ids = {o["id"] for o in truth}, {o["id"] for o in seen}
        if seen_ids < ids:
            return "order_dropped"
        if seen_ids > ids:
            return "phantom_order"
        truth_by_id = {o["id"]: o for o in truth}
        return difference(truth_by_id[seen[0]["id"]], seen[0]) if len(seen) == 1 else next(
            difference(truth_by_id[o["id"]], o) for o in seen if o != truth_by_id[o["id"]])
    if "filled" in truth:
        changed = {k for k in ("filled", "remaining", "status") if truth[k] != seen[k]}
        return "fill_changed" if changed and "filled" in changed else "other"
    if "free" in truth and "total" in truth:
        return "balance_changed"
    return "other"


def without_times(value: Any) -> Any:
    """Server timestamps aside (a balance carries the time of the answer)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items()
                if k not in ("timestamp", "datetime", "updateTime", "lastUpdateTimestamp")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


CALLS: list[tuple[str, tuple[Any, ...], set[str]]] = [
    ("fetch_open_orders", (TRADED,), ORDER_KINDS),
    ("fetch_orders", (TRADED,), ORDER_KINDS),
    ("fetch_order", ("1", TRADED), {"fill_changed"}),
    ("fetch_balance", (), {"balance_changed"}),
    ("fetch_my_trades", (TRADED,), {"trade_dropped"}),
]


class TestReconcileMismatch(ScenarioContract):
    key = "reconcile_mismatch"
    live_keys = {"reconcile_mismatch": 1.0}
    partial_keys = {"reconcile_mismatch": 0.5}
    live_outcome = "mismatch"

    @pytest.fixture
    def scenario_target(self, client: Any, venue: LoopbackExchange) -> tuple[Any, LoopbackExchange]:
        return client, venue

    def provoke(self, target: tuple[Any, LoopbackExchange]) -> str:
        client, venue = target
        told = {(o["id"], o["filled"], o["status"]) for o in client.fetch_open_orders(TRADED)}
        books = {(str(o["orderId"]), float(o["executedQty"]), "open")
                 for o in venue.open_orders(TRADED)}
        return "ok" if told == books else "mismatch"

    # -- every method, every type ---------------------------------------------------------------
    @pytest.mark.parametrize(("method", "args", "kinds"), CALLS, ids=[c[0] for c in CALLS])
    def test_the_caller_sees_exactly_the_recorded_type(self, client: Any, method: str,
                                                       args: tuple[Any, ...], kinds: set[str]) -> None:
        truth = without_times(getattr(client, method)(*args))
        injector = self.activate(seed=7)
        seen_types = set()
        for _ in range(24):
            seen = without_times(getattr(client, method)(*args))
            record = injector.records(self.key)[-1]
            assert (record.mode, record.exchange, record.op) == ("live", "binance", method)
            assert difference(truth, seen) == record.reason_code
            seen_types.add(record.reason_code)
        assert seen_types == kinds  # every applicable type, and only those
        deactivate()
        assert without_times(getattr(client, method)(*args)) == truth

    @pytest.mark.asyncio
    async def test_async_binance(self, async_client: Any) -> None:
        truth = {method: without_times(await getattr(async_client, method)(*args))
                 for method, args, _ in CALLS}
        injector = self.activate(seed=3)
        for method, args, kinds in CALLS:
            seen = without_times(await getattr(async_client, method)(*args))
            record = injector.records(self.key)[-1]
            assert record.op == method and record.reason_code in kinds
            assert difference(truth[method], seen) == record.reason_code

    def test_mutations_follow_the_seed(self, client: Any) -> None:
        def run(seed: int) -> list[Any]:
            injector = self.activate(seed=seed, reconcile_mismatch=0.7)
            seen: list[Any] = []
            for method, args, _ in CALLS * 3:
                result = without_times(getattr(client, method)(*args))
                seen.append((method, result))
            codes = [(r.op, r.reason_code) for r in injector.records(self.key)]
            return [*codes, *seen]

        first = run(5)
        assert first == run(5)
        assert first != run(6)

    # -- what the mutations look like --------------------------------------------------------
    def test_empty_open_orders_get_a_phantom_shaped_like_a_real_order(self, client: Any) -> None:
        real = client.fetch_open_orders(TRADED)[0]
        assert client.fetch_open_orders(QUIET) == []
        injector = self.activate()
        [phantom] = client.fetch_open_orders(QUIET)
        assert [r.reason_code for r in injector.records(self.key)] == ["phantom_order"]
        assert set(phantom) == set(real)
        assert (phantom["symbol"], phantom["status"], phantom["filled"]) == (QUIET, "open", 0.0)
        assert phantom["id"].isdigit() and phantom["amount"] > 0 and phantom["price"] > 0
        deactivate()
        with pytest.raises(ccxt.OrderNotFound):  # the exchange has never heard of it
            client.cancel_order(phantom["id"], QUIET)

    def test_a_phantom_among_real_orders_looks_like_them(self, client: Any) -> None:
        real = {o["id"]: o for o in client.fetch_open_orders(TRADED)}
        injector = self.activate(seed=1)
        for _ in range(20):
            orders = client.fetch_open_orders(TRADED)
            if injector.records(self.key)[-1].reason_code == "phantom_order":
                break
        else:
            pytest.fail("no phantom order in 20 draws")
        [phantom] = [o for o in orders if o["id"] not in real]
        template = next(iter(real.values()))
        assert phantom["clientOrderId"][:10] == template["clientOrderId"][:10]  # the bot's prefix
        assert (phantom["symbol"], phantom["side"], phantom["amount"]) == (TRADED, "buy", 0.1)
        assert 980 < phantom["price"] < 1020

    def test_a_result_with_nothing_to_change_is_no_decision(self, client: Any) -> None:
        injector = self.activate()
        assert client.fetch_my_trades(QUIET) == []
        assert injector.count(self.key) == 0

    def test_fetch_positions(self, venue: LoopbackExchange) -> None:
        # Spot has no positions endpoint (binance's own fetch_positions asks fapi, which this
        # exchange does not serve): positions here are derived from the balance, the unified
        # way, by a subclass - the nested fetch_balance is left alone, only the outer call mutates.
        client = SpotPositionsBinance(client_config(venue))
        client.load_markets()
        truth = client.fetch_positions()
        injector = self.activate()
        seen = client.fetch_positions()
        [record] = injector.records(self.key)
        assert (record.op, record.reason_code) == ("fetch_positions", "position_changed")
        changed = [(a["symbol"], a["contracts"], b["contracts"])
                   for a, b in zip(truth, seen, strict=True) if a != b]
        assert len(changed) == 1 and changed[0][1] != changed[0][2]
        real = ccxt.binance(client_config(venue))
        with pytest.raises(ccxt.ExchangeNotAvailable):  # an error goes through untouched
            real.fetch_positions()
        assert injector.count(self.key) == 1

    def test_blast_radius_by_method(self, client: Any) -> None:
        truth = without_times(client.fetch_balance())
        injector = self.activate(exclude_ops="fetch_balance,fetchMyTrades")
        assert without_times(client.fetch_balance()) == truth
        client.fetch_my_trades(TRADED)
        assert injector.count(self.key) == 0
        client.fetch_order("1", TRADED)
        assert [r.op for r in injector.records(self.key)] == ["fetch_order"]

    def test_a_bot_asking_itself_gets_any_type(self) -> None:
        # should_fire outside a reconciliation call: the bot applies the mismatch itself
        injector = self.activate()
        kinds = {injector.should_fire(self.key).fault.kind for _ in range(60)}  # type: ignore[union-attr]
        assert kinds == set(MUTATION_TYPES)

    # -- ccxt's own state ---------------------------------------------------------------------
    def test_ccxt_state_is_never_touched(self, venue: LoopbackExchange) -> None:
        client = KeepingBinance({**client_config(venue), "enableLastJsonResponse": True})
        client.load_markets()
        truth = copy.deepcopy(client.fetch_balance())
        state = copy.deepcopy((client.orders, client.trades, client.positions))
        injector = self.activate()
        # the parsed response under the unified result is the exchange's, unchanged
        client.fetch_open_orders(TRADED)
        assert client.last_json_response == venue.open_orders(TRADED)
        for method, args, _ in CALLS:
            getattr(client, method)(*args)
        assert injector.count(self.key) == len(CALLS) + 1
        seen = client.fetch_balance()
        assert without_times(seen) != without_times(truth)
        # what ccxt keeps is the real balance, not the mutated copy handed to the caller
        assert without_times(client.balance) == without_times(truth)
        assert copy.deepcopy((client.orders, client.trades, client.positions)) == state

    # -- counting -------------------------------------------------------------------------------
    def test_injected_and_detected_are_counted(self, client: Any, registry: Any) -> None:
        injector = self.activate(registry)
        client.fetch_my_trades(TRADED)
        client.fetch_my_trades(TRADED)
        client.fetch_balance()
        signals.report_discrepancy("trade_dropped")

        def sample(kind: str, source: str) -> float | None:
            return registry.get_sample_value("mm_reconcile_discrepancies_total",
                                             {"type": kind, "source": source})

        assert sample("trade_dropped", "injected") == 2
        assert sample("balance_changed", "injected") == 1
        assert sample("trade_dropped", "detected") == 1
        report = signals.detection_report(injector)
        assert (report["injected"], report["detected"]) == (3, 1)
        assert report["detection_rate"] == pytest.approx(1 / 3)
        assert report["by_type"]["trade_dropped"]["detection_rate"] == 0.5
        assert report["by_type"]["balance_changed"]["detection_rate"] == 0.0

    def test_dry_run_records_types_and_counts_no_injection(self, client: Any, registry: Any) -> None:
        truth = without_times(client.fetch_balance())
        injector = self.activate(registry, dry_run=True)
        assert without_times(client.fetch_balance()) == truth
        [record] = injector.records(self.key)
        assert (record.mode, record.reason_code) == ("dry_run", "balance_changed")
        assert registry.get_sample_value("mm_reconcile_discrepancies_total",
                                         {"type": "balance_changed", "source": "injected"}) is None

    def test_internal_error_returns_the_real_result_and_turns_chaos_off(
            self, client: Any, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> None:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise KeyError("bug inside chaos_shims")

        truth = without_times(client.fetch_open_orders(TRADED))
        monkeypatch.setattr(ccxt_reconcile, "mutate", broken)
        self.activate()
        with caplog.at_level(logging.ERROR, logger="chaos_shims"):
            assert without_times(client.fetch_open_orders(TRADED)) == truth
            assert without_times(client.fetch_open_orders(TRADED)) == truth
        assert runtime.active is None
        assert sum("internal error" in r.getMessage() for r in caplog.records) == 1

    def test_mutation_types_are_the_standard_reported_kinds(self) -> None:
        assert signals.STANDARD_KINDS == MUTATION_TYPES


class SpotPositionsBinance(ccxt.binance):  # type: ignore[name-defined]
    """A binance whose positions are its spot holdings, as unified positions."""

    def fetch_positions(self, symbols: Any = None, params: Any = None) -> list[dict[str, Any]]:
        balance = self.fetch_balance()
        positions = []
        for code in ("BTC", "ETH"):
            symbol = f"{code}/USDT"
            held = balance[code]["total"]
            positions.append(self.safe_position({
                "info": {}, "symbol": symbol, "contracts": held, "contractSize": 1.0,
                "side": "long", "notional": held * 1000.0, "timestamp": None, "datetime": None,
            }))
        return positions


class KeepingBinance(ccxt.binance):  # type: ignore[name-defined]
    """A binance that keeps the balance it returns, as ccxt.pro's watch_balance does."""

    def fetch_balance(self, params: Any = None) -> Any:
        self.balance = super().fetch_balance(params or {})
        return self.balance


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    yield
    deactivate()
