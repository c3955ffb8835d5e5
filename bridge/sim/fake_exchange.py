"""FakeBinance: a local aiohttp server speaking enough of Binance's spot REST API for real ccxt code.

Tests, the README demo (paper trading) and the latency benchmark point ccxt at it via `ccxt_config()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

FaultKind = Literal[
    "insufficient_balance",  # -2010, not created
    "min_notional",  # -1013 Filter failure: NOTIONAL, not created
    "rate_limited",  # HTTP 429 with Retry-After, not created
    "server_error_before",  # HTTP 500, not created
    "server_error_after",  # created, then HTTP 500
    "timeout_after",  # created, then no answer until stop()
    "timestamp",  # -1021, not created
]

DEFAULT_API_KEY = "fake-binance-key"
DEFAULT_SECRET = "fake-binance-secret"  # noqa: S105 - the fake's own test credential
DEFAULT_MARKETS: tuple[tuple[str, str, float], ...] = (
    ("BTC", "USDT", 60_000.0),
    ("ETH", "USDT", 3_000.0),
    ("BNB", "USDT", 600.0),
    ("ETH", "BTC", 0.05),
)
MIN_NOTIONAL = 5.0
RECV_WINDOW_MS = 5_000

# Every `urls.api` key of ccxt's binance describe(), mapped to a path on this server. Endpoints the fake
# does not implement still route here, so an unexpected call shows up as a 404 in `requests`
# instead of reaching the real exchange.
_API_PATHS: dict[str, str] = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/dapi-data",
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/fapi-data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}


@dataclass
class _Listing:
    base: str
    quote: str
    price: float
    status: str

    @property
    def symbol(self) -> str:
        return self.base + self.quote


@dataclass(frozen=True)
class ReceivedOrder:
    """One POST /api/v3/order as it reached the server, before any check. `params` are the query
    string's and the body's together, as Binance reads them."""

    params: dict[str, str]
    received_ns: int  # time.time_ns(): comparable with the client's wall clock
    received_mono_ns: int  # time.perf_counter_ns(): for latency measured in the same process


@dataclass
class _Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    qty: float
    quote_qty: float
    price: float
    time_ms: int
    orig_quote_qty: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    """Ends a request with Binance's error shape."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _num(value: float) -> str:
    return f"{value:.8f}"


class FakeBinance:
    """The fake exchange. `async with FakeBinance() as fake:` then pass `fake.ccxt_config()` to ccxt."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        markets: Iterable[tuple[str, str, float]] = DEFAULT_MARKETS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.secret = secret
        self.host, self.port = host, port
        self.clock_offset_ms = 0  # the server's clock minus ours: lets tests provoke -1021
        self.retry_after_s = 2
        self.requests: list[tuple[str, str]] = []
        self.orders: list[ReceivedOrder] = []
        self.executed: list[dict[str, Any]] = []  # orders the fake created, as GET /order returns them
        self._listings: dict[str, _Listing] = {}
        self._by_client_id: dict[str, _Order] = {}
        self._by_id: dict[int, _Order] = {}
        self._faults: list[FaultKind] = []
        self._ids = itertools.count(1001)
        self._exchange_info: bytes | None = None  # cached: the big response is rebuilt only on change
        self._released = asyncio.Event()
        self._order_arrived = asyncio.Event()
        self._request_arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        for base, quote, price in markets:
            self.add_market(base, quote, price=price)

    # ----- lifecycle -----

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info_handler)
        app.router.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        app.router.add_get("/api/v3/ticker/price", self._ticker_price)
        app.router.add_post("/api/v3/order", self._post_order)
        app.router.add_get("/api/v3/order", self._get_order)
        app.router.add_get("/api/v3/account", self._account)
        app.router.add_route("*", "/{tail:.*}", self._not_implemented)
        self._released.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = int(sockets[0][1])
        log.info("fake_exchange.started", url=self.url)

    async def stop(self) -> None:
        self._released.set()  # let hung "timeout_after" handlers finish before the runner waits on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into ccxt's binance config so every API goes to this server."""
        urls = {name: self.url + path for name, path in _API_PATHS.items()}
        # sandbox and demo modes swap in urls.test / urls.demo: point those here too.
        # timeout_on_exit: ccxt's close() waits 250 ms for TLS shutdown; plain loopback HTTP has none.
        return {"urls": {"api": urls, "test": dict(urls), "demo": dict(urls)}, "timeout_on_exit": 0}

    # ----- helpers for tests and demos -----

    def add_market(self, base: str, quote: str, *, price: float, status: str = "TRADING") -> str:
        """List a market (or change an existing one). Returns Binance's symbol id, e.g. "BTCUSDT"."""
        listing = _Listing(base.upper(), quote.upper(), price, status)
        self._listings[listing.symbol] = listing
        self._exchange_info = None
        return listing.symbol

    def set_price(self, symbol: str, price: float) -> None:
        """Set the price of a market by Binance id ("BTCUSDT") or unified symbol ("BTC/USDT")."""
        self._listing(symbol.replace("/", "")).price = price

    def fail_next_order(self, kind: FaultKind, count: int = 1) -> None:
        """Make the next `count` order requests that pass authentication fail as `kind`."""
        self._faults.extend([kind] * count)

    async def wait_for_orders(self, count: int) -> None:
        """Return once `count` order requests have arrived: lets tests and benchmarks wait without polling."""
        while len(self.orders) < count:
            self._order_arrived.clear()  # no await between the check and here, so no arrival is missed
            await self._order_arrived.wait()

    async def wait_for_requests(self, method: str, path: str, count: int) -> None:
        """Return once `count` requests `method path` have arrived (any outcome)."""
        while self.count(method, path) < count:
            self._request_arrived.clear()  # no await between the check and here, so none is missed
            await self._request_arrived.wait()

    def count(self, method: str, path: str) -> int:
        return self.requests.count((method, path))

    def exchange_info(self) -> dict[str, Any]:
        """The full GET /api/v3/exchangeInfo body, e.g. to record it for a mocked-HTTP test."""
        return self._exchange_info_body(self._listings.values())

    # ----- request plumbing -----

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self._request_arrived.set()
        try:
            return await handler(request)
        except _ApiError as exc:
            return _json({"code": exc.code, "msg": exc.msg}, status=exc.status, headers=exc.headers)

    def _now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    def _listing(self, symbol: str | None) -> _Listing:
        listing = self._listings.get(symbol or "")
        if listing is None:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return listing

    def _authenticate(self, request: web.Request, body: str) -> dict[str, str]:
        """Check key, HMAC signature and timestamp the way Binance does; return the signed params."""
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise _ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        _, _, query = request.raw_path.partition("?")
        # Binance signs the query string followed by the body; ccxt appends the signature last.
        total = query + body
        payload, sep, signature = total.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(signature, expected):
            raise _ApiError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        self._check_timestamp(params)
        return params

    def _check_timestamp(self, params: dict[str, str]) -> None:
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", RECV_WINDOW_MS))
        except (KeyError, ValueError):
            raise _ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent.") from None
        now = self._now_ms()
        if stamp > now + 1000:
            raise _ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - stamp > window:
            raise _ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    # ----- public endpoints -----

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self._now_ms()})

    async def _exchange_info_handler(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is None:
            if self._exchange_info is None:
                self._exchange_info = orjson.dumps(self._exchange_info_body(self._listings.values()))
            return web.Response(body=self._exchange_info, content_type="application/json")
        return _json(self._exchange_info_body([self._listing(s) for s in wanted]))

    @staticmethod
    def _requested_symbols(request: web.Request) -> list[str] | None:
        if "symbol" in request.query:
            return [request.query["symbol"]]
        if "symbols" in request.query:
            try:
                symbols = orjson.loads(request.query["symbols"])
            except orjson.JSONDecodeError:
                raise _ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
            return [str(s) for s in symbols]
        return None

    def _exchange_info_body(self, listings: Iterable[_Listing]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(listing) for listing in listings],
        }

    @staticmethod
    def _symbol_info(listing: _Listing) -> dict[str, Any]:
        return {
            "symbol": listing.symbol,
            "status": listing.status,
            "baseAsset": listing.base,
            "baseAssetPrecision": 8,
            "quoteAsset": listing.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.00000001",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.00000001",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00000001",
                    "maxQty": "9000000.00000000",
                    "stepSize": "0.00000001",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _num(MIN_NOTIONAL),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is not None and "symbol" in request.query:
            return _json(self._ticker(self._listing(wanted[0])))
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return _json([self._ticker(listing) for listing in listings])

    def _ticker(self, listing: _Listing) -> dict[str, Any]:
        now = self._now_ms()
        price = _num(listing.price)
        return {
            "symbol": listing.symbol,
            "priceChange": "0.00000000",
            "priceChangePercent": "0.000",
            "weightedAvgPrice": price,
            "prevClosePrice": price,
            "lastPrice": price,
            "lastQty": "1.00000000",
            "bidPrice": price,
            "bidQty": "1.00000000",
            "askPrice": price,
            "askQty": "1.00000000",
            "openPrice": price,
            "highPrice": price,
            "lowPrice": price,
            "volume": "0.00000000",
            "quoteVolume": "0.00000000",
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1,
            "count": 1,
        }

    async def _ticker_price(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is not None and "symbol" in request.query:
            listing = self._listing(wanted[0])
            return _json({"symbol": listing.symbol, "price": _num(listing.price)})
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return _json([{"symbol": item.symbol, "price": _num(item.price)} for item in listings])

    async def _not_implemented(self, request: web.Request) -> web.Response:
        return _json({"code": -1, "msg": f"FakeBinance does not implement {request.path}"}, status=404)

    # ----- signed endpoints -----

    async def _account(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        return _json(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "updateTime": self._now_ms(),
                "accountType": "SPOT",
                "balances": [{"asset": "USDT", "free": "100000.00000000", "locked": "0.00000000"}],
                "permissions": ["SPOT"],
            }
        )

    async def _post_order(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body = await request.text()
        _, _, query = request.raw_path.partition("?")
        params = dict(parse_qsl(query)) | dict(parse_qsl(body))
        self.orders.append(ReceivedOrder(params, received_ns, received_mono_ns))
        self._order_arrived.set()
        # Let the other requests that arrived with this one take their receipt time before this one
        # is processed: the benchmark times concurrent orders from their arrival, not their turn.
        await asyncio.sleep(0)
        params = self._authenticate(request, body)
        fault = self._faults.pop(0) if self._faults else None
        self._fail_before(fault)
        order = self._create(params)
        if fault == "server_error_after":
            raise _ApiError(500, -1001, "Internal error; unable to process your request. Please try again.")
        if fault == "timeout_after":
            await self._released.wait()
        return _json(self._order_response(order, fills=True))

    def _fail_before(self, fault: FaultKind | None) -> None:
        if fault == "insufficient_balance":
            raise _ApiError(400, -2010, "Account has insufficient balance for requested action.")
        if fault == "min_notional":
            raise _ApiError(400, -1013, "Filter failure: NOTIONAL")
        if fault == "rate_limited":
            raise _ApiError(
                429,
                -1003,
                "Too many requests; current limit of IP is 6000 requests per minute.",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if fault == "server_error_before":
            # a gateway error page, not JSON: the matching engine never saw the order
            raise web.HTTPInternalServerError(text="Internal Server Error")
        if fault == "timestamp":
            raise _ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")

    def _create(self, params: dict[str, str]) -> _Order:
        listing = self._listing(params.get("symbol"))
        if listing.status != "TRADING":
            raise _ApiError(400, -1013, "Market is closed.")
        if params.get("type") != "MARKET":
            raise _ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side")
        if side not in ("BUY", "SELL"):
            raise _ApiError(400, -1100, "Illegal characters found in parameter 'side'.")
        qty, quote_qty = self._fill_amounts(params, listing.price)
        if quote_qty < MIN_NOTIONAL:
            raise _ApiError(400, -1013, "Filter failure: NOTIONAL")
        order_id = next(self._ids)
        client_id = params.get("newClientOrderId") or f"fake{order_id}"
        order = _Order(
            order_id, client_id, listing.symbol, side, qty, quote_qty, listing.price, self._now_ms()
        )
        order.orig_quote_qty = float(params.get("quoteOrderQty", 0) or 0)
        order.info = self._order_response(order, fills=False)
        self._by_client_id[client_id] = order  # a reused client id now finds the newest order
        self._by_id[order_id] = order
        self.executed.append(order.info)
        return order

    @staticmethod
    def _fill_amounts(params: dict[str, str], price: float) -> tuple[float, float]:
        try:
            if "quantity" in params:
                qty = float(params["quantity"])
                return qty, round(qty * price, 8)
            if "quoteOrderQty" in params:
                quote_qty = float(params["quoteOrderQty"])
                return round(quote_qty / price, 8), quote_qty
        except ValueError:
            raise _ApiError(400, -1100, "Illegal characters found in a parameter.") from None
        raise _ApiError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty.")

    def _order_response(self, order: _Order, *, fills: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time_ms,
            "time": order.time_ms,
            "updateTime": order.time_ms,
            "workingTime": order.time_ms,
            "price": "0.00000000",
            "origQty": _num(order.qty),
            "executedQty": _num(order.qty),
            "origQuoteOrderQty": _num(order.orig_quote_qty),
            "cummulativeQuoteQty": _num(order.quote_qty),
            "status": "FILLED",
            "timeInForce": "GTC",
            "type": "MARKET",
            "side": order.side,
            "isWorking": True,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if fills:
            data["fills"] = [
                {
                    "price": _num(order.price),
                    "qty": _num(order.qty),
                    "commission": "0.00000000",
                    "commissionAsset": "BNB",
                    "tradeId": order.order_id,
                }
            ]
        return data

    async def _get_order(self, request: web.Request) -> web.Response:
        params = self._authenticate(request, "")
        self._listing(params.get("symbol"))
        order: _Order | None = None
        if "origClientOrderId" in params:
            order = self._by_client_id.get(params["origClientOrderId"])
        elif "orderId" in params and params["orderId"].isdigit():
            order = self._by_id.get(int(params["orderId"]))
        if order is None or order.symbol != params.get("symbol"):
            raise _ApiError(400, -2013, "Order does not exist.")
        return _json(order.info)


async def run_fake_exchange(
    host: str,
    port: int,
    stop_event: asyncio.Event,
    *,
    on_ready: Callable[[FakeBinance], None] | None = None,
) -> None:
    """Serve a FakeBinance until `stop_event` is set (the demo and benchmark CLI entry point).
    `on_ready` gets the running fake, e.g. to print its URL and `ccxt_config()`."""
    async with FakeBinance(host=host, port=port) as fake:
        log.info("fake_exchange.serving", url=fake.url)
        if on_ready is not None:
            on_ready(fake)
        await stop_event.wait()
