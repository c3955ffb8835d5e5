"""The session half of the ccxt adapter: ExchangeSession, the base of bridge.venues.exchange.Exchange,
with the ccxt instance's lifecycle (start, clock sync, key check, keep-warm, close) and its markets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import ccxt.async_support as ccxt_async
import structlog

from bridge.aio import keep_heap_settled
from bridge.config import ExchangeConfig
from bridge.errors import ConfigError
from bridge.venues import fastpath, market_worker
from bridge.venues.ccxt_client import ccxt_config, limit_market_loading, recording
from bridge.venues.dialect import Dialect, dialect_for
from bridge.venues.errors import describe, translated
from bridge.venues.market_worker import MarketMaps
from bridge.venues.markets import MarketBook
from bridge.venues.ratelimit import TokenBucket
from bridge.venues.types import Limiter, Market

# the adapter's logger name: these events are the exchange's, wherever the code lives
log = structlog.get_logger("bridge.venues.exchange")

# A pooled connection idle for aiohttp's keep-alive (15 s) is closed, and the next order would pay a
# TCP (and on the real exchange TLS) handshake. Every KEEP_WARM_S this many concurrent cheap requests
# (fetch_time, binance weight 1 each) keep that many connections open for concurrent orders.
KEEP_WARM_S = 10.0
KEEP_WARM_CONNECTIONS = 4


class ExchangeSession:
    """One ccxt instance for one exchange account, without the orders (see Exchange). Create it
    anywhere, `await start()` inside the running loop, `await close()` on shutdown."""

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
        # the ccxt class: `venue:` in the account's config, else its name (two accounts, one venue)
        self._venue = cfg.venue or exchange_id
        self._dialect: Dialect = dialect_for(self._venue)
        self._dry_run = dry_run
        self._clock = clock
        self._keep_warm_s = keep_warm_s
        self._ex: Any = None
        self._up = False  # start() completed
        user_limit = cfg.ccxt.get("enableRateLimit")
        self.limiter: Limiter = "bridge" if user_limit is None else ("ccxt" if user_limit else "off")
        self._bucket: TokenBucket | None = None
        self._order_cost = 1.0  # ccxt cost units of one order request; learned from the first order
        self._keep_warm: asyncio.Task[None] | None = None
        self._client_id_rule = (self._dialect.client_id_prefix, self._dialect.client_id_max)
        self._fast: fastpath.BinanceSpotOrders | None = None
        self._markets = MarketBook(exchange_id, clock=clock, limiter=self.limiter)

    @property
    def id(self) -> str:
        return self._id

    @property
    def venue(self) -> str:
        """The ccxt exchange class of this account (`exchanges.NAME.venue`, default NAME)."""
        return self._venue

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @property
    def ccxt(self) -> Any:
        """The raw ccxt instance, for strategies that ask for it explicitly. Its errors are not
        translated and its calls bypass every check here."""
        return self._started()

    @property
    def started(self) -> bool:
        """Whether start() completed (and close() has not run): a venue down at boot is configured but
        not started while the daemon retries it; callers skip it rather than meet a RuntimeError."""
        return self._ex is not None and self._up

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
            if check_keys and any(kind != "spot" for kind in self._cfg.market_types):
                await self._refuse_hedge_mode()
        except BaseException:
            await self.close()
            raise
        self._fast = self._fast_path()
        self._up = True
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
        await self._markets.close()
        ex, self._ex, self._up = self._ex, None, False
        if ex is not None:
            await ex.close()
            log.info("exchange.closed", exchange=self._id)

    @property
    def time_offset_ms(self) -> int | None:
        """Our clock minus the exchange's, as ccxt subtracts it from request timestamps."""
        value = (self._ex.options or {}).get("timeDifference") if self._ex is not None else None
        return None if value is None else int(value)

    def _create(self) -> Any:
        if self._venue not in ccxt_async.exchanges:
            key = f"exchanges.{self._id}" + (".venue" if self._cfg.venue else "")
            raise ConfigError(f"{key}: unknown exchange id {self._venue!r} (not a ccxt exchange)")
        ex = recording(getattr(ccxt_async, self._venue))(ccxt_config(self._cfg, dry_run=self._dry_run))
        limit_market_loading(ex, self._cfg)
        if self.limiter == "bridge":
            # ccxt keeps calling throttle() with each endpoint's cost; the bucket decides
            self._bucket = ex.bridge_bucket = TokenBucket(
                self._dialect.budget(float(ex.rateLimit)), clock=self._clock
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
        market_worker.index_by_id(self._ex)  # the shape full refreshes swap in (see MarketMaps)

    async def _sync_clock_then_check(self, check_keys: bool) -> None:
        await self._sync_clock()
        if check_keys:
            await self._check_keys()

    async def sync_clock(self) -> None:
        """Re-measure the clock offset alone (one time request, no market reload)."""
        self._started()
        await self._sync_clock()

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
            await self._dialect.check_keys(ex)
        log.info("exchange.keys_accepted", exchange=self._id)

    async def _refuse_hedge_mode(self) -> None:
        """ConfigError (exit 78) when an account that loads contract markets is in hedge mode."""
        with translated(self._id, "read"):
            hedged = await self._dialect.hedge_mode(self._ex)
        if hedged:
            key = f"exchanges.{self._id}"
            raise ConfigError(
                f"{key}: the account is in hedge (two-way) position mode; bridge trades contracts in "
                "one-way mode only and never switches it: switch it on the venue, or leave swap out of "
                f"{key}.market_types"
            )
        log.info("exchange.position_mode", exchange=self._id, hedged=hedged)

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
        """Reload every market and re-measure the clock. The markets are fetched and parsed in the
        market worker process (parsing ~3,000 markets here would block the loop ~0.4 s) and swapped in
        at once. Markets a targeted refresh added meanwhile are kept, so a slow full reload cannot drop
        a listing found a moment ago."""
        ex = self._started()
        began, began_wall = self._clock(), time.perf_counter()
        before = len(ex.markets or {})
        reloaded: list[MarketMaps] = []
        reloading = self._markets.reload(ex, market_worker.load_request(self._id, self._cfg), since=began)

        async def reload() -> None:
            reloaded.append(await reloading)

        with translated(self._id, "read"):
            await _all_or_none(reload(), self._sync_clock())
        maps = reloaded[0]
        keep_heap_settled()  # the markets swapped in: out of the collector's full passes
        if self._bucket is not None:
            self._bucket.reserve(maps.cost)  # the worker's requests count against this account's budget
        log.info(
            "exchange.markets_refreshed",
            exchange=self._id,
            markets=len(ex.markets),
            change=len(ex.markets) - before,
            time_offset_ms=self.time_offset_ms,
            elapsed_ms=round((time.perf_counter() - began_wall) * 1000, 1),
            worker_ms=maps.worker_ms,
            swap_ms=maps.swap_ms,
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
