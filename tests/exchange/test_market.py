"""The embedded exchange's market model: a seeded walk, a book under update ids, orders that
rest and fill, balances that add up, listeners, a ticker thread, bounded memory."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from chaos_shims.exchange.market import (
    BUY,
    OPEN_STATUSES,
    SELL,
    BookSnapshot,
    DepthDiff,
    Instrument,
    Market,
    MarketEvent,
    OrderRejected,
    RejectReason,
    Trade,
    UnknownOrder,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]

BTC = "BTC/USDT"
ETH = "ETH/USDT"


@pytest.fixture
def market() -> Iterator[Market]:
    with Market(seed=11) as built:
        yield built


def without_time(event: MarketEvent) -> MarketEvent:
    """Timestamps come from the wall clock, the one thing that differs between runs."""
    return dataclasses.replace(event, time_ms=0)


def recorded(market: Market) -> list[MarketEvent]:
    events: list[MarketEvent] = []
    market.subscribe(events.append)
    return events


def apply(levels: dict[Decimal, Decimal], changes: tuple[tuple[Decimal, Decimal], ...]) -> None:
    for price, qty in changes:
        if qty == 0:
            levels.pop(price, None)
        else:
            levels[price] = qty


def reserved(market: Market, asset: str) -> Decimal:
    """What the open orders must have locked of ``asset``: price * remaining of buys (quote),
    remaining of sells (base)."""
    total = Decimal(0)
    for order in market.orders(open_only=True):
        instrument = market.instrument(order.symbol)
        if order.side == BUY and instrument.quote == asset:
            total += order.price * order.remaining_qty
        elif order.side == SELL and instrument.base == asset:
            total += order.remaining_qty
    return total


def assert_books_balance(market: Market, initial_totals: dict[str, Decimal]) -> None:
    """No money created or destroyed, locks match the open orders, nothing negative."""
    balances = market.balances()
    counterparty = market.counterparty_balances()
    for asset, initial in initial_totals.items():
        balance = balances[asset]
        assert balance.total + counterparty[asset] == initial, asset
        assert balance.locked == reserved(market, asset), asset
        assert balance.free >= 0 and balance.locked >= 0, asset


def totals(market: Market) -> dict[str, Decimal]:
    return {asset: balance.total for asset, balance in market.balances().items()}


# ------------------------------------------------------------------------ the walk


def test_same_seed_same_market_however_it_is_stepped() -> None:
    fine, coarse, other = Market(seed=5), Market(seed=5), Market(seed=6)
    fine_events, coarse_events = recorded(fine), recorded(coarse)
    for _ in range(300):
        fine.advance(0.05)  # 600 half intervals...
    coarse.advance(7.0)  # ...or 70 + 80 intervals in two steps
    coarse.advance(8.0)
    other.advance(15.0)
    assert fine.mid(BTC) == coarse.mid(BTC) != other.mid(BTC)
    assert fine.book(BTC) == coarse.book(BTC)
    assert [without_time(e) for e in fine_events] == [without_time(e) for e in coarse_events]
    assert len([e for e in fine_events if isinstance(e, Trade)]) == 150 * 2  # one per interval


def test_the_mid_moves_on_the_level_grid_at_the_given_volatility() -> None:
    market = Market(seed=3, volatility_bps=5.0)
    instrument = market.instrument(BTC)
    assert (instrument.level_gap, instrument.level_unit) == (Decimal(5), Decimal("0.02"))
    assert market.mid(BTC) == 50_000 and market.best_bid_ask(BTC) == (49_995, 50_005)
    mids = []
    for _ in range(1_000):
        market.advance(1.0)
        mids.append(market.mid(BTC))
    assert all(mid % instrument.level_gap == 0 for mid in mids)
    moves_bps = [float((b - a) / a) * 10_000 for a, b in itertools.pairwise(mids)]
    spread = (sum(m * m for m in moves_bps) / len(moves_bps)) ** 0.5
    assert 4.0 < spread < 6.0  # the standard deviation of one second's move, in bps
    still = Market(seed=3, volatility_bps=0.0)
    still.advance(60.0)
    assert still.mid(BTC) == 50_000
    assert still.last_update_id(BTC) > 1_000_000  # the book still breathes


def test_account_orders_and_other_instruments_do_not_shift_the_walk() -> None:
    alone = Market([BTC], seed=9)
    busy = Market([BTC, ETH], seed=9)
    busy.place_order(BTC, "BUY", "LIMIT", quantity=Decimal("0.5"), price=Decimal(49_900))
    busy.place_order(BTC, "SELL", "LIMIT", quantity=Decimal("0.5"), price=Decimal(50_100))
    busy.place_order(BTC, "BUY", "MARKET", quantity=Decimal("0.01"))
    for _ in range(5):
        alone.advance(10.0)
        busy.advance(10.0)
        assert alone.book(BTC) == busy.book(BTC)
    # The crowd's trades are the same; only their ids differ, shared with the account's trades.
    assert [(t.price, t.qty, t.maker_side) for t in alone.recent_trades(BTC)] == \
        [(t.price, t.qty, t.maker_side) for t in busy.recent_trades(BTC) if t.account_side is None]


def test_step_walks_whole_intervals_and_catches_up_a_bounded_amount() -> None:
    market = Market(seed=1, interval=0.1, max_catch_up=50)
    start = market.now
    assert market.step(start + 0.05) == 0
    assert market.step(start + 0.1) == 1
    assert market.step(start) == 0  # time never goes back
    assert market.advance(0.35) == 3  # 0.1 + 0.35: 4.5 intervals since the start, 1 walked
    assert market.step(start + 3_600) == 50  # an hour away: the rest is skipped
    assert market.advance(0.1) == 1


# ---------------------------------------------------------------------- the book


def test_diffs_are_continuous_and_rebuild_every_snapshot(market: Market) -> None:
    snapshot = market.book(BTC)
    subscription = market.subscribe(lambda e: diffs.append(e) if isinstance(e, DepthDiff) else None,
                                    symbols=[BTC])
    diffs: list[DepthDiff] = []
    assert subscription.last_update_ids == {"BTCUSDT": snapshot.last_update_id}
    bids = dict(snapshot.bids)
    asks = dict(snapshot.asks)
    previous = snapshot.last_update_id
    for _ in range(100):
        market.advance(0.3)
        for diff in diffs:
            assert diff.symbol == "BTCUSDT"
            assert diff.first_update_id == previous + 1  # Binance: U == previous u + 1
            assert diff.last_update_id - diff.first_update_id + 1 == len(diff.bids) + len(diff.asks)
            assert [p for p, _ in diff.bids] == sorted((p for p, _ in diff.bids), reverse=True)
            assert [p for p, _ in diff.asks] == sorted(p for p, _ in diff.asks)
            previous = diff.last_update_id
            apply(bids, diff.bids)
            apply(asks, diff.asks)
        diffs.clear()
        now = market.book(BTC)
        assert now.last_update_id == previous
        assert (tuple(sorted(bids.items(), reverse=True)), tuple(sorted(asks.items()))) == \
            (now.bids, now.asks)
        assert len(now.bids) == len(now.asks) == 100
        assert now.bids[0][0] < market.mid(BTC) < now.asks[0][0]


def test_diffs_since_replays_from_an_update_id(market: Market) -> None:
    start = market.last_update_id(ETH)
    assert market.diffs_since(ETH, start) == []
    market.advance(2.0)
    replay = market.diffs_since(ETH, start)
    assert replay is not None and replay[0].first_update_id == start + 1
    assert replay[-1].last_update_id == market.last_update_id(ETH)
    middle = replay[3].last_update_id
    assert market.diffs_since(ETH, middle) == replay[4:]


def test_snapshot_and_events_in_binance_shapes(market: Market) -> None:
    events = recorded(market)
    market.advance(0.1)
    diff = next(e for e in events if isinstance(e, DepthDiff))
    trade = next(e for e in events if isinstance(e, Trade))
    payload = diff.as_binance_event()
    assert payload["e"] == "depthUpdate" and payload["s"] == "BTCUSDT"
    assert (payload["U"], payload["u"]) == (diff.first_update_id, diff.last_update_id)
    assert all(isinstance(p, str) and isinstance(q, str) for p, q in payload["b"] + payload["a"])
    assert trade.as_binance_event() == {
        "e": "trade", "E": trade.time_ms, "s": trade.symbol, "t": trade.trade_id,
        "p": f"{trade.price:.8f}", "q": f"{trade.qty:.8f}", "T": trade.time_ms,
        "m": trade.maker_side == BUY, "M": True}
    book = market.book(BTC, limit=2)
    assert isinstance(book, BookSnapshot) and len(book.bids) == len(book.asks) == 2
    assert book.as_binance()["lastUpdateId"] == market.last_update_id(BTC)
    assert book.as_binance()["bids"][0] == [f"{book.bids[0][0]:.8f}", f"{book.bids[0][1]:.8f}"]


# ------------------------------------------------------------------------- fills


def test_a_resting_buy_fills_at_its_price_when_the_walk_crosses_it(market: Market) -> None:
    before = totals(market)
    bid, _ = market.best_bid_ask(BTC)
    price = bid - 5
    order = market.place_order(BTC, "buy", "limit", quantity=Decimal("0.01"), price=price,
                               client_order_id="mine")
    assert (order.status, order.executed_qty) == ("NEW", 0)
    assert market.balances()["USDT"].locked == price * Decimal("0.01")
    for _ in range(3_000):
        if market.best_bid_ask(BTC)[1] <= price:
            break
        assert market.find_order(BTC, order.order_id).status == "NEW"  # type: ignore[union-attr]
        market.advance(0.1)
    else:
        pytest.fail("the walk never reached the order in 300 s")
    filled = market.find_order(BTC, client_order_id="mine")
    assert filled is not None and filled.status == "FILLED" and not filled.is_open
    [fill] = filled.fills
    assert (fill.price, fill.qty, fill.maker_side, fill.buyer_order_id) == \
        (price, Decimal("0.01"), BUY, order.order_id)
    assert fill.account_is_maker and fill in market.recent_trades(BTC)
    assert market.account_trades(BTC) == [fill]
    after = market.balances()
    assert after["BTC"].total == before["BTC"] + Decimal("0.01")
    assert after["USDT"].total == before["USDT"] - price * Decimal("0.01")
    assert after["USDT"].locked == 0
    assert market.counterparty_balances() == {"BTC": Decimal("-0.01"), "ETH": 0,
                                              "USDT": price * Decimal("0.01")}


def test_large_orders_fill_in_parts_against_the_displayed_liquidity(market: Market) -> None:
    before = totals(market)
    buy = market.place_order(BTC, "BUY", "LIMIT", quantity=Decimal("1.5"), price=Decimal(49_900))
    sell = market.place_order(ETH, "SELL", "LIMIT", quantity=Decimal(5), price=Decimal(3_010))
    market.set_mid(BTC, 49_880)  # the asks now start at 49,885: 49,885..49,900 cross the buy
    crossing = [qty for price, qty in market.book(BTC).asks if price <= 49_900]
    assert len(crossing) == 4
    partial = market.find_order(BTC, buy.order_id)
    assert partial is not None and partial.status == "PARTIALLY_FILLED"
    assert partial.executed_qty == sum(crossing) and partial.cumulative_quote_qty == \
        sum(crossing) * 49_900
    market.set_mid(ETH, "3010.8")  # the bids at 3,010.5 and 3,010.2 are above the sell
    assert market.find_order(ETH, sell.order_id).status == "PARTIALLY_FILLED"  # type: ignore[union-attr]
    market.advance(0.5)  # while the market stays through them they keep filling
    assert market.find_order(BTC, buy.order_id).executed_qty > partial.executed_qty  # type: ignore[union-attr]
    assert_books_balance(market, before)
    for order in (buy, sell):
        current = market.find_order(order.symbol, order.order_id)
        assert current is not None
        if current.is_open:
            cancelled = market.cancel_order(order.symbol, order.order_id)
            assert cancelled.status == "CANCELED"
            assert cancelled.executed_qty == current.executed_qty
    assert market.balances()["USDT"].locked == market.balances()["ETH"].locked == 0
    assert_books_balance(market, before)


def test_orders_priced_through_the_book_take_at_once(market: Market) -> None:
    before = totals(market)
    bid, ask = market.best_bid_ask(BTC)
    taker = market.place_order(BTC, "BUY", "LIMIT", quantity=Decimal("0.1"), price=ask + 100)
    assert taker.status == "FILLED"
    [fill] = taker.fills
    assert (fill.price, fill.maker_side, fill.account_is_maker) == (ask, SELL, False)
    with pytest.raises(OrderRejected) as rejected:
        market.place_order(BTC, "SELL", "LIMIT_MAKER", quantity=Decimal("0.1"), price=bid)
    assert rejected.value.reason is RejectReason.WOULD_TAKE
    ioc = market.place_order(BTC, "SELL", "LIMIT", quantity=Decimal("0.1"), price=ask,
                             time_in_force="IOC")
    assert (ioc.status, ioc.executed_qty) == ("EXPIRED", 0)
    by_cost = market.place_order(ETH, "BUY", "MARKET", quote_quantity=Decimal(300))
    assert by_cost.status == "FILLED" and by_cost.executed_qty == Decimal("0.0999")  # 300 / 3000.3
    sell = market.place_order(BTC, "SELL", "MARKET", quantity=Decimal("0.1"))
    assert sell.fills[0].price == bid
    assert [o.order_id for o in market.orders()] == [taker.order_id, ioc.order_id,
                                                      by_cost.order_id, sell.order_id]
    assert market.orders(open_only=True) == []
    assert_books_balance(market, before)


def test_rejections_and_unknown_orders(market: Market) -> None:
    def rejection(**kwargs: Any) -> RejectReason:
        with pytest.raises(OrderRejected) as raised:
            market.place_order(BTC, "BUY", "LIMIT", **kwargs)
        return raised.value.reason

    assert rejection(quantity=Decimal("0.01"), price=Decimal("40000.001")) is \
        RejectReason.PRICE_FILTER
    assert rejection(quantity=Decimal("0.000011"), price=Decimal(40_000)) is RejectReason.LOT_SIZE
    assert rejection(quantity=Decimal("0.0001"), price=Decimal(40_000)) is RejectReason.NOTIONAL
    assert rejection(quantity=Decimal(3), price=Decimal(40_000)) is \
        RejectReason.INSUFFICIENT_BALANCE  # 120,000 > 100,000 USDT
    market.place_order(BTC, "BUY", "LIMIT", quantity=Decimal("0.01"), price=Decimal(40_000),
                       client_order_id="twice")
    assert rejection(quantity=Decimal("0.01"), price=Decimal(40_000), client_order_id="twice") is \
        RejectReason.DUPLICATE_ORDER
    with pytest.raises(UnknownOrder):
        market.cancel_order(BTC, 987_654)
    with pytest.raises(UnknownOrder):  # the order is on BTC, not ETH
        market.cancel_order(ETH, client_order_id="twice")
    market.cancel_order(BTC, client_order_id="twice")
    with pytest.raises(UnknownOrder):  # no longer open
        market.cancel_order(BTC, client_order_id="twice")
    with pytest.raises(KeyError):
        market.mid("DOGE/USDT")
    with pytest.raises(ValueError):
        market.place_order(BTC, "HOLD", "LIMIT", quantity=Decimal(1), price=Decimal(1))
    assert [o.order_id for o in market.orders()] == [1]  # rejected orders take no id


def test_balances_are_conserved_under_a_random_order_flow() -> None:
    market = Market(seed=21, volatility_bps=20.0)
    before = totals(market)
    flow = random.Random(4)
    for _ in range(400):
        symbol = flow.choice((BTC, ETH))
        bid, ask = market.best_bid_ask(symbol)
        instrument = market.instrument(symbol)
        action = flow.random()
        try:
            if action < 0.6:
                side = flow.choice(("BUY", "SELL"))
                gaps = flow.randint(-3, 12) * instrument.level_gap
                price = bid - gaps if side == "BUY" else ask + gaps
                qty = instrument.level_unit * flow.randint(1, 20)
                market.place_order(symbol, side, "LIMIT", quantity=qty, price=price)
            elif action < 0.75:
                market.place_order(symbol, flow.choice(("BUY", "SELL")), "MARKET",
                                   quantity=instrument.level_unit)
            else:
                open_orders = market.orders(symbol, open_only=True)
                if open_orders:
                    market.cancel_order(symbol, flow.choice(open_orders).order_id)
        except OrderRejected as rejected:
            assert rejected.reason is RejectReason.INSUFFICIENT_BALANCE
        market.advance(flow.choice((0.0, 0.1, 0.5)))
        assert_books_balance(market, before)
    statuses = {o.status for o in market.orders()}
    assert {"FILLED", "PARTIALLY_FILLED", "CANCELED"} <= statuses | {"PARTIALLY_FILLED"}
    assert any(t.account_is_maker for t in market.account_trades())
    for order in market.orders(open_only=True):
        market.cancel_order(order.symbol, order.order_id)
    assert all(b.locked == 0 for b in market.balances().values())
    assert_books_balance(market, before)


# ----------------------------------------------------------- listeners and threads


def test_a_listener_that_raises_is_logged_once_and_kept(market: Market,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: MarketEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[MarketEvent] = []
    with caplog.at_level(logging.ERROR, logger="chaos_shims.exchange.market"):
        failing = market.subscribe(broken)
        market.subscribe(seen.append)
        market.advance(1.0)
    # a trade per instrument and interval, a diff for each that changed the book
    assert failing.errors == len(seen) >= 10 * 2
    assert len([r for r in caplog.records if "listener" in r.getMessage()]) == 1
    failing.close()
    failing.close()
    market.advance(0.1)
    assert failing.errors < len(seen) and not failing.active


def test_the_ticker_thread_moves_the_market_and_stops() -> None:
    market = Market(seed=2, interval=0.01)
    start = market.last_update_id(BTC)
    market.start_ticker(rate=200)
    market.start_ticker(rate=200)  # idempotent
    assert market.ticker_running
    deadline = time.monotonic() + 5
    while market.last_update_id(BTC) < start + 50:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    market.stop_ticker()
    market.stop_ticker()
    assert not market.ticker_running
    stopped_at = market.last_update_id(BTC)
    time.sleep(0.05)
    assert market.last_update_id(BTC) == stopped_at
    assert not any(t.name == "loopback-market-ticker" for t in threading.enumerate())


def test_concurrent_orders_while_the_ticker_runs() -> None:
    market = Market(seed=8, interval=0.002, volatility_bps=30.0,
                    balances={"USDT": 10_000_000, "BTC": 200, "ETH": 3_000})
    before = totals(market)
    last_ids = {"BTCUSDT": market.last_update_id(BTC), "ETHUSDT": market.last_update_id(ETH)}
    gaps: list[str] = []

    def check_continuity(event: MarketEvent) -> None:
        if isinstance(event, DepthDiff):
            if event.first_update_id != last_ids[event.symbol] + 1:
                gaps.append(f"{event.symbol}: {last_ids[event.symbol]} -> {event.first_update_id}")
            last_ids[event.symbol] = event.last_update_id

    market.subscribe(check_continuity)
    errors: list[BaseException] = []
    placed: list[int] = []
    walking = threading.Event()

    def trader(seed: int) -> None:
        flow = random.Random(seed)
        try:
            walking.wait(5)
            for _ in range(200):
                symbol = flow.choice((BTC, ETH))
                instrument = market.instrument(symbol)
                bid, ask = market.best_bid_ask(symbol)
                side = flow.choice(("BUY", "SELL"))
                gaps_away = flow.randint(0, 4) * instrument.level_gap
                price = bid - gaps_away if side == "BUY" else ask + gaps_away
                try:
                    order = market.place_order(symbol, side, "LIMIT", price=price,
                                               quantity=instrument.level_unit * 5)
                    placed.append(order.order_id)
                    time.sleep(0.0005)  # let the ticker in between
                    if flow.random() < 0.5:
                        market.cancel_order(symbol, order.order_id)
                except UnknownOrder:
                    pass  # it filled before the cancel
        except BaseException as exc:  # reported below
            errors.append(exc)

    market.subscribe(lambda event: walking.set())
    started = market.last_update_id(BTC)
    market.start_ticker(rate=500)
    threads = [threading.Thread(target=trader, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    market.stop_ticker()
    assert errors == [] and gaps == []
    assert len(placed) == len(set(placed)) == 6 * 200
    assert market.last_update_id(BTC) == last_ids["BTCUSDT"] > started + 100
    statuses = {o.status for o in market.orders()}
    assert {"FILLED", "CANCELED"} <= statuses
    assert_books_balance(market, before)


# ------------------------------------------------------------------------ memory


def test_histories_are_bounded() -> None:
    market = Market(seed=4, event_history=50, history_limit=20, volatility_bps=40.0)
    first_id = market.last_update_id(BTC)
    for _ in range(40):  # 40 small orders that fill, then one that rests far away
        bid, _ = market.best_bid_ask(BTC)
        market.place_order(BTC, "BUY", "LIMIT", quantity=Decimal("0.001"), price=bid)
        market.advance(1.0)
    resting = market.place_order(BTC, "BUY", "LIMIT", quantity=Decimal("0.001"),
                                 price=Decimal(10_000))
    market.advance(200.0)
    assert len(market.recent_trades(BTC)) == 50
    assert market.recent_trades(BTC, limit=5) == market.recent_trades(BTC)[-5:]
    assert market.diffs_since(BTC, first_id) is None  # history no longer reaches back
    kept = market.diffs_since(BTC, market.last_update_id(BTC) - 1)
    assert kept is not None and len(kept) == 1
    closed = [o for o in market.orders() if o.status not in OPEN_STATUSES]
    assert len(closed) == 20
    assert market.find_order(BTC, resting.order_id) is not None  # open orders are kept
    assert market.find_order(BTC, 1) is None  # the oldest closed ones are not
    assert len(market.account_trades()) == 20


def test_instrument_defaults_and_custom_instruments() -> None:
    doge = Instrument.from_symbol("DOGE/USDT", initial_mid="0.25")
    assert (doge.id, doge.level_gap, doge.step_size) == ("DOGEUSDT", Decimal("0.01"),
                                                         Decimal("0.001"))
    market = Market([doge, "SOL/USDT"], balances={"USDT": 500})
    assert market.mid("DOGE/USDT") == Decimal("0.25")
    assert market.mid("solusdt") == 100
    assert market.instrument("SOLUSDT").symbol == "SOL/USDT"
    assert {a: b.free for a, b in market.balances().items()} == \
        {"DOGE": 0, "SOL": 0, "USDT": 500}
    with pytest.raises(ValueError):
        Market([BTC, "BTC/USDT"])
    with pytest.raises(ValueError):
        Instrument.from_symbol("BTCUSDT")


def test_many_small_advances_match_big_steps_on_an_old_monotonic_clock() -> None:
    # A monotonic clock hours from zero: absolute float sums of 0.05 s would come out a hair
    # short of 15 s (at 10,000 s: 149 intervals walked instead of 150).
    fine, coarse = Market(seed=5, clock=lambda: 10_000.0), Market(seed=5, clock=lambda: 10_000.0)
    for _ in range(300):
        fine.advance(0.05)
    coarse.advance(15.0)
    assert fine.last_update_id(BTC) == coarse.last_update_id(BTC)
    assert fine.mid(BTC) == coarse.mid(BTC)
