"""Bybit (ccxt `bybit`, v5 API, unified trading account): spot and USDT perpetuals (category linear).

What differs from ccxt's unified behaviour, as read in ccxt 4.5.90's bybit.py and Bybit's v5 docs:
- The client id is `orderLinkId`, at most 36 of [A-Za-z0-9_-], unique for ever (a repeat is refused
  even after the first order ended: 170141 spot, 110072 linear).
- Create and cancel answer only {orderId, orderLinkId}: no status, no fill. Each is read back by
  client id before it is reported (`_read_back`), so the adapter gets a status and a fill.
- Lookup by client id: ccxt's fetch_order(None, symbol, {"clientOrderId": x}) sends `orderId=None`
  and an untranslated `clientOrderId` (and on a unified account raises ArgumentsRequired without
  `acknowledged`): it can only say "not found", which would read as "never sent". So lookups go to
  GET /v5/order/realtime by `orderLinkId` (open orders, and closed ones among the account's 500 most
  recent per category, until a Bybit release clears them), then GET /v5/order/history (closed orders;
  one cancelled or rejected without a fill only for 24 h; filled ones for 2 years). "None" therefore
  means: not open, no fill in history, and if it ended unfilled more than 24 h ago, not visible.
- Resting stops on both markets: ccxt's `stopLossPrice` builds a spot TP/SL order (orderFilter
  tpslOrder: the coins are held from the start) or a linear conditional order (triggerDirection,
  reduceOnly). A spot cancel looks among one orderFilter's orders only (Order by default), so a
  cancel by client id tries tpslOrder, then Order.
- Position mode has no account-wide read: it is read per symbol from GET /v5/position/list (two
  entries, positionIdx 1 and 2, in hedge mode). On a unified account the margin mode is account-wide
  (ccxt's set_margin_mode switches the whole account): bridge reads it and refuses a mismatch instead
  of switching it. Leverage is set per symbol, only when it differs (110043 "not modified" otherwise).
- The key is checked with GET /v5/user/query-api and /v5/account/info, the two requests ccxt's
  is_unified_enabled would otherwise make before the first order; their answer is cached in ccxt's
  options, so no order pays for them. A read-only key is refused at start.

Request budget: Bybit limits each IP to 600 requests per 5-second window (docs: v5/rate-limit, "IP
Limit") and each account per second per endpoint (order/create: 10/s linear, 20/s spot by default;
docs: v5/rate-limit/rules-for-pros/introduction). ccxt's bybit rateLimit (20 ms per unit, order/create
2.5 units = 20/s, order queries 5 units = 10/s) is within both; the budget lets 20 % of a 5 s window
of it out at once (50 units: 20 creates, or 6 orders with their read-back) and refills the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt.async_support as ccxt_async

from bridge.errors import OrderRejected
from bridge.venues.dialect import Dialect, MarginMode
from bridge.venues.types import OrderRequest, Side

# A market or IOC order still open when first read back (Bybit matches asynchronously) is read again.
READ_BACK_TRIES = 3
READ_BACK_DELAY_S = 0.05
_MARGIN_MODES = {"isolated": "ISOLATED_MARGIN", "cross": "REGULAR_MARGIN"}
_NOT_MODIFIED = ("110043", "110026", "110025")  # leverage / margin mode / position mode not modified


class BybitDialect(Dialect):
    client_id_max = 36
    budget_window_s = 5.0
    burst_share = 0.2

    def __init__(self, venue: str) -> None:
        super().__init__(venue)
        self._margin_mode: str | None = None  # the unified account's, from GET /v5/account/info

    # ----- orders -----

    async def create(self, ex: Any, market: dict[str, Any], req: OrderRequest) -> dict[str, Any]:
        sent = await super().create(ex, market, req)
        return await self._read_back(ex, market["symbol"], req.client_order_id, sent, rests=False)

    async def fetch_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        params = {"orderLinkId": client_order_id}
        found: list[dict[str, Any]] = await ex.fetch_open_orders(symbol, None, None, dict(params))
        if not found:
            found = await ex.fetch_canceled_and_closed_orders(symbol, None, None, dict(params))
        mine = [o for o in found if o.get("clientOrderId") == client_order_id]
        return mine[0] if mine else None

    async def _read_back(
        self, ex: Any, symbol: str, client_order_id: str, sent: dict[str, Any], *, rests: bool
    ) -> dict[str, Any]:
        """The order just created (or cancelled) as a lookup by its client id shows it. A market or IOC
        order still open is read again a few times; when it cannot be found, an ExchangeError (the
        adapter's OrderStatusUnknown during an order: the caller reconciles by client id)."""
        order: dict[str, Any] | None = None
        for attempt in range(READ_BACK_TRIES):
            order = await self.fetch_by_client_id(ex, symbol, client_order_id)
            if order is not None and (rests or order.get("status") != "open"):
                return order
            if attempt + 1 < READ_BACK_TRIES:
                await asyncio.sleep(READ_BACK_DELAY_S)
        if order is not None:
            return order  # still open after the retries: reported as Bybit shows it
        raise ccxt_async.ExchangeError(
            f"{self.venue}: order {sent.get('id')} ({client_order_id}) was accepted but is not visible yet"
        )

    # ----- resting stops and cancels -----

    def supports_stops(self, ex: Any, symbol: str) -> bool:
        market = (ex.markets or {}).get(symbol) or {}
        return market.get("spot") is True or (market.get("swap") is True and market.get("linear") is True)

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
        if market.get("spot") is True and side != "sell":
            raise NotImplementedError(f"{self.venue}: only stop-loss sells rest on spot")
        # stopLossPrice: triggers when the price falls to it for a sell, rises to it for a buy; spot
        # becomes a TP/SL order (orderFilter tpslOrder), linear a reduce-only conditional order
        params: dict[str, Any] = {"clientOrderId": client_order_id, "stopLossPrice": stop_price}
        symbol = market["symbol"]
        if limit_price is None:
            sent = await ex.create_order(symbol, "market", side, amount, None, params)
        else:
            params["timeInForce"] = "GTC"
            sent = await ex.create_order(symbol, "limit", side, amount, limit_price, params)
        return await self._read_back(ex, symbol, client_order_id, sent, rests=True)

    async def cancel_by_client_id(self, ex: Any, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        spot = ((ex.markets or {}).get(symbol) or {}).get("spot") is True
        filters: list[str | None] = ["tpslOrder", "Order"] if spot else [None]
        for order_filter in filters:
            params: dict[str, Any] = {"orderLinkId": client_order_id}
            if order_filter is not None:
                params["orderFilter"] = order_filter
            try:
                sent: dict[str, Any] = await ex.cancel_order(None, symbol, params)
            except ccxt_async.OrderNotFound:  # 170213 spot, 110001 linear: no open order of that kind
                continue
            final = await self.fetch_by_client_id(ex, symbol, client_order_id)
            if final is None:  # cancelled, but not readable yet: say so without a fill
                final = {**sent, "status": "canceled", "filled": None}
            final["clientOrderId"] = client_order_id
            return final
        return None

    # ----- account setup -----

    async def check_keys(self, ex: Any) -> None:
        key, account = await asyncio.gather(ex.privateGetV5UserQueryApi(), ex.privateGetV5AccountInfo())
        key_info, account_info = key.get("result") or {}, account.get("result") or {}
        # what ccxt's is_unified_enabled would fetch before the first order, cached where it looks
        ex.options["enableUnifiedMargin"] = str(key_info.get("unified")) == "1"
        ex.options["enableUnifiedAccount"] = str(key_info.get("uta")) == "1"
        ex.options["unifiedMarginStatus"] = ex.safe_integer(account_info, "unifiedMarginStatus", 6)
        self._margin_mode = account_info.get("marginMode")
        if str(key_info.get("readOnly")) == "1":
            raise ccxt_async.PermissionDenied(
                f"{self.venue}: the API key is read-only: it cannot place orders"
            )

    async def hedge_mode(self, ex: Any) -> bool | None:
        """Hedge mode on any open USDT perpetual position, or on the reference symbol (BTC/USDT:USDT,
        else the first loaded one): Bybit has no account-wide read. None without linear markets."""
        linear = [s for s, m in (ex.markets or {}).items() if m.get("swap") and m.get("linear")]
        if not linear:
            return None
        reference = "BTC/USDT:USDT" if "BTC/USDT:USDT" in linear else sorted(linear)[0]
        open_positions, reference_entries = await asyncio.gather(
            ex.fetch_positions(None, {"settleCoin": "USDT"}), ex.fetch_positions([reference])
        )
        return any(_hedged(p) for p in [*open_positions, *reference_entries])

    async def prepare_contract(
        self, ex: Any, symbol: str, *, leverage: float, margin_mode: MarginMode
    ) -> None:
        entries: list[dict[str, Any]] = await ex.fetch_positions([symbol])
        if any(_hedged(p) for p in entries):
            raise OrderRejected(
                f"{self.venue}: {symbol} is in hedge (two-way) position mode; bridge trades one-way mode "
                "only and never switches it: switch it on Bybit",
                exchange=self.venue,
                code="hedge_mode",
            )
        await self._check_margin_mode(ex, symbol, margin_mode, leverage)
        current = {ex.safe_number(p, "leverage") for p in entries}
        if current != {float(leverage)}:
            try:
                await ex.set_leverage(leverage, symbol)
            except ccxt_async.BadRequest as exc:
                if not any(code in str(exc) for code in _NOT_MODIFIED):
                    raise

    async def _check_margin_mode(
        self, ex: Any, symbol: str, margin_mode: MarginMode, leverage: float
    ) -> None:
        """A unified account's margin mode is account-wide: refuse a mismatch rather than switch every
        position's. A classic account sets it per symbol (ccxt: POST /v5/position/switch-isolated)."""
        if not (ex.options.get("enableUnifiedAccount") or ex.options.get("enableUnifiedMargin")):
            try:
                await ex.set_margin_mode(margin_mode, symbol, {"leverage": leverage})
            except ccxt_async.ExchangeError as exc:  # MarginModeAlreadySet is a BadRequest in ccxt
                if not any(code in str(exc) for code in _NOT_MODIFIED):
                    raise
            return
        if self._margin_mode is None:
            account = await ex.privateGetV5AccountInfo()
            self._margin_mode = (account.get("result") or {}).get("marginMode")
        wanted = _MARGIN_MODES[margin_mode]
        if self._margin_mode != wanted:
            raise OrderRejected(
                f"{self.venue}: the unified account's margin mode is {self._margin_mode}, not {wanted} "
                f"({margin_mode}); on Bybit it is account-wide and bridge never switches it: switch it on "
                f"Bybit or set the strategy's margin_mode to match",
                exchange=self.venue,
                code="margin_mode",
            )


def _hedged(position: dict[str, Any]) -> bool:
    """Is this ccxt position (from GET /v5/position/list) a side of a hedge-mode pair (positionIdx 1, 2)?"""
    return str((position.get("info") or {}).get("positionIdx", "0")) in ("1", "2")
