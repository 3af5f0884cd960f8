from tests.scenarios.contract import RestScenarioContract, outcome


class TestRateLimitStorm(RestScenarioContract):
    key = "rate_limit_storm"
    live_keys = {"rate_limit_storm": 1.0}
    partial_keys = {"rate_limit_storm": 0.3, "rate_limit_storm_sec": 0.0}
    sync_outcome = async_outcome = "DDoSProtection"

    def test_storm_refuses_every_request_until_it_ends(self, binance, exchange) -> None:  # type: ignore[no-untyped-def]
        # One storm starts at the first request (p=1 would restart it; a tiny p after it proves
        # the later 429s come from the running storm, not new draws).
        injector = self.activate(rate_limit_storm=1.0, rate_limit_storm_sec=30)
        results = [outcome(lambda: binance.fetch_ticker("BTC/USDT")) for _ in range(5)]
        assert results == ["DDoSProtection"] * 5
        codes = [r.reason_code for r in injector.records(self.key)]
        assert codes == ["storm_started"] + ["storm_429"] * 4
        retry_after = int(binance.last_response_headers["Retry-After"])
        assert 1 <= retry_after <= 30
        assert exchange.request_count("/api/v3/ticker/24hr") == 0
