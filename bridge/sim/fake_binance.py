"""FakeBinance: a local aiohttp server speaking enough of Binance's spot REST API for real ccxt code.

Tests, the README demo (paper trading) and the latency benchmark point ccxt at it via `ccxt_config()`.
MARKET orders fill whole at the listing's price. LIMIT orders with timeInForce IOC (or FOK) are checked
as Binance checks them (tick size, step size, notional, mandatory parameters, with Binance's codes),
then fill at once at the listing's price if it is at or better than the limit, up to the listing's
depth; what does not fill expires (status EXPIRED, as Binance reports an IOC that did not fill whole).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from bridge.sim.fake_venue import (
    DEFAULT_MARKETS,
    MIN_NOTIONAL,
    ApiError,
    FakeVenue,
    FaultKind,
    Listing,
    Order,
    book_quote,
    fill_amounts,
    fmt_num,
    json_response,
    limit_fill,
    signature_ok,
    timestamp_problem,
)

DEFAULT_API_KEY = "fake-binance-key"
DEFAULT_SECRET = "fake-binance-secret"  # noqa: S105 - the fake's own test credential
RECV_WINDOW_MS = 5_000
# Binance's expiryReason for a limit order that did not fill whole, by timeInForce
_EXPIRY_REASONS = {"IOC": "UNFILLED_IOC_QUANTITY_EXPIRED", "FOK": "UNFILLED_FOK_ORDER_EXPIRED"}

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


class FakeBinance(FakeVenue):
    """The fake exchange. `async with FakeBinance() as fake:` then pass `fake.ccxt_config()` to ccxt."""

    _UNKNOWN_SYMBOL = (400, -1121, "Invalid symbol.")
    _FAULT_ERRORS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]] = {
        "insufficient_balance": (400, -2010, "Account has insufficient balance for requested action."),
        "min_notional": (400, -1013, "Filter failure: NOTIONAL"),
        "rate_limited": (429, -1003, "Too many requests; current limit of IP is 6000 requests per minute."),
        "server_error_after": (
            500,
            -1001,
            "Internal error; unable to process your request. Please try again.",
        ),
        "timestamp": (400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."),
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        markets: Iterable[tuple[str, str, float]] = DEFAULT_MARKETS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._exchange_info: bytes | None = None  # cached: the big response is rebuilt only on change
        self.balances: dict[str, float] = {"USDT": 100000.0}  # free per asset, as GET account reports
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)

    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into ccxt's binance config so every API goes to this server."""
        urls = {name: self.url + path for name, path in _API_PATHS.items()}
        # sandbox and demo modes swap in urls.test / urls.demo: point those here too.
        # timeout_on_exit: ccxt's close() waits 250 ms for TLS shutdown; plain loopback HTTP has none.
        return {"urls": {"api": urls, "test": dict(urls), "demo": dict(urls)}, "timeout_on_exit": 0}

    def exchange_info(self) -> dict[str, Any]:
        """The full GET /api/v3/exchangeInfo body, e.g. to record it for a mocked-HTTP test."""
        return self._exchange_info_body(self._listings.values())

    # ----- FakeVenue hooks -----

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v3/ping", self._ping)
        router.add_get("/api/v3/time", self._time)
        router.add_get("/api/v3/exchangeInfo", self._exchange_info_handler)
        router.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        router.add_get("/api/v3/ticker/price", self._ticker_price)
        router.add_get("/api/v3/ticker/bookTicker", self._book_ticker)
        router.add_post("/api/v3/order", self._post_order)
        router.add_get("/api/v3/order", self._get_order)
        router.add_get("/api/v3/account", self._account)

    def _error_response(self, exc: ApiError) -> web.Response:
        return json_response({"code": exc.code, "msg": exc.msg}, status=exc.status, headers=exc.headers)

    def _markets_changed(self) -> None:
        self._exchange_info = None

    # ----- authentication -----

    def _authenticate(self, request: web.Request, body: str) -> dict[str, str]:
        """Check key, HMAC signature and timestamp the way Binance does; return the signed params."""
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        _, _, query = request.raw_path.partition("?")
        # Binance signs the query string followed by the body; ccxt appends the signature last.
        total = query + body
        payload, sep, signature = total.rpartition("&signature=")
        if not sep or not signature_ok(self.secret, payload, signature):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        self._check_timestamp(params)
        return params

    def _check_timestamp(self, params: dict[str, str]) -> None:
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", RECV_WINDOW_MS))
        except (KeyError, ValueError):
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent.") from None
        problem = timestamp_problem(stamp, self._now_ms(), window)
        if problem == "ahead":
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if problem == "stale":
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    # ----- public endpoints -----

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self._now_ms()})

    async def _exchange_info_handler(self, request: web.Request) -> web.Response:
        wanted = self._requested_symbols(request)
        if wanted is None:
            if self._exchange_info is None:
                self._exchange_info = orjson.dumps(self._exchange_info_body(self._listings.values()))
            return web.Response(body=self._exchange_info, content_type="application/json")
        return json_response(self._exchange_info_body([self._listing(s) for s in wanted]))

    @staticmethod
    def _requested_symbols(request: web.Request) -> list[str] | None:
        if "symbol" in request.query:
            return [request.query["symbol"]]
        if "symbols" in request.query:
            try:
                symbols = orjson.loads(request.query["symbols"])
            except orjson.JSONDecodeError:
                raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
            return [str(s) for s in symbols]
        return None

    def _exchange_info_body(self, listings: Iterable[Listing]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(listing) for listing in listings],
        }

    @staticmethod
    def _symbol_info(listing: Listing) -> dict[str, Any]:
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
                    "minPrice": fmt_num(listing.tick_size),
                    "maxPrice": "1000000.00000000",
                    "tickSize": fmt_num(listing.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt_num(listing.step_size),
                    "maxQty": "9000000.00000000",
                    "stepSize": fmt_num(listing.step_size),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt_num(MIN_NOTIONAL),
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
            return json_response(self._ticker(self._listing(wanted[0])))
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return json_response([self._ticker(listing) for listing in listings])

    def _ticker(self, listing: Listing) -> dict[str, Any]:
        now = self._now_ms()
        price = fmt_num(listing.price)
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
            return json_response({"symbol": listing.symbol, "price": fmt_num(listing.price)})
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return json_response([{"symbol": item.symbol, "price": fmt_num(item.price)} for item in listings])

    async def _book_ticker(self, request: web.Request) -> web.Response:
        """Best bid/ask: `spread` apart around the price; zeros while a market is not trading (an empty
        book). Public, like Binance's: no key, no signature."""
        wanted = self._requested_symbols(request)
        if wanted is not None and "symbol" in request.query:
            return json_response(self._book_entry(self._listing(wanted[0])))
        listings = self._listings.values() if wanted is None else [self._listing(s) for s in wanted]
        return json_response([self._book_entry(listing) for listing in listings])

    def _book_entry(self, listing: Listing) -> dict[str, Any]:
        trading = listing.status == "TRADING"
        bid, ask = book_quote(listing, self.spread) if trading else (0.0, 0.0)
        size = fmt_num((1_000_000.0 if listing.depth is None else listing.depth) if trading else 0.0)
        return {
            "symbol": listing.symbol,
            "bidPrice": fmt_num(bid),
            "bidQty": size,
            "askPrice": fmt_num(ask),
            "askQty": size,
        }

    # ----- signed endpoints -----

    async def _account(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        return json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "updateTime": self._now_ms(),
                "accountType": "SPOT",
                "balances": [
                    {"asset": asset, "free": f"{free:.8f}", "locked": "0.00000000"}
                    for asset, free in self.balances.items()
                ],
                "permissions": ["SPOT"],
            }
        )

    async def _post_order(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body = await request.text()
        _, _, query = request.raw_path.partition("?")
        await self._receive_order(
            dict(parse_qsl(query)) | dict(parse_qsl(body)), received_ns, received_mono_ns
        )
        params = self._authenticate(request, body)
        fault = self._next_fault()
        self._fail_before(fault)
        order = self._create(params)
        await self._fail_after(fault)
        return json_response(self._order_response(order, fills=True))

    def _create(self, params: dict[str, str]) -> Order:
        listing = self._listing(params.get("symbol"))
        self._apply_price_move(listing)
        if listing.status != "TRADING":
            raise ApiError(400, -1013, "Market is closed.")
        if params.get("type") not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'side'.")
        if params["type"] == "LIMIT":
            return self._create_limit(params, listing, side)
        qty, quote_qty = self._fill_amounts(params, listing.price)
        if quote_qty < MIN_NOTIONAL:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        order = self._new_order(listing, side, qty, quote_qty, params.get("newClientOrderId"))
        order.orig_quote_qty = float(params.get("quoteOrderQty", 0) or 0)
        self._book(order, self._order_response(order, fills=False))
        return order

    def _create_limit(self, params: dict[str, str], listing: Listing, side: str) -> Order:
        """A LIMIT order, checked in the order Binance reports problems, filled as `limit_fill` says."""
        if "quoteOrderQty" in params:
            raise ApiError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        tif = params.get("timeInForce")
        if not tif:
            raise ApiError(
                400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
            )
        if tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
        if tif == "GTC":  # not Binance's answer: this fake has no order book for a resting order
            raise ApiError(400, -1, "FakeBinance fills LIMIT orders with timeInForce IOC or FOK only")
        qty = self._decimal_param(params, "quantity")
        price = self._decimal_param(params, "price")
        tick, step = Decimal(str(listing.tick_size)), Decimal(str(listing.step_size))
        if price <= 0 or price % tick != 0:
            raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        if qty < step or qty % step != 0:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if price * qty < Decimal(str(MIN_NOTIONAL)):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        filled, quote_qty = limit_fill(
            listing.price,
            buy=side == "BUY",
            limit=float(price),
            qty=float(qty),
            depth=listing.depth,
            all_or_none=tif == "FOK",
        )
        order = self._new_order(listing, side, filled, quote_qty, params.get("newClientOrderId"))
        order.order_type, order.time_in_force = "LIMIT", tif
        order.limit_price, order.orig_qty = float(price), float(qty)
        order.status = "FILLED" if filled >= float(qty) else "EXPIRED"
        self._book(order, self._order_response(order, fills=False))
        return order

    @staticmethod
    def _decimal_param(params: dict[str, str], name: str) -> Decimal:
        """A mandatory decimal parameter, refused as Binance refuses a missing, malformed or too
        precise one (more than 8 decimals)."""
        text = params.get(name)
        if not text:
            raise ApiError(
                400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
            )
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or "e" in text.lower():
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -8:
            raise ApiError(400, -1111, f"Parameter '{name}' has too much precision.")
        return value

    @staticmethod
    def _fill_amounts(params: dict[str, str], price: float) -> tuple[float, float]:
        try:
            if "quantity" in params:
                return fill_amounts(price, qty=float(params["quantity"]))
            if "quoteOrderQty" in params:
                return fill_amounts(price, quote_qty=float(params["quoteOrderQty"]))
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in a parameter.") from None
        raise ApiError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty.")

    def _order_response(self, order: Order, *, fills: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time_ms,
            "time": order.time_ms,
            "updateTime": order.time_ms,
            "workingTime": order.time_ms,
            "price": fmt_num(order.limit_price),
            "origQty": fmt_num(order.qty if order.orig_qty is None else order.orig_qty),
            "executedQty": fmt_num(order.qty),
            "origQuoteOrderQty": fmt_num(order.orig_quote_qty),
            "cummulativeQuoteQty": fmt_num(order.quote_qty),
            "status": order.status,
            "timeInForce": order.time_in_force,
            "type": order.order_type,
            "side": order.side,
            "isWorking": True,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if order.status == "EXPIRED":  # shown since 2026-03-26 in RESULT and FULL answers
            data["expiryReason"] = _EXPIRY_REASONS.get(order.time_in_force, "INSUFFICIENT_LIQUIDITY")
        if fills:  # FULL answers list the trades: none for an order that expired unfilled
            trade = {
                "price": fmt_num(order.price),
                "qty": fmt_num(order.qty),
                "commission": "0.00000000",
                "commissionAsset": "BNB",
                "tradeId": order.order_id,
            }
            data["fills"] = [trade] if order.qty > 0 else []
        return data

    async def _get_order(self, request: web.Request) -> web.Response:
        params = self._authenticate(request, "")
        self._listing(params.get("symbol"))
        order: Order | None = None
        if "origClientOrderId" in params:
            order = self._by_client_id.get(params["origClientOrderId"])
        elif "orderId" in params and params["orderId"].isdigit():
            order = self._by_id.get(int(params["orderId"]))
        if order is None or order.symbol != params.get("symbol"):
            raise ApiError(400, -2013, "Order does not exist.")
        return json_response(order.info)
