"""FakeBybit: a local aiohttp server speaking enough of Bybit's v5 REST API (a unified trading account,
spot and USDT perpetuals) for real ccxt code. Requests are signed as Bybit checks them (HMAC-SHA256 of
timestamp + key + recvWindow + query or body, in X-BAPI-* headers; retCode 10003/10004/10002 for a bad
key, signature or timestamp), and errors come back in Bybit's envelope with its retCodes.

Market orders fill whole at the listing's price; Limit IOC/FOK fill what `limit_fill` allows and the
rest is cancelled (spot: "PartiallyFilledCanceled" when part filled). An order with a triggerPrice
rests ("Untriggered") until `set_price` crosses it in its triggerDirection, then fills whole at that
price. The create and cancel answers carry only orderId and orderLinkId, as Bybit's do; the order's
state is read with GET /v5/order/realtime (open orders, and by id the 500 most recent closed ones until
`restart_service()`) or /v5/order/history (closed orders; fully cancelled unfilled ones only for 24 h).
Perpetuals keep one position per symbol (one-way mode, or two with `hedge_mode`), leverage per symbol
and the account's margin mode. The public endpoints are in fake_bybit_public.py, the order checks in
fake_bybit_orders.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import orjson
from aiohttp import web

from bridge.sim.fake_bybit_account import DEFAULT_LEVERAGE, BybitAccountApi
from bridge.sim.fake_bybit_orders import BybitOrder, OrderTerms, order_entry, params_error
from bridge.sim.fake_venue import (
    DEFAULT_MARKETS,
    MIN_NOTIONAL,
    ApiError,
    FaultKind,
    Listing,
    Order,
    fill_amounts,
    limit_fill,
)

__all__ = ["DEFAULT_API_KEY", "DEFAULT_LEVERAGE", "DEFAULT_PERPS", "DEFAULT_SECRET", "FakeBybit"]

DEFAULT_API_KEY = "fake-bybit-key"
DEFAULT_SECRET = "fake-bybit-secret"  # noqa: S105 - the fake's own test credential
DEFAULT_PERPS: tuple[tuple[str, str, float], ...] = (("BTC", "USDT", 60_000.0), ("ETH", "USDT", 3_000.0))
RECENT_CLOSED = 500  # closed orders /v5/order/realtime still finds by id, per account and category
DAY_MS, WEEK_MS = 86_400_000, 7 * 86_400_000
_NOT_FOUND = {"spot": (200, 170213, "Order does not exist."), "linear": (200, 110001, "Order does not exist")}
_AFTER_CREATED = ("server_error_after", "timeout_after", "garbled_after", "empty_after", "not_json_after")


class FakeBybit(BybitAccountApi):
    """`async with FakeBybit() as fake:` then deep-merge `fake.ccxt_config()` into ccxt's bybit config.

    `balances` (the unified wallet, per coin) is what tests set. With `track_balances` spot orders need
    and move it (a resting spot stop locks its coins); perpetual orders always need margin (notional /
    leverage) from its USDT. `hedge_mode` puts perpetuals in two-way mode (orders without positionIdx
    1/2 are refused, as on Bybit); `fee_rate` charges a taker fee in the coin received (perpetuals:
    USDT). `orders` records each create request's fields as strings, `order_bodies` its JSON body."""

    _LINEAR_FAULTS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]] = {
        "insufficient_balance": (200, 110007, "ab not enough for new order"),
        "min_notional": (200, 110094, "Order does not meet minimum order value 5USDT"),
    }

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        markets: Iterable[tuple[str, str, float]] = DEFAULT_MARKETS,
        perps: Iterable[tuple[str, str, float]] = DEFAULT_PERPS,
        host: str = "127.0.0.1",
        port: int = 0,
        track_balances: bool = False,
    ) -> None:
        self.fee_rate = 0.0
        self.order_bodies: list[Any] = []
        self._forgotten: set[int] = set()  # closed orders realtime no longer lists (restart_service)
        super().__init__(
            api_key=api_key,
            secret=secret,
            markets=markets,
            perps=perps,
            host=host,
            port=port,
            track_balances=track_balances,
        )

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_post("/v5/order/create", self._post_order)
        router.add_post("/v5/order/cancel", self._cancel)
        router.add_get("/v5/order/realtime", self._realtime)
        router.add_get("/v5/order/history", self._history)

    # ----- helpers for tests -----

    def set_price(self, symbol: str, price: float) -> None:
        """Set a price by venue id or unified symbol; "BTC/USDT:USDT" (with a settle coin) is the
        perpetual. Resting orders whose trigger the price crosses fill whole at it."""
        if ":" in symbol:
            listing = self._perp_listing(symbol)
            listing.price = price
            self._price_changed(listing)
        else:
            super().set_price(symbol, price)

    def open_orders(self, symbol: str) -> list[Order]:
        """Orders resting on a market, oldest first ("BTC/USDT:USDT" names the perpetual)."""
        return list(self._resting(symbol))

    def _resting(self, symbol: str) -> list[BybitOrder]:
        category = "linear" if ":" in symbol else "spot"
        venue_id = symbol.split(":")[0].replace("/", "")
        return [o for o in self._orders() if o.category == category and o.symbol == venue_id and o.open]

    def restart_service(self) -> None:
        """What a Bybit release does to /v5/order/realtime: closed orders are no longer listed there
        (only in /v5/order/history)."""
        self._forgotten.update(o.order_id for o in self._orders() if not o.open)

    def age_orders(self, ms: int) -> None:
        """Move every order's creation and update time `ms` into the past (for the history windows)."""
        for order in self._orders():
            order.time_ms -= ms
            order.updated_ms = (order.updated_ms or order.time_ms + ms) - ms

    # ----- orders -----

    def _orders(self) -> list[BybitOrder]:
        return [o for o in self._by_id.values() if isinstance(o, BybitOrder)]

    async def _post_order(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        text = await request.text()
        body: Any = orjson.loads(text) if text.startswith("{") else {}
        self.order_bodies.append(body)
        flat = {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in body.items()}
        await self._receive_order(flat, received_ns, received_mono_ns)
        self._authenticate(request, text)
        if self.read_only_key:
            raise ApiError(200, 10005, "Permission denied, please check your API key permissions.")
        fault = self._next_fault()
        self._refuse(fault, body.get("category"))
        order = self._create(OrderTerms.read(body))
        await self._fail_after(fault)
        if fault == "garbled_after":
            return web.Response(text='{"retCode":0,"result":{"orderId":', content_type="application/json")
        if fault == "empty_after":
            return self._ok({})
        if fault == "not_json_after":
            return web.Response(text="<html><body>OK</body></html>", content_type="text/html")
        return self._ok({"orderId": str(order.order_id), "orderLinkId": order.client_order_id})

    def _refuse(self, fault: FaultKind | None, category: Any) -> None:
        """A fault that strikes before the order exists, answered with Bybit's code for the category."""
        if fault is None or fault in _AFTER_CREATED:
            return
        if fault == "server_error_before":
            raise web.HTTPBadGateway(text="502 Bad Gateway")  # a gateway's page: never reached Bybit
        error = self._LINEAR_FAULTS.get(fault) if category == "linear" else None
        status, code, msg = error or self._FAULT_ERRORS[fault]
        headers = None
        if fault == "rate_limited":
            reset = self._now_ms() + self.retry_after_s * 1000
            headers = {
                "X-Bapi-Limit": "10",
                "X-Bapi-Limit-Status": "0",
                "X-Bapi-Limit-Reset-Timestamp": str(reset),
            }
        raise ApiError(status, code, msg, headers=headers)

    def _create(self, terms: OrderTerms) -> BybitOrder:
        listing = self._market(terms.category, terms.symbol)
        spot = terms.category == "spot"
        if spot:
            self._apply_price_move(listing)
        if listing.status != "TRADING":
            raise (
                ApiError(200, 170210, "New order rejected.")
                if spot
                else params_error("symbol is not trading")
            )
        if terms.order_link_id and any(
            o.client_order_id == terms.order_link_id and o.category == terms.category for o in self._orders()
        ):  # Bybit: an orderLinkId is unique, whatever became of the first order
            raise (
                ApiError(200, 170141, "Duplicate clientOrderId.")
                if spot
                else ApiError(200, 110072, "OrderLinkedID is duplicate")
            )
        if not spot and (terms.position_idx == 0) == self.hedge_mode:
            raise params_error("position idx not match position mode")
        terms.check_grid(listing)
        order = BybitOrder(
            next(self._ids), terms.order_link_id, listing.symbol, terms.side, 0.0, 0.0, listing.price, self._now_ms(),
            order_type=terms.order_type, time_in_force=terms.time_in_force, category=terms.category,
            market_unit=terms.market_unit if spot and terms.order_type == "Market" else "",
            reduce_only=terms.reduce_only and not spot, position_idx=terms.position_idx,
        )  # fmt: skip
        order.limit_price = float(terms.price or 0)
        if not order.client_order_id:
            order.client_order_id = f"fake{order.order_id}"
        qty = float(terms.qty)
        if not spot and order.reduce_only:
            qty = self._reducible(listing.symbol, terms.buy, qty)
        given = terms.price if terms.price is not None else terms.trigger_price
        reference = listing.price if given is None else float(given)
        notional = qty if terms.qty_in_quote() else qty * reference
        if notional < MIN_NOTIONAL:
            raise ApiError(*(self._FAULT_ERRORS if spot else self._LINEAR_FAULTS)["min_notional"])
        self._check_funds(listing, order, qty, notional)
        order.orig_qty = qty if not terms.qty_in_quote() else None
        order.orig_quote_qty = qty if terms.qty_in_quote() else 0.0
        if terms.trigger_price is not None:
            self._rest(listing, order, terms, qty)
        else:
            self._fill_now(listing, order, terms, qty)
        self._book(order, {})
        return order

    def _reducible(self, symbol: str, buy: bool, qty: float) -> float:
        """A reduce-only order's qty: at most the position it reduces; 110017 when there is none."""
        size = self.positions.get(symbol, (0.0, 0.0))[0]
        if size == 0 or (size > 0) == buy:
            raise ApiError(200, 110017, "current position is zero, cannot fix reduce-only order qty")
        return min(qty, abs(size))

    def _check_funds(self, listing: Listing, order: BybitOrder, qty: float, notional: float) -> None:
        if order.category == "linear":
            if order.reduce_only:
                return
            margin = notional / self.leverage.get(listing.symbol, DEFAULT_LEVERAGE)
            if margin > self.balances.get("USDT", 0.0) - self._position_margin():
                raise ApiError(*self._LINEAR_FAULTS["insufficient_balance"])
            return
        buy = order.side == "Buy"
        asset, amount = (
            (listing.quote, notional)
            if buy
            else (listing.base, qty if order.market_unit != "quoteCoin" else qty / listing.price)
        )
        if self.track_balances and not self.wallet.has(asset, amount):
            raise ApiError(*self._FAULT_ERRORS["insufficient_balance"])

    def _rest(self, listing: Listing, order: BybitOrder, terms: OrderTerms, qty: float) -> None:
        """A conditional order: it rests until the price crosses its trigger (see _price_changed)."""
        spot = order.category == "spot"
        if spot and terms.order_filter not in ("tpslOrder", "StopOrder"):
            raise ApiError(200, 170202, "Invalid orderFilter parameter.")
        direction = terms.trigger_direction or (1 if float(terms.trigger_price or 0) > listing.price else 2)
        if direction not in (1, 2):
            raise params_error("TriggerDirection invalid")
        stop = float(terms.trigger_price or 0)
        if direction == 2 and stop >= listing.price:
            raise ApiError(
                200, 110093, f"expect Falling, but trigger_price[{stop}] >= current[{listing.price}]"
            )
        if direction == 1 and stop <= listing.price:
            raise ApiError(
                200, 110092, f"expect Rising, but trigger_price[{stop}] <= current[{listing.price}]"
            )
        order.status, order.stop_price, order.trigger_direction = "Untriggered", stop, direction
        order.order_filter = terms.order_filter
        if spot and self.track_balances and terms.order_filter == "tpslOrder" and order.side == "Sell":
            self.wallet.lock(listing.base, qty)  # a spot TP/SL order holds its coins before it triggers

    def _fill_now(self, listing: Listing, order: BybitOrder, terms: OrderTerms, qty: float) -> None:
        if terms.order_type == "Market":
            if terms.qty_in_quote():
                filled, quote = fill_amounts(listing.price, quote_qty=qty)
            else:
                filled, quote = fill_amounts(listing.price, qty=qty)
            order.status = "Filled"
        else:
            if terms.time_in_force not in ("IOC", "FOK"):  # not Bybit's answer: this fake keeps no book
                raise params_error("FakeBybit fills Limit orders with timeInForce IOC or FOK only")
            filled, quote = limit_fill(
                listing.price, buy=terms.buy, limit=float(terms.price or 0), qty=qty, depth=listing.depth,
                all_or_none=terms.time_in_force == "FOK",
            )  # fmt: skip
            partly = 0 < filled < qty
            order.status = (
                "Filled"
                if filled >= qty
                else ("PartiallyFilledCanceled" if partly and order.category == "spot" else "Cancelled")
            )
        order.qty, order.quote_qty = filled, quote
        self._settle(listing, order)

    def _settle(self, listing: Listing, order: BybitOrder, *, from_locked: bool = False) -> None:
        """What a fill moves: spot balances (with track_balances), a perpetual's position; and its fee."""
        order.updated_ms = self._now_ms()
        if order.qty <= 0:
            return
        buy = order.side == "Buy"
        if order.category == "linear":
            order.fee, order.fee_coin = round(order.quote_qty * self.fee_rate, 8), "USDT"
            self._move_position(listing.symbol, order.qty if buy else -order.qty, order.quote_qty / order.qty)
            self.balances["USDT"] = round(self.balances.get("USDT", 0.0) - order.fee, 8)
            return
        got_coin, got = (listing.base, order.qty) if buy else (listing.quote, order.quote_qty)
        order.fee, order.fee_coin = round(got * self.fee_rate, 8), got_coin
        if self.track_balances:
            paid = (listing.quote, order.quote_qty) if buy else (listing.base, order.qty)
            self.wallet.trade(paid=paid, got=(got_coin, got - order.fee), from_locked=from_locked)

    def _price_changed(self, listing: Listing) -> None:
        """Resting conditional orders on this listing whose trigger the price crossed fill whole at it."""
        category = "linear" if self._perps.get(listing.symbol) is listing else "spot"
        for order in self._resting(
            listing.symbol if category == "spot" else f"{listing.base}/{listing.quote}:{listing.quote}"
        ):
            crossed = (
                listing.price >= order.stop_price
                if order.trigger_direction == 1
                else listing.price <= order.stop_price
            )
            if order.status != "Untriggered" or not crossed:
                continue
            qty = order.orig_qty or 0.0
            if order.reduce_only:
                size = self.positions.get(listing.symbol, (0.0, 0.0))[0]
                qty = min(qty, abs(size)) if size and (size > 0) != (order.side == "Buy") else 0.0
            if qty <= 0:  # nothing left to reduce: Bybit deactivates it
                order.status, order.updated_ms = "Deactivated", self._now_ms()
                continue
            order.qty, order.quote_qty = fill_amounts(listing.price, qty=qty)
            order.price, order.status = listing.price, "Filled"
            self._settle(
                listing, order, from_locked=order.order_filter == "tpslOrder" and self.track_balances
            )

    async def _cancel(self, request: web.Request) -> web.Response:
        """POST /v5/order/cancel by orderId or orderLinkId; spot looks among the orderFilter's kind only
        (Order by default). 170213 (spot) / 110001 (linear) when no open order matches."""
        body = await self._signed_body(request)
        fault = self._next_cancel_fault()
        self._refuse(fault, body.get("category"))
        category = body.get("category")
        listing = self._market(category, body.get("symbol"))
        kind = body.get("orderFilter", "Order") if category == "spot" else None
        order = self._find(category, listing.symbol, body.get("orderId"), body.get("orderLinkId"))
        if order is None or not order.open or (kind is not None and _kind(order) != kind):
            raise ApiError(*_NOT_FOUND["spot" if category == "spot" else "linear"])
        order.status, order.updated_ms = (
            "Cancelled" if order.qty == 0 else "PartiallyFilledCanceled",
            self._now_ms(),
        )
        if self.track_balances and order.order_filter == "tpslOrder" and order.side == "Sell":
            self.wallet.unlock(listing.base, order.orig_qty or 0.0)
        await self._fail_after(fault)
        return self._ok({"orderId": str(order.order_id), "orderLinkId": order.client_order_id})

    def _find(self, category: Any, symbol: str, order_id: Any, link_id: Any) -> BybitOrder | None:
        for order in self._orders():
            same = order.category == category and order.symbol == symbol
            if same and (str(order.order_id) == order_id if order_id else order.client_order_id == link_id):
                return order
        return None

    async def _realtime(self, request: web.Request) -> web.Response:
        """GET /v5/order/realtime. By orderId or orderLinkId: that order if open, or closed and among the
        500 most recent closed ones (not forgotten by a restart). Otherwise open orders (openOnly=0) or
        those recent closed ones (openOnly=1). Every order kind unless orderFilter names one."""
        query = self._signed_query(request)
        category, orders = self._queried(query)
        recent = sorted(
            (o for o in orders if not o.open and o.order_id not in self._forgotten),
            key=lambda o: -o.updated_ms,
        )
        recent_ids = {o.order_id for o in recent[:RECENT_CLOSED]}
        if query.get("orderId") or query.get("orderLinkId"):
            found = [o for o in orders if o.open or o.order_id in recent_ids]
        elif query.get("openOnly", "0") == "0":
            found = [o for o in orders if o.open]
        else:
            found = [o for o in orders if o.order_id in recent_ids]
        return self._order_list(category, found, query)

    async def _history(self, request: web.Request) -> web.Response:
        """GET /v5/order/history: closed orders, within startTime..endTime (at most 7 days apart; the
        last 7 days by default; ids take priority over the range); fully cancelled or rejected orders
        that filled nothing only for 24 h."""
        query = self._signed_query(request)
        category, orders = self._queried(query)
        now = self._now_ms()
        try:
            end = int(query.get("endTime") or 0) or None
            start = int(query.get("startTime") or 0) or None
        except ValueError:
            raise params_error("startTime or endTime invalid") from None
        end = end or (start + WEEK_MS if start else now)
        start = start or end - WEEK_MS
        if end - start > WEEK_MS:
            raise params_error("The time range between startTime and endTime cannot exceed 7 days")
        by_id = bool(query.get("orderId") or query.get("orderLinkId"))
        found = [
            o for o in orders
            if not o.open
            and (o.filled_any or now - o.updated_ms <= DAY_MS)
            and (by_id or start <= o.time_ms <= end)
            and query.get("orderStatus") in (None, o.status)
        ]  # fmt: skip
        return self._order_list(category, found, query)

    def _queried(self, query: Mapping[str, str]) -> tuple[str, list[BybitOrder]]:
        """The orders an order query's filters select (category, symbol, orderId > orderLinkId, kind)."""
        category = query.get("category")
        if category not in ("spot", "linear"):
            raise ApiError(200, 10001, "Illegal category")
        symbol = query.get("symbol")
        if category == "linear" and not (symbol or query.get("settleCoin") or query.get("baseCoin")):
            raise params_error("symbol, baseCoin or settleCoin is required for linear")
        orders = [o for o in self._orders() if o.category == category and (not symbol or o.symbol == symbol)]
        if query.get("orderId"):
            orders = [o for o in orders if str(o.order_id) == query["orderId"]]
        elif query.get("orderLinkId"):
            orders = [o for o in orders if o.client_order_id == query["orderLinkId"]]
        kind = query.get("orderFilter")
        return category, [o for o in orders if kind is None or _kind(o) == kind]

    def _order_list(self, category: str, orders: list[BybitOrder], query: Mapping[str, str]) -> web.Response:
        limit = int(query.get("limit") or 20)
        newest = sorted(orders, key=lambda o: -o.time_ms)[: max(1, min(limit, 50))]
        return self._ok(
            {"category": category, "list": [order_entry(o) for o in newest], "nextPageCursor": ""}
        )


def _kind(order: BybitOrder) -> str:
    """The orderFilter an order answers to: a spot TP/SL or conditional order's own, else Order."""
    return order.order_filter if order.stop_price else "Order"
