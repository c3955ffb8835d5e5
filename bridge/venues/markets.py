"""The markets of one exchange's ccxt instance: Market objects built from ccxt's map, rate-limited
targeted refreshes for symbols not loaded yet, full reloads through the market worker process (see
market_worker), and what targeted refreshes found, kept across full reloads.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

import ccxt.async_support as ccxt_async
import structlog

from bridge.errors import ExchangeError
from bridge.venues import market_worker
from bridge.venues.errors import translated
from bridge.venues.market_loader import LoadRequest
from bridge.venues.market_worker import MarketMaps, MarketWorker
from bridge.venues.types import Limiter, Market, finite_float

# the adapter's logger name: these events are the exchange's, wherever the code lives
log = structlog.get_logger("bridge.venues.exchange")

SYMBOL_REFRESH_TIMEOUT_S = 3.0  # bound on one targeted market refresh
SYMBOL_REFRESH_BURST = 5  # targeted refreshes allowed back to back ...
SYMBOL_REFRESH_PER_S = 1.0  # ... then this many per second, across all symbols
SYMBOL_REFRESH_MIN_INTERVAL_S = 1.0  # and at most one per symbol per interval
_EXCHANGE_INFO_COST = 4  # binance GET exchangeInfo: weight 20, in ccxt's units of 5 weight
_MARKET_MAPS = ("markets", "markets_by_id", "baseCurrencies", "quoteCurrencies")


class MarketBook:
    """Market lookups and targeted refreshes for one Exchange. Methods take the started ccxt
    instance (`ex`); the book keeps only its own state."""

    def __init__(self, exchange_id: str, *, clock: Callable[[], float], limiter: Limiter) -> None:
        self._id = exchange_id
        self._clock = clock
        self._limiter = limiter
        self._market_cache: dict[str, Market] = {}
        self._market_cache_of: dict[str, Any] | None = None  # the ccxt map the cache was built from
        self._tokens = float(SYMBOL_REFRESH_BURST)
        self._tokens_at = clock()
        self._last_lookup: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[Market | None]] = {}
        self._targeted: dict[str, tuple[float, dict[str, Any]]] = {}  # symbol -> (added at, market)
        self._worker: MarketWorker | None = None  # the daemon's market worker, once a full reload used it

    def market(self, ex: Any, symbol: str) -> Market | None:
        """The cached market, without I/O (None before start). Market objects are built once per symbol
        and map: the order path asks for the same one several times per order."""
        markets: dict[str, Any] | None = ex.markets if ex is not None else None
        if not markets:
            return None
        if markets is not self._market_cache_of:  # every (re)load replaces ccxt's map
            self._market_cache, self._market_cache_of = {}, markets
        found = self._market_cache.get(symbol)
        if found is None:
            raw = markets.get(symbol)
            if not raw:
                return None
            found = self._market_cache[symbol] = _to_market(raw)
        return found

    async def find(self, ex: Any, symbol: str) -> Market | None:
        """The cached market, else one bounded, rate-limited targeted refresh (shared by concurrent
        callers for the same symbol). None if the exchange does not list it or no refresh was allowed."""
        found = self.market(ex, symbol)
        if found is not None:
            return found
        task = self._inflight.get(symbol)
        if task is None:
            if not self._may_refresh(symbol):
                log.debug("exchange.symbol_refresh_skipped", exchange=self._id, symbol=symbol)
                return None
            task = asyncio.create_task(self._refresh_symbol(ex, symbol))
            self._inflight[symbol] = task
            task.add_done_callback(lambda _: self._inflight.pop(symbol, None))
        # shielded: one impatient caller must not cancel the lookup the others wait on
        return await asyncio.shield(task)

    def refreshing(self) -> list[asyncio.Task[Market | None]]:
        """The targeted refreshes in flight (for the adapter's close() to cancel)."""
        return [*self._inflight.values()]

    def reload(self, ex: Any, request: LoadRequest, *, since: float) -> Coroutine[Any, Any, MarketMaps]:
        """The full reload: every market fetched and parsed by the daemon's market worker (another
        process), swapped in at once, then the markets targeted refreshes found since `since` (book
        clock) put back. Raises ExchangeUnavailable (old markets kept) if the exchange or the worker
        failed. The worker is taken now, not when the reload first runs, so a close() in between
        lets go of it (and the reload fails) instead of leaving it running."""
        if self._worker is None:
            self._worker = market_worker.acquire()
        return self._reload(self._worker, ex, request, since)

    async def _reload(self, worker: MarketWorker, ex: Any, request: LoadRequest, since: float) -> MarketMaps:
        maps = await worker.load(request, MarketMaps.reusing(ex))
        began = time.perf_counter()
        maps.apply(ex)
        self.keep_targeted(ex, since=since)
        maps.swap_ms = round((time.perf_counter() - began) * 1000, 2)
        return maps

    async def close(self) -> None:
        """Let go of the market worker (the last exchange to let go stops it). Safe to call twice."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await market_worker.release(worker)

    def keep_targeted(self, ex: Any, *, since: float) -> None:
        """After a full reload that began at `since` (book clock): put back the markets targeted refreshes
        found meanwhile, so a slow reload cannot drop a listing found a moment ago."""
        self._targeted = {s: (at, m) for s, (at, m) in self._targeted.items() if at >= since}
        _add_markets(ex, [m for s, (_, m) in self._targeted.items() if s not in ex.markets])

    def _may_refresh(self, symbol: str) -> bool:
        now = self._clock()
        last = self._last_lookup.get(symbol)
        if last is not None and now - last < SYMBOL_REFRESH_MIN_INTERVAL_S:
            return False
        self._tokens = min(
            SYMBOL_REFRESH_BURST, self._tokens + (now - self._tokens_at) * SYMBOL_REFRESH_PER_S
        )
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        if len(self._last_lookup) > 1000:  # a storm of junk symbols must not grow this forever
            cutoff = now - SYMBOL_REFRESH_MIN_INTERVAL_S
            self._last_lookup = {s: t for s, t in self._last_lookup.items() if t >= cutoff}
        self._last_lookup[symbol] = now
        return True

    async def _refresh_symbol(self, ex: Any, symbol: str) -> Market | None:
        began = time.perf_counter()
        try:
            with translated(self._id, "read"):
                async with asyncio.timeout(SYMBOL_REFRESH_TIMEOUT_S):
                    fresh = await self._fetch_markets_for(ex, symbol)
        except ExchangeError as exc:
            log.warning("exchange.symbol_refresh_failed", exchange=self._id, symbol=symbol, error=str(exc))
            return None
        self._merge_markets(ex, fresh)
        found = self.market(ex, symbol)
        log.info(
            "exchange.symbol_refresh",
            exchange=self._id,
            symbol=symbol,
            found=found is not None,
            fetched=len(fresh),
            elapsed_ms=round((time.perf_counter() - began) * 1000, 1),
        )
        return found

    async def _fetch_markets_for(self, ex: Any, symbol: str) -> list[dict[str, Any]]:
        market_id = _binance_spot_id(symbol) if isinstance(ex, ccxt_async.binance) else None
        if market_id is None:
            # no targeted endpoint known for this exchange: one full fetch, merged like a targeted one
            markets: list[dict[str, Any]] = await ex.fetch_markets()
            return markets
        try:
            # The spot exchangeInfo endpoint, directly: fetch_markets would also query every other
            # configured market type, which ignores `symbol`. Cost 0 for ccxt's limiter: its cost of 4
            # would make the order that typically follows wait 200 ms; _may_refresh bounds these calls.
            # bridge's limiter charges the real cost: within budget nothing waits for it.
            cost = 0 if self._limiter == "ccxt" else _EXCHANGE_INFO_COST
            response = await ex.request(
                "exchangeInfo", ["public"], "GET", {"symbol": market_id}, {"cost": cost}
            )
        except ccxt_async.BadSymbol:  # -1121 Invalid symbol: not listed (yet)
            return []
        parsed = (ex.parse_market(raw) for raw in response.get("symbols") or [])
        return [m for m in parsed if m is not None]

    def _merge_markets(self, ex: Any, fresh: list[dict[str, Any]]) -> None:
        now = self._clock()
        for market in fresh:
            self._targeted[market["symbol"]] = (now, market)
        _add_markets(ex, fresh)


def _to_market(raw: dict[str, Any]) -> Market:
    limits = raw.get("limits") or {}
    return Market(
        symbol=raw["symbol"],
        id=str(raw.get("id")),
        base=str(raw.get("base")),
        quote=str(raw.get("quote")),
        type=str(raw.get("type")),
        active=raw.get("active") is not False,  # ccxt's None means "unknown", which trades
        min_cost=finite_float((limits.get("cost") or {}).get("min")),
        raw=raw,
    )


def _add_markets(ex: Any, markets: list[dict[str, Any]]) -> None:
    """Add or replace a few markets in ccxt's maps. ccxt's set_markets(old + new) re-processes every
    market: ~200 ms of blocked loop with binance's ~3000, right before the order that wanted the new
    one. set_markets(new) prepares just the new entries (defaults, fees; it merges currencies itself),
    then the old maps are put back with them added. No await in between: nobody sees the partial map."""
    if not markets:
        return
    old = {name: getattr(ex, name) or {} for name in _MARKET_MAPS}
    ex.set_markets(markets)
    for name, entries in old.items():
        setattr(ex, name, {**entries, **(getattr(ex, name) or {})})
    ex.symbols = sorted(ex.markets)
    ex.ids = sorted(ex.markets_by_id)


def _binance_spot_id(symbol: str) -> str | None:
    """Binance's id for a unified spot symbol ("ABC/USDT" -> "ABCUSDT"); None for anything else."""
    base, slash, quote = symbol.partition("/")
    if not slash or not re.fullmatch(r"[A-Z0-9]+", base + quote):
        return None
    return base + quote
