"""The ccxt adapter: the Exchange class, one ccxt instance per exchange account, with its lifecycle,
markets, market and limit IOC orders, order lookups and quotes. Its pieces live beside it in
bridge.venues (the limit terms in `precision`, the quote requests in `quotes`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import ccxt.async_support as ccxt_async
import structlog

from bridge.config import ExchangeConfig
from bridge.errors import ConfigError, ExchangeError, OrderRejected, UnknownSymbol
from bridge.venues import fastpath, precision, quotes
from bridge.venues.ccxt_client import (
    CLIENT_ID_BASE,
    OrderCall,
    ccxt_config,
    client_id_rule,
    limit_market_loading,
    order_call,
    recording,
)
from bridge.venues.errors import describe, translated
from bridge.venues.markets import SYMBOL_REFRESH_BURST, SYMBOL_REFRESH_MIN_INTERVAL_S, MarketBook
from bridge.venues.ratelimit import Budget, TokenBucket
from bridge.venues.types import Limiter, Market, OrderRequest, OrderResult, Quote, Side, finite_float

# SYMBOL_REFRESH_*: re-exported for the tests that read them here
__all__ = [
    "KEEP_WARM_CONNECTIONS",
    "KEEP_WARM_S",
    "SYMBOL_REFRESH_BURST",
    "SYMBOL_REFRESH_MIN_INTERVAL_S",
    "Exchange",
]

log = structlog.get_logger(__name__)

# A pooled connection idle for aiohttp's keep-alive (15 s) is closed, and the next order would pay a
# TCP (and on the real exchange TLS) handshake. Every KEEP_WARM_S this many concurrent cheap requests
# (fetch_time, binance weight 1 each) keep that many connections open for concurrent orders.
KEEP_WARM_S = 10.0
KEEP_WARM_CONNECTIONS = 4


# ----- the adapter -----


class Exchange:
    """One ccxt instance for one exchange account. Create it anywhere, `await start()` inside the
    running loop, `await close()` on shutdown. With `dry_run` it reads markets and prices but refuses
    to send any order (paper fills are bridge.trading.paper's job): a last line of defence for paper mode."""

    def __init__(
        self,
        exchange_id: str,
        cfg: ExchangeConfig,
        *,
        dry_run: bool,
        clock: Callable[[], float] = time.monotonic,
        keep_warm_s: float = KEEP_WARM_S,
    ) -> None:
        self._id = exchange_id
        self._cfg = cfg
        self._dry_run = dry_run
        self._clock = clock
        self._keep_warm_s = keep_warm_s
        self._ex: Any = None
        user_limit = cfg.ccxt.get("enableRateLimit")
        self.limiter: Limiter = "bridge" if user_limit is None else ("ccxt" if user_limit else "off")
        self._bucket: TokenBucket | None = None
        self._order_cost = 1.0  # ccxt cost units of one order request; learned from the first order
        self._keep_warm: asyncio.Task[None] | None = None
        self._client_id_rule = client_id_rule(exchange_id)
        self._fast: fastpath.BinanceSpotOrders | None = None
        self._markets = MarketBook(exchange_id, clock=clock, limiter=self.limiter)

    @property
    def id(self) -> str:
        return self._id

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @property
    def ccxt(self) -> Any:
        """The raw ccxt instance, for strategies that ask for it explicitly. Its errors are not
        translated and its calls bypass every check here."""
        return self._started()

    def _started(self) -> Any:
        if self._ex is None:
            raise RuntimeError(f"exchange {self._id} is not started")
        return self._ex

    # ----- lifecycle -----

    async def start(self, *, check_keys: bool) -> None:
        """Create the ccxt instance, load markets (one request on binance spot), measure the clock
        offset and, if `check_keys`, prove the key works with one cheap signed call."""
        began = time.perf_counter()
        self._ex = self._create()
        try:
            if self._cfg.sandbox:
                self._enable_sandbox()
            await _all_or_none(self._load_markets(), self._sync_clock_then_check(check_keys))
        except BaseException:
            await self.close()
            raise
        self._fast = self._fast_path()
        if self._keep_warm_s > 0 and self._ex.has.get("fetchTime"):
            self._keep_warm = asyncio.create_task(self._run_keep_warm(), name=f"keep-warm:{self._id}")
        log.info(
            "exchange.started",
            exchange=self._id,
            markets=len(self._ex.markets or {}),
            time_offset_ms=self.time_offset_ms,
            elapsed_ms=round((time.perf_counter() - began) * 1000, 1),
            sandbox=self._cfg.sandbox,
            dry_run=self._dry_run,
            rate_limiter=self.limiter,
        )
        if self.limiter == "off":
            log.warning(
                "exchange.rate_limit_off",
                exchange=self._id,
                hint="enableRateLimit: false in the ccxt block; nothing keeps requests within the exchange's limits",
            )
        elif self.limiter == "ccxt":
            log.warning(
                "exchange.ccxt_rate_limiter",
                exchange=self._id,
                hint="enableRateLimit: true in the ccxt block selects ccxt's own limiter (~10 ms per binance "
                "order); leave it out for bridge's, which sends at once within the same limits",
            )

    async def close(self) -> None:
        """Release the HTTP session. Safe to call twice."""
        tasks = [*self._markets.refreshing(), *([self._keep_warm] if self._keep_warm is not None else [])]
        self._keep_warm = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ex, self._ex = self._ex, None
        if ex is not None:
            await ex.close()
            log.info("exchange.closed", exchange=self._id)

    @property
    def time_offset_ms(self) -> int | None:
        """Our clock minus the exchange's, as ccxt subtracts it from request timestamps."""
        value = (self._ex.options or {}).get("timeDifference") if self._ex is not None else None
        return None if value is None else int(value)

    def _create(self) -> Any:
        if self._id not in ccxt_async.exchanges:
            raise ConfigError(f"exchanges.{self._id}: unknown exchange id {self._id!r} (not a ccxt exchange)")
        ex = recording(getattr(ccxt_async, self._id))(ccxt_config(self._cfg, dry_run=self._dry_run))
        limit_market_loading(ex, self._cfg)
        if self.limiter == "bridge":
            # ccxt keeps calling throttle() with each endpoint's cost; the bucket decides
            self._bucket = ex.bridge_bucket = TokenBucket(
                Budget.for_exchange(self._id, float(ex.rateLimit)), clock=self._clock
            )
        return ex

    def _enable_sandbox(self) -> None:
        error = ConfigError(f"exchanges.{self._id}.sandbox: ccxt has no sandbox URLs for {self._id}")
        if not self._ex.urls.get("test"):  # some exchanges declare `test: None`, which ccxt trips over
            raise error
        try:
            self._ex.set_sandbox_mode(True)
        except ccxt_async.NotSupported:
            raise error from None

    async def _load_markets(self) -> None:
        with translated(self._id, "read"):
            await self._ex.load_markets()

    async def _sync_clock_then_check(self, check_keys: bool) -> None:
        await self._sync_clock()
        if check_keys:
            await self._check_keys()

    async def _sync_clock(self) -> None:
        """Measure the clock offset that signed requests subtract (binance rejects skew as -1021)."""
        if not self._ex.has.get("fetchTime"):
            return
        with translated(self._id, "read"):
            await self._ex.load_time_difference()

    async def _check_keys(self) -> None:
        ex = self._ex
        if not ex.check_required_credentials(False):
            raise ConfigError(f"exchanges.{self._id}: checking keys needs api_key and secret")
        with translated(self._id, "read"):
            if isinstance(ex, ccxt_async.binance):
                await ex.private_get_account({"omitZeroBalances": "true"})  # weight 20, no market load
            else:
                await ex.fetch_balance()
        log.info("exchange.keys_accepted", exchange=self._id)

    def _fast_path(self) -> fastpath.BinanceSpotOrders | None:
        """bridge.venues.fastpath where it applies (see fastpath.select); orders then cost its cost."""
        fast = fastpath.select(self._ex, self._id, ccxt_limiter=self.limiter == "ccxt")
        if fast is not None:
            self._order_cost = fast.cost
        return fast

    async def _run_keep_warm(self) -> None:
        """Every keep_warm_s, a few concurrent cheap requests, so the order after a quiet hour finds
        open connections. Failures are logged at debug level: the next order reconnects anyway."""
        while True:
            await asyncio.sleep(self._keep_warm_s)
            pings = [self._ex.fetch_time() for _ in range(KEEP_WARM_CONNECTIONS)]
            for outcome in await asyncio.gather(*pings, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.debug("exchange.keep_warm_failed", exchange=self._id, error=describe(outcome))

    # ----- markets -----

    def market(self, symbol: str) -> Market | None:
        """The cached market, without I/O. Market objects are built once per symbol and map: the order
        path asks for the same one several times per order."""
        return self._markets.market(self._ex, symbol)

    async def find_market(self, symbol: str) -> Market | None:
        """The cached market, else one bounded, rate-limited targeted refresh (shared by concurrent
        callers for the same symbol). None if the exchange does not list it or no refresh was allowed."""
        return await self._markets.find(self._started(), symbol)

    async def refresh_markets(self) -> None:
        """Reload every market and re-measure the clock. Markets a targeted refresh added meanwhile
        are kept, so a slow full reload cannot drop a listing found a moment ago."""
        ex = self._started()
        began, began_wall = self._clock(), time.perf_counter()
        before = len(ex.markets or {})
        with translated(self._id, "read"):
            await _all_or_none(ex.load_markets(True), self._sync_clock())
        self._markets.keep_targeted(ex, since=began)
        log.info(
            "exchange.markets_refreshed",
            exchange=self._id,
            markets=len(ex.markets),
            change=len(ex.markets) - before,
            time_offset_ms=self.time_offset_ms,
            elapsed_ms=round((time.perf_counter() - began_wall) * 1000, 1),
        )

    async def run_market_refresh(self, stop: asyncio.Event) -> None:
        """Refresh markets every `markets_refresh` seconds until `stop` is set. Never raises."""
        interval = self._cfg.markets_refresh
        if interval <= 0:
            log.info("exchange.markets_refresh_disabled", exchange=self._id)
            return
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
            else:
                return
            try:
                await self.refresh_markets()
            except Exception as exc:  # noqa: BLE001 - a failed refresh keeps the old markets; try next time
                log.warning("exchange.markets_refresh_failed", exchange=self._id, error=describe(exc))

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
        ex = self._started()
        if self.market(req.symbol) is None:
            raise UnknownSymbol(f"{self._id}: {req.symbol} is not a loaded market", exchange=self._id)
        if self._dry_run:
            raise OrderRejected(
                f"{self._id}: dry run: orders are never sent", exchange=self._id, code="dry_run"
            )
        began = time.perf_counter()
        call = OrderCall(self._order_cost if req.prepaid else None)
        token = order_call.set(call)
        try:
            with translated(self._id, "order"):
                try:
                    order = await self._send(ex, req)
                except ccxt_async.InvalidNonce:
                    # the timestamp was refused, so nothing executed: resync and send exactly once more
                    await self._resync_after_clock_skew(req)
                    order = await self._send(ex, req)
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
        params = {"clientOrderId": req.client_order_id}  # fresh dict: ccxt may write into it
        order: dict[str, Any]
        if limit is not None:
            params["timeInForce"] = "IOC"
            order = await ex.create_order(req.symbol, "limit", req.side, req.amount, limit, params)
        elif req.cost is not None and req.side == "buy":
            order = await ex.create_market_buy_order_with_cost(req.symbol, req.cost, params)
        elif req.cost is not None:
            order = await ex.create_market_sell_order_with_cost(req.symbol, req.cost, params)
        else:
            order = await ex.create_order(req.symbol, "market", req.side, req.amount, None, params)
        return order

    async def _resync_after_clock_skew(self, req: OrderRequest) -> None:
        log.warning("exchange.clock_skew", exchange=self._id, client_order_id=req.client_order_id)
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
        """Look an order up by its client id: the way to settle OrderStatusUnknown. None when the
        exchange says no such order exists; ExchangeUnavailable (or another ExchangeError) when the
        lookup itself fails."""
        if self._dry_run:
            return None  # nothing was ever sent
        ex = self._started()
        with translated(self._id, "read"):
            try:
                order = await ex.fetch_order(None, symbol, {"clientOrderId": client_order_id})
            except ccxt_async.OrderNotFound:  # binance -2013
                return None
        side: Side = "sell" if order.get("side") == "sell" else "buy"
        return self._to_result(order, symbol, side, client_order_id)

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
        return OrderResult(
            exchange=self._id,
            symbol=order.get("symbol") or symbol,
            side=side,
            client_order_id=order.get("clientOrderId") or client_order_id,
            order_id=None if order_id is None else str(order_id),
            status=order.get("status") or "unknown",
            filled=finite_float(order.get("filled")),
            cost=finite_float(order.get("cost")),
            average=finite_float(order.get("average")),
            raw=order,
        )


# ----- helpers -----


async def _all_or_none(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run coroutines concurrently; on the first failure cancel the rest and re-raise it."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
