"""A bot's own test suite using the chaos marker (run: pytest examples/test_bot_under_chaos.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

ccxt = pytest.importorskip("ccxt")

from chaos_shims.exchange import LoopbackExchange  # noqa: E402

# Relative: this folder is also installed as the package chaos_shims.examples.
from .rest_bot import run  # noqa: E402


@pytest.fixture
def exchange() -> Iterator[Any]:
    with LoopbackExchange() as server:
        yield ccxt.binance({**server.ccxt_config(), "enableRateLimit": False})


@pytest.mark.chaos(exch_429=0.3, seed=3)
def test_quotes_through_rate_limits(exchange: Any, chaos: Any) -> None:
    outcome = run(exchange, "BTC/USDT", iterations=20)
    assert chaos.count("exch_429") > 0  # the fault really happened
    assert outcome["quotes"] >= 18  # and the retries absorbed it


@pytest.mark.chaos(exch_5xx=1.0, include_ops="fetch_order_book")
def test_a_full_outage_is_survived_not_crashed(exchange: Any) -> None:
    outcome = run(exchange, "BTC/USDT", iterations=5)  # markets load; every book fails
    assert outcome["quotes"] == 0 and outcome["skipped"] == 5
