"""A loopback HTTP server shaped like the Binance spot REST API (v3).

The point is to let an *unmodified* ``ccxt.binance`` (sync or async) talk to a
local, deterministic exchange: public market data, HMAC-signed trading
endpoints with Binance's exact auth/clock checks, and in-memory orders and
balances. Standard library only, so the package imports without ccxt.

Deliberate simplifications (keep them in mind when writing tests):

* The order book is synthetic and static around a per-symbol mid price.
* LIMIT / LIMIT_MAKER orders never match: GTC orders rest as NEW until
  cancelled, IOC/FOK limit orders expire immediately.
* MARKET orders fill completely at the best bid/ask, in a single fill.
* Trading is fee-free, so balance arithmetic in tests stays exact.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

__all__ = ["LoopbackExchange", "RecordedRequest"]

Json = Any  # a json.dumps-able value

# Every API base URL name that ccxt 4.5.90's binance knows, with the path it has on
# the real hosts. ccxt_config() points *all* of them at the loopback server so that
# nothing ccxt might call (sapi, fapi, ...) can leave the machine: unknown paths
# simply get a 404 here and show up in the request log.
_CCXT_BINANCE_API_PATHS: dict[str, str] = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}

_EIGHT_PLACES = Decimal("0.00000001")
_MAX_RECV_WINDOW_MS = 60_000
_MAX_FUTURE_SKEW_MS = (
    1_000  # Binance rejects timestamps more than 1 s ahead of its clock
)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it.

    ``query`` holds the query-string *and* form-body parameters merged (Binance
    treats them as one parameter set); ``body`` is the raw request body.
    Header names are lower-cased.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    ts: float
    body: str = ""


@dataclass(frozen=True)
class _Market:
    symbol: str  # unified, e.g. "BTC/USDT"
    id: str  # exchange id, e.g. "BTCUSDT"
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal


@dataclass
class _Order:
    symbol: str
    order_id: int
    client_order_id: str
    side: str  # BUY / SELL
    type: str  # LIMIT / LIMIT_MAKER / MARKET
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    executed_qty: Decimal = Decimal(0)
    cumulative_quote_qty: Decimal = Decimal(0)
    status: str = "NEW"
    time: int = 0
    update_time: int = 0
    fills: list[dict[str, Json]] = field(default_factory=list)

    def as_binance(self) -> dict[str, Json]:
        """The order as GET /api/v3/order returns it."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": _fmt(self.price),
            "origQty": _fmt(self.orig_qty),
            "executedQty": _fmt(self.executed_qty),
            "cummulativeQuoteQty": _fmt(self.cumulative_quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": _fmt(Decimal(0)),
            "icebergQty": _fmt(Decimal(0)),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": _fmt(self.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


class BinanceApiError(Exception):
    """An error the server answers with Binance's ``{"code", "msg"}`` body."""

    def __init__(self, http_status: int, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.http_status = http_status
        self.code = code
        self.msg = msg


def _fmt(value: Decimal) -> str:
    """Binance renders amounts as strings with 8 decimals, e.g. "0.10000000"."""
    return f"{value.quantize(_EIGHT_PLACES):f}"


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step == 0 or value % step == 0


def _floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def _mandatory_missing(name: str) -> BinanceApiError:
    return BinanceApiError(
        400,
        -1102,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def _strip_signature(raw: str) -> str:
    """The raw parameter string minus its ``signature=`` pair, encoding untouched.

    Binance signs the exact bytes the client sent, so we must not re-encode.
    """
    return "&".join(
        part for part in raw.split("&") if part and not part.startswith("signature=")
    )


def _default_market(symbol: str) -> _Market:
    base, _, quote = symbol.partition("/")
    if not base or not quote:
        raise ValueError(f"symbol must look like 'BASE/QUOTE', got {symbol!r}")
    step = {"BTC": Decimal("0.00001"), "ETH": Decimal("0.0001")}.get(
        base, Decimal("0.001")
    )
    return _Market(
        symbol=symbol,
        id=base + quote,
        base=base,
        quote=quote,
        tick_size=Decimal("0.01"),
        step_size=step,
        min_notional=Decimal(5),
    )


_DEFAULT_MID_PRICES = {"BTC": Decimal(50000), "ETH": Decimal(3000)}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    exchange: LoopbackExchange

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response is normal in chaos tests; don't spam stderr.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    def version_string(self) -> str:
        return "chaos-shims-loopback"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence the default one-line-per-request stderr log

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length > 0 else ""
        headers = {name.lower(): value for name, value in self.headers.items()}
        exchange = cast(_HTTPServer, self.server).exchange
        status, payload, extra_headers = exchange._handle(
            self.command, split.path, split.query, body, headers
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


# (method, path) -> (handler method name, signed?). Dispatch goes by name so a test
# can monkeypatch a single handler on an instance.
_ROUTES: dict[tuple[str, str], tuple[str, bool]] = {
    ("GET", "/api/v3/ping"): ("_ping", False),
    ("GET", "/api/v3/time"): ("_time", False),
    ("GET", "/api/v3/exchangeInfo"): ("_exchange_info", False),
    ("GET", "/api/v3/depth"): ("_depth", False),
    ("GET", "/api/v3/ticker/price"): ("_ticker_price", False),
    ("GET", "/api/v3/ticker/24hr"): ("_ticker_24hr", False),
    ("POST", "/api/v3/order"): ("_new_order", True),
    ("DELETE", "/api/v3/order"): ("_cancel_order", True),
    ("GET", "/api/v3/order"): ("_query_order", True),
    ("GET", "/api/v3/openOrders"): ("_open_orders", True),
    ("GET", "/api/v3/allOrders"): ("_all_orders", True),
    ("GET", "/api/v3/account"): ("_account", True),
    ("GET", "/api/v3/myTrades"): ("_my_trades", True),
}


def _depth_weight(params: Mapping[str, str]) -> int:
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        return 5
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


# Request weights as documented by Binance; anything unlisted costs 1.
_WEIGHTS: dict[tuple[str, str], Callable[[Mapping[str, str]], int]] = {
    ("GET", "/api/v3/exchangeInfo"): lambda p: 20,
    ("GET", "/api/v3/depth"): _depth_weight,
    ("GET", "/api/v3/ticker/price"): lambda p: 2 if "symbol" in p else 4,
    ("GET", "/api/v3/ticker/24hr"): lambda p: 2 if "symbol" in p else 80,
    ("GET", "/api/v3/order"): lambda p: 4,
    ("GET", "/api/v3/openOrders"): lambda p: 6 if "symbol" in p else 80,
    ("GET", "/api/v3/allOrders"): lambda p: 20,
    ("GET", "/api/v3/account"): lambda p: 20,
    ("GET", "/api/v3/myTrades"): lambda p: 20,
}


class LoopbackExchange:
    """A Binance-spot-shaped REST exchange served on a loopback socket.

    Use as a context manager, or call ``start()`` / ``stop()``. Both are
    idempotent; after ``stop()`` a ``start()`` rebinds the same port, with
    orders and balances preserved (handy for "exchange went away" tests).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str = "loopback-key",
        secret: str = "loopback-secret",
        symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"),
        recv_window_ms: int = 5000,
        initial_balances: Mapping[str, float] | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._api_key = api_key
        self._secret = secret
        self._recv_window_ms = recv_window_ms

        self._markets: dict[str, _Market] = {}  # by exchange id
        self._mid_prices: dict[str, Decimal] = {}  # by exchange id
        for symbol in symbols:
            market = _default_market(symbol)
            self._markets[market.id] = market
            self._mid_prices[market.id] = _DEFAULT_MID_PRICES.get(
                market.base, Decimal(100)
            )

        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        if initial_balances is None:
            # Enough of every asset to trade comfortably in both directions.
            for market in self._markets.values():
                self._free.setdefault(market.quote, Decimal(100000))
            for market in self._markets.values():
                self._free.setdefault(market.base, Decimal(10))
        else:
            self._free = {
                asset: Decimal(str(amount))
                for asset, amount in initial_balances.items()
            }
        for asset in self._free:
            self._locked[asset] = Decimal(0)

        self._orders: dict[int, _Order] = {}
        self._trades: list[dict[str, Json]] = []
        self._next_order_id = 1
        self._next_trade_id = 1
        self._book_update_id = 1_000_000

        self._requests: list[RecordedRequest] = []
        self._handler_errors: list[BaseException] = []
        self._weight_minute = -1
        self._weight_used = 0

        self._lock = threading.RLock()  # guards all state above
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LoopbackExchange:
        if self._server is not None:
            return self
        # Rebind the port we had before a stop(), so existing URLs stay valid.
        port = (
            self._bound_port if self._bound_port is not None else self._requested_port
        )
        server = _HTTPServer((self._host, port), _RequestHandler)
        server.exchange = self
        self._bound_port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"loopback-exchange:{self._bound_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = None
        self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LoopbackExchange:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            if self._requested_port:
                return self._requested_port
            raise RuntimeError("LoopbackExchange has no port yet: call start() first")
        return self._bound_port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v3"

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def secret(self) -> str:
        return self._secret

    def ccxt_config(self) -> dict[str, object]:
        """Constructor config for ``ccxt.binance`` / ``ccxt.async_support.binance``.

        Every API base URL (not only public/private) points here, so a stray
        sapi/fapi call hits this server's 404 instead of the real Binance. The
        options switch off everything that would otherwise call endpoints this
        server doesn't have: futures markets, margin pairs, sapi currencies and
        the /time round trip.
        """
        api_urls = {
            name: self.base_url + path for name, path in _CCXT_BINANCE_API_PATHS.items()
        }
        return {
            "apiKey": self._api_key,
            "secret": self._secret,
            # 'test' and 'demo' are swapped in by set_sandbox_mode() / enable_demo_trading().
            "urls": {
                "api": dict(api_urls),
                "test": dict(api_urls),
                "demo": dict(api_urls),
            },
            "options": {
                "defaultType": "spot",
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "adjustForTimeDifference": False,
            },
        }

    # -------------------------------------------------------------- inspection

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def request_count(self, path: str | None = None) -> int:
        with self._lock:
            if path is None:
                return len(self._requests)
            return sum(1 for request in self._requests if request.path == path)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def handler_errors(self) -> list[BaseException]:
        """Exceptions raised inside handlers (each answered with HTTP 500)."""
        with self._lock:
            return list(self._handler_errors)

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Json]]:
        """Open orders in Binance's JSON shape; ``symbol`` is unified or exchange id."""
        return [
            o
            for o in self.all_orders(symbol)
            if o["status"] in ("NEW", "PARTIALLY_FILLED")
        ]

    def all_orders(self, symbol: str | None = None) -> list[dict[str, Json]]:
        market_id = None if symbol is None else symbol.replace("/", "")
        with self._lock:
            return [
                order.as_binance()
                for order in self._orders.values()
                if market_id is None or order.symbol == market_id
            ]

    def trades(self) -> list[dict[str, Json]]:
        with self._lock:
            return [dict(trade) for trade in self._trades]

    def balances(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                asset: {
                    "free": float(self._free[asset]),
                    "locked": float(self._locked[asset]),
                    "total": float(self._free[asset] + self._locked[asset]),
                }
                for asset in sorted(self._free)
            }

    def set_balance(self, asset: str, free: float) -> None:
        with self._lock:
            self._free[asset] = Decimal(str(free))
            self._locked.setdefault(asset, Decimal(0))

    def mid_price(self, symbol: str) -> float:
        with self._lock:
            return float(self._mid_prices[symbol.replace("/", "")])

    def set_mid_price(self, symbol: str, price: float) -> None:
        """Move the synthetic book (and tickers) of ``symbol`` to a new mid price."""
        market_id = symbol.replace("/", "")
        with self._lock:
            if market_id not in self._markets:
                raise KeyError(symbol)
            self._mid_prices[market_id] = Decimal(str(price))

    def server_time_ms(self) -> int:
        """The exchange clock that signed requests are checked against."""
        return int(time.time() * 1000)

    # ------------------------------------------------------------ HTTP plumbing

    def _handle(
        self,
        method: str,
        path: str,
        raw_query: str,
        raw_body: str,
        headers: dict[str, str],
    ) -> tuple[int, Json, dict[str, str]]:
        """Turn one HTTP request into (status, JSON payload, extra headers). Never raises."""
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if raw_body and "json" not in headers.get("content-type", ""):
            # Binance takes parameters from the query string and the form body alike.
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method, path, dict(params), dict(headers), time.time(), raw_body
                )
            )
            weight_fn = _WEIGHTS.get((method, path))
            used_weight = self._add_weight(weight_fn(params) if weight_fn else 1)
        extra_headers = {
            "x-mbx-used-weight": str(used_weight),
            "x-mbx-used-weight-1m": str(used_weight),
        }
        route = _ROUTES.get((method, path))
        if route is None:
            # No "code" on purpose: like a real Binance 404, ccxt maps it by HTTP status.
            return 404, {"msg": f"Unknown endpoint: {method} {path}"}, extra_headers
        handler_name, signed = route
        try:
            if signed:
                self._authenticate(headers, raw_query, raw_body, params)
            handler: Callable[[dict[str, str]], Json] = getattr(self, handler_name)
            with self._lock:
                return 200, handler(params), extra_headers
        except BinanceApiError as error:
            return (
                error.http_status,
                {"code": error.code, "msg": error.msg},
                extra_headers,
            )
        except Exception as error:
            with self._lock:
                self._handler_errors.append(error)
            payload = {
                "code": -1000,
                "msg": "An unknown error occurred while processing the request.",
            }
            return 500, payload, extra_headers

    def _add_weight(self, weight: int) -> int:
        minute = int(
            time.time() // 60
        )  # Binance's weight window resets each wall-clock minute
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._weight_used = 0
        self._weight_used += weight
        return self._weight_used

    def _authenticate(
        self,
        headers: Mapping[str, str],
        raw_query: str,
        raw_body: str,
        params: Mapping[str, str],
    ) -> None:
        """Binance's SIGNED endpoint checks: API key, HMAC signature, timestamp window."""
        api_key = headers.get("x-mbx-apikey", "")
        if not api_key:
            raise BinanceApiError(401, -2014, "API-key format invalid.")
        if api_key != self._api_key:
            raise BinanceApiError(
                401, -2015, "Invalid API-key, IP, or permissions for action."
            )
        signature = params.get("signature")
        if not signature:
            raise _mandatory_missing("signature")
        # Binance signs totalParams = query string concatenated with the request body.
        signed_payload = _strip_signature(raw_query) + _strip_signature(raw_body)
        expected = hmac.new(
            self._secret.encode(), signed_payload.encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceApiError(
                400, -1022, "Signature for this request is not valid."
            )
        timestamp = self._int_param(params, "timestamp", required=True)
        recv_window = self._int_param(params, "recvWindow") or self._recv_window_ms
        if recv_window > _MAX_RECV_WINDOW_MS:
            raise BinanceApiError(400, -1131, "recvWindow must be less than 60000")
        now = self.server_time_ms()
        if timestamp - now > _MAX_FUTURE_SKEW_MS:
            raise BinanceApiError(
                400,
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            )
        if now - timestamp > recv_window:
            raise BinanceApiError(
                400, -1021, "Timestamp for this request is outside of the recvWindow."
            )

    # --------------------------------------------------------- param helpers

    @staticmethod
    def _int_param(
        params: Mapping[str, str], name: str, *, required: bool = False
    ) -> int:
        """Integer parameter, 0 when absent and optional."""
        raw = params.get(name, "")
        if raw == "":
            if required:
                raise _mandatory_missing(name)
            return 0
        try:
            return int(raw)
        except ValueError:
            raise BinanceApiError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
            ) from None

    @staticmethod
    def _decimal_param(params: Mapping[str, str], name: str) -> Decimal:
        raw = params.get(name, "")
        if raw == "":
            raise _mandatory_missing(name)
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value <= 0:
            raise BinanceApiError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            )
        return value

    def _market_param(self, params: Mapping[str, str]) -> _Market:
        symbol = params.get("symbol", "")
        if symbol == "":
            raise _mandatory_missing("symbol")
        market = self._markets.get(symbol.upper())
        if market is None:
            raise BinanceApiError(400, -1121, "Invalid symbol.")
        return market

    def _optional_market(self, params: Mapping[str, str]) -> _Market | None:
        return self._market_param(params) if params.get("symbol") else None

    def _find_order(self, params: Mapping[str, str], market: _Market) -> _Order | None:
        order_id = self._int_param(params, "orderId")
        client_id = params.get("origClientOrderId", "")
        if not order_id and not client_id:
            raise BinanceApiError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        for order in self._orders.values():
            if order.symbol != market.id:
                continue
            if (order_id and order.order_id == order_id) or (
                not order_id and order.client_order_id == client_id
            ):
                return order
        return None

    # ------------------------------------------------------------ market data

    def _ping(self, params: dict[str, str]) -> Json:
        return {}

    def _time(self, params: dict[str, str]) -> Json:
        return {"serverTime": self.server_time_ms()}

    def _exchange_info(self, params: dict[str, str]) -> Json:
        if params.get("symbols"):
            try:
                wanted = [str(s) for s in json.loads(params["symbols"])]
            except (ValueError, TypeError):
                raise BinanceApiError(
                    400, -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            markets = [self._market_param({"symbol": s}) for s in wanted]
        elif params.get("symbol"):
            markets = [self._market_param(params)]
        else:
            markets = list(self._markets.values())
        return {
            "timezone": "UTC",
            "serverTime": self.server_time_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "SECOND",
                    "intervalNum": 10,
                    "limit": 100,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "DAY",
                    "intervalNum": 1,
                    "limit": 200000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(market) for market in markets],
        }

    @staticmethod
    def _symbol_info(market: _Market) -> dict[str, Json]:
        return {
            "symbol": market.id,
            "status": "TRADING",
            "baseAsset": market.base,
            "baseAssetPrecision": 8,
            "quoteAsset": market.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _fmt(market.tick_size),
                    "maxPrice": "1000000.00000000",
                    "tickSize": _fmt(market.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _fmt(market.step_size),
                    "maxQty": "9000.00000000",
                    "stepSize": _fmt(market.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": "9000.00000000",
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _fmt(market.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": [
                "NONE",
                "EXPIRE_TAKER",
                "EXPIRE_MAKER",
                "EXPIRE_BOTH",
            ],
        }

    def _book_levels(
        self, market: _Market, depth: int
    ) -> tuple[list[list[str]], list[list[str]]]:
        """A symmetric synthetic book: levels 1 bp apart, size growing with distance."""
        mid = self._mid_prices[market.id]
        gap = max(market.tick_size, _floor_to_step(mid / 10_000, market.tick_size))
        unit = max(
            market.step_size, _floor_to_step(Decimal(1000) / mid, market.step_size)
        )
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        for level in range(1, depth + 1):
            qty = _fmt(unit * level)
            bid = mid - gap * level
            if bid > 0:
                bids.append([_fmt(bid), qty])
            asks.append([_fmt(mid + gap * level), qty])
        return bids, asks

    def _best_prices(self, market: _Market) -> tuple[Decimal, Decimal]:
        bids, asks = self._book_levels(market, 1)
        best_ask = Decimal(asks[0][0])
        best_bid = Decimal(bids[0][0]) if bids else market.tick_size
        return best_bid, best_ask

    def _depth(self, params: dict[str, str]) -> Json:
        market = self._market_param(params)
        limit = self._int_param(params, "limit") or 100
        bids, asks = self._book_levels(market, min(max(limit, 1), 5000))
        self._book_update_id += 1
        return {"lastUpdateId": self._book_update_id, "bids": bids, "asks": asks}

    def _ticker_price(self, params: dict[str, str]) -> Json:
        market = self._optional_market(params)
        markets = [market] if market else list(self._markets.values())
        prices = [
            {"symbol": m.id, "price": _fmt(self._mid_prices[m.id])} for m in markets
        ]
        return prices[0] if market else prices

    def _ticker_24hr(self, params: dict[str, str]) -> Json:
        market = self._optional_market(params)
        markets = [market] if market else list(self._markets.values())
        now = self.server_time_ms()
        tickers = []
        for m in markets:
            mid = self._mid_prices[m.id]
            bid, ask = self._best_prices(m)
            tickers.append(
                {
                    "symbol": m.id,
                    "priceChange": _fmt(Decimal(0)),
                    "priceChangePercent": "0.000",
                    "weightedAvgPrice": _fmt(mid),
                    "prevClosePrice": _fmt(mid),
                    "lastPrice": _fmt(mid),
                    "lastQty": _fmt(m.step_size),
                    "bidPrice": _fmt(bid),
                    "bidQty": _fmt(m.step_size),
                    "askPrice": _fmt(ask),
                    "askQty": _fmt(m.step_size),
                    "openPrice": _fmt(mid),
                    "highPrice": _fmt(mid),
                    "lowPrice": _fmt(mid),
                    "volume": "0.00000000",
                    "quoteVolume": "0.00000000",
                    "openTime": now - 86_400_000,
                    "closeTime": now,
                    "firstId": -1,
                    "lastId": -1,
                    "count": 0,
                }
            )
        return tickers[0] if market else tickers

    # ----------------------------------------------------------------- trading

    def _new_order(self, params: dict[str, str]) -> Json:
        market = self._market_param(params)
        side = params.get("side", "").upper()
        if side not in ("BUY", "SELL"):
            raise _mandatory_missing("side")
        order_type = params.get("type", "").upper()
        if not order_type:
            raise _mandatory_missing("type")
        if order_type not in ("LIMIT", "LIMIT_MAKER", "MARKET"):
            raise BinanceApiError(400, -1116, "Invalid orderType.")
        client_order_id = (
            params.get("newClientOrderId") or f"loopback{uuid.uuid4().hex[:16]}"
        )
        if any(
            o.client_order_id == client_order_id and o.status == "NEW"
            for o in self._orders.values()
        ):
            raise BinanceApiError(400, -2010, "Duplicate order sent.")
        now = self.server_time_ms()

        if order_type == "MARKET":
            order = self._fill_market_order(market, side, params, client_order_id, now)
        else:
            order = self._rest_limit_order(
                market, side, order_type, params, client_order_id, now
            )
        self._orders[order.order_id] = order

        # MARKET and LIMIT default to FULL, as on Binance; LIMIT_MAKER to ACK.
        default_resp = "FULL" if order_type in ("MARKET", "LIMIT") else "ACK"
        resp_type = params.get("newOrderRespType", default_resp).upper()
        ack: dict[str, Json] = {
            "symbol": market.id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": client_order_id,
            "transactTime": now,
        }
        if resp_type == "ACK":
            return ack
        result = order.as_binance()
        for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking"):
            result.pop(key)
        result.update(ack)
        if resp_type == "FULL":
            result["fills"] = [dict(fill) for fill in order.fills]
        return result

    def _check_filters(self, market: _Market, price: Decimal, qty: Decimal) -> None:
        if not _is_multiple(price, market.tick_size):
            raise BinanceApiError(400, -1013, "Filter failure: PRICE_FILTER")
        if qty < market.step_size or not _is_multiple(qty, market.step_size):
            raise BinanceApiError(400, -1013, "Filter failure: LOT_SIZE")
        if price * qty < market.min_notional:
            raise BinanceApiError(400, -1013, "Filter failure: NOTIONAL")

    def _require_free(self, asset: str, amount: Decimal) -> None:
        if self._free.get(asset, Decimal(0)) < amount:
            raise BinanceApiError(
                400, -2010, "Account has insufficient balance for requested action."
            )

    def _move(
        self, asset: str, free_delta: Decimal, locked_delta: Decimal = Decimal(0)
    ) -> None:
        self._free[asset] = self._free.get(asset, Decimal(0)) + free_delta
        self._locked[asset] = self._locked.get(asset, Decimal(0)) + locked_delta

    def _new_order_id(self) -> int:
        order_id = self._next_order_id
        self._next_order_id += 1
        return order_id

    def _rest_limit_order(
        self,
        market: _Market,
        side: str,
        order_type: str,
        params: Mapping[str, str],
        client_order_id: str,
        now: int,
    ) -> _Order:
        if order_type == "LIMIT":
            time_in_force = params.get("timeInForce", "").upper()
            if not time_in_force:
                raise _mandatory_missing("timeInForce")
            if time_in_force not in ("GTC", "IOC", "FOK"):
                raise BinanceApiError(400, -1115, "Invalid timeInForce.")
        else:
            time_in_force = "GTC"
        qty = self._decimal_param(params, "quantity")
        price = self._decimal_param(params, "price")
        self._check_filters(market, price, qty)
        order = _Order(
            symbol=market.id,
            order_id=self._new_order_id(),
            client_order_id=client_order_id,
            side=side,
            type=order_type,
            time_in_force=time_in_force,
            price=price,
            orig_qty=qty,
            orig_quote_qty=Decimal(0),
            time=now,
            update_time=now,
        )
        if time_in_force in ("IOC", "FOK"):
            order.status = "EXPIRED"  # the synthetic book never matches a limit order
            return order
        asset, amount = (
            (market.quote, price * qty) if side == "BUY" else (market.base, qty)
        )
        self._require_free(asset, amount)
        self._move(asset, -amount, amount)
        return order

    def _fill_market_order(
        self,
        market: _Market,
        side: str,
        params: Mapping[str, str],
        client_order_id: str,
        now: int,
    ) -> _Order:
        best_bid, best_ask = self._best_prices(market)
        price = best_ask if side == "BUY" else best_bid
        quote_qty = Decimal(0)
        if params.get("quoteOrderQty"):
            quote_qty = self._decimal_param(params, "quoteOrderQty")
            qty = _floor_to_step(quote_qty / price, market.step_size)
        else:
            qty = self._decimal_param(params, "quantity")
        if qty < market.step_size or not _is_multiple(qty, market.step_size):
            raise BinanceApiError(400, -1013, "Filter failure: LOT_SIZE")
        cost = price * qty
        if cost < market.min_notional:
            raise BinanceApiError(400, -1013, "Filter failure: NOTIONAL")
        if side == "BUY":
            self._require_free(market.quote, cost)
            self._move(market.quote, -cost)
            self._move(market.base, qty)
        else:
            self._require_free(market.base, qty)
            self._move(market.base, -qty)
            self._move(market.quote, cost)

        order = _Order(
            symbol=market.id,
            order_id=self._new_order_id(),
            client_order_id=client_order_id,
            side=side,
            type="MARKET",
            time_in_force="GTC",
            price=Decimal(0),
            orig_qty=qty,
            orig_quote_qty=quote_qty,
            executed_qty=qty,
            cumulative_quote_qty=cost,
            status="FILLED",
            time=now,
            update_time=now,
        )
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        commission_asset = market.base if side == "BUY" else market.quote
        order.fills.append(
            {
                "price": _fmt(price),
                "qty": _fmt(qty),
                "commission": _fmt(Decimal(0)),
                "commissionAsset": commission_asset,
                "tradeId": trade_id,
            }
        )
        self._trades.append(
            {
                "symbol": market.id,
                "id": trade_id,
                "orderId": order.order_id,
                "orderListId": -1,
                "price": _fmt(price),
                "qty": _fmt(qty),
                "quoteQty": _fmt(cost),
                "commission": _fmt(Decimal(0)),
                "commissionAsset": commission_asset,
                "time": now,
                "isBuyer": side == "BUY",
                "isMaker": False,
                "isBestMatch": True,
            }
        )
        return order

    def _cancel_order(self, params: dict[str, str]) -> Json:
        market = self._market_param(params)
        order = self._find_order(params, market)
        if order is None or order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise BinanceApiError(400, -2011, "Unknown order sent.")
        remaining = order.orig_qty - order.executed_qty
        asset, amount = (
            (market.quote, order.price * remaining)
            if order.side == "BUY"
            else (market.base, remaining)
        )
        self._move(asset, amount, -amount)
        order.status = "CANCELED"
        order.update_time = self.server_time_ms()
        result = order.as_binance()
        for key in (
            "stopPrice",
            "icebergQty",
            "time",
            "updateTime",
            "isWorking",
            "workingTime",
        ):
            result.pop(key)
        result["origClientOrderId"] = order.client_order_id
        result["clientOrderId"] = (
            params.get("newClientOrderId") or f"cancel{uuid.uuid4().hex[:16]}"
        )
        result["transactTime"] = order.update_time
        return result

    def _query_order(self, params: dict[str, str]) -> Json:
        order = self._find_order(params, self._market_param(params))
        if order is None:
            raise BinanceApiError(400, -2013, "Order does not exist.")
        return order.as_binance()

    def _open_orders(self, params: dict[str, str]) -> Json:
        market = self._optional_market(params)
        return [
            order.as_binance()
            for order in self._orders.values()
            if order.status in ("NEW", "PARTIALLY_FILLED")
            and (market is None or order.symbol == market.id)
        ]

    @staticmethod
    def _limit_param(params: Mapping[str, str]) -> int:
        limit = LoopbackExchange._int_param(params, "limit") or 500
        return min(max(limit, 1), 1000)

    def _all_orders(self, params: dict[str, str]) -> Json:
        market = self._market_param(params)
        from_id = self._int_param(params, "orderId")
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        orders = [
            order.as_binance()
            for order in self._orders.values()
            if order.symbol == market.id
            and order.order_id >= from_id
            and order.time >= start
            and (not end or order.time <= end)
        ]
        return orders[: self._limit_param(params)]

    def _account(self, params: dict[str, str]) -> Json:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        balances = [
            {
                "asset": asset,
                "free": _fmt(self._free[asset]),
                "locked": _fmt(self._locked[asset]),
            }
            for asset in sorted(self._free)
            if not (omit_zero and self._free[asset] == 0 and self._locked[asset] == 0)
        ]
        zero_rate = _fmt(Decimal(0))
        return {
            "makerCommission": 0,
            "takerCommission": 0,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": zero_rate,
                "taker": zero_rate,
                "buyer": zero_rate,
                "seller": zero_rate,
            },
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.server_time_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1,
        }

    def _my_trades(self, params: dict[str, str]) -> Json:
        market = self._market_param(params)
        order_id = self._int_param(params, "orderId")
        from_id = self._int_param(params, "fromId")
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        trades = [
            dict(trade)
            for trade in self._trades
            if trade["symbol"] == market.id
            and (not order_id or trade["orderId"] == order_id)
            and trade["id"] >= from_id
            and trade["time"] >= start
            and (not end or trade["time"] <= end)
        ]
        return trades[: self._limit_param(params)]
