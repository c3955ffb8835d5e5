"""Exits until flat: every position an entry opened is watched from the journal (so a restart carries on)
until a filled exit covers it.

Each tick reads the warm price cache (one batch of prices per venue, never a request per position) and
handles each position in its own task, so one slow symbol delays no other. Per position, in order:
an entry whose fill is unknown is looked up (the exit waits for it); an exit attempt whose outcome is
unknown is looked up before any other is sent; the resting stop (`stop_on_exchange`) is placed, checked,
and cancelled before the daemon sells itself; then the exit rules (bridge.trading.exit_rules) decide.
Failures wait as bridge.trading.exit_failures says: transient ones are retried for ever; a definitive
rejection alerts (`exit_failed`) and is retried after a backoff, the amount capped by the free balance
when the venue said it was short; what can never fill is `abandoned` with an alert after MAX_EXIT_FAILURES
rejections over at least ABANDON_AFTER_S. What is left under the venue's minimum after a fill ends its
take-profit tier, or the position (closed `sold`) when the exit was to sell it all. Closed and abandoned
positions stay in the journal, listed by `bridge positions`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from bridge.aio import Sleep, sleep_or_stop
from bridge.errors import ExchangeError
from bridge.trading.contracts import is_contract_symbol
from bridge.trading.entry_lookups import PendingEntries
from bridge.trading.exit_alerts import ExitAlerts, NoAlerts
from bridge.trading.exit_failures import ABANDON_AFTER_S, MAX_EXIT_FAILURES, MAX_STOP_FAILURES, ExitFailures
from bridge.trading.exit_orders import ExitAttempt, ExitOrders, unsettled
from bridge.trading.exit_rules import (
    ExitDecision,
    decide,
    exit_reason,
    exit_side,
    high_water,
    improved,
)
from bridge.trading.exit_stops import RestingStops
from bridge.trading.exposure import Exposure
from bridge.trading.gate import TradingGate
from bridge.trading.holdings import RECONCILE_INTERVAL_S, vanished
from bridge.trading.journal import Journal
from bridge.trading.model import OrderOutcome, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.prices import PriceCache
from bridge.venues.exchange import Exchange

__all__ = [
    "ABANDON_AFTER_S",
    "MAX_EXIT_FAILURES",
    "MAX_STOP_FAILURES",
    "ExitAlerts",
    "ExitManager",
    "exit_reason",
]

log = structlog.get_logger(__name__)

# Seconds after its entry before a position is checked against the venue's balances.
HOLDINGS_GRACE_S = 60.0
# Refusals in a row that are each alerted (`exit_failed`); later ones only when the reason changes.
ALERTED_FAILURES = 3

CHECK_INTERVAL = 1.0
# Below this many units a position counts as sold (float dust after fills).
EPSILON = 1e-12


class ExitManager:
    def __init__(
        self,
        *,
        journal: Journal,
        router: OrderRouter,
        exchanges: Mapping[str, Exchange],
        prices: PriceCache,
        gate: TradingGate | None = None,
        dry_run: bool = False,
        alerts: ExitAlerts | None = None,
        exposure: Exposure | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prices = prices
        self._journal = journal
        self._exchanges = exchanges
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self._alerts: ExitAlerts = alerts if alerts is not None else NoAlerts()
        self._exposure = exposure
        self.orders = ExitOrders(
            router=router,
            journal=journal,
            exchanges=exchanges,
            gate=gate if gate is not None else router.gate,
            dry_run=dry_run or router.dry_run,
        )
        self._pending = PendingEntries(
            journal=journal, exchanges=exchanges, orders=self.orders, monotonic=monotonic
        )
        # Set after a pass that found no open position (the daemon in exits-only mode waits on it).
        self.flat = asyncio.Event()
        self._busy: dict[str, asyncio.Task[list[OrderOutcome]]] = {}
        self._failures = ExitFailures(monotonic)  # when each position's next exit or stop may go
        self._short: set[str] = set()  # entries whose last exit was refused for lack of balance
        self._alerted_reason: dict[str, str] = {}  # entry -> the reason of its last exit_failed alert
        self._close_now: set[str] = set()  # entries an operator asked to close (bridge close)
        self._stops = RestingStops(self.orders, self._failures, self._alerts, monotonic)
        self._reconciled_at: float | None = None  # last check of positions against venue balances

    def request_close(self, symbol: str, exchange: str | None = None) -> tuple[bool, str]:
        """Ask for one open position to be sold now, at market (`bridge close`). (ok, message)."""
        matches = [
            p
            for p in self._journal.positions(("open",))
            if p.symbol == symbol and (exchange is None or p.exchange == exchange)
        ]
        if not matches:
            return False, f"no open position in {symbol}" + (f" on {exchange}" if exchange else "")
        if len({p.exchange for p in matches}) > 1:
            return False, f"{symbol} is open on several exchanges: give --exchange"
        for p in matches:
            self._close_now.add(p.client_order_id)
            self._failures.clear_wait(p.client_order_id)
        log.warning(
            "exit.close_requested", symbol=symbol, exchange=matches[0].exchange, positions=len(matches)
        )
        return True, f"closing {len(matches)} position(s) in {symbol} on {matches[0].exchange} at market"

    def open_count(self) -> int:
        return len(self._journal.open_positions())

    async def check(self) -> list[OrderOutcome]:
        """One pass over the positions, each in its own task; waits for those it started."""
        started = await self._start_pass()
        results = await asyncio.gather(*started, return_exceptions=True)
        outcomes: list[OrderOutcome] = []
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                log.error("exit.position_failed", error=repr(result))
            else:
                outcomes.extend(result)
        return outcomes

    async def _start_pass(self) -> list[asyncio.Task[list[OrderOutcome]]]:
        positions = self._journal.open_positions()
        if self._exposure is not None:
            self._exposure.update(positions)  # no await since the read: nothing reserved in between
        if not positions:
            self.flat.set()
            return []
        self.flat.clear()
        await self._warm_prices(positions)
        started = []
        for position in positions:
            cid = position.client_order_id
            if cid in self._busy:  # its last handling is still running (a slow venue): never two at once
                continue
            task = asyncio.create_task(self._handle_logged(position), name=f"exit:{position.symbol}")
            self._busy[cid] = task
            task.add_done_callback(self._done)
            started.append(task)
        return started

    async def reconcile_holdings(self) -> list[str]:
        """Close (`external`) the open positions the venue's balances say are gone; live only. Returns
        their entry client ids. At start and every RECONCILE_INTERVAL_S."""
        self._reconciled_at = self._monotonic()
        if self.orders.paper:
            return []
        busy = set(self._busy)
        # A fresh fill may not show in the venue's balances yet: positions younger than the grace
        # period are checked next time, never closed `external` on a lagging balance.
        settled_before = self._clock_ns() - int(HOLDINGS_GRACE_S * 1e9)
        # A perpetual's position is not a coin balance: only spot positions are checked this way.
        positions = [
            p
            for p in self._journal.positions(("open",))
            if p.client_order_id not in busy
            and p.opened_ns <= settled_before
            and not is_contract_symbol(p.symbol)
        ]
        gone = await vanished(positions, self._exchanges)
        for p in positions:
            if p.client_order_id in gone:
                log.warning("position.external", symbol=p.symbol, detail=gone[p.client_order_id])
                self._close(p, "external")
        return list(gone)

    async def _reconcile_due(self) -> None:
        last = self._reconciled_at
        if last is None or self._monotonic() - last >= RECONCILE_INTERVAL_S:
            try:
                await self.reconcile_holdings()
            except Exception:  # a failed check is retried at the next interval
                log.exception("position.reconcile_failed")

    async def _warm_prices(self, positions: list[Position]) -> None:
        """One batch of prices for a venue where several positions have none fresh (the background
        refresh is off or failing), instead of one request per position."""
        stale: dict[str, int] = {}
        for p in positions:
            if p.state == "open" and self._prices.fresh(p.exchange, p.symbol) is None:
                stale[p.exchange] = stale.get(p.exchange, 0) + 1
        for exchange, count in stale.items():
            if count > 1 and exchange in self._exchanges:
                try:
                    await self._prices.refresh(exchange)
                except ExchangeError as exc:
                    log.warning("exit.prices_failed", exchange=exchange, error=str(exc))

    def _done(self, task: asyncio.Task[list[OrderOutcome]]) -> None:
        for cid, busy in list(self._busy.items()):
            if busy is task:
                del self._busy[cid]

    async def run(
        self, stop: asyncio.Event, *, interval: float = CHECK_INTERVAL, sleep: Sleep = asyncio.sleep
    ) -> None:
        """Tick every `interval` seconds until `stop`; positions still busy from the last tick are left
        to finish. A failing pass is logged, never fatal."""
        try:
            while not await sleep_or_stop(sleep, interval, stop):
                try:
                    await self._reconcile_due()
                    await self._start_pass()
                except Exception:  # exits must keep being watched whatever one pass hit
                    log.exception("exit.check_failed")
        finally:
            for task in list(self._busy.values()):
                task.cancel()

    async def _handle_logged(self, position: Position) -> list[OrderOutcome]:
        try:
            return await self._handle(position)
        except ExchangeError as exc:
            log.warning("exit.check_failed", symbol=position.symbol, error=str(exc))
        except Exception:
            log.exception("exit.check_failed", symbol=position.symbol)
        return []

    async def _handle(self, position: Position) -> list[OrderOutcome]:
        if (venue := self._exchanges.get(position.exchange)) is not None and not venue.started:
            return []  # venue_unavailable: down since boot; its exits resume once the daemon starts it
        cid = position.client_order_id
        if position.state == "pending":
            if await self._pending.look_up(position):
                self._abandon(position, "entry_not_found")
            return []
        for record in self._journal.exit_orders(cid):
            is_stop = record.intent.client_order_id == position.stop_client_order_id
            # An attempt that may have executed, or whose fill is not known: never send another before knowing.
            if unsettled(record) and not is_stop and not await self.orders.resolve(record):
                return []
        if self._failures.waiting(cid, halted=bool(self.orders.blockers(position.exchange))):
            return []
        # What the exit would trade at: the bid for a long, the ask for a short (it buys back).
        price = await self._prices.reference(position.exchange, position.symbol, exit_side(position))
        best = high_water(position, price)
        if best is not None and improved(position, best):
            self._journal.update_position(cid, high_water=best)
        position = self._reload(position)
        if position.stop_client_order_id is not None and self._stops.check_due(position, price):
            await self.orders.check_stop(position)
            position = self._reload(position)
        if self._flat(position):
            return []
        decision = decide(position, price, self._clock_ns(), manual=cid in self._close_now)
        if decision is None:
            wants_stop = position.plan.stop_on_exchange and position.stop_client_order_id is None
            if wants_stop and self.orders.stops_supported(position):
                await self._stops.place(position)
            return []
        if position.stop_client_order_id is not None:
            if not await self.orders.cancel_stop(position):  # the stop rests on (a halt: it must)
                self._failures.transient(cid, None, halt=bool(self.orders.blockers(position.exchange)))
                return []
            position = self._reload(position)
            if self._flat(position):
                return []
            decision = decide(position, price, self._clock_ns(), manual=cid in self._close_now)
            if decision is None:
                return []
        if decision.tier is not None and position.tier_hold is None and decision.hold > 0:
            self._journal.update_position(cid, tier_hold=decision.hold)
        amount = decision.amount
        if cid in self._short:
            amount = min(amount, await self.orders.free(position))
        log.info(
            "exit.triggered",
            strategy=position.strategy,
            exchange=position.exchange,
            symbol=position.symbol,
            reason=decision.reason,
            entry_price=position.average,
            price=price,
            amount=amount,
            entry_client_order_id=cid,
        )
        attempt = await self.orders.sell(position, decision, amount) if amount > EPSILON else None
        if attempt is None:
            attempt = ExitAttempt(None, rejection="insufficient_balance")
        capped = amount < decision.amount - EPSILON
        self._after_attempt(
            self._reload(position), decision, attempt, price, capped_at=amount if capped else None
        )
        return [] if attempt.outcome is None else [attempt.outcome]

    def _after_attempt(
        self,
        position: Position,
        decision: ExitDecision,
        attempt: ExitAttempt,
        price: float | None,
        *,
        capped_at: float | None = None,
    ) -> None:
        cid = position.client_order_id
        if capped_at is not None and attempt.sold >= capped_at * (1 - 1e-9):
            # It sold all the account held of the coin: the rest was never there (fees): flat.
            self._close(position, "sold")
            return
        if attempt.sold > 0:
            self._failures.sold(cid)
            self._short.discard(cid)
            if position.failures:
                self._journal.update_position(cid, failures=0)
            self._after_fill(position, decision, price)
            return
        if attempt.unresolved or (attempt.outcome is not None and attempt.outcome.status == "expired"):
            return  # looked up / re-priced on the next tick
        if attempt.transient:
            halt = (attempt.rejection or "").startswith("halted:")
            delay = self._failures.transient(cid, attempt.retry_after, halt=halt)
            log.warning(
                "exit.retry_later",
                entry_client_order_id=cid,
                reason=attempt.rejection,
                retry_in=round(delay, 3),
            )
            return
        reason = attempt.rejection or "rejected"
        if reason == "dust" and self._dust(position, decision):
            return
        self._rejected(position, reason, attempt)

    def _after_fill(self, position: Position, decision: ExitDecision, price: float | None) -> None:
        """An exit filled (some of) what it asked: end its take-profit tier once what the tier still has
        to sell is sold or under the venue's minimum; close the position when nothing sellable is left."""
        rest = position.remaining - decision.hold
        if rest > EPSILON and not self.orders.sellable(position, decision, rest, price):
            cid = position.client_order_id
            log.info("exit.rest_under_minimum", symbol=position.symbol, rest=rest, entry_client_order_id=cid)
            self._dust(position, decision)
        elif rest <= EPSILON and decision.tier is not None:
            self._tier_done(position, decision.tier)
        self._flat(self._reload(position))

    def _dust(self, position: Position, decision: ExitDecision) -> bool:
        """What the decision sells is under the venue's minimum. A take-profit tier that keeps part of the
        position ends there (the part kept is still watched); an exit of everything after earlier fills
        leaves nothing sellable: closed, `sold`. False when nothing was sold yet (a rejection)."""
        if decision.tier is not None and decision.hold > EPSILON:
            self._tier_done(position, decision.tier)
            return True
        if position.sold > 0:
            self._close(position, "sold")
            return True
        return False

    def _tier_done(self, position: Position, tier: int) -> None:
        self._journal.update_position(position.client_order_id, tiers_done=tier + 1, tier_hold=None)
        log.info("exit.tier_sold", symbol=position.symbol, tier=tier + 1, remaining=position.remaining)

    def _rejected(self, position: Position, reason: str, attempt: ExitAttempt) -> None:
        """A definitive rejection: counted (journal), alerted, waited on; abandoned once the streak is
        long and old enough (exit_failures)."""
        cid = position.client_order_id
        failures = position.failures + 1
        self._journal.update_position(cid, failures=failures)
        if reason == "insufficient_balance":
            self._short.add(cid)
        delay, give_up = self._failures.rejected(cid, reason, failures)
        outcome_cid = None if attempt.outcome is None else attempt.outcome.client_order_id
        # Alerted for the first few refusals of a streak and whenever the reason changes; the rest of
        # a long streak (an hour before it is abandoned) is logged only, not a chat message each time.
        if failures <= ALERTED_FAILURES or self._alerted_reason.get(cid) != reason:
            self._alerts.exit_failed(position.exchange, position.symbol, outcome_cid, reason)
            self._alerted_reason[cid] = reason
        log.error(
            "exit.failed",
            symbol=position.symbol,
            exchange=position.exchange,
            reason=reason,
            failures=failures,
            retry_in=round(delay, 3),
            entry_client_order_id=cid,
        )
        if give_up:
            self._abandon(position, reason)

    def _flat(self, position: Position) -> bool:
        """Close a position that holds nothing any more; True if it is over."""
        if position.state in ("closed", "abandoned"):
            return True
        if position.remaining > EPSILON:
            return False
        self._close(position, "sold")
        return True

    def _close(self, position: Position, reason: str) -> None:
        cid = position.client_order_id
        self._journal.update_position(cid, state="closed", close_reason=reason, tier_hold=None)
        self._forget(cid)
        log.info(
            "position.closed",
            strategy=position.strategy,
            exchange=position.exchange,
            symbol=position.symbol,
            reason=reason,
            sold=position.sold,
            entry_client_order_id=cid,
        )

    def _forget(self, cid: str) -> None:
        self._failures.forget(cid)
        self._pending.forget(cid)
        self._stops.forget(cid)
        self._short.discard(cid)
        self._close_now.discard(cid)

    def _abandon(self, position: Position, reason: str) -> None:
        cid = position.client_order_id
        self._journal.update_position(cid, state="abandoned", close_reason=reason)
        self._forget(cid)
        self._alerts.position_abandoned(position.exchange, position.symbol, cid, reason)
        log.error(
            "position.abandoned",
            strategy=position.strategy,
            exchange=position.exchange,
            symbol=position.symbol,
            reason=reason,
            remaining=position.remaining,
            entry_client_order_id=cid,
            action="check the exchange by hand; bridge no longer sells it",
        )

    def _reload(self, position: Position) -> Position:
        return self._journal.position(position.client_order_id) or position
