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
- Resting stops: price-triggered orders (POST /spot/price_orders, /futures/usdt/price_orders), built by
  ccxt's create_order with `stopLossPrice` (spot: trigger rule "<=" for a sell; futures: rule 2 for a
  sell, 1 for a buy, `initial.reduce_only`, a market order as price 0 tif ioc). Gate gets, lists and
  cancels them by its own id only (ccxt's `{"trigger": True}`), never by `text`. Once triggered, the
  order it placed is a normal order: `fired_order_id` (spot) or `trade_id` (futures) on the price order.
- Which price order is ours: futures echo our client id as `initial.text`. Spot does not: `put.text` is
  Gate's order source ("api"), and ccxt's `trigger.text` is no Gate field. So the dialect maps client id
  -> Gate id for the stops it placed, and, for a restart, tags each spot stop by its `trigger.expiration`
  (required on spot; ccxt's default is 86400 s): 86400 minus a number 0-3599 derived from the client id
  (sha256), so one is found again by listing the market's price orders (open, then finished) and
  matching the tag and the side. The amount and trigger price cannot serve: a lookup by client id does
  not know them. Two of the market's price orders with the same tag (a 1-in-3600 chance per pair, or a
  stop placed by hand that happens to match) make the lookup fail loudly rather than guess. A spot stop
  therefore expires after 23-24 h (then status "expired": over, and the exit manager places a new one).

Request budget: Gate's published limits (gate.com announcement "Gate.io Latest Announcement on API Rate
Limit Adjustments", 2024-01-14, in force since 2024-01-22): private endpoints 200 requests per 10 s per
endpoint (UID), spot order placement 10 r/s per UID and currency pair, cancels 200 r/s per UID. ccxt's
gate rateLimit (50 ms per cost unit) is that 200 per 10 s, and it costs an order 0.4 units. The bucket
lets 4 units out at once (10 orders, Gate's per-pair second) and refills the rest of the window's budget.
"""

from __future__ import annotations

import hashlib
from typing import Any

import ccxt.async_support as ccxt_async

from bridge.venues.dialect import Dialect, MarginMode
from bridge.venues.types import OrderRequest, Side

HISTORY_LIMIT = 100  # finished orders searched for a text once Gate's text lookup window has passed
# A spot stop's trigger.expiration: STOP_EXPIRATION_S minus its tag (0 .. STOP_TAGS - 1), see the doc
STOP_EXPIRATION_S = 86400
STOP_TAGS = 3600
TRIGGER = {"trigger": True}  # ccxt's param for Gate's price_orders endpoints


class GateDialect(Dialect):
    client_id_prefix = "t-"
    client_id_max = 28  # ccxt counts the "t-" in its 28-character limit (Gate itself allows 30)
    budget_window_s = 10.0
    burst_share = 0.02  # 4 of the window's 200 units: 10 orders at 0.4, Gate's per-pair second

    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._stops: dict[str, str] = {}  # client id -> Gate id of the price order placed under it

    async def create(self, ex: Any, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        _adopt(ex)
        return await super().create(ex, market, req)

    async def fetch_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """A stop this process placed: its price order (by Gate id), once triggered the order it placed.
        Else the normal order by text, then in the finished orders, then a price order found by the
        rule in the module doc (a stop placed before a restart)."""
        _adopt(ex)
        if client_order_id in self._stops:
            return await self._stop_state(ex, symbol, client_order_id)
        try:
            order: dict[str, Any] = await ex.fetch_order(None, symbol, {"clientOrderId": client_order_id})
        except ccxt_async.OrderNotFound:
            pass  # open orders are always found by text: it ended, maybe past Gate's window, or a stop
        else:
            return order
        history: list[dict[str, Any]] = await ex.fetch_closed_orders(symbol, None, HISTORY_LIMIT)
        found = next((o for o in history if o.get("clientOrderId") == client_order_id), None)
        if found is not None:
            return found
        return await self._stop_state(ex, symbol, client_order_id)

    # ----- resting stops and cancels -----

    def supports_stops(self, ex: Any, symbol: str) -> bool:
        market = (ex.markets or {}).get(symbol) or {}
        if market.get("swap") is True:
            return market.get("linear") is True and market.get("settleId") == "usdt"
        return market.get("spot") is True  # a margin-tradable pair too: ccxt's price order uses "normal"

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
        """A price-triggered order through ccxt's stopLossPrice: reduce-only on futures (its text is our
        client id), tagged by its expiration on spot (see the module doc). Gate answers {"id"} only."""
        _adopt(ex)
        spot = market.get("contract") is not True
        if spot and side != "sell":
            raise NotImplementedError(f"{self.venue}: only stop-loss sells rest on spot")
        params: dict[str, Any] = {"clientOrderId": client_order_id, "stopLossPrice": stop_price}
        if spot:
            params["expiration"] = stop_expiration(client_order_id)
        else:
            params["reduceOnly"] = True
        symbol = market["symbol"]
        sent: dict[str, Any]
        if limit_price is None:
            sent = await ex.create_order(symbol, "market", side, amount, None, params)
        else:
            params["timeInForce"] = "GTC"
            sent = await ex.create_order(symbol, "limit", side, amount, limit_price, params)
        if sent.get("id") is not None:
            self._stops[client_order_id] = str(sent["id"])
        return {
            **sent,
            "clientOrderId": client_order_id,
            "status": sent.get("status") or "open",
            "filled": 0.0,
        }

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """A resting stop is cancelled by its Gate id (DELETE .../price_orders/{id}); a normal order by
        its text (ccxt ignores a clientOrderId param on cancel; Gate takes the text as the id while the
        order is open). None when neither is open under this client id."""
        _adopt(ex)
        stop_id = self._stops.get(client_order_id)
        if stop_id is None:
            try:
                order: dict[str, Any] = await ex.cancel_order(client_order_id, symbol)
            except ccxt_async.OrderNotFound:
                pass  # no open normal order: maybe a stop placed before a restart
            else:
                order["clientOrderId"] = client_order_id
                return order
            resting = await self._find_stop(ex, symbol, client_order_id, finished=False)
            if resting is None:
                return None
            stop_id = str(resting["id"])
        try:
            cancelled: dict[str, Any] = await ex.cancel_order(stop_id, symbol, dict(TRIGGER))
        except ccxt_async.OrderNotFound:
            return None  # triggered, cancelled or expired meanwhile: the caller looks it up
        return _resting(cancelled, client_order_id)

    async def _stop_state(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The stop under this client id as a lookup reports it: resting (open, nothing filled), ended
        unfilled (canceled), or once triggered the order it placed (its fill); None if there is none."""
        stop_id = self._stops.get(client_order_id)
        price_order: dict[str, Any] | None
        if stop_id is not None:
            try:
                price_order = await ex.fetch_order(stop_id, symbol, dict(TRIGGER))
            except ccxt_async.OrderNotFound:
                return None
        else:
            price_order = await self._find_stop(ex, symbol, client_order_id, finished=True)
            if price_order is None:
                return None
        info = price_order.get("info") or {}
        placed = info.get("fired_order_id") or info.get("trade_id")
        if price_order.get("status") == "closed" and placed and str(placed) != "0":
            order: dict[str, Any] = await ex.fetch_order(str(placed), symbol)
            order["clientOrderId"] = client_order_id
            return order
        return _resting(price_order, client_order_id)

    async def _find_stop(
        self, ex: Any, symbol: str, client_order_id: str, *, finished: bool
    ) -> dict[str, Any] | None:
        """The price order of a stop this process did not place (a restart): among the market's open price
        orders, then (`finished`) its finished ones, newest first, the one that is ours by the rule in
        the module doc. Remembered once found. Raises when two match (never a guess)."""
        statuses = ("open", "finished") if finished else ("open",)
        claimed = set(self._stops.values())
        for status in statuses:
            listed: list[dict[str, Any]] = await ex.fetch_orders_by_status(
                status, symbol, None, HISTORY_LIMIT, dict(TRIGGER)
            )
            mine = [o for o in listed if _is_ours(o, client_order_id) and str(o.get("id")) not in claimed]
            if status == "open" and len(mine) > 1:
                raise ccxt_async.ExchangeError(
                    f"{self.venue}: {len(mine)} open price orders on {symbol} match {client_order_id}"
                )
            if mine:
                self._stops[client_order_id] = str(mine[0]["id"])
                return mine[0]
        return None

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


def stop_expiration(client_order_id: str) -> int:
    """A spot stop's trigger.expiration in seconds: its tag (see the module doc)."""
    digest = hashlib.sha256(client_order_id.encode()).digest()
    return STOP_EXPIRATION_S - int.from_bytes(digest[:4], "big") % STOP_TAGS


def _is_ours(price_order: dict[str, Any], client_order_id: str) -> bool:
    """Is this price order (ccxt-parsed) the stop placed under `client_order_id`? Futures by the text
    Gate echoes; spot by the expiration tag, on the sell side (the only spot stop bridge places)."""
    info = price_order.get("info") or {}
    if "initial" in info:
        return (info.get("initial") or {}).get("text") == client_order_id
    trigger, put = info.get("trigger") or {}, info.get("put") or {}
    expiration = str(trigger.get("expiration"))
    return put.get("side") == "sell" and expiration == str(stop_expiration(client_order_id))


def _resting(price_order: dict[str, Any], client_order_id: str) -> dict[str, Any]:
    """A price order that has not placed its order: our client id on it, nothing filled."""
    return {**price_order, "clientOrderId": client_order_id, "filled": 0.0}


def _adopt(ex: Any) -> None:
    """Make ccxt raise InvalidNonce for Gate's REQUEST_EXPIRED on this instance (see the module doc)."""
    exact = ex.exceptions["exact"]
    if exact.get("REQUEST_EXPIRED") is not ccxt_async.InvalidNonce:
        exact["REQUEST_EXPIRED"] = ccxt_async.InvalidNonce
