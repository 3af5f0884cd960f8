"""rate_limit_storm: an exchange-wide throttle; once started, every REST request gets a 429."""

from __future__ import annotations

from chaos_shims.core.faults import Fault, HttpStatus
from chaos_shims.core.registry import REST, KeySpec, Scenario
from chaos_shims.core.values import Probability, Seconds


class RateLimitStorm(Scenario):
    key = "rate_limit_storm"
    summary = "probability per REST request that a storm of 429s starts (rate_limit_storm_sec long)"
    simulates = ("an IP-wide or exchange-wide throttle: every request is refused for a while, "
                 "with Retry-After counting down to the storm's end")
    kind = Probability()
    default = 0.0
    patch_points = ("ccxt_rest",)
    surfaces = frozenset({REST})
    parameters = (
        KeySpec("rate_limit_storm_sec", Seconds(), 10.0,
                "rate_limit_storm: how long each storm lasts"),
    )

    storm_until = float("-inf")

    def draw(self, now: float) -> Fault | None:
        length = float(self.settings["rate_limit_storm_sec"])
        with self.lock:
            if now < self.storm_until:
                return HttpStatus(429, retry_after_s=self.storm_until - now, code="storm_429")
            if self.stream.random() < self.value:
                self.storm_until = now + length
                return HttpStatus(429, retry_after_s=length, code="storm_started")
        return None
