"""FakeGate: a local aiohttp server speaking enough of Gate's APIv4 (spot and USDT perpetual futures) for
real ccxt code. Signed requests are checked as Gate checks them (KEY, Timestamp in seconds, SIGN =
hex HMAC-SHA512 of method, path, query, SHA512 of the body and timestamp), errors come in Gate's
shape (`{"label", "message"}`) with Gate's labels. Spot market orders and limit IOC orders fill at
once at the listing's price (up to its depth for a limit); futures orders (size in contracts, signed)
fill the same way and move the account's position, a reduce-only order only towards zero. An order is
found by its `text` while open and for `text_window_s` after it finished (Gate's window), by id
always, and in the finished-orders list. Public endpoints: fake_gate_public.py; signing, account and
spot orders: fake_gate_spot.py; price-triggered orders (resting stops): fake_gate_price_orders.py; this
module: USDT perpetual futures.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from bridge.sim.fake_gate_price_orders import GatePriceOrders
from bridge.sim.fake_gate_public import API_PREFIX, GateError, num
from bridge.sim.fake_gate_spot import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    TEXT_WINDOW_S,
    TIMESTAMP_WINDOW_S,
    Kind,
)
from bridge.sim.fake_venue import Order, json_response, limit_fill

__all__ = ["DEFAULT_API_KEY", "DEFAULT_SECRET", "TEXT_WINDOW_S", "TIMESTAMP_WINDOW_S", "FakeGate"]


class FakeGate(GatePriceOrders):
    """The fake Gate. `async with FakeGate() as fake:` then deep-merge `fake.ccxt_config()` into ccxt's.
    See GateSpotApi for the account's state (balances, position mode, leverage, positions),
    GatePriceOrders for the resting price-triggered orders."""

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        p = API_PREFIX
        router.add_get(p + "/futures/{settle}/accounts", self._futures_accounts)
        router.add_post(p + "/futures/{settle}/orders", self._post_futures_order)
        router.add_get(p + "/futures/{settle}/orders", self._list_futures_orders)
        router.add_get(p + "/futures/{settle}/orders/{order_id}", self._get_futures_order)
        router.add_delete(p + "/futures/{settle}/orders/{order_id}", self._delete_futures_order)
        router.add_post(p + "/futures/{settle}/positions/{contract}/leverage", self._set_leverage)

    def _order_info(self, order: Order, kind: Kind) -> dict[str, Any]:
        return self._futures_info(order) if kind == "futures" else super()._order_info(order, kind)

    async def _futures_accounts(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        self._settle(request)
        total = num(self.futures_available)
        mode = "dual_long_short" if self.dual_mode else "single"
        return json_response(
            {
                "user": 10001,
                "currency": "USDT",
                "total": total,
                "available": total,
                "unrealised_pnl": "0",
                "position_margin": "0",
                "order_margin": "0",
                "point": "0",
                "bonus": "0",
                "in_dual_mode": self.dual_mode,
                "position_mode": mode,
                "enable_credit": False,
                "history": {},
            }
        )

    @staticmethod
    def _settle(request: web.Request) -> str:
        settle = request.match_info.get("settle", "")
        if settle != "usdt":
            raise GateError(400, "INVALID_PARAM_VALUE", f"invalid argument: settle {settle}")
        return settle

    # ----- futures orders -----

    async def _post_futures_order(self, request: web.Request) -> web.Response:
        received_ns, received_mono_ns = time.time_ns(), time.perf_counter_ns()
        body, data = await self._body(request)
        await self._receive_order({k: str(v) for k, v in data.items()}, received_ns, received_mono_ns)
        self._authenticate(request, body)
        self._settle(request)
        fault = self._next_fault()
        if fault == "insufficient_balance":  # futures say it with their own label
            raise GateError(400, "INSUFFICIENT_AVAILABLE", "Insufficient available balance")
        self._fail_before(fault)
        order = self._create_futures(data)
        await self._fail_after(fault)
        return json_response(order.info, status=201)

    def _create_futures(self, data: dict[str, Any]) -> Order:
        listing = self._contract("usdt", data.get("contract"))
        self._apply_price_move(listing)
        text = self._text(data)
        if self.dual_mode:  # not checked this way by Gate; bridge refuses hedge mode before any order
            raise GateError(400, "INVALID_PARAM_VALUE", "FakeGate trades single position mode only")
        size = self._decimal(data, "size", signed=True)
        if size == 0 or size != size.to_integral_value():
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: size")
        price = self._decimal(data, "price")
        tif = str(data.get("tif", "gtc"))
        market = price == 0
        if market and tif not in ("ioc", "fok"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: tif")
        if not market and tif != "ioc":
            raise GateError(400, "INVALID_PARAM_VALUE", "FakeGate fills limit orders with tif ioc only")
        if not market:
            self._check_grid(listing, Decimal(1), price)
        contract, buy = self.gate_id(listing), size > 0
        contracts = abs(float(size))
        reduce_only = data.get("reduce_only") is True
        held = self.positions.get(contract, 0.0)
        if reduce_only and (held == 0 or (held > 0) == buy):
            fillable = 0.0  # would open or grow a position: Gate finishes it as "reduce_only"
        else:
            fillable = min(contracts, abs(held)) if reduce_only else contracts
        base = fillable * self.contract_size
        if market:
            filled_base, quote_qty = base, round(base * listing.price, 8)
        else:
            filled_base, quote_qty = limit_fill(
                listing.price, buy=buy, limit=float(price), qty=base, depth=listing.depth
            )
        filled = filled_base / self.contract_size
        order = self._new_order(listing, "buy" if buy else "sell", filled, quote_qty, text)
        order.order_type, order.time_in_force = ("market" if market else "limit"), tif
        order.limit_price, order.orig_qty = float(price), contracts
        order.status = (
            "closed" if filled >= contracts else ("reduce_only" if fillable == 0 and reduce_only else "ioc")
        )
        order.info["reduce_only"] = reduce_only
        self.positions[contract] = round(held + (filled if buy else -filled), 8)
        self._store(order, "futures")
        return order

    def _futures_info(self, order: Order) -> dict[str, Any]:
        sign = 1 if order.side == "buy" else -1
        asked = order.orig_qty or 0.0
        finished = self._finished_ms.get(order.order_id)
        reduce_only = bool(order.info.get("reduce_only", False))
        return {
            "id": order.order_id,
            "user": 10001,
            "contract": order.symbol[:-4] + "_USDT",
            "create_time": order.time_ms / 1000,
            "finish_time": None if finished is None else finished / 1000,
            "finish_as": {"closed": "filled", "open": ""}.get(order.status, order.status),
            "status": "open" if order.status == "open" else "finished",
            "size": int(sign * asked),
            "iceberg": 0,
            "price": num(order.limit_price),
            "close": False,
            "is_close": False,
            "reduce_only": reduce_only,
            "is_reduce_only": reduce_only,
            "is_liq": False,
            "tif": order.time_in_force,
            "left": int(sign * (asked - order.qty)),
            "fill_price": num(order.price) if order.qty > 0 else "0",
            "text": order.client_order_id,
            "tkfr": "0.0005",
            "mkfr": "0.0002",
            "refu": 0,
            "auto_size": "",
            "stp_act": "-",
        }

    async def _get_futures_order(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        self._settle(request)
        self._fail_before(self._next_lookup_fault())
        order = self._find(request.match_info["order_id"], "futures", None)
        return json_response(self._refreshed(order).info)

    async def _list_futures_orders(self, request: web.Request) -> web.Response:
        """GET /futures/usdt/orders?contract=&status=open|finished (&limit=)."""
        self._authenticate(request, "")
        self._settle(request)
        self._fail_before(self._next_lookup_fault())
        listing = self._contract("usdt", request.query.get("contract"))
        status = request.query.get("status")
        if status not in ("open", "finished"):
            raise GateError(400, "INVALID_PARAM_VALUE", "invalid argument: status")
        orders = self._listed("futures", listing, status, request.query)
        return json_response([self._refreshed(o).info for o in orders])

    async def _delete_futures_order(self, request: web.Request) -> web.Response:
        self._authenticate(request, "")
        self._settle(request)
        fault = self._next_cancel_fault()
        self._fail_before(fault)
        order = self._find(request.match_info["order_id"], "futures", None)
        if order.status != "open":
            raise GateError(404, "ORDER_NOT_FOUND", "Order not found")
        order.status = "cancelled"
        self._finished_ms[order.order_id] = self._now_ms()
        await self._fail_after(fault)
        return json_response(self._refreshed(order).info)

    async def _set_leverage(self, request: web.Request) -> web.Response:
        """POST .../positions/{contract}/leverage?leverage=N (isolated) or leverage=0 and
        cross_leverage_limit=N (cross): Gate's way to set both leverage and margin mode."""
        self._authenticate(request, "")
        self._settle(request)
        contract = request.match_info["contract"]
        listing = self._contract("usdt", contract)
        leverage = request.query.get("leverage")
        try:
            value = Decimal(leverage or "")
        except InvalidOperation:
            raise GateError(400, "MISSING_REQUIRED_PARAM", "Missing required parameter: leverage") from None
        cross = request.query.get("cross_leverage_limit", "0")
        if value < 0 or value > 100 or (value == 0 and not 1 <= Decimal(cross) <= 100):
            raise GateError(
                400, "LEVERAGE_TOO_HIGH" if value > 100 else "INVALID_PARAM_VALUE", "invalid leverage"
            )
        self.leverage[contract] = {"leverage": num(float(value)), "cross_leverage_limit": cross}
        size = self.positions.get(contract, 0.0)
        return json_response(
            {
                "user": 10001,
                "contract": self.gate_id(listing),
                "size": int(size),
                "leverage": num(float(value)),
                "cross_leverage_limit": cross,
                "leverage_max": "100",
                "mode": "single",
                "margin": "0",
                "entry_price": "0",
                "mark_price": num(listing.price),
                "value": "0",
            }
        )
