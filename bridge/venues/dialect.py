"""What differs between venues, behind one interface: a `Dialect` per venue family, chosen by the ccxt
class of the account (`exchanges.NAME.venue`, default NAME) through `dialect_for`.

SEAM READY: the interface below is what bridge.venues.exchange.Exchange calls; venue modules in
bridge.venues.dialects subclass `Dialect` and override what their venue does differently.

The base class is ccxt's unified behaviour, which is right for many venues and proven on none: the
client id passed as `clientOrderId`, limit IOC as `timeInForce: IOC`, `reduceOnly` on contract markets,
lookups and cancels by `clientOrderId`, a key check by `fetch_balance`, no resting stops, and a request
budget of ccxt's `rateLimit` with a small burst. Every method gets the raw ccxt instance `ex` and works
in ccxt's terms (unified symbols, ccxt's parsed orders); ccxt's exceptions pass through and the adapter
translates them (bridge.venues.errors), except where a method's contract says otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Literal

import ccxt.async_support as ccxt_async

from bridge.venues import stops
from bridge.venues.ratelimit import Budget
from bridge.venues.types import OrderRequest, Side

MarginMode = Literal["isolated", "cross"]


class Dialect:
    """One venue's way of doing what bridge needs. Stateless apart from class attributes: one instance
    per account (Exchange keeps it), so a dialect may cache per-account facts on itself if it must."""

    # The client order id: this prefix, then the base id's tail, at most `client_id_max` characters in
    # all. The base id is alphanumeric, which every venue here accepts (OKX allows nothing else).
    client_id_prefix: ClassVar[str] = ""
    client_id_max: ClassVar[int] = 64
    # The venue's published request window in seconds, when its limit is a budget per window (Binance:
    # weight per minute); None when it is not known (then ccxt's rateLimit with DEFAULT_BURST).
    budget_window_s: ClassVar[float | None] = None
    # Share of a known window's budget that may go out at once (see ratelimit.Budget).
    burst_share: ClassVar[float] = 0.05

    def __init__(self, venue: str) -> None:
        self.venue = venue

    # ----- request budget -----

    def budget(self, rate_limit_ms: float) -> Budget:
        """The account's request budget in ccxt cost units, for ccxt's `rateLimit` (ms per unit)."""
        return Budget.for_window(rate_limit_ms, self.budget_window_s, self.burst_share)

    # ----- orders -----

    def order_params(self, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        """The ccxt `params` of an order request (a fresh dict: ccxt may write into it)."""
        params: dict[str, Any] = {"clientOrderId": req.client_order_id}
        if req.reduce_only and market.get("contract") is True:
            params["reduceOnly"] = True  # spot has no such flag: see OrderRequest.reduce_only
        if req.limit_price is not None:
            params["timeInForce"] = "IOC"
        return params

    async def create(self, ex: Any, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        """Send one order through ccxt; its parsed order. Market buys sized by cost use ccxt's
        create_market_buy_order_with_cost where the venue has it."""
        params = self.order_params(market, req)
        symbol, limit = req.symbol, req.limit_price
        order: dict[str, Any]
        if limit is not None:
            order = await ex.create_order(symbol, "limit", req.side, req.amount, limit, params)
        elif req.cost is not None and req.side == "buy":
            order = await ex.create_market_buy_order_with_cost(symbol, req.cost, params)
        elif req.cost is not None:
            order = await ex.create_market_sell_order_with_cost(symbol, req.cost, params)
        else:
            order = await ex.create_order(symbol, "market", req.side, req.amount, None, params)
        return order

    async def fetch_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """The order with this client id as ccxt parses it; None when the venue says there is none.
        "None" must mean "never sent" where the venue can say so; where its lookup window may have passed
        (Gate), look further (history by time) before answering None. A failed lookup raises."""
        try:
            order: dict[str, Any] = await ex.fetch_order(None, symbol, {"clientOrderId": client_order_id})
        except ccxt_async.OrderNotFound:
            return None
        return order

    # ----- resting stops and cancels -----

    def supports_stops(self, ex: Any, symbol: str) -> bool:
        """Can a stop order rest on the venue for `symbol` (a loaded market)? Without I/O."""
        return False

    def stop_terms(
        self, ex: Any, market: dict[str, Any], *, amount: float, stop_price: float, limit_price: float | None
    ) -> tuple[float, float, float | None]:
        """(amount, stop price, limit price) on the market's grid: amount truncated to the lot, prices
        truncated to the tick. Any may come out 0 (below the grid)."""
        return stops.terms(ex, market, amount=amount, stop_price=stop_price, limit_price=limit_price)

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
        """Rest a stop order: a `side` order of `amount` at market (or a limit at `limit_price`) once
        the price crosses `stop_price` (down for a sell, up for a buy); reduce-only on contract markets.
        Terms are already on the grid. ccxt's parsed order, status "open" while it rests."""
        raise NotImplementedError(f"{self.venue}: resting stops are not supported")

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """Cancel the open order with this client id: ccxt's parsed answer with our client id in it;
        None when the venue has no open order under it (filled, cancelled or never placed: the caller
        then looks it up)."""
        try:
            order: dict[str, Any] = await ex.cancel_order(None, symbol, {"clientOrderId": client_order_id})
        except ccxt_async.OrderNotFound:
            return None
        order["clientOrderId"] = client_order_id
        return order

    # ----- account setup -----

    async def check_keys(self, ex: Any) -> None:
        """Prove the key works with one cheap signed request; raises ccxt's error when it does not."""
        await ex.fetch_balance()

    async def hedge_mode(self, ex: Any) -> bool | None:
        """Is the account in hedge (two-way) position mode for contracts? None when the venue cannot
        say. The adapter refuses hedge mode at start (bridge never switches it). The base asks ccxt's
        fetch_position_mode where the venue has it."""
        if not ex.has.get("fetchPositionMode"):
            return None
        mode = await ex.fetch_position_mode()
        return bool(mode.get("hedged"))

    async def prepare_contract(
        self, ex: Any, symbol: str, *, leverage: float, margin_mode: MarginMode
    ) -> None:
        """Set the margin mode and leverage of a contract symbol before its first order (ccxt's unified
        set_margin_mode and set_leverage). A venue that answers "no change" must not fail here."""
        await ex.set_margin_mode(margin_mode, symbol)
        await ex.set_leverage(leverage, symbol)


# ccxt class name -> "module:Class" in bridge.venues.dialects; subclasses (binanceus, ...) inherit by MRO
_DIALECTS: dict[str, str] = {
    "binance": "binance:BinanceDialect",
    "bybit": "bybit:BybitDialect",
    "okx": "okx:OkxDialect",
    "gate": "gate:GateDialect",
    "kucoin": "generic:KucoinDialect",
}


def dialect_for(venue: str) -> Dialect:
    """The dialect of the ccxt exchange class `venue` (e.g. "bybit"), the generic one if none is known."""
    cls = getattr(ccxt_async, venue, None)
    for klass in type.mro(cls) if isinstance(cls, type) else ():
        ref = _DIALECTS.get(klass.__name__)
        if ref is not None:
            module, name = ref.split(":")
            dialect_cls: type[Dialect] = getattr(
                importlib.import_module(f"bridge.venues.dialects.{module}"), name
            )
            return dialect_cls(venue)
    return Dialect(venue)
