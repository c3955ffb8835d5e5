"""Exposure and loss limits. `trading.max_open_cost` (per quote currency: the entry cost of what the
open positions still hold, plus entries in flight) refuses a new entry that would pass it;
`trading.daily_loss_limit` (per quote currency: the loss realised by exits since 00:00 UTC) halts new
entries (`loss_limit`) until the next UTC day or a manual resume (`bridge resume loss_limit`).

The entry check reads memory only: the exit manager hands the positions it reads from the journal each
tick to `update`, and entries reserved since then are added as they are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog

from bridge.config import TradingConfig, quote_limits
from bridge.trading.budget import day_start_ns
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import Position

log = structlog.get_logger(__name__)


class Exposure:
    def __init__(
        self,
        cfg: TradingConfig,
        journal: Journal,
        gate: TradingGate,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._open_limits = None if cfg.max_open_cost is None else quote_limits(cfg.max_open_cost)
        self._loss_limits = None if cfg.daily_loss_limit is None else quote_limits(cfg.daily_loss_limit)
        self._journal = journal
        self._gate = gate
        self._clock_ns = clock_ns
        self._held: dict[str, float] = {}  # quote -> open cost, as of the last update
        self._added: dict[str, float] = {}  # quote -> entries reserved since
        self._resumed_day: int | None = None  # the day an operator resumed trading past the loss limit
        self.realised: dict[str, float] = {}  # quote -> today's realised profit (negative: loss)
        if self._open_limits is not None or self._loss_limits is not None:
            self.update(journal.open_positions())

    def reconfigure(self, cfg: TradingConfig) -> None:
        """A reload's new max_open_cost and daily_loss_limit; what is held and realised stays."""
        self._open_limits = None if cfg.max_open_cost is None else quote_limits(cfg.max_open_cost)
        self._loss_limits = None if cfg.daily_loss_limit is None else quote_limits(cfg.daily_loss_limit)
        if self._loss_limits is not None:
            self._check_loss(self._loss_limits)
        elif "loss_limit" in self._gate.reasons:
            self._gate.resume("loss_limit")  # the limit was removed

    def open_cost(self, quote: str) -> float:
        return self._held.get(quote, 0.0) + self._added.get(quote, 0.0)

    def check(self, quote: str, cost: float) -> str | None:
        """Why a new entry costing `cost` must not open (memory only), or None."""
        if self._open_limits is None:
            return None
        limit = self._open_limits.get(quote)
        if limit is None:
            return f"no_open_limit_for_quote:{quote}"
        if self.open_cost(quote) + cost > limit:
            return "over_max_open_cost"
        return None

    def opened(self, quote: str, cost: float) -> None:
        """An entry with an exit plan was written: it counts until the next update sees it."""
        self._added[quote] = self._added.get(quote, 0.0) + cost

    def update(self, positions: Iterable[Position]) -> None:
        """The positions as the journal has them now (pending and open): the new base of the open
        cost; then the loss limit is checked against today's realised result."""
        held: dict[str, float] = {}
        for p in positions:
            held[p.quote] = held.get(p.quote, 0.0) + p.open_cost
        self._held, self._added = held, {}
        if self._loss_limits is not None:
            self._check_loss(self._loss_limits)

    def resume(self) -> bool:
        """An operator resumes entries past today's loss limit (until the next UTC day). True if the
        loss limit was halting trading."""
        self._resumed_day = day_start_ns(self._clock_ns())
        halted = "loss_limit" in self._gate.reasons
        self._gate.resume("loss_limit")
        return halted

    def _check_loss(self, limits: dict[str, float]) -> None:
        today = day_start_ns(self._clock_ns())
        self.realised = self._journal.realised_since(today)
        over = sorted(q for q, limit in limits.items() if -self.realised.get(q, 0.0) >= limit)
        halted = "loss_limit" in self._gate.reasons
        if over and self._resumed_day != today:
            if not halted:
                log.error(
                    "risk.loss_limit_reached",
                    quotes=over,
                    realised={q: round(self.realised.get(q, 0.0), 8) for q in over},
                    action="new entries halted until 00:00 UTC or `bridge resume loss_limit`; exits go on",
                )
                self._gate.halt("loss_limit")
        elif halted and not over:
            log.info("risk.loss_limit_cleared")  # a new UTC day
            self._gate.resume("loss_limit")
