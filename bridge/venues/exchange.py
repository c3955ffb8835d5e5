"""The ccxt adapter, the only module that imports ccxt: markets, market orders, order lookups and
the one table that translates ccxt's exceptions into bridge.errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import ccxt.async_support as ccxt_async
import orjson
import structlog

from bridge import secrets
from bridge.config import ExchangeConfig
from bridge.errors import (
    ConfigError,
    ExchangeAuthError,
    ExchangeError,
    ExchangeUnavailable,
    OrderRejected,
    OrderStatusUnknown,
    RateLimited,
    UnknownSymbol,
)
from bridge.retry import retry_after_header
from bridge.venues import fastpath
from bridge.venues.ratelimit import Budget, TokenBucket

log = structlog.get_logger(__name__)

Side = Literal["buy", "sell"]
Phase = Literal["order", "read"]
# Who keeps requests within the exchange's limits. "bridge": bridge.venues.ratelimit (the default; lets orders
# out at once while within budget). "ccxt": ccxt's own throttle, chosen by setting `enableRateLimit:
# true` in the ccxt block (~10 ms per order on binance). "off": `enableRateLimit: false`.
Limiter = Literal["bridge", "ccxt", "off"]

ORDER_TIMEOUT_MS = 5_000  # ccxt's per-request timeout; its own default (10 s) is too long for an order
SYMBOL_REFRESH_TIMEOUT_S = 3.0  # bound on one targeted market refresh
SYMBOL_REFRESH_BURST = 5  # targeted refreshes allowed back to back ...
SYMBOL_REFRESH_PER_S = 1.0  # ... then this many per second, across all symbols
SYMBOL_REFRESH_MIN_INTERVAL_S = 1.0  # and at most one per symbol per interval
# A pooled connection idle for aiohttp's keep-alive (15 s) is closed, and the next order would pay a
# TCP (and on the real exchange TLS) handshake. Every KEEP_WARM_S this many concurrent cheap requests
# (fetch_time, binance weight 1 each) keep that many connections open for concurrent orders.
KEEP_WARM_S = 10.0
KEEP_WARM_CONNECTIONS = 4
_EXCHANGE_INFO_COST = 4  # binance GET exchangeInfo: weight 20, in ccxt's units of 5 weight
_DETAIL_MAX = 300


# ----- the project's view of markets and orders -----


@dataclass(frozen=True)
class Market:
    """A tradable market. `raw` is ccxt's unified market dict (precision, limits, `info`)."""

    symbol: str
    id: str
    base: str
    quote: str
    type: str
    active: bool
    min_cost: float | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OrderRequest:
    """A market order: spend `cost` (quote currency) or trade `amount` (base currency), exactly one."""

    symbol: str
    side: Side
    client_order_id: str
    cost: float | None = None
    amount: float | None = None
    # Its request budget was taken by Exchange.reserve_order() (and waited for) before the last gate
    # check, so the request itself does not wait again.
    prepaid: bool = False

    def __post_init__(self) -> None:
        sizes = [v for v in (self.cost, self.amount) if v is not None]
        if len(sizes) != 1:
            raise ValueError("an OrderRequest needs exactly one of cost and amount")
        if not (math.isfinite(sizes[0]) and sizes[0] > 0):
            raise ValueError(f"order size must be a positive number, got {sizes[0]}")
        if self.side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {self.side!r}")


@dataclass(frozen=True)
class OrderResult:
    """What the exchange says about an order. `raw` is ccxt's unified order dict (with `info`)."""

    exchange: str
    symbol: str
    side: Side
    client_order_id: str
    order_id: str | None
    status: str
    filled: float | None
    cost: float | None
    average: float | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


# ----- error translation -----

# First match wins, so subclasses come before their bases. Columns: ccxt class, during an order,
# during a read. Order-time choices follow one rule: only a definite refusal is OrderRejected;
# anything that may have reached the matching engine is OrderStatusUnknown.
_RULES: tuple[tuple[type[BaseException], type[ExchangeError], type[ExchangeError]], ...] = (
    (ccxt_async.RateLimitExceeded, RateLimited, RateLimited),
    (ccxt_async.DDoSProtection, RateLimited, RateLimited),
    # binance -1021: the timestamp was refused, so the order was not executed
    (ccxt_async.InvalidNonce, OrderRejected, ExchangeUnavailable),
    # "This symbol is not permitted for this account": refuses one order, not the whole key
    (ccxt_async.PermissionDenied, OrderRejected, ExchangeAuthError),
    (ccxt_async.AuthenticationError, ExchangeAuthError, ExchangeAuthError),
    (ccxt_async.BadSymbol, OrderRejected, UnknownSymbol),
    (ccxt_async.InsufficientFunds, OrderRejected, ExchangeError),
    (ccxt_async.InvalidOrder, OrderRejected, ExchangeError),
    (ccxt_async.BadRequest, OrderRejected, ExchangeError),  # binance -1013 min notional lands here
    (ccxt_async.OperationRejected, OrderRejected, ExchangeError),
    (ccxt_async.NotSupported, OrderRejected, ExchangeError),
    (ccxt_async.ArgumentsRequired, OrderRejected, ExchangeError),
    # timeouts, 5xx, dropped connections, maintenance, unparsable answers
    (ccxt_async.OperationFailed, OrderStatusUnknown, ExchangeUnavailable),
    # an unmapped exchange code or a broken response body: nobody knows what happened
    (ccxt_async.ExchangeError, OrderStatusUnknown, ExchangeUnavailable),
)


def translate_error(
    exc: BaseException,
    *,
    exchange: str,
    during: Phase,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> ExchangeError:
    """Map any exception raised by a ccxt call to the project's tree (an ExchangeError passes as is).
    `headers` and `body` are those of the failed HTTP response, if there was one: for Retry-After, and
    for the exchange's code when ccxt matched the message and dropped it. Anything unknown raised
    during an order counts as status unknown: it may have happened after the request left."""
    if isinstance(exc, ExchangeError):
        return exc
    target: type[ExchangeError] = OrderStatusUnknown if during == "order" else ExchangeUnavailable
    for ccxt_class, on_order, on_read in _RULES:
        if isinstance(exc, ccxt_class):
            target = on_order if during == "order" else on_read
            break
    text = str(exc)
    code, msg = _parse_error_body(text)
    if code is None and body:
        code = _parse_error_body(body)[0]
    message = f"{exchange}: {type(exc).__name__}: {_clean(msg or text) or 'no detail'}"
    if target is RateLimited:
        return RateLimited(message, exchange=exchange, code=code, retry_after=retry_after_header(headers))
    return target(message, exchange=exchange, code=code)


def _parse_error_body(text: str) -> tuple[str | None, str | None]:
    """The exchange's own code and message from a JSON error body, alone or inside ccxt's text
    ("binance {"code":-2010,"msg":...}"); (None, None) if there is none."""
    start, end = text.find("{"), text.rfind("}")
    if not 0 <= start < end:
        return None, None
    try:
        body = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = next((body[k] for k in ("code", "retCode", "label") if body.get(k) is not None), None)
    msg = next((body[k] for k in ("msg", "retMsg", "message") if body.get(k)), None)
    return (None if code is None else str(code)), (None if msg is None else str(msg))


def _clean(text: str) -> str:
    text = re.sub(r"(https?://[^\s?]+)\?\S*", r"\1", text)
    return secrets.scrub(text)[:_DETAIL_MAX]


# ----- the failed response behind an exception -----


@dataclass(frozen=True)
class _FailedResponse:
    headers: Mapping[str, str]
    body: str


# The latest failed HTTP response of a ccxt call in the current task. ccxt's own last_response_*
# attributes are per instance, so with concurrent calls one would read another call's headers.
_failed_response: ContextVar[_FailedResponse | None] = ContextVar("bridge_failed_response", default=None)


@dataclass
class _OrderCall:
    """One create_order in progress. `reserved`: the budget OrderRouter took for it before its last
    gate check (None if it did not), so its request charges only the difference."""

    reserved: float | None
    charged: float | None = None  # the order request's real cost, once its throttle call has seen it


# Set by Exchange.create_order around its ccxt call; read by the throttle of that call's request.
_order_call: ContextVar[_OrderCall | None] = ContextVar("bridge_order_call", default=None)


@functools.cache
def _recording(cls: Any) -> Any:
    """A subclass of a ccxt exchange class that notes each error response in the task's context and,
    when given a `bridge_bucket`, keeps to that budget instead of ccxt's throttle."""

    def on_rest_response(self: Any, code: int, reason: str, url: str, method: str, *rest: Any) -> Any:
        headers, body = rest[0], rest[1]
        _failed_response.set(_FailedResponse(headers, body) if code >= 400 else None)
        return cls.on_rest_response(self, code, reason, url, method, *rest)

    async def throttle(self: Any, cost: Any = None) -> Any:
        bucket: TokenBucket | None = getattr(self, "bridge_bucket", None)
        if bucket is None:
            return await cls.throttle(self, cost)
        units = float((self.tokenBucket or {}).get("cost", 1) if cost is None else cost)
        call = _order_call.get()
        if call is not None and call.charged is None:  # the order's own request
            call.charged = units
            if call.reserved is not None:
                if units > call.reserved:
                    bucket.reserve(units - call.reserved)  # a debt later requests wait for; this goes
                else:
                    bucket.refund(call.reserved - units)
                return None
        delay = bucket.reserve(units)
        if delay > 0:
            await asyncio.sleep(delay)  # over the exchange's budget: this request waits its turn
        return None

    return type(cls.__name__, (cls,), {"on_rest_response": on_rest_response, "throttle": throttle})


# ----- client order ids -----

# (prefix, max total length) per ccxt class name; subclasses (binanceus, ...) inherit by MRO. The base
# id is alphanumeric, which every listed exchange accepts (okx allows nothing else).
_CLIENT_ID_RULES: dict[str, tuple[str, int]] = {
    "binance": ("", 36),
    "okx": ("", 32),
    "bybit": ("", 36),
    "gate": ("t-", 30),  # gate's `text` must start with "t-", at most 28 characters after it
    "kucoin": ("", 40),
}


_CLIENT_ID_BASE = re.compile(r"[A-Za-z0-9]{1,64}")


def _client_id_rule(exchange_id: str) -> tuple[str, int]:
    cls = getattr(ccxt_async, exchange_id, None)
    for klass in type.mro(cls) if isinstance(cls, type) else ():
        rule = _CLIENT_ID_RULES.get(klass.__name__)
        if rule is not None:
            return rule
    return "", 64


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
        self._market_cache: dict[str, Market] = {}
        self._market_cache_of: dict[str, Any] | None = None  # the ccxt map the cache was built from
        self._client_id_rule = _client_id_rule(exchange_id)
        self._fast: fastpath.BinanceSpotOrders | None = None
        self._tokens = float(SYMBOL_REFRESH_BURST)
        self._tokens_at = clock()
        self._last_lookup: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[Market | None]] = {}
        self._targeted: dict[str, tuple[float, dict[str, Any]]] = {}  # symbol -> (added at, market)

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
        tasks = [*self._inflight.values(), *([self._keep_warm] if self._keep_warm is not None else [])]
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
        ex = _recording(getattr(ccxt_async, self._id))(self._ccxt_config())
        self._limit_market_loading(ex)
        if self.limiter == "bridge":
            # ccxt keeps calling throttle() with each endpoint's cost; the bucket decides
            self._bucket = ex.bridge_bucket = TokenBucket(
                Budget.for_exchange(self._id, float(ex.rateLimit)), clock=self._clock
            )
        return ex

    def _ccxt_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            # on, so ccxt calls throttle() with every request's cost; who decides: see `Limiter`
            "enableRateLimit": True,
            "timeout": ORDER_TIMEOUT_MS,
        }
        for key, value in (("apiKey", self._cfg.api_key), ("secret", self._cfg.secret)):
            if value is not None:
                config[key] = value.reveal()
        if self._cfg.password is not None:
            config["password"] = self._cfg.password.reveal()
        merged = _deep_merge(config, self._cfg.ccxt)  # the user's ccxt settings win
        if self._dry_run:
            # Paper mode reads public data only. Without credentials, even a strategy that calls the
            # raw ccxt object (ctx.exchange) cannot place a real order.
            for key in _CCXT_CREDENTIALS:
                merged.pop(key, None)
        return merged

    def _limit_market_loading(self, ex: Any) -> None:
        """Load only the configured market types: binance loads 7 endpoints by default, 1 with this.
        Options the user set under `ccxt.options` are left alone."""
        user = self._cfg.ccxt.get("options") or {}
        types = list(self._cfg.market_types)
        current = ex.options.get("fetchMarkets")
        if "fetchMarkets" not in user:
            if isinstance(current, dict) and "types" in current:
                ex.options["fetchMarkets"] = {**current, "types": types}
            elif isinstance(current, list):
                ex.options["fetchMarkets"] = types
        if isinstance(ex, ccxt_async.binance):
            for key in ("fetchCurrencies", "fetchMargins"):  # private calls nobody here needs
                if key not in user:
                    ex.options[key] = False

    def _enable_sandbox(self) -> None:
        error = ConfigError(f"exchanges.{self._id}.sandbox: ccxt has no sandbox URLs for {self._id}")
        if not self._ex.urls.get("test"):  # some exchanges declare `test: None`, which ccxt trips over
            raise error
        try:
            self._ex.set_sandbox_mode(True)
        except ccxt_async.NotSupported:
            raise error from None

    async def _load_markets(self) -> None:
        with self._translated("read"):
            await self._ex.load_markets()

    async def _sync_clock_then_check(self, check_keys: bool) -> None:
        await self._sync_clock()
        if check_keys:
            await self._check_keys()

    async def _sync_clock(self) -> None:
        """Measure the clock offset that signed requests subtract (binance rejects skew as -1021)."""
        if not self._ex.has.get("fetchTime"):
            return
        with self._translated("read"):
            await self._ex.load_time_difference()

    async def _check_keys(self) -> None:
        ex = self._ex
        if not ex.check_required_credentials(False):
            raise ConfigError(f"exchanges.{self._id}: checking keys needs api_key and secret")
        with self._translated("read"):
            if isinstance(ex, ccxt_async.binance):
                await ex.private_get_account({"omitZeroBalances": "true"})  # weight 20, no market load
            else:
                await ex.fetch_balance()
        log.info("exchange.keys_accepted", exchange=self._id)

    def _fast_path(self) -> fastpath.BinanceSpotOrders | None:
        """bridge.venues.fastpath for ccxt's binance itself (its subclasses have other URLs), unless ccxt's
        limiter was asked for (then all of ccxt's path), once it has proved to build ccxt's request."""
        ex = self._ex
        if (
            type(ex).__mro__[1] is not ccxt_async.binance
            or self.limiter == "ccxt"
            or not fastpath.can_sign(ex)
        ):
            return None
        fast = fastpath.BinanceSpotOrders(ex)
        sample = next((m for m in (ex.markets or {}).values() if fast.handles(m)), None)
        try:
            same = sample is not None and fast.matches_ccxt(sample)
        except Exception as exc:  # noqa: BLE001 - any surprise in ccxt means: keep ccxt's own path
            log.warning("exchange.fast_path_off", exchange=self._id, error=_describe(exc))
            return None
        if not same:
            log.warning("exchange.fast_path_off", exchange=self._id, reason="request differs from ccxt's")
            return None
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
                    log.debug("exchange.keep_warm_failed", exchange=self._id, error=_describe(outcome))

    # ----- markets -----

    def market(self, symbol: str) -> Market | None:
        """The cached market, without I/O. Market objects are built once per symbol and map: the order
        path asks for the same one several times per order."""
        markets: dict[str, Any] | None = self._ex.markets if self._ex is not None else None
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

    async def find_market(self, symbol: str) -> Market | None:
        """The cached market, else one bounded, rate-limited targeted refresh (shared by concurrent
        callers for the same symbol). None if the exchange does not list it or no refresh was allowed."""
        self._started()
        found = self.market(symbol)
        if found is not None:
            return found
        task = self._inflight.get(symbol)
        if task is None:
            if not self._may_refresh(symbol):
                log.debug("exchange.symbol_refresh_skipped", exchange=self._id, symbol=symbol)
                return None
            task = asyncio.create_task(self._refresh_symbol(symbol))
            self._inflight[symbol] = task
            task.add_done_callback(lambda _: self._inflight.pop(symbol, None))
        # shielded: one impatient caller must not cancel the lookup the others wait on
        return await asyncio.shield(task)

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

    async def _refresh_symbol(self, symbol: str) -> Market | None:
        began = time.perf_counter()
        try:
            with self._translated("read"):
                async with asyncio.timeout(SYMBOL_REFRESH_TIMEOUT_S):
                    fresh = await self._fetch_markets_for(symbol)
        except ExchangeError as exc:
            log.warning("exchange.symbol_refresh_failed", exchange=self._id, symbol=symbol, error=str(exc))
            return None
        self._merge_markets(fresh)
        found = self.market(symbol)
        log.info(
            "exchange.symbol_refresh",
            exchange=self._id,
            symbol=symbol,
            found=found is not None,
            fetched=len(fresh),
            elapsed_ms=round((time.perf_counter() - began) * 1000, 1),
        )
        return found

    async def _fetch_markets_for(self, symbol: str) -> list[dict[str, Any]]:
        ex = self._ex
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
            cost = 0 if self.limiter == "ccxt" else _EXCHANGE_INFO_COST
            response = await ex.request(
                "exchangeInfo", ["public"], "GET", {"symbol": market_id}, {"cost": cost}
            )
        except ccxt_async.BadSymbol:  # -1121 Invalid symbol: not listed (yet)
            return []
        parsed = (ex.parse_market(raw) for raw in response.get("symbols") or [])
        return [m for m in parsed if m is not None]

    def _merge_markets(self, fresh: list[dict[str, Any]]) -> None:
        now = self._clock()
        for market in fresh:
            self._targeted[market["symbol"]] = (now, market)
        _add_markets(self._ex, fresh)

    async def refresh_markets(self) -> None:
        """Reload every market and re-measure the clock. Markets a targeted refresh added meanwhile
        are kept, so a slow full reload cannot drop a listing found a moment ago."""
        ex = self._started()
        began, began_wall = self._clock(), time.perf_counter()
        before = len(ex.markets or {})
        with self._translated("read"):
            await _all_or_none(ex.load_markets(True), self._sync_clock())
        self._targeted = {s: (at, m) for s, (at, m) in self._targeted.items() if at >= began}
        _add_markets(ex, [m for s, (_, m) in self._targeted.items() if s not in ex.markets])
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
                log.warning("exchange.markets_refresh_failed", exchange=self._id, error=_describe(exc))

    # ----- orders -----

    def format_client_order_id(self, base_id: str) -> str:
        """Adapt a 1-64 character alphanumeric id to this exchange's client-id format. Too long ids keep
        their tail (the random part of a ULID)."""
        if not _CLIENT_ID_BASE.fullmatch(base_id):
            raise ValueError(f"client order id base must be 1-64 letters or digits, got {base_id!r}")
        prefix, limit = self._client_id_rule
        return prefix + base_id[-(limit - len(prefix)) :]

    @property
    def fast_orders(self) -> bool:
        """Are market orders sent by bridge.venues.fastpath (binance spot, HMAC key, not ccxt's limiter)?"""
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
        """Place one market order. Never retried, except once after a refused timestamp (binance
        -1021), which proves it was not executed. Raises OrderRejected, OrderStatusUnknown,
        RateLimited, ExchangeAuthError, or UnknownSymbol when the symbol is not in the cached markets."""
        ex = self._started()
        if self.market(req.symbol) is None:
            raise UnknownSymbol(f"{self._id}: {req.symbol} is not a loaded market", exchange=self._id)
        if self._dry_run:
            raise OrderRejected(
                f"{self._id}: dry run: orders are never sent", exchange=self._id, code="dry_run"
            )
        began = time.perf_counter()
        call = _OrderCall(self._order_cost if req.prepaid else None)
        token = _order_call.set(call)
        try:
            with self._translated("order"):
                try:
                    order = await self._send(ex, req)
                except ccxt_async.InvalidNonce:
                    # the timestamp was refused, so nothing executed: resync and send exactly once more
                    await self._resync_after_clock_skew(req)
                    order = await self._send(ex, req)
        finally:
            _order_call.reset(token)
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
            elapsed_ms=round((time.perf_counter() - began) * 1000, 2),
        )
        return result

    async def _send(self, ex: Any, req: OrderRequest) -> dict[str, Any]:
        fast = self._fast
        market = ex.markets.get(req.symbol) if fast is not None else None
        if fast is not None and market is not None and fast.handles(market):
            if ex.enableRateLimit:
                await ex.throttle(fast.cost)  # what ccxt's fetch2 would do (free if prepaid)
            return await fast.create(market, req.side, req.client_order_id, cost=req.cost, amount=req.amount)
        params = {"clientOrderId": req.client_order_id}  # fresh dict: ccxt may write into it
        order: dict[str, Any]
        if req.cost is not None and req.side == "buy":
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
        with self._translated("read"):
            try:
                order = await ex.fetch_order(None, symbol, {"clientOrderId": client_order_id})
            except ccxt_async.OrderNotFound:  # binance -2013
                return None
        side: Side = "sell" if order.get("side") == "sell" else "buy"
        return self._to_result(order, symbol, side, client_order_id)

    async def fetch_price(self, symbol: str) -> float | None:
        """The last traded price, or None (logged) if the exchange cannot say."""
        ex = self._started()
        try:
            ticker = await ex.fetch_ticker(symbol)
        except Exception as exc:  # noqa: BLE001 - callers treat a missing price as "skip", never crash
            log.warning("exchange.price_failed", exchange=self._id, symbol=symbol, error=_describe(exc))
            return None
        price = _float(ticker.get("last")) or _float(ticker.get("close"))
        return price if price is not None and price > 0 else None

    async def last_prices(self) -> dict[str, float]:
        """Last prices of every market in one request (fetch_tickers); {} if the exchange cannot say."""
        ex = self._started()
        try:
            tickers = await ex.fetch_tickers()
        except Exception as exc:  # noqa: BLE001 - a snapshot without prices is still useful
            log.warning("exchange.prices_failed", exchange=self._id, error=_describe(exc))
            return {}
        prices = {s: _float(t.get("last")) or _float(t.get("close")) for s, t in tickers.items()}
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
            filled=_float(order.get("filled")),
            cost=_float(order.get("cost")),
            average=_float(order.get("average")),
            raw=order,
        )

    @contextlib.contextmanager
    def _translated(self, during: Phase) -> Iterator[None]:
        """Whatever a ccxt call raises leaves as an ExchangeError: ccxt types and their messages (URLs
        with signatures) never escape, not even as __cause__."""
        _failed_response.set(None)
        try:
            yield
        except ExchangeError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must become a project error (see _RULES)
            raise self._translate(exc, during) from None

    def _translate(self, exc: BaseException, during: Phase) -> ExchangeError:
        failed = _failed_response.get()
        if failed is None:
            return translate_error(exc, exchange=self._id, during=during)
        return translate_error(
            exc, exchange=self._id, during=during, headers=failed.headers, body=failed.body
        )


# ----- helpers -----

_CCXT_CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "privateKey", "walletAddress", "token")


def _to_market(raw: dict[str, Any]) -> Market:
    limits = raw.get("limits") or {}
    return Market(
        symbol=raw["symbol"],
        id=str(raw.get("id")),
        base=str(raw.get("base")),
        quote=str(raw.get("quote")),
        type=str(raw.get("type")),
        active=raw.get("active") is not False,  # ccxt's None means "unknown", which trades
        min_cost=_float((limits.get("cost") or {}).get("min")),
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


_MARKET_MAPS = ("markets", "markets_by_id", "baseCurrencies", "quoteCurrencies")


def _binance_spot_id(symbol: str) -> str | None:
    """Binance's id for a unified spot symbol ("ABC/USDT" -> "ABCUSDT"); None for anything else."""
    base, slash, quote = symbol.partition("/")
    if not slash or not re.fullmatch(r"[A-Z0-9]+", base + quote):
        return None
    return base + quote


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _describe(exc: BaseException) -> str:
    """A log-safe one-liner for an exception (no URL queries, no secrets)."""
    text = str(exc)
    return f"{type(exc).__name__}: {_clean(_parse_error_body(text)[1] or text)}"


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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
