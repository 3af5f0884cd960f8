"""The ccxt reconciliation patch point: every definition of the six methods wrapped and restored
by identity, classes defined after the patch, hygiene when ccxt is imported after activation,
only the outermost call mutating, and living beside ccxt_rest's labels whichever of the two is
patched or unpatched first."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from chaos_shims.activation import activate, deactivate
from chaos_shims.core import runtime
from chaos_shims.exchange import LoopbackExchange
from chaos_shims.integrations import PATCH_POINTS, ccxt_reconcile, ccxt_rest
from chaos_shims.integrations.ccxt_reconcile import RECONCILE_METHODS
from chaos_shims.integrations.wrapping import subclasses_of
from tests.conftest import client_config
from tests.patch_hygiene import assert_hygiene_when_imported_after

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

ccxt = pytest.importorskip("ccxt")
import ccxt.async_support as ccxt_async  # noqa: E402
import ccxt.pro as ccxt_pro  # noqa: E402 - its classes are part of the family too

SYMBOL = "ETH/USDT"
BASES = [sys.modules[ccxt_reconcile.SYNC_MODULE].BaseExchange,
         sys.modules[ccxt_reconcile.ASYNC_MODULE].BaseExchange]


def every_class() -> list[type]:
    return subclasses_of(BASES[0])


def definitions() -> dict[tuple[type, str], Any]:
    """What every ccxt class defines itself, for the six methods and every unified name."""
    return {(cls, name): value for cls in every_class() for name, value in vars(cls).items()
            if name in RECONCILE_METHODS or name.startswith(("fetch_", "create_", "load_"))}


def assert_restored(before: dict[tuple[type, str], Any]) -> None:
    after = definitions()
    known = {cls for cls, _ in before}
    # nothing lost, and no slot left behind on a class that existed before
    assert before.keys() <= after.keys()
    assert not [key for key in after.keys() - before.keys() if key[0] in known]
    changed = [key for key, value in before.items() if after[key] is not value]
    assert not changed, changed[:5]


def live(**keys: Any) -> Any:
    injector = activate(None, enabled=True, dry_run=False, burst_on_sec=0, seed=1, **keys)
    assert injector is not None
    return injector


@pytest.fixture(scope="module")
def venue() -> Iterator[LoopbackExchange]:
    with LoopbackExchange() as exchange:
        client = ccxt.binance(client_config(exchange))
        client.create_order(SYMBOL, "limit", "buy", 0.1, 1000)
        client.create_order(SYMBOL, "limit", "buy", 0.1, 1001)
        yield exchange


@pytest.fixture(autouse=True)
def _all_off() -> Iterator[None]:
    deactivate()
    yield
    deactivate()


def test_import_after_activation_patches_and_unpatches() -> None:
    assert_hygiene_when_imported_after("ccxt_reconcile")


def test_every_definition_is_wrapped_then_restored_by_identity() -> None:
    before = definitions()
    point = PATCH_POINTS["ccxt_reconcile"]
    for _round in range(2):
        point.enable()
        point.enable()
        wrapped = ccxt_reconcile.wrapped_methods()
        # sync, async and ccxt.pro classes, each definition once
        assert len(wrapped) == len(set(wrapped)) > 500
        for cls, name in wrapped:
            assert vars(cls)[name].__wrapped__ is before[(cls, name)]
        assert (ccxt.binance, "fetch_open_orders") in wrapped
        assert (ccxt_async.binance, "fetch_balance") in wrapped
        assert issubclass(ccxt_pro.binance, ccxt_async.binance)  # covered through its base
        point.disable()
        point.disable()
        assert ccxt_reconcile.wrapped_methods() == []
        assert_restored(before)


def test_a_class_defined_after_the_patch_is_wrapped_at_its_first_instance(
        venue: LoopbackExchange) -> None:
    before = definitions()
    injector = live(reconcile_mismatch=1.0)

    class Later(ccxt.binance):  # type: ignore[name-defined]
        def fetch_balance(self, params: Any = None) -> Any:
            return super().fetch_balance(params or {})

    raw = vars(Later)["fetch_balance"]
    client = Later(client_config(venue))
    assert vars(Later)["fetch_balance"].__wrapped__ is raw
    client.fetch_balance()
    assert [(r.op, r.reason_code) for r in injector.records()] == [
        ("fetch_balance", "balance_changed")]  # the nested binance.fetch_balance left alone
    deactivate()
    assert vars(Later)["fetch_balance"] is raw
    assert_restored(before)


def test_a_call_built_on_another_reconciliation_call_mutates_once(venue: LoopbackExchange) -> None:
    class ViaOrders(ccxt.binance):  # type: ignore[name-defined]
        # ccxt's generic fetch_open_orders: fetch_orders filtered to the open ones
        fetch_open_orders = ccxt.Exchange.fetch_open_orders

    client = ViaOrders(client_config(venue))
    injector = live(reconcile_mismatch=1.0)
    client.fetch_open_orders(SYMBOL)
    assert [r.op for r in injector.records()] == ["fetch_open_orders"]


def test_inside_another_unified_method_nothing_is_mutated(venue: LoopbackExchange) -> None:
    class Busy(ccxt.binance):  # type: ignore[name-defined]
        def fetch_ticker(self, symbol: str, params: Any = None) -> Any:
            self.fetch_balance()  # an internal look, labelled fetch_ticker by ccxt_rest
            return super().fetch_ticker(symbol, params or {})

    injector = live(reconcile_mismatch=1.0, lat_spike_ms=0.001)
    client = Busy(client_config(venue))  # made after activation: ccxt_rest labels it at once
    client.fetch_ticker(SYMBOL)
    assert injector.count("reconcile_mismatch") == 0
    assert {r.op for r in injector.records("lat_spike_ms")} == {"fetch_ticker"}
    client.fetch_balance()
    assert injector.count("reconcile_mismatch") == 1


ORDERS = [("ccxt_rest", "ccxt_reconcile"), ("ccxt_reconcile", "ccxt_rest")]


@pytest.mark.parametrize("unpatch_order", ORDERS, ids=["rest_off_first", "reconcile_off_first"])
@pytest.mark.parametrize("patch_order", ORDERS, ids=["rest_on_first", "reconcile_on_first"])
def test_beside_ccxt_rest_either_can_go_first(patch_order: tuple[str, str],
                                              unpatch_order: tuple[str, str],
                                              venue: LoopbackExchange) -> None:
    before = definitions()
    first, second = (PATCH_POINTS[name] for name in patch_order)
    first.enable()
    early = ccxt.binance(client_config(venue))  # labelled or wrapped before the other comes
    second.enable()
    late = ccxt.binance(client_config(venue))
    injector = live(reconcile_mismatch=1.0, lat_spike_ms=0.001)

    for client in (early, late):
        client.fetch_open_orders(SYMBOL)
    # both at work: requests labelled, results mutated; the label outermost, ours on ccxt's own
    assert {r.op for r in injector.records("lat_spike_ms")} >= {"fetch_open_orders"}
    assert injector.count("reconcile_mismatch") == 2
    slot = vars(ccxt.binance)["fetch_open_orders"]
    assert getattr(slot, ccxt_rest.LABEL_MARK, False)
    assert slot.__wrapped__.__wrapped__ is before[(ccxt.binance, "fetch_open_orders")]

    off, remaining = (PATCH_POINTS[name] for name in unpatch_order)
    off.disable()
    injector = live(reconcile_mismatch=1.0, lat_spike_ms=0.001)
    late.fetch_open_orders(SYMBOL)
    if remaining.name == "ccxt_reconcile":
        assert ccxt_rest.labelled_classes() == []
        assert injector.count("reconcile_mismatch") == 1  # still mutating
        assert vars(ccxt.binance)["fetch_open_orders"].__wrapped__ is \
            before[(ccxt.binance, "fetch_open_orders")]
    else:
        assert ccxt_reconcile.wrapped_methods() == []
        assert injector.count("reconcile_mismatch") == 0
        assert [r.op for r in injector.records("lat_spike_ms")] == ["fetch_open_orders"]
        assert vars(ccxt.binance)["fetch_open_orders"].__wrapped__ is \
            before[(ccxt.binance, "fetch_open_orders")]
    remaining.disable()
    deactivate()
    assert ccxt_rest.labelled_classes() == [] and ccxt_reconcile.wrapped_methods() == []
    assert_restored(before)


def test_a_failure_while_wrapping_never_breaks_a_constructor(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        venue: LoopbackExchange) -> None:
    def broken(cls: type) -> None:
        raise RuntimeError("bug inside chaos_shims")

    live(reconcile_mismatch=1.0)
    monkeypatch.setattr(ccxt_reconcile, "_cover", broken)

    class Fresh(ccxt.binance):  # type: ignore[name-defined]
        pass

    with caplog.at_level(logging.ERROR, logger="chaos_shims"):
        client = Fresh(client_config(venue))
    assert client.id == "binance"
    assert any("could not wrap" in r.getMessage() for r in caplog.records)


def test_dormant_and_unarmed_calls_go_straight_through(venue: LoopbackExchange) -> None:
    client = ccxt.binance(client_config(venue))
    truth = client.fetch_open_orders(SYMBOL)
    live(reconcile_mismatch=1.0)
    activate(None, enabled=False)  # the wrappers stay in place, dormant
    assert runtime.active is None and ccxt_reconcile.wrapped_methods()
    assert client.fetch_open_orders(SYMBOL) == truth
    injector = live(lat_spike_ms=0.001)  # chaos on, nothing armed on reconciliation
    assert client.fetch_open_orders(SYMBOL) == truth
    assert injector.count("reconcile_mismatch") == 0 and injector.count("lat_spike_ms") == 1
