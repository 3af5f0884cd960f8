from tests.scenarios.contract import RestScenarioContract, outcome


class TestExch5xx(RestScenarioContract):
    key = "exch_5xx"
    live_keys = {"exch_5xx": 1.0}
    partial_keys = {"exch_5xx": 0.5}
    sync_outcome = async_outcome = "ExchangeNotAvailable"

    # the live-effect tests use seed 1, whose first status is 500; all four are covered here
    def test_statuses_map_as_ccxt_maps_them(self, binance) -> None:  # type: ignore[no-untyped-def]
        injector = self.activate(seed=8)
        seen = {}
        for _ in range(40):
            result = outcome(lambda: binance.fetch_ticker("BTC/USDT"))
            status = int(injector.records(self.key)[-1].intensity)
            seen[status] = result
        assert seen == {500: "ExchangeNotAvailable", 502: "ExchangeNotAvailable",
                        503: "ExchangeNotAvailable", 504: "RequestTimeout"}
