"""The one price source of the trading side: each venue's best bid/ask for every symbol, kept warm off
the hot path by one batch request per venue per `price_refresh` seconds, so an entry's price cap, paper
fills, exits and `ctx.price` read memory, not the network.

A quote older than `price_max_age` is never used: an order then costs at most one single-symbol request
(`fetch_quote`) before it goes, and no price at all means the order is skipped with a reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from bridge.aio import Sleep
from bridge.errors import ExchangeError
from bridge.retry import refresh_until_stopped
from bridge.venues.exchange import Exchange
from bridge.venues.types import Quote, Side

log = structlog.get_logger(__name__)

# A symbol fetched one at a time (cold path) is not fetched again by another order within this time:
# two announcements of one new coin in a second share one request.
_COLD_FETCH_SHARE_S = 0.25


class PriceCache:
    """Quotes per (exchange, symbol). `refresh_interval` 0 keeps nothing warm (every price is a single
    fetch, as in replay, where the stream's price lines are the venue)."""

    def __init__(
        self,
        exchanges: Mapping[str, Exchange],
        *,
        max_age: float = 2.0,
        refresh_interval: float = 1.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._exchanges = exchanges
        self.max_age = max_age
        self.refresh_interval = refresh_interval
        self.clock_ns = clock_ns
        self._quotes: dict[str, dict[str, Quote]] = {ex_id: {} for ex_id in exchanges}
        self._inflight: dict[tuple[str, str], asyncio.Task[Quote | None]] = {}
        self.batches = 0  # batch refreshes done, for /health and tests
        self.single_fetches = 0

    # ---- reads -------------------------------------------------------------------------------------

    def cached(self, exchange: str, symbol: str) -> Quote | None:
        """The last quote known for the symbol, however old (None if none)."""
        return self._quotes.get(exchange, {}).get(symbol)

    def fresh(self, exchange: str, symbol: str, max_age: float | None = None) -> Quote | None:
        """The cached quote if it is at most `max_age` (default: the cache's) seconds old."""
        quote = self.cached(exchange, symbol)
        limit = self.max_age if max_age is None else max_age
        if quote is None or self.clock_ns() - quote.ts_ns > limit * 1e9:
            return None
        return quote

    async def quote(self, exchange: str, symbol: str, max_age: float | None = None) -> Quote | None:
        """A quote no older than `max_age`: from memory, else one request for this symbol (shared with
        any other order asking for the same symbol at the same time). None if the venue cannot say."""
        quote = self.fresh(exchange, symbol, max_age)
        if quote is not None:
            return quote
        key = (exchange, symbol)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch_one(exchange, symbol))
            self._inflight[key] = task

            def forget(_: asyncio.Task[Quote | None]) -> None:
                self._inflight.pop(key, None)

            task.add_done_callback(forget)
        quote = await asyncio.shield(task)
        limit = self.max_age if max_age is None else max_age
        if quote is None or self.clock_ns() - quote.ts_ns > max(limit, _COLD_FETCH_SHARE_S) * 1e9:
            return None
        return quote

    async def reference(
        self, exchange: str, symbol: str, side: Side, max_age: float | None = None
    ) -> float | None:
        """What an order on `side` would trade at now (best ask for a buy, best bid for a sell, the
        last trade where the venue gives no book price), from a quote no older than `max_age`."""
        quote = await self.quote(exchange, symbol, max_age)
        if quote is None:
            return None
        price = quote.buy_reference if side == "buy" else quote.sell_reference
        return price if price is not None and price > 0 else None

    # ---- writes ------------------------------------------------------------------------------------

    def put(self, exchange: str, quote: Quote) -> None:
        """Remember a quote (a newer one only: a slow batch never overwrites a fresher single fetch)."""
        book = self._quotes.setdefault(exchange, {})
        known = book.get(quote.symbol)
        if known is None or known.ts_ns <= quote.ts_ns:
            book[quote.symbol] = quote

    async def _fetch_one(self, exchange: str, symbol: str) -> Quote | None:
        ex = self._exchanges.get(exchange)
        if ex is None or not ex.started:  # a venue down at boot is retried by the daemon, not here
            return None
        self.single_fetches += 1
        try:
            quote = await ex.fetch_quote(symbol)
        except ExchangeError as exc:
            log.warning("prices.fetch_failed", exchange=exchange, symbol=symbol, error=str(exc))
            return None
        if quote is not None:
            self.put(exchange, quote)
        return quote

    async def refresh(self, exchange: str) -> int:
        """One batch request for every symbol of `exchange`; returns how many quotes it brought."""
        ex = self._exchanges[exchange]
        if not ex.started:  # a venue down at boot: nothing to ask until the daemon has started it
            return 0
        quotes = await ex.fetch_quotes()
        for quote in quotes.values():
            self.put(exchange, quote)
        self.batches += 1
        return len(quotes)

    async def run(self, stop: asyncio.Event, *, sleep: Sleep = asyncio.sleep) -> None:
        """Keep every venue's quotes warm until `stop`: one task per venue, so a slow venue delays no
        other. Failures are logged and retried with the shared backoff, honouring Retry-After."""
        if self.refresh_interval <= 0 or not self._exchanges:
            return
        await asyncio.gather(*(self._run_one(ex_id, stop, sleep) for ex_id in self._exchanges))

    async def _run_one(self, exchange: str, stop: asyncio.Event, sleep: Sleep) -> None:
        def failed(exc: ExchangeError, wait: float) -> None:
            log.warning("prices.refresh_failed", exchange=exchange, error=str(exc), retry_in=round(wait, 2))

        await refresh_until_stopped(
            lambda: self.refresh(exchange),
            every=self.refresh_interval,
            max_wait=60.0,
            stop=stop,
            sleep=sleep,
            on_failure=failed,
        )
