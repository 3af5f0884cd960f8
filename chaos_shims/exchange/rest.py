"""A loopback HTTP server shaped like the Binance spot REST API (v3).

The point is to let an *unmodified* ``ccxt.binance`` (sync or async) talk to a
local exchange: public market data, HMAC-signed trading endpoints with
Binance's exact auth/clock checks, and orders and balances. Standard library
only, so the package imports without ccxt.

The market behind the endpoints is a ``chaos_shims.exchange.market.Market``
(``exchange.market``): a seeded random walk per symbol, a book around the mid
whose ``lastUpdateId`` moves with every change, and account orders that rest
and fill when the price crosses them. Read that module's docstring for the
model and the fill rule. In short, keep in mind when writing tests:

* The market moves only when it is stepped: ``exchange.market.advance(seconds)``
  in a test, or a background ticker with ``LoopbackExchange(tick_rate=...)``.
  Without either (the default) prices, book and ``lastUpdateId`` stay put.
* MARKET orders, and LIMIT orders priced through the book, fill at once and in
  full at the best bid/ask, in a single fill; LIMIT_MAKER orders that would do
  so are rejected. Other GTC limit orders rest (their funds locked) and fill at
  their own price as the walk goes through them, in one or several fills;
  IOC/FOK limit orders that can't fill at once expire.
* The account's own orders are not shown in the depth.
* Trading is fee-free, so balance arithmetic in tests stays exact.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from chaos_shims.exchange.market import (
    BUY,
    Instrument,
    Market,
    Order,
    OrderRejected,
    RejectReason,
    Trade,
    UnknownOrder,
)

__all__ = ["BinanceApiError", "LoopbackExchange", "RecordedRequest"]

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



def _order_json(order: Order) -> dict[str, Json]:
    """An order as GET /api/v3/order returns it."""
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": _fmt(order.price),
        "origQty": _fmt(order.orig_qty),
        "executedQty": _fmt(order.executed_qty),
        "cummulativeQuoteQty": _fmt(order.cumulative_quote_qty),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "stopPrice": _fmt(Decimal(0)),
        "icebergQty": _fmt(Decimal(0)),
        "time": order.time_ms,
        "updateTime": order.update_time_ms,
        "isWorking": True,
        "workingTime": order.time_ms,
        "origQuoteOrderQty": _fmt(order.orig_quote_qty),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _commission_asset(instrument: Instrument, trade: Trade) -> str:
    """Binance charges the asset the account receives: base for a buy, quote for a sell."""
    return instrument.base if trade.account_side == BUY else instrument.quote


def _account_trade_json(trade: Trade, instrument: Instrument) -> dict[str, Json]:
    """One of the account's trades as GET /api/v3/myTrades returns it."""
    return {
        "symbol": trade.symbol,
        "id": trade.trade_id,
        "orderId": trade.account_order_id,
        "orderListId": -1,
        "price": _fmt(trade.price),
        "qty": _fmt(trade.qty),
        "quoteQty": _fmt(trade.quote_qty),
        "commission": _fmt(Decimal(0)),
        "commissionAsset": _commission_asset(instrument, trade),
        "time": trade.time_ms,
        "isBuyer": trade.account_side == BUY,
        "isMaker": trade.account_is_maker,
        "isBestMatch": True,
    }


# Binance's answer to each refusal of the market: (HTTP status, code, message).
_REJECTIONS: dict[RejectReason, tuple[int, int, str]] = {
    RejectReason.INSUFFICIENT_BALANCE: (
        400, -2010, "Account has insufficient balance for requested action."),
    RejectReason.PRICE_FILTER: (400, -1013, "Filter failure: PRICE_FILTER"),
    RejectReason.LOT_SIZE: (400, -1013, "Filter failure: LOT_SIZE"),
    RejectReason.NOTIONAL: (400, -1013, "Filter failure: NOTIONAL"),
    RejectReason.WOULD_TAKE: (400, -2010, "Order would immediately match and take."),
    RejectReason.DUPLICATE_ORDER: (400, -2010, "Duplicate order sent."),
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

    The market is ``self.market``: built from ``symbols``, ``initial_balances``,
    ``seed`` and ``volatility_bps`` (see ``Market``), or else the ``market`` given
    (then ``symbols``, ``seed`` and ``volatility_bps`` are the market's own).
    ``tick_rate`` (steps per second) runs the market's ticker thread while the
    server runs; None (the default) leaves the market still until it is stepped.
    ``request_log_limit``: how many of the latest requests ``requests()`` keeps.
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
        seed: int | str | None = 0,
        volatility_bps: float = 5.0,
        tick_rate: float | None = None,
        market: Market | None = None,
        request_log_limit: int = 100_000,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._api_key = api_key
        self._secret = secret
        self._recv_window_ms = recv_window_ms
        if tick_rate is not None and not tick_rate > 0:
            raise ValueError(f"tick_rate must be > 0 steps per second, got {tick_rate!r}")
        self._tick_rate = tick_rate

        if market is None:
            market = Market(
                symbols,
                seed=seed,
                balances=initial_balances,
                volatility_bps=volatility_bps,
                wall_clock_ms=self.server_time_ms,
            )
        elif initial_balances is not None:
            raise ValueError("give initial_balances to the Market, not alongside it")
        self._market = market
        self._instruments: dict[str, Instrument] = {  # by exchange id
            instrument.id: instrument for instrument in market.instruments()
        }

        # A long-running demo must not grow without bound: keep the latest requests.
        self._requests: deque[RecordedRequest] = deque(maxlen=request_log_limit)
        self._handler_errors: deque[BaseException] = deque(maxlen=1000)
        self._weight_minute = -1
        self._weight_used = 0

        # Guards the request log and weights only: the market has its own lock, and the
        # two are never held one inside the other by this class.
        self._lock = threading.RLock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def market(self) -> Market:
        """The market the endpoints serve (the websocket streams can serve it too)."""
        return self._market

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
        if self._tick_rate is not None:
            self._market.start_ticker(self._tick_rate)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = None
        self._thread = None
        if self._tick_rate is not None:
            self._market.stop_ticker()
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
        """The latest requests (at most ``request_log_limit``), oldest first."""
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
        """Exceptions raised inside handlers (each answered with HTTP 500), the latest 1000."""
        with self._lock:
            return list(self._handler_errors)

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Json]]:
        """Open orders in Binance's JSON shape; ``symbol`` is unified or exchange id."""
        return [
            _order_json(order) for order in self._market.orders(symbol, open_only=True)
        ]

    def all_orders(self, symbol: str | None = None) -> list[dict[str, Json]]:
        """Open orders and the latest closed ones, in Binance's JSON shape."""
        return [_order_json(order) for order in self._market.orders(symbol)]

    def trades(self) -> list[dict[str, Json]]:
        """The account's trades, in the shape GET /api/v3/myTrades gives them."""
        return [self._account_trade(trade) for trade in self._market.account_trades()]

    def balances(self) -> dict[str, dict[str, float]]:
        return {
            asset: {
                "free": float(balance.free),
                "locked": float(balance.locked),
                "total": float(balance.total),
            }
            for asset, balance in self._market.balances().items()
        }

    def set_balance(self, asset: str, free: float) -> None:
        self._market.set_balance(asset, free)

    def mid_price(self, symbol: str) -> float:
        return float(self._market.mid(symbol))

    def set_mid_price(self, symbol: str, price: float) -> None:
        """Jump the book (and tickers) of ``symbol`` to a new mid price (``Market.set_mid``:
        resting orders the jump goes through fill)."""
        self._market.set_mid(symbol, price)

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
            # One consistent view of the market per request, whatever the ticker does.
            with self._market.lock:
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

    def _market_param(self, params: Mapping[str, str]) -> Instrument:
        symbol = params.get("symbol", "")
        if symbol == "":
            raise _mandatory_missing("symbol")
        instrument = self._instruments.get(symbol.upper())
        if instrument is None:
            raise BinanceApiError(400, -1121, "Invalid symbol.")
        return instrument

    def _optional_market(self, params: Mapping[str, str]) -> Instrument | None:
        return self._market_param(params) if params.get("symbol") else None

    def _order_reference(self, params: Mapping[str, str]) -> tuple[int | None, str | None]:
        """(orderId, origClientOrderId) of a query or cancel; orderId wins when both are sent."""
        order_id = self._int_param(params, "orderId")
        client_id = params.get("origClientOrderId", "")
        if not order_id and not client_id:
            raise BinanceApiError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        return (order_id or None), (None if order_id else client_id)

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
            markets = list(self._instruments.values())
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
    def _symbol_info(market: Instrument) -> dict[str, Json]:
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

    def _depth(self, params: dict[str, str]) -> Json:
        instrument = self._market_param(params)
        limit = self._int_param(params, "limit") or 100
        # Binance caps limit at 5000; the book may hold fewer levels than asked.
        return self._market.book(instrument.id, min(max(limit, 1), 5000)).as_binance()

    def _ticker_price(self, params: dict[str, str]) -> Json:
        instrument = self._optional_market(params)
        instruments = [instrument] if instrument else list(self._instruments.values())
        prices = [
            {"symbol": i.id, "price": _fmt(self._market.stats(i.id).last_price)}
            for i in instruments
        ]
        return prices[0] if instrument else prices

    def _ticker_24hr(self, params: dict[str, str]) -> Json:
        instrument = self._optional_market(params)
        instruments = [instrument] if instrument else list(self._instruments.values())
        now = self.server_time_ms()
        tickers = []
        for i in instruments:
            # Statistics since the market was built, not a rolling 24 h window.
            stats = self._market.stats(i.id)
            book = self._market.book(i.id, 1)
            bid_price, bid_qty = book.bids[0]
            ask_price, ask_qty = book.asks[0]
            change = stats.last_price - stats.open_price
            weighted = (
                stats.quote_volume / stats.volume if stats.volume else stats.last_price
            )
            tickers.append(
                {
                    "symbol": i.id,
                    "priceChange": _fmt(change),
                    "priceChangePercent": f"{change / stats.open_price * 100:.3f}",
                    "weightedAvgPrice": _fmt(weighted),
                    "prevClosePrice": _fmt(stats.open_price),
                    "lastPrice": _fmt(stats.last_price),
                    "lastQty": _fmt(stats.last_qty),
                    "bidPrice": _fmt(bid_price),
                    "bidQty": _fmt(bid_qty),
                    "askPrice": _fmt(ask_price),
                    "askQty": _fmt(ask_qty),
                    "openPrice": _fmt(stats.open_price),
                    "highPrice": _fmt(stats.high_price),
                    "lowPrice": _fmt(stats.low_price),
                    "volume": _fmt(stats.volume),
                    "quoteVolume": _fmt(stats.quote_volume),
                    "openTime": max(stats.open_time_ms, now - 86_400_000),
                    "closeTime": now,
                    "firstId": stats.first_trade_id,
                    "lastId": stats.last_trade_id,
                    "count": stats.count,
                }
            )
        return tickers[0] if instrument else tickers

    # ----------------------------------------------------------------- trading

    def _new_order(self, params: dict[str, str]) -> Json:
        instrument = self._market_param(params)
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
        time_in_force = "GTC"
        quantity: Decimal | None = None
        price: Decimal | None = None
        quote_quantity: Decimal | None = None
        if order_type == "MARKET":
            if params.get("quoteOrderQty"):
                quote_quantity = self._decimal_param(params, "quoteOrderQty")
            else:
                quantity = self._decimal_param(params, "quantity")
        else:
            if order_type == "LIMIT":
                time_in_force = params.get("timeInForce", "").upper()
                if not time_in_force:
                    raise _mandatory_missing("timeInForce")
                if time_in_force not in ("GTC", "IOC", "FOK"):
                    raise BinanceApiError(400, -1115, "Invalid timeInForce.")
            quantity = self._decimal_param(params, "quantity")
            price = self._decimal_param(params, "price")
        try:
            order = self._market.place_order(
                instrument.id,
                side,
                order_type,
                quantity=quantity,
                price=price,
                quote_quantity=quote_quantity,
                time_in_force=time_in_force,
                client_order_id=client_order_id,
            )
        except OrderRejected as rejection:
            raise BinanceApiError(*_REJECTIONS[rejection.reason]) from None

        # MARKET and LIMIT default to FULL, as on Binance; LIMIT_MAKER to ACK.
        default_resp = "FULL" if order_type in ("MARKET", "LIMIT") else "ACK"
        resp_type = params.get("newOrderRespType", default_resp).upper()
        ack: dict[str, Json] = {
            "symbol": instrument.id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time_ms,
        }
        if resp_type == "ACK":
            return ack
        result = _order_json(order)
        for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking"):
            result.pop(key)
        result.update(ack)
        if resp_type == "FULL":
            result["fills"] = [
                {
                    "price": _fmt(fill.price),
                    "qty": _fmt(fill.qty),
                    "commission": _fmt(Decimal(0)),
                    "commissionAsset": _commission_asset(instrument, fill),
                    "tradeId": fill.trade_id,
                }
                for fill in order.fills
            ]
        return result

    def _cancel_order(self, params: dict[str, str]) -> Json:
        instrument = self._market_param(params)
        order_id, client_order_id = self._order_reference(params)
        try:
            order = self._market.cancel_order(instrument.id, order_id, client_order_id)
        except UnknownOrder:
            raise BinanceApiError(400, -2011, "Unknown order sent.") from None
        result = _order_json(order)
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
        result["transactTime"] = order.update_time_ms
        return result

    def _query_order(self, params: dict[str, str]) -> Json:
        instrument = self._market_param(params)
        order = self._market.find_order(instrument.id, *self._order_reference(params))
        if order is None:
            raise BinanceApiError(400, -2013, "Order does not exist.")
        return _order_json(order)

    def _open_orders(self, params: dict[str, str]) -> Json:
        instrument = self._optional_market(params)
        orders = self._market.orders(instrument.id if instrument else None, open_only=True)
        return [_order_json(order) for order in orders]

    @staticmethod
    def _limit_param(params: Mapping[str, str]) -> int:
        limit = LoopbackExchange._int_param(params, "limit") or 500
        return min(max(limit, 1), 1000)

    def _all_orders(self, params: dict[str, str]) -> Json:
        instrument = self._market_param(params)
        from_id = self._int_param(params, "orderId")
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        orders = [
            _order_json(order)
            for order in self._market.orders(instrument.id)
            if order.order_id >= from_id
            and order.time_ms >= start
            and (not end or order.time_ms <= end)
        ]
        return orders[: self._limit_param(params)]

    def _account(self, params: dict[str, str]) -> Json:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        balances = [
            {
                "asset": asset,
                "free": _fmt(balance.free),
                "locked": _fmt(balance.locked),
            }
            for asset, balance in self._market.balances().items()
            if not (omit_zero and balance.free == 0 and balance.locked == 0)
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
        instrument = self._market_param(params)
        order_id = self._int_param(params, "orderId")
        from_id = self._int_param(params, "fromId")
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        trades = [
            self._account_trade(trade)
            for trade in self._market.account_trades(instrument.id)
            if (not order_id or trade.account_order_id == order_id)
            and trade.trade_id >= from_id
            and trade.time_ms >= start
            and (not end or trade.time_ms <= end)
        ]
        return trades[: self._limit_param(params)]

    def _account_trade(self, trade: Trade) -> dict[str, Json]:
        return _account_trade_json(trade, self._instruments[trade.symbol])
