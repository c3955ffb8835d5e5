"""Risk limits every order must pass before it is sent: size, event age, daily spend, symbol lists.

Pure decisions from config, memory and a clock; returns the reason an order is refused, or None. Limits
refuse, they never clamp: an order that is too big is not made smaller behind the trader's back.

Money limits are per quote currency (`bridge.config.QuoteLimits`): 100 USDT and 100 KRW are not one
number. An order in a quote currency a limit does not name is refused (`no_limit_for_quote:KRW`).
`max_order_cost` caps every order a strategy places, buys and sells; `daily_max_cost` (trading-wide)
and `exchanges.NAME.daily_max_cost` (on top) cap the day's spend, kept in memory by a SpendLedger
(`bridge.trading.budget`): the router `reserve`s an order when its intent is written and `settle`s it
when its outcome is known. The check never reads SQLite; the journal is read once, at start.
Exits pass every limit: they reduce risk. On perpetuals every limit counts an order's notional (margin x
leverage), per quote currency, and a sell that opens a short counts toward the open cost like a buy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from bridge.config import ExchangeConfig, TradingConfig, quote_limits
from bridge.feed.codec import Announcement
from bridge.trading.budget import SpendLedger
from bridge.trading.exposure import Exposure
from bridge.trading.journal import Journal


class RiskLimits:
    def __init__(
        self,
        cfg: TradingConfig,
        journal: Journal,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        exchanges: Mapping[str, ExchangeConfig] | None = None,
        exposure: Exposure | None = None,
    ) -> None:
        """Reads today's orders from `journal` once, here. `exchanges`: the config's exchanges, for
        their own daily budgets (`exchanges.NAME.daily_max_cost`). `exposure`: the open-cost and loss
        limits (bridge.trading.exposure), checked for buys."""
        self._cfg = cfg
        self.exposure = exposure
        self._clock_ns = clock_ns
        self._per_announcement: dict[tuple[str, str], int] = {}
        self._order_limits = quote_limits(cfg.max_order_cost)
        self._daily = None if cfg.daily_max_cost is None else quote_limits(cfg.daily_max_cost)
        self._exchange_daily = {
            name: quote_limits(ex.daily_max_cost)
            for name, ex in (exchanges or {}).items()
            if ex.daily_max_cost is not None
        }
        self.ledger = SpendLedger(clock_ns=clock_ns)
        self.ledger.load(journal.orders_since(self.ledger.day_start_ns), fallback=self._fallback)

    def reconfigure(self, cfg: TradingConfig, exchanges: Mapping[str, ExchangeConfig] | None = None) -> None:
        """A reload's new limits; what was counted today (the ledger, orders per announcement) stays."""
        self._cfg = cfg
        self._order_limits = quote_limits(cfg.max_order_cost)
        self._daily = None if cfg.daily_max_cost is None else quote_limits(cfg.daily_max_cost)
        self._exchange_daily = {
            name: quote_limits(ex.daily_max_cost)
            for name, ex in (exchanges or {}).items()
            if ex.daily_max_cost is not None
        }

    def check(
        self,
        *,
        strategy: str,
        announcement: Announcement | None,
        symbol: str,
        side: str,
        quote: str,
        cost: float | None,
        exchange: str,
        is_exit: bool = False,
        opens: bool = False,
    ) -> str | None:
        """The reason this order must not be sent, or None if every limit allows it. `cost`: the
        estimated cost in `quote` (what `reserve` will count): on a contract market its notional (margin
        x leverage), so 20 USDT at 5x counts as 100 against every cap. `opens`: a sell that opens a short,
        checked against the open-cost limit like a buy. Memory only: no I/O."""
        cfg = self._cfg
        if is_exit:
            return None  # an exit sells what an entry bought: it reduces risk, no limit applies
        if symbol in cfg.deny_symbols:
            return "symbol_denied"
        if cfg.allow_symbols is not None and symbol not in cfg.allow_symbols:
            return "symbol_not_allowed"
        if announcement is not None:
            age_ms = announcement.age_ms(self._clock_ns())
            if age_ms is None:
                return "event_age_unknown"
            if age_ms > cfg.max_event_age * 1000:
                return "event_too_old"
            key = (strategy, announcement.key)
            if self._per_announcement.get(key, 0) >= cfg.max_orders_per_announcement:
                return "too_many_orders_for_announcement"
        if cost is None:
            return "cost_unknown"
        limit = self._order_limits.get(quote)
        if limit is None:
            return f"no_limit_for_quote:{quote}"
        if cost > limit:
            return "over_max_order_cost"
        if self._daily is not None:
            limit = self._daily.get(quote)
            if limit is None:
                return f"no_daily_limit_for_quote:{quote}"
            if self.ledger.spent(quote) + cost > limit:
                return "over_daily_max_cost"
        exchange_daily = self._exchange_daily.get(exchange)
        if exchange_daily is not None:
            limit = exchange_daily.get(quote)
            if limit is None:
                return f"no_exchange_daily_limit_for_quote:{quote}"
            if self.ledger.spent(quote, exchange) + cost > limit:
                return "over_exchange_daily_max_cost"
        if (side == "buy" or opens) and self.exposure is not None:
            return self.exposure.check(quote, cost)
        return None

    def reserve(
        self,
        client_order_id: str,
        exchange: str,
        quote: str,
        estimated_cost: float | None,
        *,
        opens_position: bool = False,
    ) -> None:
        """Count an order toward the daily budgets from now on, at `estimated_cost` (the `cost` its
        check passed with), and toward the open cost if it `opens_position` (an entry with an exit
        plan). Call right after the journal accepted its intent; never for an exit."""
        if estimated_cost is None:  # check() refuses such an order; count the most it may cost
            estimated_cost = self._fallback(quote)
        self.ledger.reserve(client_order_id, exchange, quote, estimated_cost)
        if opens_position and self.exposure is not None:
            self.exposure.opened(quote, estimated_cost)

    def settle(self, client_order_id: str, real_cost: float | None, counts: bool) -> None:
        """The order's outcome is known. `counts` False: it bought nothing (rejected, expired unfilled)
        and stops counting; True: `real_cost` replaces the estimate (None: unknown, the estimate stays).
        Orders never reserved (exits) are ignored."""
        self.ledger.settle(client_order_id, real_cost, counts)

    def seconds_left(self, announcement: Announcement) -> float | None:
        """How long an order for `announcement` may still wait before it is too old to send (None if
        the announcement carries no timestamp, which check() refuses anyway)."""
        age_ms = announcement.age_ms(self._clock_ns())
        return None if age_ms is None else self._cfg.max_event_age - age_ms / 1000

    def count(self, strategy: str, announcement: Announcement | None) -> None:
        """Note that an order for this announcement was reserved (for max_orders_per_announcement)."""
        if announcement is not None:
            key = (strategy, announcement.key)
            self._per_announcement[key] = self._per_announcement.get(key, 0) + 1
            if len(self._per_announcement) > 10_000:  # bounded memory: forget the oldest announcement
                del self._per_announcement[next(iter(self._per_announcement))]

    def _fallback(self, quote: str) -> float:
        """The estimate of an order whose price is unknown: its quote's max_order_cost, the most it could
        have been allowed to cost (0 if none: such an order was never allowed)."""
        return self._order_limits.get(quote, 0.0)
