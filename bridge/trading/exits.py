"""Exits until flat: every position an entry opened is watched from the journal (so a restart carries on)
until a filled exit covers it.

Each tick reads the warm price cache (one batch of prices per venue, never a request per position) and
handles each position in its own task, so one slow symbol delays no other. Per position, in order:
an entry whose fill is unknown is looked up (the exit waits for it); an exit attempt whose outcome is
unknown is looked up before any other is sent; the resting stop (`stop_on_exchange`) is placed, checked,
and cancelled before the daemon sells itself; then the exit rules (bridge.trading.exit_rules) decide.
Transient failures back off (honouring Retry-After); a definitive rejection alerts (`exit_failed`) and is
retried on the next tick, the amount capped by the free balance when the venue said it was short; what
can never fill is `abandoned` with an alert after MAX_EXIT_FAILURES tries. Closed and abandoned
positions stay in the journal, listed by `bridge positions`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from bridge.aio import Sleep, sleep_or_stop
from bridge.errors import ExchangeError
from bridge.retry import backoff_delay
from bridge.trading.exit_orders import ExitAttempt, ExitOrders
from bridge.trading.exit_rules import decide, exit_reason, high_water, stop_price
from bridge.trading.exposure import Exposure
from bridge.trading.gate import TradingGate
from bridge.trading.holdings import RECONCILE_INTERVAL_S, vanished
from bridge.trading.journal import Journal
from bridge.trading.model import OrderOutcome, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.prices import PriceCache
from bridge.venues.exchange import Exchange

__all__ = ["ExitAlerts", "ExitManager", "exit_reason"]

log = structlog.get_logger(__name__)

CHECK_INTERVAL = 1.0
# Definitive rejections of one position's exits before it is abandoned (alerted, left to a human).
MAX_EXIT_FAILURES = 5
# Refused resting stops before the daemon stops trying (its own stop-loss check still watches).
MAX_STOP_FAILURES = 5
# How often an entry whose fill is unknown is looked up, and how many "no such order" answers make it
# abandoned (the entry most likely never executed; a human checks).
PENDING_LOOKUP_INTERVAL_S = 30.0
PENDING_NOT_FOUND_LIMIT = 10
# The resting stop is looked up when the price is this close to its trigger, else once a minute.
STOP_CHECK_NEAR = 0.02
STOP_CHECK_INTERVAL_S = 60.0
# Below this many units a position counts as sold (float dust after fills).
EPSILON = 1e-12


class ExitAlerts(Protocol):
    """Where exit trouble is reported (the daemon's notifier)."""

    def exit_failed(self, exchange: str, symbol: str, client_order_id: str | None, reason: str) -> None: ...

    def position_abandoned(
        self, exchange: str, symbol: str, entry_client_order_id: str, reason: str
    ) -> None: ...


class _NoAlerts:
    def exit_failed(self, exchange: str, symbol: str, client_order_id: str | None, reason: str) -> None:
        return None

    def position_abandoned(self, exchange: str, symbol: str, entry_client_order_id: str, reason: str) -> None:
        return None


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
        self._alerts: ExitAlerts = alerts if alerts is not None else _NoAlerts()
        self._exposure = exposure
        self.orders = ExitOrders(
            router=router,
            journal=journal,
            exchanges=exchanges,
            gate=gate if gate is not None else router.gate,
            dry_run=dry_run or router.dry_run,
        )
        # Set after a pass that found no open position (the daemon in exits-only mode waits on it).
        self.flat = asyncio.Event()
        self._busy: dict[str, asyncio.Task[list[OrderOutcome]]] = {}
        self._retry_at: dict[str, float] = {}  # entry cid -> monotonic time before which nothing is sent
        self._transient: dict[str, int] = {}  # entry cid -> transient failures in a row
        self._short: set[str] = set()  # entries whose last exit was refused for lack of balance
        self._close_now: set[str] = set()  # entries an operator asked to close (bridge close)
        self._pending_seen: dict[str, tuple[float, int]] = {}  # entry cid -> (last look-up, not-found count)
        self._stop_checked: dict[str, float] = {}
        self._stop_failures: dict[str, int] = {}  # entry cid -> resting stops refused in a row
        self._stop_retry_at: dict[str, float] = {}
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
            self._retry_at.pop(p.client_order_id, None)
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
        positions = [p for p in self._journal.positions(("open",)) if p.client_order_id not in busy]
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
        cid = position.client_order_id
        if position.state == "pending":
            await self._look_up_entry(position)
            return []
        for record in self._journal.exit_orders(cid):
            outstanding = record.state in ("sending", "unknown")
            is_stop = record.intent.client_order_id == position.stop_client_order_id
            # An attempt that may have executed: never send another before knowing.
            if outstanding and not is_stop and not await self.orders.resolve(record):
                return []
        if self._monotonic() < self._retry_at.get(cid, 0.0):
            return []
        price = await self._prices.reference(position.exchange, position.symbol, "sell")
        high = high_water(position, price)
        if high is not None and (position.high_water is None or high > position.high_water):
            self._journal.update_position(cid, high_water=high)
        position = self._reload(position)
        if position.stop_client_order_id is not None and self._stop_due(position, price):
            await self.orders.check_stop(position)
            position = self._reload(position)
        if self._flat(position):
            return []
        decision = decide(position, price, self._clock_ns(), manual=cid in self._close_now)
        if decision is None:
            wants_stop = position.plan.stop_on_exchange and position.stop_client_order_id is None
            if wants_stop and self.orders.stops_supported(position):
                await self._place_stop(position)
            return []
        if position.stop_client_order_id is not None:
            if not await self.orders.cancel_stop(position):
                self._back_off(cid, None)
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
            amount = min(amount, await self._free(position))
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
            self._reload(position), decision.tier, attempt, capped_at=amount if capped else None
        )
        return [] if attempt.outcome is None else [attempt.outcome]

    async def _place_stop(self, position: Position) -> None:
        """Rest the stop, backing off after failures (5 s, doubling, up to 5 min); after
        MAX_STOP_FAILURES the daemon's own stop-loss check is the only stop, alerted once."""
        cid = position.client_order_id
        failures = self._stop_failures.get(cid, 0)
        if failures >= MAX_STOP_FAILURES or self._monotonic() < self._stop_retry_at.get(cid, 0.0):
            return
        if await self.orders.place_stop(position):
            self._stop_failures.pop(cid, None)
            return
        failures += 1
        self._stop_failures[cid] = failures
        delay = backoff_delay(failures, 5.0, 300.0, random.random())  # noqa: S311 - jitter
        self._stop_retry_at[cid] = self._monotonic() + delay
        if failures >= MAX_STOP_FAILURES:
            self._alerts.exit_failed(position.exchange, position.symbol, None, "resting_stop_not_placed")
            log.error(
                "exit.stop_given_up",
                symbol=position.symbol,
                entry_client_order_id=cid,
                action="no stop rests on the exchange; the daemon's own stop-loss check still sells",
            )

    def _after_attempt(
        self,
        position: Position,
        tier: int | None,
        attempt: ExitAttempt,
        *,
        capped_at: float | None = None,
        sells_all: bool = True,
    ) -> None:
        cid = position.client_order_id
        if capped_at is not None and attempt.sold >= capped_at * (1 - 1e-9) and sells_all:
            # It sold all the account held of the coin: the rest was never there (fees): flat.
            self._close(position, "sold")
            return
        if attempt.sold > 0:
            self._transient.pop(cid, None)
            self._short.discard(cid)
            if position.failures:
                self._journal.update_position(cid, failures=0)
            if tier is not None and position.remaining <= (position.tier_hold or 0.0) + EPSILON:
                self._journal.update_position(cid, tiers_done=tier + 1, tier_hold=None)
                log.info(
                    "exit.tier_sold", symbol=position.symbol, tier=tier + 1, remaining=position.remaining
                )
            self._flat(self._reload(position))
            return
        if attempt.unresolved or (attempt.outcome is not None and attempt.outcome.status == "expired"):
            return  # looked up / re-priced on the next tick
        if attempt.transient:
            self._back_off(cid, attempt.retry_after)
            return
        reason = attempt.rejection or "rejected"
        if reason == "dust" and position.sold > 0:
            self._close(position, "sold")  # what is left is under the venue's minimum
            return
        failures = position.failures + 1
        self._journal.update_position(cid, failures=failures)
        if reason == "insufficient_balance":
            self._short.add(cid)
        outcome_cid = None if attempt.outcome is None else attempt.outcome.client_order_id
        self._alerts.exit_failed(position.exchange, position.symbol, outcome_cid, reason)
        log.error(
            "exit.failed",
            symbol=position.symbol,
            exchange=position.exchange,
            reason=reason,
            failures=failures,
            entry_client_order_id=cid,
        )
        if reason in ("dust", "unknown_symbol") or failures >= MAX_EXIT_FAILURES:
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
        memos = (self._retry_at, self._transient, self._pending_seen, self._stop_checked, self._stop_failures)
        for memo in (*memos, self._stop_retry_at):
            memo.pop(cid, None)
        self._short.discard(cid)
        self._close_now.discard(cid)
        log.info(
            "position.closed",
            strategy=position.strategy,
            exchange=position.exchange,
            symbol=position.symbol,
            reason=reason,
            sold=position.sold,
            entry_client_order_id=cid,
        )

    def _abandon(self, position: Position, reason: str) -> None:
        cid = position.client_order_id
        self._journal.update_position(cid, state="abandoned", close_reason=reason)
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

    def _back_off(self, cid: str, retry_after: float | None) -> None:
        n = self._transient.get(cid, 0) + 1
        self._transient[cid] = n
        delay = max(backoff_delay(n, 0.5, 30.0, random.random()), retry_after or 0.0)  # noqa: S311 - jitter
        self._retry_at[cid] = self._monotonic() + delay
        log.warning("exit.retry_later", entry_client_order_id=cid, retry_in=round(delay, 3), attempt=n)

    def _stop_due(self, position: Position, price: float | None) -> bool:
        trigger = stop_price(position)
        now = self._monotonic()
        near = price is None or trigger is None or price <= trigger * (1 + STOP_CHECK_NEAR)
        if near or now - self._stop_checked.get(position.client_order_id, 0.0) >= STOP_CHECK_INTERVAL_S:
            self._stop_checked[position.client_order_id] = now
            return True
        return False

    async def _free(self, position: Position) -> float:
        """What the account holds free of the position's coin (the cap of an exit after a balance
        refusal); the position's remaining amount when the venue cannot say."""
        ex = self._exchanges.get(position.exchange)
        if ex is None or self.orders.paper:
            return position.remaining
        try:
            free = await ex.fetch_free_balances()
        except ExchangeError:
            return position.remaining
        base = position.symbol.split("/", 1)[0]
        return min(position.remaining, free.get(base, 0.0))

    async def _look_up_entry(self, position: Position) -> None:
        """An entry whose fill is unknown: look it up now and then; the exit waits for the answer."""
        cid = position.client_order_id
        now = self._monotonic()
        last, misses = self._pending_seen.get(cid, (now, 0))
        if cid not in self._pending_seen:
            self._pending_seen[cid] = (now, 0)  # first seen: the router's own look-ups go first
            return
        if now - last < PENDING_LOOKUP_INTERVAL_S:
            return
        record = self._journal.get(cid)
        ex = self._exchanges.get(position.exchange)
        if record is None or ex is None or self.orders.paper:
            return
        try:
            found = await ex.fetch_order_by_client_id(position.symbol, cid)
        except ExchangeError as exc:
            self._pending_seen[cid] = (now, misses)
            log.warning("exit.entry_lookup_failed", entry_client_order_id=cid, error=str(exc))
            return
        if found is not None:
            self.orders.record_entry(record.intent, found)
            self._pending_seen.pop(cid, None)
            return
        misses += 1
        self._pending_seen[cid] = (now, misses)
        if misses >= PENDING_NOT_FOUND_LIMIT:
            self._abandon(position, "entry_not_found")

    def _reload(self, position: Position) -> Position:
        return self._journal.position(position.client_order_id) or position
