"""FakeBinance: a local aiohttp server speaking enough of Binance's spot REST API for real ccxt code.

Tests, the README demo (paper trading) and the latency benchmark point ccxt at it via `ccxt_config()`.
MARKET orders fill whole at the listing's price. LIMIT orders with timeInForce IOC (or FOK) are checked
as Binance checks them (tick size, step size, notional, mandatory parameters, with Binance's codes),
then fill at once at the listing's price if it is at or better than the limit, up to the listing's
depth; what does not fill expires (status EXPIRED, as Binance reports an IOC that did not fill whole).
STOP_LOSS and STOP_LOSS_LIMIT (GTC) sells, checked the same way, rest (status NEW) until `set_price`
reaches their stop price (see FakeVenue.set_price); DELETE /api/v3/order cancels a resting one. With
`track_balances`, orders need and move the account's balances as on Binance. The public endpoints are
in fake_binance_public.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import web

from bridge.sim.fake_binance_public import BinancePublicApi
from bridge.sim.fake_venue import (
    DEFAULT_MARKETS,
    MIN_NOTIONAL,
    ApiError,
    FaultKind,
    Listing,
    Order,
    fill_amounts,
    fmt_num,
    json_response,
    limit_fill,
    signature_ok,
    timestamp_problem,
)
from bridge.sim.fake_wallet import Wallet

DEFAULT_API_KEY = "fake-binance-key"
DEFAULT_SECRET = "fake-binance-secret"  # noqa: S105 - the fake's own test credential
RECV_WINDOW_MS = 5_000
# Binance's expiryReason for a limit order that did not fill whole, by timeInForce
_EXPIRY_REASONS = {"IOC": "UNFILLED_IOC_QUANTITY_EXPIRED", "FOK": "UNFILLED_FOK_ORDER_EXPIRED"}
_STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT")
_INSUFFICIENT = "Account has insufficient balance for requested action."

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


class FakeBinance(BinancePublicApi):
    """The fake exchange. `async with FakeBinance() as fake:` then pass `fake.ccxt_config()` to ccxt.

    `balances` (free per asset, as GET account reports) is what tests set; update it in place. With
    `track_balances` orders need and move it as on Binance: an order the account cannot pay for is
    refused -2010, a resting stop sell locks its coins (free -> locked) so a second sell of the same
    coins is refused, a fill pays one asset for the other (no fees). Without it (the default) orders
    never check or change balances."""

    _FAULT_ERRORS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]] = {
        "insufficient_balance": (400, -2010, _INSUFFICIENT),
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
        track_balances: bool = False,
    ) -> None:
        self.balances: dict[str, float] = {"USDT": 100000.0}
        self.track_balances = track_balances
        self.wallet = Wallet(self.balances)  # its `locked` is what resting orders hold
        super().__init__(api_key=api_key, secret=secret, markets=markets, host=host, port=port)

    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into ccxt's binance config so every API goes to this server."""
        urls = {name: self.url + path for name, path in _API_PATHS.items()}
        # sandbox and demo modes swap in urls.test / urls.demo: point those here too.
        # timeout_on_exit: ccxt's close() waits 250 ms for TLS shutdown; plain loopback HTTP has none.
        return {"urls": {"api": urls, "test": dict(urls), "demo": dict(urls)}, "timeout_on_exit": 0}

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_post("/api/v3/order", self._post_order)
        router.add_get("/api/v3/order", self._get_order)
        router.add_delete("/api/v3/order", self._delete_order)
        router.add_get("/api/v3/account", self._account)

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

    # ----- signed endpoints -----

    async def _account(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        locked = self.wallet.locked
        assets = list(self.balances) + [a for a in locked if a not in self.balances]
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
                    {
                        "asset": asset,
                        "free": fmt_num(self.balances.get(asset, 0.0)),
                        "locked": fmt_num(locked.get(asset, 0.0)),
                    }
                    for asset in assets
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
        if fault == "garbled_after":  # a 200 whose body was cut short (a proxy, a broken connection)
            return web.Response(
                text='{"symbol":"' + order.symbol + '","orderId":', content_type="application/json"
            )
        if fault == "empty_after":
            return json_response({})
        if fault == "not_json_after":
            return web.Response(text="<html><body>OK</body></html>", content_type="text/html")
        return json_response(self._order_response(order, fills=True))

    def _create(self, params: dict[str, str]) -> Order:
        listing = self._listing(params.get("symbol"))
        self._apply_price_move(listing)
        if listing.status != "TRADING":
            raise ApiError(400, -1013, "Market is closed.")
        order_type = params.get("type")
        if order_type not in ("MARKET", "LIMIT", *_STOP_TYPES):
            raise ApiError(400, -1116, "Invalid orderType.")
        side = params.get("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'side'.")
        existing = self._by_client_id.get(params.get("newClientOrderId") or "")
        if existing is not None and existing.open:
            raise ApiError(400, -2010, "Duplicate order sent.")
        if order_type == "LIMIT":
            return self._create_limit(params, listing, side)
        if order_type in _STOP_TYPES:
            return self._create_stop(params, listing, side)
        qty, quote_qty = self._fill_amounts(params, listing.price)
        if quote_qty < MIN_NOTIONAL:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        self._check_funds(listing, side, qty, quote_qty)
        order = self._new_order(listing, side, qty, quote_qty, params.get("newClientOrderId"))
        order.orig_quote_qty = float(params.get("quoteOrderQty", 0) or 0)
        self._settle(listing, order)
        self._book(order, self._order_response(order, fills=False))
        return order

    def _create_limit(self, params: dict[str, str], listing: Listing, side: str) -> Order:
        """A LIMIT order, checked in the order Binance reports problems, filled as `limit_fill` says."""
        if "quoteOrderQty" in params:
            raise ApiError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        tif = self._time_in_force(params)
        if tif == "GTC":  # not Binance's answer: this fake has no order book for a resting order
            raise ApiError(400, -1, "FakeBinance fills LIMIT orders with timeInForce IOC or FOK only")
        qty = self._decimal_param(params, "quantity")
        price = self._decimal_param(params, "price")
        self._check_filters(listing, qty, [price], notional=price * qty)
        self._check_funds(listing, side, float(qty), float(price * qty))
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
        self._settle(listing, order)
        self._book(order, self._order_response(order, fills=False))
        return order

    def _create_stop(self, params: dict[str, str], listing: Listing, side: str) -> Order:
        """A STOP_LOSS (market once triggered) or STOP_LOSS_LIMIT (GTC limit once triggered) sell,
        checked as Binance checks it, resting (status NEW) with its coins locked."""
        limit = params["type"] == "STOP_LOSS_LIMIT"
        if side != "SELL":  # not Binance's answer: this fake triggers sell stops only
            raise ApiError(400, -1, "FakeBinance takes STOP_LOSS and STOP_LOSS_LIMIT sells only")
        if "quoteOrderQty" in params:
            raise ApiError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        if limit and self._time_in_force(params) != "GTC":
            raise ApiError(400, -1, "FakeBinance rests STOP_LOSS_LIMIT orders with timeInForce GTC only")
        if not limit and "timeInForce" in params:
            raise ApiError(400, -1114, "TimeInForce parameter sent when not required.")
        if not limit and "price" in params:
            raise ApiError(400, -1106, "Parameter 'price' sent when not required.")
        qty = self._decimal_param(params, "quantity")
        stop = self._decimal_param(params, "stopPrice")
        price = self._decimal_param(params, "price") if limit else None
        # the notional of a stop-limit is its limit's; a stop at market is checked at its stop price
        notional = (stop if price is None else price) * qty
        self._check_filters(listing, qty, [stop] if price is None else [stop, price], notional=notional)
        if float(stop) >= listing.price:
            raise ApiError(400, -2010, "Order would trigger immediately.")
        self._check_funds(listing, side, float(qty), 0.0)
        order = self._new_order(listing, side, 0.0, 0.0, params.get("newClientOrderId"))
        order.order_type, order.status = params["type"], "NEW"
        order.orig_qty, order.stop_price = float(qty), float(stop)
        order.limit_price = 0.0 if price is None else float(price)
        if self.track_balances:
            self.wallet.lock(listing.base, float(qty))
        self._book(order, self._order_response(order, fills=False))
        return order

    @staticmethod
    def _time_in_force(params: dict[str, str]) -> str:
        tif = params.get("timeInForce")
        if not tif:
            raise ApiError(
                400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
            )
        if tif not in ("GTC", "IOC", "FOK"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
        return tif

    @staticmethod
    def _check_filters(listing: Listing, qty: Decimal, prices: list[Decimal], *, notional: Decimal) -> None:
        """Binance's PRICE_FILTER (every price on the tick), LOT_SIZE and NOTIONAL, in that order."""
        tick, step = Decimal(str(listing.tick_size)), Decimal(str(listing.step_size))
        if any(price <= 0 or price % tick != 0 for price in prices):
            raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        if qty < step or qty % step != 0:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if notional < Decimal(str(MIN_NOTIONAL)):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")

    def _check_funds(self, listing: Listing, side: str, qty: float, quote_qty: float) -> None:
        """With tracked balances, refuse an order the account cannot pay for: a sell's coins, a buy's quote."""
        asset, amount = (listing.base, qty) if side == "SELL" else (listing.quote, quote_qty)
        if self.track_balances and not self.wallet.has(asset, amount):
            raise ApiError(400, -2010, _INSUFFICIENT)

    def _settle(self, listing: Listing, order: Order, *, from_locked: bool = False) -> None:
        """With tracked balances, what `order` filled pays one asset for the other."""
        if not self.track_balances or order.qty <= 0:
            return
        base, quote = (listing.base, order.qty), (listing.quote, order.quote_qty)
        paid, got = (base, quote) if order.side == "SELL" else (quote, base)
        self.wallet.trade(paid=paid, got=got, from_locked=from_locked)

    def _resting_order_changed(self, order: Order, *, filled: bool) -> None:
        if filled:
            self._settle(self._listing(order.symbol), order, from_locked=True)
        self._refresh(order)

    def _refresh(self, order: Order) -> None:
        """Bring what the order lookup answers (and `executed` shows) up to the order's state."""
        order.info.clear()
        order.info.update(self._order_response(order, fills=False))

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
        if order.stop_price > 0:  # a stop works (is on the book) only once triggered
            data["stopPrice"] = fmt_num(order.stop_price)
            data["isWorking"] = order.triggered
            data["workingTime"] = order.time_ms if order.triggered else -1
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
        self._fail_before(self._next_lookup_fault())
        self._listing(params.get("symbol"))
        order = self._find_order(params)
        if order is None:
            raise ApiError(400, -2013, "Order does not exist.")
        return json_response(order.info)

    async def _delete_order(self, request: web.Request) -> web.Response:
        """Cancel an open order by origClientOrderId (or orderId): Binance's answer, status CANCELED, with
        our id as origClientOrderId and the cancel's own (newClientOrderId, else a fresh one) as
        clientOrderId. -2011 "Unknown order sent." when no open order has that id."""
        params = self._authenticate(request, await request.text())
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        listing = self._listing(params.get("symbol"))
        if not params.get("origClientOrderId") and not params.get("orderId"):
            raise ApiError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        order = self._find_order(params)
        if order is None or not order.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        if self.track_balances:
            self.wallet.unlock(listing.base, (order.orig_qty or order.qty) - order.qty)
        self._refresh(order)
        await self._fail_after(fault)
        answer = self._order_response(order, fills=False)
        for key in ("time", "updateTime", "workingTime", "isWorking"):
            answer.pop(key, None)
        answer["origClientOrderId"] = order.client_order_id
        answer["clientOrderId"] = params.get("newClientOrderId") or f"cancel{order.order_id}"
        answer["transactTime"] = self._now_ms()
        return json_response(answer)

    def _find_order(self, params: dict[str, str]) -> Order | None:
        """The order a lookup or cancel names by origClientOrderId (the newest with it) or orderId, on
        the symbol it names; None if there is none."""
        order: Order | None = None
        if "origClientOrderId" in params:
            order = self._by_client_id.get(params["origClientOrderId"])
        elif "orderId" in params and params["orderId"].isdigit():
            order = self._by_id.get(int(params["orderId"]))
        return order if order is not None and order.symbol == params.get("symbol") else None
