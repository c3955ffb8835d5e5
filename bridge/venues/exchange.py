"""The ccxt adapter: the Exchange class, one ccxt instance per exchange account, with its lifecycle and
markets (from its base, `session.ExchangeSession`), market and limit IOC orders, resting stop orders
and cancels by client id, order lookups and quotes. Its pieces live beside it in bridge.venues (the
limit terms in `precision`, the stop and cancel requests in `stops`, the quote requests in `quotes`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async
import structlog

from bridge.errors import ExchangeError, OrderRejected, OrderStatusUnknown, UnknownSymbol
from bridge.venues import precision, quotes
from bridge.venues.ccxt_client import CLIENT_ID_BASE, OrderCall, order_call
from bridge.venues.dialect import MarginMode
from bridge.venues.errors import describe, translated
from bridge.venues.markets import SYMBOL_REFRESH_BURST, SYMBOL_REFRESH_MIN_INTERVAL_S
from bridge.venues.ratelimit import TokenBucket
from bridge.venues.session import KEEP_WARM_CONNECTIONS, KEEP_WARM_S, ExchangeSession
from bridge.venues.types import OrderRequest, OrderResult, Quote, Side, finite_float

# KEEP_WARM_* and SYMBOL_REFRESH_*: re-exported for the tests that read them here
__all__ = [
    "KEEP_WARM_CONNECTIONS",
    "KEEP_WARM_S",
    "SYMBOL_REFRESH_BURST",
    "SYMBOL_REFRESH_MIN_INTERVAL_S",
    "Exchange",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


class Exchange(ExchangeSession):
    """One ccxt instance for one exchange account. Create it anywhere, `await start()` inside the
    running loop, `await close()` on shutdown. With `dry_run` it reads markets and prices but refuses
    to send any order (paper fills are bridge.trading.paper's job): a last line of defence for paper mode."""

    # ----- orders -----

    def format_client_order_id(self, base_id: str) -> str:
        """Adapt a 1-64 character alphanumeric id to this exchange's client-id format. Too long ids keep
        their tail (the random part of a ULID)."""
        if not CLIENT_ID_BASE.fullmatch(base_id):
            raise ValueError(f"client order id base must be 1-64 letters or digits, got {base_id!r}")
        prefix, limit = self._client_id_rule
        return prefix + base_id[-(limit - len(prefix)) :]

    @property
    def fast_orders(self) -> bool:
        """Are market and limit IOC orders sent by bridge.venues.fastpath (binance spot, HMAC key, not
        ccxt's limiter)?"""
        return self._fast is not None

    @property
    def budget(self) -> TokenBucket | None:
        """This account's request budget (None when ccxt's own limiter, or none, is in charge)."""
        return self._bucket

    def reserve_order(self) -> float:
        """Reserve the request budget of one order: the seconds to wait before sending it, 0.0 while
        within the exchange's limits. Then `create_order` with `OrderRequest(prepaid=True)`, or
        `refund_order()`."""
        return 0.0 if self._bucket is None else self._bucket.reserve(self._order_cost)

    def refund_order(self) -> None:
        """Give back a reservation whose order will not be sent."""
        if self._bucket is not None:
            self._bucket.refund(self._order_cost)

    async def create_order(self, req: OrderRequest) -> OrderResult:
        """Place one market order, or with `req.limit_price` one limit order that fills at once at that
        price or better and expires for the rest (timeInForce IOC). An IOC that filled nothing comes back
        with filled 0 and the venue's status as ccxt parses it ("expired" on binance, "canceled" on some
        venues); a partial fill with filled < amount. Never retried, except once after a refused
        timestamp (binance -1021), which proves it was not executed. Raises OrderRejected,
        OrderStatusUnknown, RateLimited, ExchangeAuthError, or UnknownSymbol when the symbol is not in
        the cached markets."""
        ex = self._order_ready(req.symbol)
        began = time.perf_counter()
        call = OrderCall(self._order_cost if req.prepaid else None, received_mono_ns=req.received_mono_ns)
        token = order_call.set(call)
        try:
            with translated(self._id, "order"):
                order = await self._skew_retried(lambda: self._send(ex, req), req.client_order_id)
                _check_answer(self._id, order)
        finally:
            order_call.reset(token)
            if call.charged is not None:
                self._order_cost = call.charged
        result = self._to_result(order, req.symbol, req.side, req.client_order_id)
        log.info(
            "exchange.order_created",
            exchange=self._id,
            symbol=req.symbol,
            side=req.side,
            client_order_id=req.client_order_id,
            order_id=result.order_id,
            status=result.status,
            limit_price=req.limit_price,
            filled=result.filled,
            elapsed_ms=round((time.perf_counter() - began) * 1000, 2),
        )
        return result

    async def _send(self, ex: Any, req: OrderRequest) -> dict[str, Any]:
        fast, limit = self._fast, req.limit_price
        market = ex.markets.get(req.symbol) if fast is not None else None
        if fast is not None and market is not None and fast.handles(market, limit=limit is not None):
            if ex.enableRateLimit:
                await ex.throttle(fast.cost)  # what ccxt's fetch2 would do (free if prepaid)
            return await fast.create(
                market, req.side, req.client_order_id, cost=req.cost, amount=req.amount, price=limit
            )
        market = ex.markets[req.symbol]
        per_contract = precision.contract_size(market)
        if per_contract != 1.0 and req.amount is not None:  # ccxt counts a swap's amount in contracts
            req = dataclasses.replace(req, amount=precision.to_contracts(req.amount, per_contract))
        return await self._dialect.create(ex, market, req)

    def _order_ready(self, symbol: str) -> Any:
        """The ccxt instance, for an order request on `symbol`: UnknownSymbol when it is not a loaded
        market; OrderRejected (code "dry_run") in a dry run, which never sends one."""
        ex = self._started()
        if self.market(symbol) is None:
            raise UnknownSymbol(f"{self._id}: {symbol} is not a loaded market", exchange=self._id)
        if self._dry_run:
            raise OrderRejected(
                f"{self._id}: dry run: orders are never sent", exchange=self._id, code="dry_run"
            )
        return ex

    async def _skew_retried(self, send: Callable[[], Awaitable[_T]], client_order_id: str) -> _T:
        """`send()`, and exactly once more after a refused timestamp (binance -1021), which proves the
        request was not executed, once the clock is re-measured."""
        try:
            return await send()
        except ccxt_async.InvalidNonce:
            await self._resync_after_clock_skew(client_order_id)
            return await send()

    async def _resync_after_clock_skew(self, client_order_id: str) -> None:
        log.warning("exchange.clock_skew", exchange=self._id, client_order_id=client_order_id)
        try:
            await self._sync_clock()
        except ExchangeError as exc:
            raise OrderRejected(
                f"{self._id}: timestamp refused and clock resync failed: {exc}",
                exchange=self._id,
                code="-1021",
            ) from None
        log.info("exchange.clock_resynced", exchange=self._id, time_offset_ms=self.time_offset_ms)

    async def fetch_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """Look an order up by its client id: the way to settle OrderStatusUnknown, and to follow a
        resting stop (status "open" while it rests; filled and average once triggered and filled). None
        when the exchange says no such order exists; ExchangeUnavailable (or another ExchangeError) when
        the lookup itself fails."""
        if self._dry_run:
            return None  # nothing was ever sent
        ex = self._started()
        with translated(self._id, "read"):
            order = await self._dialect.fetch_by_client_id(ex, symbol, client_order_id)
        if order is None:
            return None
        side: Side = "sell" if order.get("side") == "sell" else "buy"
        return self._to_result(order, symbol, side, client_order_id)

    async def prepare_contract(self, symbol: str, *, leverage: float, margin_mode: MarginMode) -> None:
        """Set a contract symbol's margin mode and leverage before its first order (once per symbol:
        the caller remembers). Raises UnknownSymbol for a market not loaded, ExchangeError when the venue
        refuses; nothing is sent in a dry run."""
        ex = self._started()
        if self.market(symbol) is None:
            raise UnknownSymbol(f"{self._id}: {symbol} is not a loaded market", exchange=self._id)
        if self._dry_run:
            return
        began = time.perf_counter()
        with translated(self._id, "read"):
            await self._dialect.prepare_contract(ex, symbol, leverage=leverage, margin_mode=margin_mode)
        log.info(
            "exchange.contract_prepared",
            exchange=self._id,
            symbol=symbol,
            leverage=leverage,
            margin_mode=margin_mode,
            elapsed_ms=round((time.perf_counter() - began) * 1000, 2),
        )

    # ----- resting stops and cancels -----

    def supports_resting_stops(self, symbol: str) -> bool:
        """Can a stop order rest on the exchange for `symbol` (`place_stop`)? As the venue's dialect
        says (Binance: spot markets that take STOP_LOSS orders); False for a market not loaded and in a
        dry run (which sends nothing). Without I/O."""
        return (
            self._ex is not None
            and not self._dry_run
            and symbol in (self._ex.markets or {})
            and self._dialect.supports_stops(self._ex, symbol)
        )

    async def place_stop(
        self,
        symbol: str,
        *,
        amount: float,
        stop_price: float,
        client_order_id: str,
        limit_price: float | None = None,
        side: Side = "sell",
    ) -> OrderResult:
        """Rest a stop order of `amount` on the exchange (a `side` order, by default a stop-loss sell;
        a buy stops a short on a contract market, reduce-only): at market once the price crosses
        `stop_price` (binance spot: STOP_LOSS), or with `limit_price` a GTC limit order at that price
        (STOP_LOSS_LIMIT); each venue's request is its dialect's (bridge.venues.dialects). The amount is truncated to the lot, the prices to the tick (down). The
        result has status "open" while it rests. Charged to the request budget; never retried, except
        once after a refused timestamp. Raises like create_order: OrderRejected (with its kind; "too_small"
        when the amount truncates to nothing), OrderStatusUnknown, RateLimited, UnknownSymbol; ValueError
        for a size or price that is not a positive number."""
        ex = self._order_ready(symbol)
        market = ex.markets[symbol]
        amount, stop_price, limit_price = self._dialect.stop_terms(
            ex, market, amount=amount, stop_price=stop_price, limit_price=limit_price
        )
        if amount <= 0 or stop_price <= 0 or limit_price == 0:
            raise OrderRejected(
                f"{self._id}: stop for {symbol} rounds to nothing on the market's lot or tick",
                exchange=self._id,
                kind="too_small" if amount <= 0 else "other",
            )
        began = time.perf_counter()
        with translated(self._id, "order"):
            order = await self._skew_retried(
                lambda: self._dialect.place_stop(
                    ex,
                    market,
                    side=side,
                    amount=precision.to_contracts(amount, precision.contract_size(market)),  # on a swap
                    stop_price=stop_price,
                    limit_price=limit_price,
                    client_order_id=client_order_id,
                ),
                client_order_id,
            )
        result = self._to_result(order, symbol, side, client_order_id)
        log.info(
            "exchange.stop_placed",
            exchange=self._id,
            symbol=symbol,
            client_order_id=client_order_id,
            order_id=result.order_id,
            status=result.status,
            amount=amount,
            stop_price=stop_price,
            limit_price=limit_price,
            elapsed_ms=round((time.perf_counter() - began) * 1000, 2),
        )
        return result

    async def cancel_order_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """Cancel an open order by its client id and return its final state as the exchange reports it:
        status "canceled" with what had filled. If it was no longer open (filled or cancelled meanwhile:
        binance -2011 "Unknown order sent."), the order as a lookup by client id finds it (e.g. status
        "closed", filled = amount). None only when the exchange has no order with that client id at
        all, and in a dry run. Raises OrderStatusUnknown when the cancel's own outcome is unknown
        (timeout, 5xx), RateLimited, ExchangeUnavailable when the lookup after -2011 fails."""
        if self._dry_run:
            return None  # nothing was ever sent
        ex = self._order_ready(symbol)
        with translated(self._id, "order"):
            order = await self._skew_retried(
                lambda: self._dialect.cancel_by_client_id(ex, symbol, client_order_id), client_order_id
            )
        if order is not None:
            result = self._to_result(
                order, symbol, "sell" if order.get("side") == "sell" else "buy", client_order_id
            )
            log.info(
                "exchange.order_cancelled",
                exchange=self._id,
                symbol=symbol,
                client_order_id=client_order_id,
                status=result.status,
                filled=result.filled,
            )
            return result
        found = await self.fetch_order_by_client_id(symbol, client_order_id)
        log.info(
            "exchange.cancel_found_no_open_order",
            exchange=self._id,
            symbol=symbol,
            client_order_id=client_order_id,
            status=None if found is None else found.status,
            filled=None if found is None else found.filled,
        )
        return found

    def limit_terms(
        self,
        symbol: str,
        side: Side,
        *,
        cap_price: float,
        amount: float | None = None,
        cost: float | None = None,
    ) -> tuple[float, float] | None:
        """(amount, limit_price) of a limit order capped at `cap_price`, without I/O: the price on the
        market's tick, down for a buy (never above the cap), up for a sell (never below the floor); the
        amount `amount`, else `cost` / that price, truncated to the lot (a buy never spends more than
        `cost`). None below the market's minimum amount or cost, or for a market not loaded. ~10 µs."""
        market = (self._ex.markets or {}).get(symbol) if self._ex is not None else None
        if market is None:
            return None
        return precision.limit_terms(self._ex, market, side, cap_price=cap_price, amount=amount, cost=cost)

    async def fetch_quotes(self) -> dict[str, Quote]:
        """Every loaded market's best bid/ask (or last price) in one request, for a cache refreshed off
        the order path; `ts_ns` is when the answer arrived. Binance spot: GET ticker/bookTicker for all
        symbols, request weight 4 (fetch_tickers would cost 80); elsewhere ccxt's fetch_tickers. Charged
        to the request budget; raises ExchangeUnavailable, RateLimited (or another ExchangeError)."""
        ex = self._started()
        with translated(self._id, "read"):
            return await quotes.fetch_all(ex)

    async def fetch_quote(self, symbol: str) -> Quote | None:
        """One symbol's quote, for when the cache holds nothing fresh. Binance spot: bookTicker?symbol=,
        request weight 2; elsewhere ccxt's fetch_ticker. None when the market is not loaded or the venue
        gives no price for it; a failed request raises like fetch_quotes."""
        ex = self._started()
        if symbol not in (ex.markets or {}):
            return None
        with translated(self._id, "read"):
            return await quotes.fetch_one(ex, symbol)

    async def fetch_free_balances(self) -> dict[str, float]:
        """Free amount per asset (ccxt fetch_balance()['free']); a failed request raises like fetch_quotes."""
        ex = self._started()
        with translated(self._id, "read"):
            free = (await ex.fetch_balance()).get("free") or {}
        amounts = {str(asset): finite_float(value) for asset, value in free.items()}
        return {asset: value for asset, value in amounts.items() if value is not None}

    async def fetch_price(self, symbol: str) -> float | None:
        """The last traded price, or None (logged) if the exchange cannot say."""
        ex = self._started()
        try:
            ticker = await ex.fetch_ticker(symbol)
        except Exception as exc:  # noqa: BLE001 - callers treat a missing price as "skip", never crash
            log.warning("exchange.price_failed", exchange=self._id, symbol=symbol, error=describe(exc))
            return None
        price = finite_float(ticker.get("last")) or finite_float(ticker.get("close"))
        return price if price is not None and price > 0 else None

    async def last_prices(self) -> dict[str, float]:
        """Last prices of every market in one request (fetch_tickers); {} if the exchange cannot say."""
        ex = self._started()
        try:
            tickers = await ex.fetch_tickers()
        except Exception as exc:  # noqa: BLE001 - a snapshot without prices is still useful
            log.warning("exchange.prices_failed", exchange=self._id, error=describe(exc))
            return {}
        prices = {s: finite_float(t.get("last")) or finite_float(t.get("close")) for s, t in tickers.items()}
        return {s: p for s, p in prices.items() if p is not None and p > 0}

    def _to_result(self, order: dict[str, Any], symbol: str, side: Side, client_order_id: str) -> OrderResult:
        order_id = order.get("id")
        market = (self._ex.markets or {}).get(symbol) if self._ex is not None else None
        per_contract = 1.0 if market is None else precision.contract_size(market)
        filled = finite_float(order.get("filled"))
        return OrderResult(
            exchange=self._id,
            symbol=order.get("symbol") or symbol,
            side=side,
            client_order_id=order.get("clientOrderId") or client_order_id,
            order_id=None if order_id is None else str(order_id),
            status=order.get("status") or "unknown",
            filled=None if filled is None else precision.from_contracts(filled, per_contract),  # base
            cost=finite_float(order.get("cost")),
            average=finite_float(order.get("average")),
            raw=order,
        )


def _check_answer(exchange: str, order: Any) -> None:
    """An order request answered 200 whose body says nothing usable (not an object, no order id, no
    status) is an unknown outcome, to be looked up: never read as a zero fill or a refusal."""
    if not isinstance(order, dict) or order.get("id") is None:
        raise OrderStatusUnknown(
            f"{exchange}: the order request's answer could not be read", exchange=exchange
        )
    if order.get("status") is None:
        raise OrderStatusUnknown(f"{exchange}: the order request's answer has no status", exchange=exchange)
