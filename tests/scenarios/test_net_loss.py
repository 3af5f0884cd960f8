import time

from tests.scenarios.contract import RestScenarioContract, outcome


class TestNetLoss(RestScenarioContract):
    key = "net_loss"
    live_keys = {"net_loss": 1.0}
    partial_keys = {"net_loss": 0.5}
    # what ccxt raises for a reset connection: requests -> NetworkError, aiohttp -> ExchangeNotAvailable
    sync_outcome = "NetworkError"
    async_outcome = "ExchangeNotAvailable"

    def test_timeout_form(self, binance, exchange) -> None:  # type: ignore[no-untyped-def]
        self.activate(net_loss_timeout_ms=120)
        started = time.perf_counter()
        assert outcome(lambda: binance.fetch_order_book("BTC/USDT")) == "RequestTimeout"
        assert time.perf_counter() - started >= 0.12
        assert exchange.request_count("/api/v3/depth") == 0

    def test_lost_order_never_reaches_the_exchange(self, binance, exchange) -> None:  # type: ignore[no-untyped-def]
        resting = len(exchange.open_orders())
        self.activate()
        assert outcome(lambda: binance.create_order("BTC/USDT", "limit", "buy", 0.01, 40000)) \
            == "NetworkError"
        assert len(exchange.open_orders()) == resting
        assert exchange.request_count("/api/v3/order") == 0
