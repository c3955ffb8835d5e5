"""Stop-loss sells that rest on the exchange, and cancels by client id, through ccxt's own createOrder and
cancelOrder (Binance spot only for now). What ccxt 4.5.90 (binance.py) does with them, relied on here:

- createOrder(symbol, "market", "sell", amount, None, {"stopLossPrice": p, "clientOrderId": id}) builds a
  STOP_LOSS order (create_order_request: a stop-loss price on a spot "market" order) with stopPrice
  (price_to_precision), quantity (amount_to_precision) and newClientOrderId, sent as POST /api/v3/order;
  type "limit" with a price builds STOP_LOSS_LIMIT with price and timeInForce (GTC, sent explicitly).
  `triggerPrice` would build the same on spot; stopLossPrice says what it is. ccxt itself refuses
  (InvalidOrder) a type missing from the market's info.orderTypes, hence `supported`.
- ccxt passes a spot order's `reduceOnly` through to the request (it drops it only for margin), and
  Binance spot's order endpoint has no such parameter, so spot orders never carry it (see
  OrderRequest.reduce_only); on swap/future markets ccxt sends it as Binance's reduceOnly.
- cancelOrder(None, symbol, {"clientOrderId": id}) sends DELETE /api/v3/order?origClientOrderId=id (signed,
  in the query). Binance answers the order with status CANCELED, executedQty, `origClientOrderId` (ours)
  and a new `clientOrderId` (the cancel's own), which ccxt parses as the order's: ours is put back.
- Binance -2011 CANCEL_REJECTED "Unknown order sent." (ccxt OrderNotFound): no open order has that
  client id (filled, cancelled or expired meanwhile, or never placed); GET /api/v3/order then tells which,
  or -2013 "Order does not exist." (OrderNotFound) when there is none at all.
- A SELL stop whose stopPrice is at or above the last price is refused: -2010 "Order would trigger
  immediately." (ccxt OrderImmediatelyFillable; OrderRejected kind "other").
"""

from __future__ import annotations

import math
from typing import Any

import ccxt.async_support as ccxt_async

from bridge.venues.precision import contract_size, from_contracts, on_grid, to_contracts

# The Binance order types of a resting stop-loss sell: at market once triggered, or a limit order.
STOP_MARKET_TYPE = "STOP_LOSS"
STOP_LIMIT_TYPE = "STOP_LOSS_LIMIT"


def supported(ex: Any, symbol: str) -> bool:
    """Can a stop-loss sell rest on `symbol` of the ccxt instance `ex`: binance itself (its subclasses
    have other endpoints and order types), not a portfolio-margin account (whose orders go elsewhere), a
    loaded spot market whose order types include STOP_LOSS."""
    if getattr(ex, "id", None) != "binance" or ex.safe_bool_2(ex.options, "papi", "portfolioMargin", False):
        return False
    market = (ex.markets or {}).get(symbol)
    if market is None or market.get("spot") is not True or market.get("stock"):
        return False
    return STOP_MARKET_TYPE in ((market.get("info") or {}).get("orderTypes") or ())


def terms(
    ex: Any, market: dict[str, Any], *, amount: float, stop_price: float, limit_price: float | None
) -> tuple[float, float, float | None]:
    """(amount, stop price, limit price) of a stop-loss sell on `market`: the amount truncated to the
    lot (never more than held), the prices truncated to the tick (a stop on the tick at or below the
    one asked, a limit that takes no better price than asked). Any may come out 0 (below the grid)."""
    for name, value in (("amount", amount), ("stop_price", stop_price), ("limit_price", limit_price)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"a stop's {name} must be a positive number, got {value}")
    limit = None if limit_price is None else on_grid(ex, market, limit_price, "price")
    per_contract = contract_size(market)  # the lot is in contracts on a swap; the amount stays base
    lots = on_grid(ex, market, to_contracts(amount, per_contract), "amount")
    return from_contracts(lots, per_contract), on_grid(ex, market, stop_price, "price"), limit


async def place(
    ex: Any, symbol: str, amount: float, stop_price: float, limit_price: float | None, client_order_id: str
) -> dict[str, Any]:
    """Send the stop-loss sell (terms already on the market's grid); ccxt's parsed order."""
    params: dict[str, Any] = {"clientOrderId": client_order_id, "stopLossPrice": stop_price}
    order: dict[str, Any]
    if limit_price is None:
        order = await ex.create_order(symbol, "market", "sell", amount, None, params)
    else:
        params["timeInForce"] = "GTC"
        order = await ex.create_order(symbol, "limit", "sell", amount, limit_price, params)
    return order


async def cancel(ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
    """Cancel the open order with this client id: ccxt's parsed answer, with our client id; None when
    the exchange has no open order under it (binance -2011 "Unknown order sent.")."""
    try:
        order: dict[str, Any] = await ex.cancel_order(None, symbol, {"clientOrderId": client_order_id})
    except ccxt_async.OrderNotFound:
        return None
    order["clientOrderId"] = client_order_id  # not the cancel request's own id, which Binance returns
    return order
