"""Exits for positions the strategies opened: take-profit, stop-loss and time-based, watched from the
journal (so they survive a restart) and sent through the order router as sells.

A position is an entry buy that filled and carries an ExitPlan; it is closed by one exit sell whose
client order id derives from the entry's, so an exit is never sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from bridge.aio import Sleep, sleep_or_stop
from bridge.trading.journal import Journal
from bridge.trading.model import OrderOutcome, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.prices import PriceCache
from bridge.venues.exchange import Exchange

log = structlog.get_logger(__name__)

CHECK_INTERVAL = 1.0


def exit_reason(position: Position, price: float | None, now_ns: int) -> str | None:
    """Which exit, if any, `position` has reached at `price` and time `now_ns` (pure)."""
    plan = position.plan
    entry = position.average
    if price is not None and entry:
        if plan.take_profit is not None and price >= entry * (1 + plan.take_profit):
            return "take_profit"
        if plan.stop_loss is not None and price <= entry * (1 - plan.stop_loss):
            return "stop_loss"
    if plan.after is not None and now_ns - position.opened_ns >= plan.after * 1e9:
        return "time"
    return None


class ExitManager:
    def __init__(
        self,
        *,
        journal: Journal,
        router: OrderRouter,
        exchanges: Mapping[str, Exchange],
        prices: PriceCache,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._prices = prices
        self._journal = journal
        self._router = router
        self._exchanges = exchanges
        self._clock_ns = clock_ns
        # Set after a pass that found no open position (the daemon in exits-only mode waits on it).
        self.flat = asyncio.Event()

    async def check(self) -> list[OrderOutcome]:
        """One pass over the open positions; sells those that reached an exit."""
        outcomes: list[OrderOutcome] = []
        positions = self._journal.open_positions()
        if not positions:
            self.flat.set()
            return outcomes
        self.flat.clear()
        for position in positions:
            ex = self._exchanges.get(position.exchange)
            if ex is None:
                continue
            # What the position would sell at now (the best bid), from the one price cache.
            price = await self._prices.reference(position.exchange, position.symbol, "sell")
            reason = exit_reason(position, price, self._clock_ns())
            if reason is None:
                continue
            log.info(
                "exit.triggered",
                strategy=position.strategy,
                exchange=position.exchange,
                symbol=position.symbol,
                reason=reason,
                entry_price=position.average,
                price=price,
                entry_client_order_id=position.client_order_id,
            )
            outcomes.append(await self._router.submit_exit(position, reason))
        return outcomes

    async def run(
        self, stop: asyncio.Event, *, interval: float = CHECK_INTERVAL, sleep: Sleep = asyncio.sleep
    ) -> None:
        """Check every `interval` seconds until `stop`; a failing pass is logged, never fatal."""
        while not await sleep_or_stop(sleep, interval, stop):
            try:
                await self.check()
            except Exception:  # exits must keep being watched whatever one pass hit
                log.exception("exit.check_failed")
