"""The strategy plugin API: subclass `Strategy`, implement `on_announcement`, act through the context.

Plugins import these through `bridge`, the public API. A strategy never sees ccxt unless it asks for
the (read-only) exchange object explicitly with `ctx.exchange(id)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from bridge.trading.claims import SymbolClaims
from bridge.trading.contracts import DEFAULT_MARGIN_MODE, Leverage
from bridge.trading.model import Announcement, OrderOutcome, Side
from bridge.trading.pricing import DEFAULT_MAX_SLIPPAGE
from bridge.trading.readonly import ReadOnlyExchange

if TYPE_CHECKING:
    from bridge.trading.balances import Balances
    from bridge.trading.model import ExitPlan
    from bridge.trading.orders import OrderRouter
    from bridge.venues.dialect import MarginMode
    from bridge.venues.exchange import Exchange
    from bridge.venues.types import Market


class Strategy:
    """Base class for strategy plugins.

    Declare `Params` as a (frozen) dataclass to get the config's `params:` validated into `self.params`
    (a wrong key or type is a config error naming the strategy and the key). Override
    `on_announcement`; `on_start` and `on_stop` are optional. Each strategy runs in its own task: an
    exception is logged and counted and the next announcement is delivered as usual.
    """

    Params: ClassVar[type[Any] | None] = None

    def __init__(self, name: str, params: Any) -> None:
        self.name = name
        self.params = params

    async def on_start(self, ctx: Context) -> None:
        """Called once, after exchanges are warm and before the first announcement."""

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        """Called for every new (non-test, non-duplicate) announcement, in arrival order."""
        raise NotImplementedError(f"strategy {self.name} does not implement on_announcement")

    async def on_stop(self) -> None:
        """Called once on shutdown (bounded in time)."""


class Context:
    """What a strategy can do. The context given to `on_announcement` is bound to that announcement:
    its orders carry the announcement's key, so a duplicate delivery can never order twice."""

    def __init__(
        self,
        *,
        strategy: str,
        router: OrderRouter,
        exchanges: Mapping[str, Exchange],
        dry_run: bool,
        announcement: Announcement | None = None,
        log: Any = None,
        price_max_age: float | None = None,
        claims: SymbolClaims | None = None,
        balances: Balances | None = None,
    ) -> None:
        self.strategy = strategy
        self._balances = balances
        self._claims = claims if claims is not None else SymbolClaims()
        self.price_max_age = price_max_age  # None: the trading-wide `price_max_age`
        self.dry_run = dry_run
        self.announcement = announcement
        self.log = (
            log if log is not None else structlog.get_logger(f"strategy.{strategy}").bind(strategy=strategy)
        )
        self._router = router
        self._exchanges = exchanges

    def bind(self, announcement: Announcement) -> Context:
        return Context(
            strategy=self.strategy,
            router=self._router,
            exchanges=self._exchanges,
            dry_run=self.dry_run,
            announcement=announcement,
            log=self.log,  # already bound to the strategy; binding again costs ~75 µs per announcement
            price_max_age=self.price_max_age,
            claims=self._claims,
            balances=self._balances,
        )

    def claim_symbol(self, exchange: str, symbol: str, window: float) -> bool:
        """Reserve `symbol` on `exchange` for this strategy for `window` seconds: False if it bought
        or reserved it within the last `window` seconds, whichever announcement that was for (also
        across restarts). Call it before any await, then buy; `release_symbol` if no buy was made."""
        return self._claims.claim(self.strategy, exchange, symbol, window)

    def release_symbol(self, exchange: str, symbol: str) -> None:
        """Give back a claim whose buy did not happen, so a later announcement may buy the symbol."""
        self._claims.release(self.strategy, exchange, symbol)

    @property
    def exchange_ids(self) -> tuple[str, ...]:
        return tuple(self._exchanges)

    def market(self, exchange: str, symbol: str) -> Market | None:
        """The cached market (no I/O), or None if the exchange or symbol is unknown."""
        ex = self._exchanges.get(exchange)
        return None if ex is None else ex.market(symbol)

    def has_market(self, exchange: str, symbol: str) -> bool:
        """Is `symbol` (e.g. "ABC/USDT") an active market on `exchange`, per the cached markets?"""
        m = self.market(exchange, symbol)
        return m is not None and m.active

    async def find_market(self, exchange: str, symbol: str) -> Market | None:
        """Like `market`, but a symbol missing from the cache gets one bounded, targeted refresh
        (a new listing may have appeared since the last full refresh)."""
        ex = self._exchanges.get(exchange)
        return None if ex is None or not ex.started else await ex.find_market(symbol)

    def exchange(self, exchange: str) -> ReadOnlyExchange:
        """A read-only view of the exchange's ccxt object, for what the context does not cover: market
        data, balances, order lookups. Anything else (create_order, cancel_order, raw private
        endpoints, the keys) raises PermissionError: orders go through buy/sell, behind the gate, the
        risk limits and the journal. KeyError for an exchange not in the config."""
        return ReadOnlyExchange(self._exchanges[exchange].ccxt, exchange)

    async def buy(
        self,
        exchange: str,
        symbol: str,
        *,
        cost: float | None = None,
        amount: float | None = None,
        exit: ExitPlan | None = None,
        max_slippage: float | None = DEFAULT_MAX_SLIPPAGE,
        leg: str = "",
        leverage: float | None = None,
        margin_mode: MarginMode = DEFAULT_MARGIN_MODE,
    ) -> OrderOutcome:
        """Buy spending at most `cost` of the quote currency, or buying `amount` of the base currency.

        The order is a limit IOC at the best ask x (1 + max_slippage) (default 0.05: never more than
        5 % over the price the daemon knows), rounded to the market's tick and lot: what does not fill
        at once expires, a partial fill is the position, nothing filled is the outcome `expired`.
        `max_slippage=None` sends a market order with no price limit. `leg` names one of several
        orders on one symbol for one announcement (a second buy without a new leg is a duplicate).
        With `exit`, the position is sold on take-profit, stop-loss or after a time
        (bridge.trading.exits), also after a restart.

        On a perpetual (`ABC/USDT:USDT`) the buy opens or adds to a long: `cost` is the margin, the
        position's notional is cost x `leverage` (default 1), with `margin_mode` isolated (default) or
        cross; both are set on the venue before the symbol's first order. `leverage` on spot is refused."""
        terms = _leverage(leverage, margin_mode)
        if isinstance(terms, str):
            return OrderOutcome("skipped", exchange, symbol, "buy", reason=terms)
        return await self._router.submit(
            strategy=self.strategy,
            announcement=self.announcement,
            exchange=exchange,
            symbol=symbol,
            side="buy",
            cost=cost,
            amount=amount,
            exit=exit,
            max_slippage=max_slippage,
            leg=leg,
            price_max_age=self.price_max_age,
            leverage=terms,
        )

    async def sell(
        self,
        exchange: str,
        symbol: str,
        *,
        amount: float | None = None,
        cost: float | None = None,
        max_slippage: float | None = DEFAULT_MAX_SLIPPAGE,
        leg: str = "",
        open: bool = False,
        exit: ExitPlan | None = None,
        leverage: float | None = None,
        margin_mode: MarginMode = DEFAULT_MARGIN_MODE,
    ) -> OrderOutcome:
        """Sell `amount` of the base currency (or for `cost` of the quote currency): a limit IOC at
        the best bid x (1 - max_slippage), or a market order with `max_slippage=None`.

        On a perpetual, `open=True` opens (or adds to) a short: `cost` is the margin, the notional is
        cost x `leverage`; with `exit` its exits buy back, reduce-only (take-profit under the entry, stop
        above it). Without `open` a sell on a perpetual is reduce-only: it closes a long and can never
        open a short. `open` on spot is refused (spot cannot be sold short)."""
        terms = _leverage(leverage, margin_mode)
        if isinstance(terms, str):
            return OrderOutcome("skipped", exchange, symbol, "sell", reason=terms)
        return await self._router.submit(
            strategy=self.strategy,
            announcement=self.announcement,
            exchange=exchange,
            symbol=symbol,
            side="sell",
            cost=cost,
            amount=amount,
            exit=exit,
            max_slippage=max_slippage,
            leg=leg,
            price_max_age=self.price_max_age,
            leverage=terms,
            opens=open,
        )

    async def prepare_contract(
        self,
        exchange: str,
        symbol: str,
        *,
        leverage: float = 1.0,
        margin_mode: MarginMode = DEFAULT_MARGIN_MODE,
    ) -> bool:
        """Set a perpetual's margin mode and leverage now (from `on_start`, for symbols known in advance),
        so the first order on it does not wait for those requests. True when set (or already so); False
        (logged) when the symbol is not a loaded contract market or the venue refused."""
        terms = _leverage(leverage, margin_mode) or Leverage()
        market = self.market(exchange, symbol)
        problem: str | None = terms if isinstance(terms, str) else None
        if problem is None and (market is None or market.type not in ("swap", "future")):
            problem = "not_a_contract_market"
        if problem is None and not isinstance(terms, str):
            problem = await self._router.contracts.ensure(exchange, symbol, terms, on_order_path=False)
        if problem is not None:
            self.log.warning("contract.not_prepared", exchange=exchange, symbol=symbol, reason=problem)
        return problem is None

    async def price(self, exchange: str, symbol: str, side: Side = "buy") -> float | None:
        """What `side` would trade at now on `exchange` (best ask for a buy, best bid for a sell, the
        last trade where no book price is known), from the daemon's price cache; at most one request
        when nothing fresher than `price_max_age` is known. None: no price (unknown or stale)."""
        if exchange not in self._exchanges:
            return None
        return await self._router.prices.reference(exchange, symbol, side, self.price_max_age)

    async def balance(self, exchange: str, asset: str) -> float | None:
        """The free amount of `asset` (e.g. "USDT") on `exchange`, from the daemon's balance cache (no
        request on the order path): live, the venue's as of its last refresh (every 30 s and after each
        fill); paper, the paper account's (`trading.paper_balance`, moved by paper fills). 0.0 for an
        asset the account holds none of; None when no balance is known."""
        if self._balances is None or exchange not in self._exchanges:
            return None
        return self._balances.free(exchange, asset)


def _leverage(leverage: float | None, margin_mode: MarginMode) -> Leverage | str | None:
    """The order's contract terms (None: none asked, the router's 1x isolated on a contract market),
    or why they are refused."""
    if leverage is None and margin_mode == DEFAULT_MARGIN_MODE:
        return None
    try:
        return Leverage(1.0 if leverage is None else float(leverage), margin_mode)
    except (TypeError, ValueError) as exc:
        return f"bad_order_argument: {exc}"
