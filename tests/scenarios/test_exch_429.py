from tests.scenarios.contract import RestScenarioContract


class TestExch429(RestScenarioContract):
    key = "exch_429"
    live_keys = {"exch_429": 1.0}
    partial_keys = {"exch_429": 0.5}
    # binance's own handle_errors maps 429 to DDoSProtection
    sync_outcome = async_outcome = "DDoSProtection"

    def test_retry_after_is_where_ccxt_keeps_response_headers(self, binance) -> None:  # type: ignore[no-untyped-def]
        self.activate()
        assert self.outcome_of(binance) == "DDoSProtection"
        assert binance.last_response_headers["Retry-After"] == "1"

    @staticmethod
    def outcome_of(binance) -> str:  # type: ignore[no-untyped-def]
        from tests.scenarios.contract import outcome

        return outcome(lambda: binance.fetch_order_book("BTC/USDT"))
