"""FakeGate's price-triggered orders (Gate APIv4 "price_orders"), spot and USDT futures, as Gate's docs
describe them and ccxt 4.5.90 sends them: create (POST), list open or finished (GET ?status=), get and
cancel by Gate's id (GET/DELETE .../{order_id}); never by `text`.

Spot: {"market", "trigger": {price, rule ">=" | "<=", expiration}, "put": {type, side, price, amount,
account "normal", time_in_force}}; Gate answers the order with `put.text` "api" (the order's source, not
a client id: a `text` sent anywhere in it is not echoed), and once triggered `fired_order_id` is the spot
order it placed (which carries no client id either). Futures: {"initial": {contract, size, price, tif,
reduce_only, text}, "trigger": {strategy_type, price_type, price, rule 1 (>=) | 2 (<=), expiration}};
`initial.text` is echoed and given to the order it places, `trade_id` is that order.

A price order triggers when `set_price` (or a price move on an order) reaches its trigger: then its order
is placed and filled as a normal order at the new price (spot: status "finish"; futures: "finished" with
finish_as "succeeded"), or refused (status "failed", with Gate's reason). One whose trigger is already
reached when it is placed is refused, as Gate does (AUTO_TRIGGER_PRICE_LESS_LAST / _GREATE_LAST).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from bridge.sim.fake_gate_public import API_PREFIX, MIN_QUOTE_AMOUNT, GateError, num
from bridge.sim.fake_gate_spot import GateSpotApi, Kind
from bridge.sim.fake_venue import Listing, Order, json_response

_SPOT_RULES = {">=": True, "<=": False}  # rule -> triggers on a rise (True) or a fall
_FUTURES_RULES = {1: True, 2: False}


@dataclass
class GatePriceOrder:
    """One price-triggered order. `rises`: it triggers when the price rises to `trigger` (else falls);
    `order` is the request's put (spot) or initial (futures) as Gate echoes it."""

    order_id: int
    kind: Kind
    symbol: str  # the listing's venue id, "BTCUSDT"
    trigger: float
    rises: bool
    created_s: float
    trigger_info: dict[str, Any]
    order: dict[str, Any]
    status: str = "open"  # spot: open, cancelled, finish, failed, expired; futures: open, finished
    finish_as: str = ""  # futures: cancelled, succeeded, failed, expired
    finished_s: float = 0.0
    fired_id: int = 0
    reason: str = ""


class GatePriceOrders(GateSpotApi):
    """GateSpotApi with Gate's price-triggered orders. FakeGate supplies the futures order they place
    (`_create_futures`). `price_orders` holds every one placed, by Gate id."""

    price_orders: dict[int, GatePriceOrder]

    def _price_order_state(self) -> dict[int, GatePriceOrder]:
        store: dict[int, GatePriceOrder] | None = getattr(self, "price_orders", None)
        if store is None:
            store = self.price_orders = {}
        return store

    def open_price_orders(self, symbol: str) -> list[GatePriceOrder]:
        """The price orders resting on a market, oldest first: spot for a venue id or a spot symbol
        ("BTCUSDT", "BTC/USDT"), futures for a perpetual's ("BTC/USDT:USDT")."""
        venue_id, kind = symbol.split(":")[0].replace("/", ""), "futures" if ":" in symbol else "spot"
        return [
            p
            for p in self._price_order_state().values()
            if p.symbol == venue_id and p.kind == kind and p.status == "open"
        ]

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        p = API_PREFIX
        router.add_post(p + "/spot/price_orders", self._post_spot_price_order)
        router.add_get(p + "/spot/price_orders", self._list_spot_price_orders)
        router.add_get(p + "/spot/price_orders/{order_id}", self._get_spot_price_order)
        router.add_delete(p + "/spot/price_orders/{order_id}", self._delete_spot_price_order)
        router.add_post(p + "/futures/{settle}/price_orders", self._post_futures_price_order)
        router.add_get(p + "/futures/{settle}/price_orders", self._list_futures_price_orders)
        router.add_get(p + "/futures/{settle}/price_orders/{order_id}", self._get_futures_price_order)
        router.add_delete(p + "/futures/{settle}/price_orders/{order_id}", self._delete_futures_price_order)

    # ----- what FakeGate supplies -----

    def _create_futures(self, data: dict[str, Any]) -> Order:
        """Place and fill a futures order (FakeGate)."""
        raise NotImplementedError

    # ----- create -----

    async def _post_spot_price_order(self, request: web.Request) -> web.Response:
        return await self._post_price_order(request, "spot")

    async def _post_futures_price_order(self, request: web.Request) -> web.Response:
        self._futures_settle(request)
        return await self._post_price_order(request, "futures")

    async def _post_price_order(self, request: web.Request, kind: Kind) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body, data = await self._body(request)
        flat = {f"{k}.{s}": str(v) for k, d in data.items() if isinstance(d, dict) for s, v in d.items()}
        flat |= {k: str(v) for k, v in data.items() if not isinstance(v, dict)}
        await self._receive_order(flat, received_ns, received_mono_ns)
        self._authenticate(request, body)
        fault = self._next_fault()
        self._fail_before(fault)
        created = self._create_spot_price(data) if kind == "spot" else self._create_futures_price(data)
        self._price_order_state()[created.order_id] = created
        await self._fail_after(fault)
        return json_response({"id": created.order_id}, status=201)

    def _create_spot_price(self, data: dict[str, Any]) -> GatePriceOrder:
        listing = self._pair(data.get("market"))
        trigger, put = _section(data, "trigger"), _section(data, "put")
        rule = trigger.get("rule")
        if rule not in _SPOT_RULES:
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: trigger.rule")
        expiration = trigger.get("expiration")
        if not isinstance(expiration, int) or expiration <= 0:  # required on spot (Gate's docs)
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: trigger.expiration")
        price = float(self._decimal(trigger, "price"))
        if put.get("side") not in ("buy", "sell"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: put.side")
        if put.get("account", "normal") not in ("normal", "unified" if self.unified_account else "normal"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: put.account")
        order_type = put.get("type", "limit")
        amount = self._decimal(put, "amount")
        limit = price if order_type == "market" else float(self._decimal(put, "price"))
        if order_type not in ("market", "limit"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: put.type")
        self._check_grid(listing, amount, Decimal(repr(limit)))
        if float(amount) * limit < MIN_QUOTE_AMOUNT:  # checked when placed (Gate added the check)
            raise GateError(400, "INVALID_PARAM_VALUE", "Your order size is too small. The minimum is 3 USDT")
        self._check_not_reached(listing, price, rises=_SPOT_RULES[rule])
        echoed = {
            "type": order_type,
            "side": put["side"],
            "price": None if put.get("price") is None else str(put["price"]),
            "amount": str(put["amount"]),
            "account": put.get("account", "normal"),
            "time_in_force": put.get("time_in_force", "gtc"),
            "text": "api",  # the order's source: Gate keeps no client id on a spot price order
        }
        return GatePriceOrder(
            next(self._ids),
            "spot",
            listing.symbol,
            price,
            _SPOT_RULES[rule],
            self._now_ms() / 1000,
            {"price": num(price), "rule": rule, "expiration": expiration},
            echoed,
        )

    def _create_futures_price(self, data: dict[str, Any]) -> GatePriceOrder:
        trigger, initial = _section(data, "trigger"), _section(data, "initial")
        listing = self._contract("usdt", initial.get("contract"))
        if self.dual_mode:
            raise GateError(400, "INVALID_PARAM_VALUE", "FakeGate trades single position mode only")
        rule = trigger.get("rule")
        if rule not in _FUTURES_RULES or trigger.get("price_type", 0) not in (0, 1, 2):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: trigger.rule")
        price = float(self._decimal(trigger, "price"))
        size = self._decimal(initial, "size", signed=True)
        if size == 0 or size != size.to_integral_value():
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: initial.size")
        order_price = self._decimal(initial, "price")
        tif = str(initial.get("tif", "gtc"))
        if order_price == 0 and tif != "ioc":  # a market order: ioc only (Gate's docs)
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: initial.tif")
        text = self._text(initial)
        self._check_not_reached(listing, price, rises=_FUTURES_RULES[rule])
        reduce_only = initial.get("reduce_only") is True
        echoed = {
            "contract": self.gate_id(listing),
            "size": int(size),
            "price": num(float(order_price)),
            "tif": tif,
            "text": text or "api",
            "iceberg": 0,
            "is_close": False,
            "is_reduce_only": reduce_only,
            "auto_size": "",
        }
        trigger_info = {
            "strategy_type": 0,
            "price_type": trigger.get("price_type", 0),
            "price": num(price),
            "rule": rule,
            "expiration": trigger.get("expiration", 0),
        }
        return GatePriceOrder(
            next(self._ids),
            "futures",
            listing.symbol,
            price,
            _FUTURES_RULES[rule],
            self._now_ms() / 1000,
            trigger_info,
            echoed,
        )

    def _check_not_reached(self, listing: Listing, price: float, *, rises: bool) -> None:
        """Gate refuses a trigger the last price has already reached."""
        if rises and price <= listing.price:
            raise GateError(
                400, "AUTO_TRIGGER_PRICE_GREATE_LAST", "invalid argument: Trigger.Price must > last_price"
            )
        if not rises and price >= listing.price:
            raise GateError(
                400, "AUTO_TRIGGER_PRICE_LESS_LAST", "invalid argument: Trigger.Price must < last_price"
            )

    # ----- look up and cancel -----

    async def _list_spot_price_orders(self, request: web.Request) -> web.Response:
        return self._list_price_orders(request, "spot", request.query.get("market"))

    async def _list_futures_price_orders(self, request: web.Request) -> web.Response:
        self._futures_settle(request)
        return self._list_price_orders(request, "futures", request.query.get("contract"))

    def _list_price_orders(self, request: web.Request, kind: Kind, market: str | None) -> web.Response:
        """GET .../price_orders?status=open|finished (&market= or &contract=, &limit=): newest first."""
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        status = request.query.get("status")
        if status not in ("open", "finished"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: status")
        symbol = None
        if market:
            symbol = (self._pair(market) if kind == "spot" else self._contract("usdt", market)).symbol
        limit = int(request.query.get("limit", "100") or 100)
        found = [
            p
            for p in self._price_order_state().values()
            if p.kind == kind
            and (symbol is None or p.symbol == symbol)
            and (p.status == "open") == (status == "open")
        ]
        found.sort(key=lambda p: -p.order_id)
        return json_response([self._price_info(p) for p in found[:limit]])

    async def _get_spot_price_order(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        return json_response(self._price_info(self._price_order(request, "spot")))

    async def _get_futures_price_order(self, request: web.Request) -> web.Response:
        self._futures_settle(request)
        self._authenticate(request, "")
        self._fail_before(self._next_lookup_fault())
        return json_response(self._price_info(self._price_order(request, "futures")))

    async def _delete_spot_price_order(self, request: web.Request) -> web.Response:
        return await self._cancel_price_order(request, "spot")

    async def _delete_futures_price_order(self, request: web.Request) -> web.Response:
        self._futures_settle(request)
        return await self._cancel_price_order(request, "futures")

    async def _cancel_price_order(self, request: web.Request, kind: Kind) -> web.Response:
        self._authenticate(request, "")
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        found = self._price_order(request, kind)
        if found.status != "open":
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        self._finish(found, "cancelled")
        await self._fail_after(fault)
        return json_response(self._price_info(found))

    def _price_order(self, request: web.Request, kind: Kind) -> GatePriceOrder:
        """The price order a path names, by Gate's id only (a `text` is never an id here)."""
        ref = request.match_info["order_id"]
        found = self._price_order_state().get(int(ref)) if ref.isdigit() else None
        if found is None or found.kind != kind:
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        return found

    @staticmethod
    def _futures_settle(request: web.Request) -> None:
        if request.match_info.get("settle") != "usdt":
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: settle")

    def _finish(self, found: GatePriceOrder, outcome: str) -> None:
        """End a price order as `outcome`: cancelled, succeeded (it placed its order), failed."""
        found.finished_s = self._now_ms() / 1000
        if found.kind == "spot":
            found.status = {"succeeded": "finish"}.get(outcome, outcome)
        else:
            found.status, found.finish_as = "finished", outcome

    def _price_info(self, found: GatePriceOrder) -> dict[str, Any]:
        """The price order as Gate's endpoints answer it."""
        if found.kind == "spot":
            return {
                "trigger": dict(found.trigger_info),
                "put": dict(found.order),
                "id": found.order_id,
                "user": 10001,
                "market": self.gate_id(self._listings[found.symbol]),
                "ctime": int(found.created_s),
                "ftime": int(found.finished_s),
                "fired_order_id": found.fired_id,
                "status": found.status,
                "reason": found.reason,
            }
        info: dict[str, Any] = {
            "initial": dict(found.order),
            "trigger": dict(found.trigger_info),
            "id": found.order_id,
            "id_string": str(found.order_id),
            "user": 10001,
            "create_time": found.created_s,
            "finish_time": found.finished_s or found.created_s,
            "trade_id": found.fired_id,
            "status": found.status,
            "reason": found.reason,
            "is_stop_order": False,
            "stop_trigger": {"rule": 0, "trigger_price": "", "order_price": ""},
            "me_order_id": found.fired_id,
            "order_type": "",
            "in_dual_mode": False,
        }
        if found.finish_as:  # absent while it rests
            info["finish_as"] = found.finish_as
        return info

    # ----- triggering -----

    def _price_changed(self, listing: Listing) -> None:
        super()._price_changed(listing)
        resting = [p for p in self._price_order_state().values() if p.symbol == listing.symbol]
        for found in (p for p in resting if p.status == "open"):
            reached = listing.price >= found.trigger if found.rises else listing.price <= found.trigger
            if reached:
                self._fire(found, listing)

    def _fire(self, found: GatePriceOrder, listing: Listing) -> None:
        """The trigger is reached: place its order (filled at the price now), or fail with Gate's reason."""
        put = found.order
        try:
            if found.kind == "spot":
                data: dict[str, Any] = {
                    "currency_pair": self.gate_id(listing),
                    "type": put["type"],
                    "side": put["side"],
                    "amount": put["amount"],
                    "time_in_force": "ioc",
                    "account": "spot",
                }
                if put["type"] == "limit":
                    data["price"] = put["price"]
                placed = self._create_spot(data)
            else:
                data = {
                    "contract": put["contract"],
                    "size": put["size"],
                    "price": put["price"],
                    "tif": "ioc",
                    "reduce_only": put["is_reduce_only"],
                    "text": put["text"] if put["text"].startswith("t-") else None,
                }
                placed = self._create_futures(data)
        except GateError as exc:
            found.reason = exc.msg
            self._finish(found, "failed")
            return
        found.fired_id = placed.order_id
        self._finish(found, "succeeded")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        raise GateError(400, "MISSING_REQUIRED_PARAM", f"Missing required parameter: {name}")
    return section
