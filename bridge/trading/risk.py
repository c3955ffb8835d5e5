"""Risk limits every order must pass before it is sent: size, event age, daily spend, symbol lists.

Pure decisions from config, the journal and a clock; returns the reason an order is refused, or None.
Limits refuse, they never clamp: an order that is too big is not made smaller behind the trader's back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.config import TradingConfig
from bridge.feed.codec import Announcement
from bridge.trading.journal import Journal


class RiskLimits:
    def __init__(
        self, cfg: TradingConfig, journal: Journal, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self._cfg = cfg
        self._journal = journal
        self._clock_ns = clock_ns
        self._per_announcement: dict[tuple[str, str], int] = {}

    def check(
        self,
        *,
        strategy: str,
        announcement: Announcement | None,
        symbol: str,
        side: str,
        quote: str,
        cost: float | None,
    ) -> str | None:
        """The reason this order must not be sent, or None if every limit allows it."""
        cfg = self._cfg
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
        if side == "buy":
            if cost is None:
                return "cost_unknown"
            if cost > cfg.max_order_cost:
                return "over_max_order_cost"
            if cfg.daily_max_cost is not None:
                spent = self._journal.spent_since(self._day_start_ns(), quote)
                if spent + cost > cfg.daily_max_cost:
                    return "over_daily_max_cost"
        return None

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

    def _day_start_ns(self) -> int:
        now = datetime.fromtimestamp(self._clock_ns() / 1e9, tz=UTC)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp() * 1e9)
