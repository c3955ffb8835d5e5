"""Gate (ccxt `gate`): spot and USDT perpetual futures through ccxt 4.5.90, with what ccxt gets wrong or
leaves open on Gate handled here (proven against bridge.sim.fake_gate, tests/venues/test_gate*.py):

- Client id: Gate's `text` must be "t-" then at most 28 characters of [0-9A-Za-z_.-], but ccxt's
  create_order refuses a clientOrderId longer than 28 characters *including* the "t-" (it checks the
  length before adding the prefix): ids here are "t-" + 26 characters, 28 in all.
- Lookup by client id: GET .../orders/{text} finds an order only while it is open and for a while after
  it ended (about 60 s on futures, 1 h on spot, see library-facts.md). Past that Gate answers
  ORDER_NOT_FOUND although the order exists, so "not found" is never taken as "never sent" before the
  market's finished orders (the history, newest first) were searched for the text.
- Cancel by client id: ccxt's cancel_order ignores a `clientOrderId` param (it would cancel order id
  "None"); Gate takes the text as the order id while the order is open, so it is passed as the id.
- REQUEST_EXPIRED (Gate's refused Timestamp) is ccxt's AuthenticationError, which would halt the venue
  as a dead key; it is mapped to InvalidNonce on the instance, so the adapter re-measures the clock and
  retries once, as after binance -1021.
- Leverage and margin mode are one Gate request (POST .../positions/{contract}/leverage: `leverage=N`
  isolated, `leverage=0&cross_leverage_limit=N` cross); ccxt's set_margin_mode is not implemented for
  Gate and its set_leverage forwards its `marginMode` param to Gate, so the endpoint is called directly.
- Position mode: ccxt has no fetch_position_mode for Gate; the futures account's `in_dual_mode` says it.
- Resting stops: Gate has price-triggered orders (spot and futures `price_orders`), but they are found and
  cancelled by Gate's own id only, not by `text`; not used here yet (supports_stops is False).

Request budget: Gate's published limits (gate.com announcement "Gate.io Latest Announcement on API Rate
Limit Adjustments", 2024-01-14, in force since 2024-01-22): private endpoints 200 requests per 10 s per
endpoint (UID), spot order placement 10 r/s per UID and currency pair, cancels 200 r/s per UID. ccxt's
gate rateLimit (50 ms per cost unit) is that 200 per 10 s, and it costs an order 0.4 units. The bucket
lets 4 units out at once (10 orders, Gate's per-pair second) and refills the rest of the window's budget.
"""

from __future__ import annotations

from typing import Any

import ccxt.async_support as ccxt_async

from bridge.venues.dialect import Dialect, MarginMode
from bridge.venues.types import OrderRequest

HISTORY_LIMIT = 100  # finished orders searched for a text once Gate's text lookup window has passed


class GateDialect(Dialect):
    client_id_prefix = "t-"
    client_id_max = 28  # ccxt counts the "t-" in its 28-character limit (Gate itself allows 30)
    budget_window_s = 10.0
    burst_share = 0.02  # 4 of the window's 200 units: 10 orders at 0.4, Gate's per-pair second

    async def create(self, ex: Any, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        _adopt(ex)
        return await super().create(ex, market, req)

    async def fetch_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        _adopt(ex)
        try:
            order: dict[str, Any] = await ex.fetch_order(None, symbol, {"clientOrderId": client_order_id})
        except ccxt_async.OrderNotFound:
            pass  # open orders are always found by text: it ended, maybe past Gate's window
        else:
            return order
        history: list[dict[str, Any]] = await ex.fetch_closed_orders(symbol, None, HISTORY_LIMIT)
        return next((o for o in history if o.get("clientOrderId") == client_order_id), None)

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        _adopt(ex)
        try:
            order: dict[str, Any] = await ex.cancel_order(client_order_id, symbol)
        except ccxt_async.OrderNotFound:
            return None
        order["clientOrderId"] = client_order_id
        return order

    async def check_keys(self, ex: Any) -> None:
        _adopt(ex)
        await ex.privateSpotGetAccounts({"currency": "USDT"})  # one signed request, no market load

    async def hedge_mode(self, ex: Any) -> bool | None:
        _adopt(ex)
        account = await ex.privateFuturesGetSettleAccounts({"settle": "usdt"})
        dual = account.get("in_dual_mode") if isinstance(account, dict) else None
        return None if dual is None else dual is True

    async def prepare_contract(
        self, ex: Any, symbol: str, *, leverage: float, margin_mode: MarginMode
    ) -> None:
        _adopt(ex)
        market = ex.market(symbol)
        request: dict[str, Any] = {"settle": market["settleId"], "contract": market["id"]}
        value = ex.number_to_string(leverage)
        if margin_mode == "cross":
            request |= {"leverage": "0", "cross_leverage_limit": value}
        else:
            request["leverage"] = value
        await ex.privateFuturesPostSettlePositionsContractLeverage(request)


def _adopt(ex: Any) -> None:
    """Make ccxt raise InvalidNonce for Gate's REQUEST_EXPIRED on this instance (see the module doc)."""
    exact = ex.exceptions["exact"]
    if exact.get("REQUEST_EXPIRED") is not ccxt_async.InvalidNonce:
        exact["REQUEST_EXPIRED"] = ccxt_async.InvalidNonce
