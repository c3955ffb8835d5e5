"""FakeBybit's orders: what POST /v5/order/create may carry and how it is checked (`OrderTerms.read`, with
Bybit's v5 retCodes), the order as stored (`BybitOrder`) and as the order queries list it
(`order_entry`). Pure: no server state. Written from Bybit's v5 docs (order/create-order,
order/open-order, order/order-list, error codes) and the requests ccxt 4.5.90 builds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.sim.fake_venue import ApiError, Listing, Order, fmt_num

# Every field ccxt's bybit create_order_request can put in a spot or linear order, beyond which
# this fake is stricter than Bybit (which ignores unknown fields): a field that leaks into the
# request (a unified param ccxt forgot to translate, such as clientOrderId) is refused, not ignored.
ORDER_FIELDS: dict[str, type] = {
    "category": str,
    "symbol": str,
    "side": str,
    "orderType": str,
    "qty": str,
    "price": str,
    "timeInForce": str,
    "orderLinkId": str,
    "marketUnit": str,
    "reduceOnly": bool,
    "closeOnTrigger": bool,
    "triggerPrice": str,
    "triggerDirection": int,
    "triggerBy": str,
    "orderFilter": str,
    "positionIdx": int,
    "isLeverage": int,
}
REQUIRED_FIELDS = ("category", "symbol", "side", "orderType", "qty")
ORDER_LINK_ID = re.compile(r"[A-Za-z0-9_-]{1,36}")  # orderLinkId: at most 36 of these
OPEN = frozenset({"New", "PartiallyFilled", "Untriggered", "Triggered"})


def params_error(what: str) -> ApiError:
    return ApiError(200, 10001, f"params error: {what}")


@dataclass
class BybitOrder(Order):
    """An order as FakeBybit keeps it: Order's fields with Bybit's statuses ("New", "Filled",
    "Cancelled", "PartiallyFilledCanceled", "Untriggered"...) and what Bybit adds."""

    category: str = "spot"
    market_unit: str = ""  # spot market orders: "baseCoin" or "quoteCoin" as the request said
    order_filter: str = "Order"  # spot: Order, tpslOrder or StopOrder; linear: Order or StopOrder
    trigger_direction: int = 0  # 1: triggers when the price rises to stop_price, 2: falls to it
    reduce_only: bool = False
    position_idx: int = 0
    fee: float = 0.0
    fee_coin: str = ""
    updated_ms: int = 0

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def filled_any(self) -> bool:
        return self.qty > 0


@dataclass(frozen=True)
class OrderTerms:
    """A create request, read and checked field by field as Bybit checks it."""

    category: str
    symbol: str
    side: str  # "Buy" or "Sell"
    order_type: str  # "Market" or "Limit"
    qty: Decimal
    price: Decimal | None
    time_in_force: str
    order_link_id: str
    market_unit: str
    reduce_only: bool
    trigger_price: Decimal | None
    trigger_direction: int
    order_filter: str
    position_idx: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, body: Any) -> OrderTerms:
        """Check the JSON body's fields (known, of Bybit's types, the required ones present) and read
        them; 10001 "params error" for the first problem."""
        if not isinstance(body, dict):
            raise ApiError(200, 10001, "request body is not a JSON object")
        for name, value in body.items():
            wanted = ORDER_FIELDS.get(name)
            if wanted is None:
                raise params_error(f"unknown parameter {name}")
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise ApiError(200, 10001, f"request params type error: {name}")
        for name in REQUIRED_FIELDS:
            if name not in body:
                raise params_error(f"missing {name}")
        if body["side"] not in ("Buy", "Sell"):
            raise params_error("side invalid")
        if body["orderType"] not in ("Market", "Limit"):
            raise params_error("orderType invalid")
        link_id = body.get("orderLinkId", "")
        if link_id and not ORDER_LINK_ID.fullmatch(link_id):
            raise params_error("orderLinkId invalid")
        price = _decimal(body, "price")
        if body["orderType"] == "Limit" and price is None:
            raise params_error("price is required for a Limit order")
        trigger = _decimal(body, "triggerPrice")
        return cls(
            category=body["category"],
            symbol=body["symbol"],
            side=body["side"],
            order_type=body["orderType"],
            qty=_decimal(body, "qty") or Decimal(0),
            price=price,
            time_in_force=body.get("timeInForce") or ("IOC" if body["orderType"] == "Market" else "GTC"),
            order_link_id=link_id,
            market_unit=body.get("marketUnit", ""),
            reduce_only=body.get("reduceOnly", False),
            trigger_price=trigger,
            trigger_direction=body.get("triggerDirection", 0),
            order_filter=body.get("orderFilter") or ("StopOrder" if trigger is not None else "Order"),
            position_idx=body.get("positionIdx", 0),
        )

    @property
    def buy(self) -> bool:
        return self.side == "Buy"

    def qty_in_quote(self) -> bool:
        """A spot market order's qty in the quote coin: a buy unless marketUnit says baseCoin, a sell only
        with marketUnit quoteCoin (Bybit's defaults)."""
        if self.category != "spot" or self.order_type != "Market":
            return False
        return self.market_unit == "quoteCoin" or (self.buy and self.market_unit != "baseCoin")

    def check_grid(self, listing: Listing) -> None:
        """Quantity on the lot step (unless in quote), prices on the tick, each with Bybit's code."""
        spot = self.category == "spot"
        step, tick = Decimal(str(listing.step_size)), Decimal(str(listing.tick_size))
        if self.qty <= 0:
            raise params_error("qty invalid") if not spot else ApiError(200, 170136, _QTY_LOW)
        if not self.qty_in_quote() and self.qty % step != 0:
            raise (
                ApiError(200, 170137, "Order volume decimal too long.")
                if spot
                else params_error("qty invalid")
            )
        for price in (self.price, self.trigger_price):
            if price is not None and (price <= 0 or price % tick != 0):
                raise (
                    ApiError(200, 170134, "Order price decimal too long.")
                    if spot
                    else params_error("price invalid")
                )


_QTY_LOW = "Order quantity lower than the minimum."


def _decimal(body: dict[str, Any], name: str) -> Decimal | None:
    text = body.get(name)
    if text is None or text == "":
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise params_error(f"{name} invalid") from None
    if not value.is_finite():
        raise params_error(f"{name} invalid")
    return value


def order_entry(order: BybitOrder) -> dict[str, Any]:
    """The order as GET /v5/order/realtime and /v5/order/history list it."""
    orig = order.qty if order.orig_qty is None else order.orig_qty
    leaves = 0.0 if not order.open else max(orig - order.qty, 0.0)
    average = order.quote_qty / order.qty if order.qty > 0 else 0.0
    entry: dict[str, Any] = {
        "orderId": str(order.order_id),
        "orderLinkId": order.client_order_id,
        "blockTradeId": "",
        "symbol": order.symbol,
        "price": fmt_num(order.limit_price) if order.order_type == "Limit" else "0",
        "qty": fmt_num(orig),
        "side": order.side,
        "isLeverage": "0" if order.category == "spot" else "",
        "positionIdx": order.position_idx,
        "orderStatus": order.status,
        "createType": "CreateByUser",
        "cancelType": "CancelByUser" if order.status == "Cancelled" else "UNKNOWN",
        "rejectReason": "EC_NoError",
        "avgPrice": fmt_num(average) if order.qty > 0 else "",
        "leavesQty": fmt_num(leaves),
        "leavesValue": fmt_num(leaves * (order.limit_price or order.price)),
        "cumExecQty": fmt_num(order.qty),
        "cumExecValue": fmt_num(order.quote_qty),
        "cumExecFee": fmt_num(order.fee),
        "cumFeeDetail": {order.fee_coin: fmt_num(order.fee)} if order.fee > 0 else {},
        "timeInForce": order.time_in_force,
        "orderType": order.order_type,
        "stopOrderType": _STOP_ORDER_TYPES.get(order.order_filter, "") if order.stop_price else "",
        "orderIv": "",
        "triggerPrice": fmt_num(order.stop_price) if order.stop_price else "",
        "takeProfit": "",
        "stopLoss": "",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "triggerDirection": order.trigger_direction,
        "triggerBy": "LastPrice" if order.stop_price else "",
        "lastPriceOnCreated": fmt_num(order.price),
        "reduceOnly": order.reduce_only,
        "closeOnTrigger": False,
        "placeType": "",
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "createdTime": str(order.time_ms),
        "updatedTime": str(order.updated_ms or order.time_ms),
    }
    if order.category == "spot":
        entry["marketUnit"] = order.market_unit
    else:
        entry["tpslMode"] = ""  # ccxt reads an order without a market as a contract by this key
    return entry


_STOP_ORDER_TYPES = {"tpslOrder": "tpslOrder", "StopOrder": "Stop", "Order": "Stop"}
