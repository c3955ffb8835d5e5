"""The venue-independent half of a fake exchange: listings, the fill model (market orders fill whole at
the listing's price; limit orders fill what their price and the listing's depth allow, see `limit_fill`;
resting sell stops trigger when the price falls to them, see `FakeVenue.set_price`), a best bid/ask
around the price (`book_quote`), fault injection, request-signing helpers and the aiohttp server
plumbing. FakeBinance builds on `FakeVenue`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar, Literal, Self

import orjson
import structlog
from aiohttp import web

# Named after the module these events have always come from, whichever venue is serving.
log = structlog.get_logger("bridge.sim.fake_exchange")

FaultKind = Literal[
    "insufficient_balance",  # Binance -2010, not created
    "min_notional",  # Binance -1013 Filter failure: NOTIONAL, not created
    "rate_limited",  # HTTP 429 with Retry-After, not created
    "server_error_before",  # HTTP 500, not created
    "server_error_after",  # created, then HTTP 500
    "timeout_after",  # created, then no answer until stop()
    "garbled_after",  # created, then HTTP 200 with a truncated JSON body
    "empty_after",  # created, then HTTP 200 with `{}` (JSON, but no order in it)
    "not_json_after",  # created, then HTTP 200 with a body that is not JSON (a proxy's page)
    "timestamp",  # Binance -1021, not created
]

# Faults that strike once the order exists (nothing to refuse before it is created).
_AFTER_CREATED = ("server_error_after", "timeout_after", "garbled_after", "empty_after", "not_json_after")

DEFAULT_MARKETS: tuple[tuple[str, str, float], ...] = (
    ("BTC", "USDT", 60_000.0),
    ("ETH", "USDT", 3_000.0),
    ("BNB", "USDT", 600.0),
    ("ETH", "BTC", 0.05),
)
MIN_NOTIONAL = 5.0
DEFAULT_TICK = 1e-8  # a listing's price step and quantity step unless add_market says otherwise
DEFAULT_SPREAD = 0.001  # best ask minus best bid, as a fraction of the price (0.1 %)


@dataclass
class Listing:
    base: str
    quote: str
    price: float
    status: str
    tick_size: float = DEFAULT_TICK  # prices are multiples of this
    step_size: float = DEFAULT_TICK  # quantities are multiples of this
    depth: float | None = None  # base quantity a limit order can fill; None: unlimited

    @property
    def symbol(self) -> str:
        return self.base + self.quote


@dataclass(frozen=True)
class ReceivedOrder:
    """One order request as it reached the server, before any check. `params` are the query
    string's and the body's together, as the venue reads them."""

    params: dict[str, str]
    received_ns: int  # time.time_ns(): comparable with the client's wall clock
    received_mono_ns: int  # time.perf_counter_ns(): for latency measured in the same process


@dataclass
class Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    qty: float
    quote_qty: float
    price: float
    time_ms: int
    orig_quote_qty: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    # a limit order's terms and outcome; a market order keeps the defaults (filled whole, `qty` asked)
    order_type: str = "MARKET"
    time_in_force: str = "GTC"
    limit_price: float = 0.0
    orig_qty: float | None = None  # None: `qty`
    status: str = "FILLED"
    # a resting sell stop: it triggers once the price is at or below `stop_price`, then fills whole at
    # the price (at or above `limit_price`, if it has one)
    stop_price: float = 0.0
    triggered: bool = False

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES


OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


class ApiError(Exception):
    """Ends a request with the venue's error shape (see `FakeVenue._error_response`)."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def fmt_num(value: float) -> str:
    return f"{value:.8f}"


def hmac_sha256_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signature_ok(secret: str, payload: str, signature: str) -> bool:
    """Whether `signature` is the hex HMAC-SHA256 of `payload` under `secret` (constant-time)."""
    return hmac.compare_digest(signature, hmac_sha256_hex(secret, payload))


def timestamp_problem(stamp_ms: int, now_ms: int, window_ms: int) -> Literal["ahead", "stale"] | None:
    """What is wrong with a signed request's timestamp: more than 1 s ahead of the server's clock, or
    older than the receive window. None if it is fine."""
    if stamp_ms > now_ms + 1000:
        return "ahead"
    if now_ms - stamp_ms > window_ms:
        return "stale"
    return None


def fill_amounts(
    price: float, *, qty: float | None = None, quote_qty: float | None = None
) -> tuple[float, float]:
    """A market order filled whole at `price`: (base qty, quote qty), from whichever was given
    (`qty` first), the other rounded to 8 decimals."""
    if qty is not None:
        return qty, round(qty * price, 8)
    assert quote_qty is not None, "fill_amounts needs qty or quote_qty"
    return round(quote_qty / price, 8), quote_qty


def limit_fill(
    price: float, *, buy: bool, limit: float, qty: float, depth: float | None, all_or_none: bool = False
) -> tuple[float, float]:
    """A limit order that fills at once or never (IOC; FOK with `all_or_none`) against a book at `price`
    holding `depth` base (None: unlimited): (base qty, quote qty) filled, all at `price`. Nothing fills
    when the price is worse than the limit (a buy above it, a sell below it)."""
    crosses = price <= limit if buy else price >= limit
    available = qty if depth is None else min(qty, max(depth, 0.0))
    if not crosses or (all_or_none and available < qty):
        return 0.0, 0.0
    return available, round(available * price, 8)


def on_tick(value: float, tick: float, *, up: bool) -> float:
    """`value` rounded to a multiple of `tick`, up or down."""
    step = Decimal(str(tick))
    units = (Decimal(repr(value)) / step).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR)
    return float(units * step)


def book_quote(listing: Listing, spread: float) -> tuple[float, float]:
    """(best bid, best ask): `spread` apart around the listing's price, on its tick (bid down, ask up)."""
    half = listing.price * spread / 2
    bid = on_tick(listing.price - half, listing.tick_size, up=False)
    return max(bid, 0.0), on_tick(listing.price + half, listing.tick_size, up=True)


class FakeVenue(ABC):
    """A fake exchange's state and server. Subclasses add the venue's routes (`_add_routes`), error
    body (`_error_response`), the errors it answers faults with (`_FAULT_ERRORS`) and `ccxt_config()`.
    Use as `async with Venue() as fake:`."""

    # (HTTP status, venue code, message) for an unknown symbol and for each fault answered with an error
    _UNKNOWN_SYMBOL: ClassVar[tuple[int, int, str]]
    _FAULT_ERRORS: ClassVar[Mapping[FaultKind, tuple[int, int, str]]]

    def __init__(
        self, *, api_key: str, secret: str, markets: Iterable[tuple[str, str, float]], host: str, port: int
    ) -> None:
        self.api_key = api_key
        self.secret = secret
        self.host, self.port = host, port
        self.clock_offset_ms = 0  # the server's clock minus ours: lets tests provoke timestamp errors
        self.retry_after_s = 2
        self.spread = DEFAULT_SPREAD
        self.requests: list[tuple[str, str]] = []
        # (method, path, query parameters) of each request, e.g. to tell bookTicker?symbol= from all symbols
        self.queries: list[tuple[str, str, dict[str, str]]] = []
        self.orders: list[ReceivedOrder] = []
        self.executed: list[dict[str, Any]] = []  # orders the fake created, as its order lookup returns them
        self._listings: dict[str, Listing] = {}
        self._by_client_id: dict[str, Order] = {}
        self._by_id: dict[int, Order] = {}
        self._faults: list[FaultKind] = []
        self._cancel_faults: list[FaultKind] = []
        self._lookup_faults: list[FaultKind] = []
        self._price_moves: dict[str, float] = {}  # symbol -> price it jumps to when its next order arrives
        self._ids = itertools.count(1001)
        self._released = asyncio.Event()
        self._order_arrived = asyncio.Event()
        self._request_arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        for base, quote, price in markets:
            self.add_market(base, quote, price=price)

    # ----- what a venue adds -----

    @abstractmethod
    def ccxt_config(self) -> dict[str, Any]:
        """The dict to deep-merge into the venue's ccxt config so every API goes to this server."""

    @abstractmethod
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the venue's endpoints; anything else answers 404 through `_error_response`."""

    @abstractmethod
    def _error_response(self, exc: ApiError) -> web.Response:
        """The venue's error body for `exc`."""

    def _markets_changed(self) -> None:  # noqa: B027 - an optional hook, a no-op unless overridden
        """Called after a market is listed or changed, e.g. to drop a cached market list."""

    # ----- lifecycle -----

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app.router)
        app.router.add_route("*", "/{tail:.*}", self._not_implemented)
        self._released.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = int(sockets[0][1])
        log.info("fake_exchange.started", url=self.url)

    async def stop(self) -> None:
        self._released.set()  # let hung "timeout_after" handlers finish before the runner waits on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ----- helpers for tests and demos -----

    def add_market(
        self,
        base: str,
        quote: str,
        *,
        price: float,
        status: str = "TRADING",
        tick_size: float = DEFAULT_TICK,
        step_size: float = DEFAULT_TICK,
        depth: float | None = None,
    ) -> str:
        """List a market (or change an existing one). Returns the venue's symbol id, e.g. "BTCUSDT".
        `tick_size` and `step_size` are its price and quantity steps; `depth` the base quantity one
        limit order can fill (None: any), so a bigger IOC fills partially."""
        listing = Listing(base.upper(), quote.upper(), price, status, tick_size, step_size, depth)
        self._listings[listing.symbol] = listing
        self._markets_changed()
        return listing.symbol

    def set_price(self, symbol: str, price: float) -> None:
        """Set the price of a market by venue id ("BTCUSDT") or unified symbol ("BTC/USDT"). Resting sell
        stops at or above the new price trigger: a stop fills whole at this price, a stop-limit only if
        the price is at or above its limit (else it rests, triggered, until a later price reaches it)."""
        listing = self._listing(symbol.replace("/", ""))
        listing.price = price
        self._price_changed(listing)

    def open_orders(self, symbol: str) -> list[Order]:
        """The orders resting on a market (venue id or unified symbol), oldest first."""
        venue_id = symbol.replace("/", "")
        return [o for o in self._by_id.values() if o.symbol == venue_id and o.open]

    def move_price_on_next_order(self, symbol: str, price: float) -> None:
        """Make the price jump to `price` when the next order for `symbol` reaches the matching engine
        (after authentication and injected faults, before it fills): the book moved between the
        client's price check and its order."""
        self._price_moves[self._listing(symbol.replace("/", "")).symbol] = price

    def fail_next_order(self, kind: FaultKind, count: int = 1) -> None:
        """Make the next `count` order requests that pass authentication fail as `kind`."""
        self._faults.extend([kind] * count)

    def fail_next_cancel(self, kind: FaultKind, count: int = 1) -> None:
        """Make the next `count` cancel requests that pass authentication fail as `kind` (with the same
        answers as an order: "rate_limited" a 429 with Retry-After, "server_error_before" a 500 and
        nothing cancelled, "server_error_after" cancelled then a 500, "timeout_after" cancelled then no
        answer until stop())."""
        self._cancel_faults.extend([kind] * count)

    def fail_next_lookup(self, kind: FaultKind, count: int = 1) -> None:
        """Make the next `count` order lookups that pass authentication fail as `kind` (a fault that
        strikes before: "server_error_before" a 500, "rate_limited" a 429...)."""
        self._lookup_faults.extend([kind] * count)

    def _next_lookup_fault(self) -> FaultKind | None:
        return self._lookup_faults.pop(0) if self._lookup_faults else None

    async def wait_for_orders(self, count: int) -> None:
        """Return once `count` order requests have arrived: lets tests and benchmarks wait without polling."""
        while len(self.orders) < count:
            self._order_arrived.clear()  # no await between the check and here, so no arrival is missed
            await self._order_arrived.wait()

    async def wait_for_requests(self, method: str, path: str, count: int) -> None:
        """Return once `count` requests `method path` have arrived (any outcome)."""
        while self.count(method, path) < count:
            self._request_arrived.clear()  # no await between the check and here, so none is missed
            await self._request_arrived.wait()

    def count(self, method: str, path: str) -> int:
        return self.requests.count((method, path))

    # ----- request plumbing -----

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.queries.append((request.method, request.path, dict(request.query)))
        self._request_arrived.set()
        try:
            return await handler(request)
        except ApiError as exc:
            return self._error_response(exc)

    async def _not_implemented(self, request: web.Request) -> web.Response:
        raise ApiError(404, -1, f"{type(self).__name__} does not implement {request.path}")

    def _now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    def _listing(self, symbol: str | None) -> Listing:
        listing = self._listings.get(symbol or "")
        if listing is None:
            raise ApiError(*self._UNKNOWN_SYMBOL)
        return listing

    # ----- orders: receipt, faults, fills -----

    async def _receive_order(self, params: dict[str, str], received_ns: int, received_mono_ns: int) -> None:
        """Record an order request as it arrived, before any check."""
        self.orders.append(ReceivedOrder(params, received_ns, received_mono_ns))
        self._order_arrived.set()
        # Let the other requests that arrived with this one take their receipt time before this one
        # is processed: the benchmark times concurrent orders from their arrival, not their turn.
        await asyncio.sleep(0)

    def _next_fault(self) -> FaultKind | None:
        return self._faults.pop(0) if self._faults else None

    def _next_cancel_fault(self) -> FaultKind | None:
        return self._cancel_faults.pop(0) if self._cancel_faults else None

    def _fail_before(self, fault: FaultKind | None) -> None:
        """Refuse the order for a fault that strikes before it is created."""
        if fault is None or fault in _AFTER_CREATED:
            return
        if fault == "server_error_before":
            # a gateway error page, not JSON: the matching engine never saw the order
            raise web.HTTPInternalServerError(text="Internal Server Error")
        headers = {"Retry-After": str(self.retry_after_s)} if fault == "rate_limited" else None
        raise ApiError(*self._FAULT_ERRORS[fault], headers=headers)

    async def _fail_after(self, fault: FaultKind | None) -> None:
        """For a fault that strikes once the order exists: answer an error, or nothing until stop()."""
        if fault == "server_error_after":
            raise ApiError(*self._FAULT_ERRORS[fault])
        if fault == "timeout_after":
            await self._released.wait()

    def _apply_price_move(self, listing: Listing) -> None:
        """An order for the listing arrived: the price jump set by move_price_on_next_order happens now."""
        moved = self._price_moves.pop(listing.symbol, None)
        if moved is not None:
            listing.price = moved
            self._price_changed(listing)

    def _price_changed(self, listing: Listing) -> None:
        """The listing's price moved: trigger and fill its resting sell stops (see `set_price`)."""
        price = listing.price
        for order in self.open_orders(listing.symbol):
            triggers = not order.triggered and 0 < price <= order.stop_price
            order.triggered = order.triggered or triggers
            fills = order.triggered and price >= order.limit_price
            if fills:
                order.qty, order.quote_qty = fill_amounts(price, qty=order.orig_qty or order.qty)
                order.price, order.status = price, "FILLED"
            if triggers or fills:
                self._resting_order_changed(order, filled=fills)

    def _resting_order_changed(self, order: Order, *, filled: bool) -> None:  # noqa: B027 - optional hook
        """Called after a resting order triggered or `filled`, e.g. to settle balances and refresh what
        the order lookup answers. A no-op by default."""

    def _new_order(
        self, listing: Listing, side: str, qty: float, quote_qty: float, client_order_id: str | None
    ) -> Order:
        """An order filled (`qty`, `quote_qty`) at the listing's price; not stored until `_book`."""
        order_id = next(self._ids)
        client_id = client_order_id or f"fake{order_id}"
        return Order(order_id, client_id, listing.symbol, side, qty, quote_qty, listing.price, self._now_ms())

    def _book(self, order: Order, info: dict[str, Any]) -> None:
        """Store a created order; `info` is the body the venue's order lookup answers with."""
        order.info = info
        self._by_client_id[order.client_order_id] = order  # a reused client id now finds the newest order
        self._by_id[order.order_id] = order
        self.executed.append(info)
