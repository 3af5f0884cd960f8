from tests.scenarios.contract import RestScenarioContract


class TestLatSpike(RestScenarioContract):
    key = "lat_spike_ms"
    live_keys = {"lat_spike_ms": 200}
    sync_outcome = async_outcome = "ok"
    reaches_server = True
    min_elapsed = 0.2
