"""OKX (ccxt `okx`): spot and USDT perpetual swaps through ccxt 4.5.90, with what OKX does differently.

- Client id `clOrdId`: 1-32 letters and digits. ccxt sends a single order as a one-element array to POST
  /api/v5/trade/batch-orders (its option createOrder), and OKX answers it with the ids only (sCode "0"),
  never the fill: `create` reads the order back by client id (GET /trade/order, one more request) so
  the adapter sees filled, average and fee. If that read fails, the create's answer (no status) goes
  back and the adapter raises OrderStatusUnknown: settled later by the same lookup.
- Limit IOC is ordType "ioc" (ccxt maps timeInForce IOC to it); swap orders carry the symbol's margin
  mode as tdMode (ccxt would send "cross" by default) and `reduceOnly` on exits. Swap sizes are
  contracts (the market's contractSize base units each): the caller sizes them.
- Resting stops: conditional algo orders (POST /trade/order-algo, slTriggerPx, slOrdPx -1 at market),
  on spot and swap, both sides, reduce-only on swaps. Their client id is `algoClOrdId` (a separate
  namespace from clOrdId), looked up with GET /trade/order-algo and cancelled with POST
  /trade/cancel-algos; once triggered ("effective") the fill is on the order in its `ordId`. ccxt puts
  a spot conditional's tdMode to "cross" (its comment: "cash" is refused with 51000); left as ccxt sends it.
- Lookups: GET /trade/order by clOrdId, then (not found) the algo order by algoClOrdId. OKX answers
  51603 "Order does not exist" for neither. OKX keeps finished orders for its order history (7 days,
  3 months in the archive), so a missing one was never placed; the exception reported by OKX's docs
  for order history is a cancelled order with no fill, kept for a short time only, which filled
  nothing either way.
- Position mode is account-wide (GET /account/config, posMode net_mode | long_short_mode): ccxt's
  fetch_position_mode reads it; hedge mode is refused by the adapter, never switched. Margin mode and
  leverage are one call on OKX (POST /account/set-leverage with mgnMode and lever; ccxt's set_margin_mode
  and set_leverage both send it), so `prepare_contract` sends it once and remembers the mode for tdMode.
- The key check is GET /account/balance (ccxt fetch_balance, cost 2): it also proves the passphrase.

Request budget: OKX limits each REST endpoint per 2 seconds ("Rate limit" in each endpoint's section of
www.okx.com/docs-v5/en/, e.g. place order 60 requests per 2 s per instrument, batch orders 300 orders per
2 s, order details 60 per 2 s, balance 10 per 2 s, set leverage 20 per 2 s; plus 1,000 order requests per
2 s per sub-account, www.okx.com/help/fill-ratio-sub-account-rate-limit). ccxt's okx cost table expresses
each endpoint as a share of a 20-per-2-s endpoint (rateLimit 110 ms: 100 ms plus 10 % tolerance), so one
bucket of ccxt's rate over a 2 s window keeps every endpoint within its own limit. Half of that window's
budget may go out at once (9 units: 27 single-order requests at cost 1/3, 135 at ccxt's batch cost of
1/15), the refill lowered by as much.
"""

from __future__ import annotations

from typing import Any, ClassVar

import ccxt.async_support as ccxt_async
import structlog

from bridge.venues.dialect import Dialect, MarginMode
from bridge.venues.types import OrderRequest, Side

log = structlog.get_logger("bridge.venues.exchange")

DEFAULT_MARGIN_MODE: MarginMode = "isolated"


class OkxDialect(Dialect):
    client_id_max = 32  # clOrdId / algoClOrdId: 1-32 letters and digits
    budget_window_s = 2.0
    burst_share = 0.5
    # Markets a stop can rest on: OKX takes conditional algo orders on spot and perpetual swaps.
    stop_market_types: ClassVar[tuple[str, ...]] = ("spot", "swap")

    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._margin_modes: dict[str, MarginMode] = {}  # symbol -> what prepare_contract set

    # ----- orders -----

    def order_params(self, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        params = super().order_params(market, req)
        if market.get("contract") is True:
            params["marginMode"] = self._margin_modes.get(req.symbol, DEFAULT_MARGIN_MODE)
        return params

    async def create(self, ex: Any, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        order = await super().create(ex, market, req)
        if order.get("status") is not None:
            return order
        try:
            found: dict[str, Any] = await ex.fetch_order(
                None, req.symbol, {"clientOrderId": req.client_order_id}
            )
        except ccxt_async.BaseError as exc:
            log.warning(
                "exchange.order_readback_failed",
                exchange=self.venue,
                symbol=req.symbol,
                client_order_id=req.client_order_id,
                error=type(exc).__name__,
            )
            return order  # placed, state unknown: the adapter raises OrderStatusUnknown
        return found

    async def fetch_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        found = await super().fetch_by_client_id(ex, symbol, client_order_id)
        if found is not None:
            return found
        return await self._fetch_stop(ex, symbol, client_order_id)

    async def _fetch_stop(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The algo order with this algoClOrdId; once triggered, the order it placed (its fill)."""
        try:
            algo: dict[str, Any] = await ex.fetch_order(
                None, symbol, {"clientOrderId": client_order_id, "trigger": True}
            )
        except ccxt_async.OrderNotFound:
            return None
        placed = (algo.get("info") or {}).get("ordId")
        if algo.get("status") == "closed" and placed:
            order: dict[str, Any] = await ex.fetch_order(str(placed), symbol)
            order["clientOrderId"] = client_order_id
            return order
        algo["clientOrderId"] = client_order_id
        if algo.get("filled") is None:
            algo["filled"] = 0.0  # resting or cancelled before it triggered: nothing filled
        return algo

    # ----- resting stops and cancels -----

    def supports_stops(self, ex: Any, symbol: str) -> bool:
        market = (ex.markets or {}).get(symbol)
        return market is not None and market.get("type") in self.stop_market_types

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
        """A conditional algo order: stopLossPrice is slTriggerPx, at market (slOrdPx -1) or at
        `limit_price`. Its client id goes as algoClOrdId (lookups and cancels) and clOrdId (the order it
        places once triggered)."""
        symbol = market["symbol"]
        params: dict[str, Any] = {
            "clientOrderId": client_order_id,
            "algoClOrdId": client_order_id,
            "stopLossPrice": stop_price,
        }
        if market.get("contract") is True:
            params["reduceOnly"] = True
            params["marginMode"] = self._margin_modes.get(symbol, DEFAULT_MARGIN_MODE)
        order: dict[str, Any]
        if limit_price is None:
            order = await ex.create_order(symbol, "market", side, amount, None, params)
        else:
            order = await ex.create_order(symbol, "limit", side, amount, limit_price, params)
        order["clientOrderId"] = client_order_id
        if order.get("status") is None:
            order["status"] = "open"  # OKX answers a placed algo order with its ids only: it rests
        return order

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """Cancel the resting stop (algo order) with this client id, and read back its final state; None
        when no live one has it (triggered, cancelled or never placed: the caller looks it up)."""
        try:
            await ex.cancel_order(None, symbol, {"clientOrderId": client_order_id, "trigger": True})
        except ccxt_async.OrderNotFound:
            return None
        return await self._fetch_stop(ex, symbol, client_order_id)

    # ----- account setup -----

    async def prepare_contract(
        self, ex: Any, symbol: str, *, leverage: float, margin_mode: MarginMode
    ) -> None:
        """One POST /account/set-leverage with mgnMode and lever (OKX's margin mode has no call of its
        own; an unchanged setting is answered code 0). Orders then carry this margin mode as tdMode."""
        await ex.set_leverage(int(leverage), symbol, {"marginMode": margin_mode})
        self._margin_modes[symbol] = margin_mode
