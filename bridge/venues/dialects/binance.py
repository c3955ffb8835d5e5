"""Binance (ccxt `binance` and its subclasses): spot through ccxt or the fast path (bridge.venues.fastpath),
resting STOP_LOSS / STOP_LOSS_LIMIT sells on spot (bridge.venues.stops), the key checked on the account
endpoint, and a request budget from the published weight limit.

Binance's REST limit is request weight per minute (6,000 on api/v3; ccxt's rateLimit of 50 ms per cost
unit spreads it evenly), so the budget lets 5 % of a minute's weight out at once and refills the rest.

USDⓈ-M perpetuals (ccxt swap markets `ABC/USDT:USDT`, loaded with ccxt's market type "linear"), as ccxt
4.5.90 sends them:
- orders go to POST /fapi/v1/order (market, limit IOC, `reduceOnly` as the string true); a market order
  is sized by amount (ccxt's create_market_buy_order_with_cost is spot only);
- a resting stop is a conditional order on the algo service: create_order with `stopLossPrice` sends
  POST /fapi/v1/algoOrder (algoType CONDITIONAL, type STOP_MARKET, triggerPrice, clientAlgoId = our client
  id), reduce-only. It is looked up and cancelled with `trigger: True` (GET/DELETE /fapi/v1/algoOrder by
  clientAlgoId). Once triggered its algoStatus is FINISHED (ccxt: "closed") with `actualOrderId`, the
  matching-engine order that carries the fill: the look-up reads that order for what filled;
- margin mode: POST /fapi/v1/marginType, whose "No need to change margin type." (-4046) ccxt raises as
  MarginModeAlreadySet (its option throwMarginModeAlreadySet is on by default): not an error here;
- leverage: POST /fapi/v1/leverage, an integer 1-125.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ccxt.async_support as ccxt_async

from bridge.venues import stops
from bridge.venues.dialect import Dialect, MarginMode
from bridge.venues.types import Side

# The USDⓈ-M order type of a resting stop at market (its reduce-only close).
SWAP_STOP_TYPE = "STOP_MARKET"
# How many client ids of stops placed on the algo service this dialect remembers (their look-ups go
# to the algo endpoint first); older ones are still found, one request later.
_ALGO_IDS_KEPT = 1000


class BinanceDialect(Dialect):
    client_id_max = 36  # newClientOrderId: ^[.A-Z:/a-z0-9_-]{1,36}$
    budget_window_s = 60.0

    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._algo_ids: dict[str, None] = {}  # client ids of conditional orders placed by this process

    # ----- orders and look-ups -----

    async def fetch_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        market = (ex.markets or {}).get(symbol) or {}
        if not _usdm_swap(market):
            return await super().fetch_by_client_id(ex, symbol, client_order_id)
        # A stop rests on the algo service under its clientAlgoId, any other order on the matching
        # engine: a stop this process placed is asked for there first; an id it does not know (a stop
        # placed before a restart) is found there after the matching engine said "no such order".
        if client_order_id in self._algo_ids:
            found = await self._fetch_algo(ex, symbol, client_order_id)
            return (
                found if found is not None else await super().fetch_by_client_id(ex, symbol, client_order_id)
            )
        found = await super().fetch_by_client_id(ex, symbol, client_order_id)
        return found if found is not None else await self._fetch_algo(ex, symbol, client_order_id)

    async def _fetch_algo(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The conditional order with this clientAlgoId, its fill read from the matching-engine order it
        became once triggered; None when the algo service has no such order."""
        try:
            algo: dict[str, Any] = await ex.fetch_order(
                None, symbol, {"clientOrderId": client_order_id, "trigger": True}
            )
        except ccxt_async.OrderNotFound:
            return None
        actual = str((algo.get("info") or {}).get("actualOrderId") or "")
        if not actual:
            return algo  # resting (open), cancelled or expired before it triggered: nothing filled
        order: dict[str, Any] = await ex.fetch_order(actual, symbol)
        # Our id and the algo order's own status: "closed" once the triggered order has finished.
        return {
            **order,
            "clientOrderId": client_order_id,
            "status": algo.get("status") or order.get("status"),
        }

    # ----- resting stops and cancels -----

    def supports_stops(self, ex: Any, symbol: str) -> bool:
        market = (ex.markets or {}).get(symbol) or {}
        if _usdm_swap(market):
            portfolio = ex.safe_bool_2(ex.options, "papi", "portfolioMargin", False)
            return not portfolio and SWAP_STOP_TYPE in ((market.get("info") or {}).get("orderTypes") or ())
        return stops.supported(ex, symbol)

    async def place_stop(
        self,
        ex: Any,
        market: dict[str, Any],
        *,
        side: Side,
        amount: float,
        stop_price: float,
        limit_price: float | None,
        client_order_id: str,
    ) -> dict[str, Any]:
        if _usdm_swap(market):
            if limit_price is not None:
                raise NotImplementedError(f"{self.venue}: perpetual stops rest as STOP_MARKET only")
            return await self._place_swap_stop(
                ex, market["symbol"], side, amount, stop_price, client_order_id
            )
        if side != "sell" or market.get("spot") is not True:
            raise NotImplementedError(f"{self.venue}: only spot stop-loss sells rest on the exchange")
        return await stops.place(ex, market["symbol"], amount, stop_price, limit_price, client_order_id)

    async def _place_swap_stop(
        self, ex: Any, symbol: str, side: Side, amount: float, stop_price: float, client_order_id: str
    ) -> dict[str, Any]:
        """A reduce-only STOP_MARKET on the algo service: a sell closes a long once the price falls to
        `stop_price`, a buy closes a short once it rises to it; it can never open a position."""
        self._remember_algo_id(client_order_id)  # before the request: a timeout is looked up there
        params = {"clientOrderId": client_order_id, "stopLossPrice": stop_price, "reduceOnly": True}
        order: dict[str, Any] = await ex.create_order(symbol, "market", side, amount, None, params)
        return order

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        market = (ex.markets or {}).get(symbol) or {}
        if not _usdm_swap(market):
            return await stops.cancel(ex, symbol, client_order_id)
        # Only stops rest on a perpetual here (entries and exits fill or expire at once).
        try:
            order: dict[str, Any] = await ex.cancel_order(
                None, symbol, {"clientOrderId": client_order_id, "trigger": True}
            )
        except (ccxt_async.OrderNotFound, ccxt_async.OperationRejected):  # -2011 Unknown order sent.
            return None
        order["clientOrderId"] = client_order_id
        order["status"] = "canceled"  # the answer is {algoId, clientAlgoId, code 200, msg success}
        if order.get("filled") is None:
            order["filled"] = 0.0
        return order

    def _remember_algo_id(self, client_order_id: str) -> None:
        self._algo_ids[client_order_id] = None
        while len(self._algo_ids) > _ALGO_IDS_KEPT:
            del self._algo_ids[next(iter(self._algo_ids))]

    # ----- account setup -----

    async def check_keys(self, ex: Any) -> None:
        await ex.private_get_account({"omitZeroBalances": "true"})  # weight 20, no market load

    async def prepare_contract(
        self, ex: Any, symbol: str, *, leverage: float, margin_mode: MarginMode
    ) -> None:
        if leverage != int(leverage):
            raise ccxt_async.BadRequest(
                f"{self.venue}: leverage is a whole number on binance, got {leverage}"
            )
        with contextlib.suppress(ccxt_async.MarginModeAlreadySet):  # -4046 No need to change margin type.
            await ex.set_margin_mode(margin_mode, symbol)
        await ex.set_leverage(int(leverage), symbol)


def _usdm_swap(market: dict[str, Any]) -> bool:
    """A USDⓈ-M (linear) contract market: its orders go to /fapi."""
    return market.get("contract") is True and market.get("linear") is True
