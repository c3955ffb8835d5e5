"""The order path: trading gate, risk limits, journal intent, then exactly one request (or a paper fill).

Every order of every strategy goes through `OrderRouter.submit` (exits through bridge.trading.
exit_orders, which shares its journal book and look-ups). An order whose outcome is unknown (timeout,
5xx) is looked up by its client order id, in the background: it is never sent a second time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from bridge.aio import Sleep
from bridge.errors import (
    ExchangeAuthError,
    ExchangeError,
    OrderStatusUnknown,
    RateLimited,
    TradingHalted,
)
from bridge.trading import metrics
from bridge.trading.backoff import VenueBackoff
from bridge.trading.contracts import ContractSetup, Leverage, is_contract, market_amount
from bridge.trading.fresh_start import FreshStartGuard, PriorOrderUnknown
from bridge.trading.gate import TradingGate
from bridge.trading.ids import client_order_id
from bridge.trading.journal import Journal
from bridge.trading.model import (
    Announcement,
    ExitPlan,
    OrderIntent,
    OrderOutcome,
    Position,
    Side,
    Status,
)
from bridge.trading.outcomes import OutcomeBook, is_expired
from bridge.trading.paper import PaperBroker
from bridge.trading.prices import PriceCache
from bridge.trading.pricing import check_slippage, order_terms
from bridge.trading.risk import RiskLimits
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest, OrderResult

log = structlog.get_logger(__name__)

# Delays between look-ups of an order whose outcome is unknown: about 10 s in all, enough for an
# exchange to have processed a request that timed out on our side.
LOOKUP_DELAYS = (0.25, 0.5, 1.0, 2.0, 3.0, 3.0)


@dataclass(frozen=True, slots=True)
class _Pricing:
    max_slippage: float | None
    leg: str
    price_max_age: float | None
    leverage: Leverage | None = None  # contract orders: cost is the margin, notional = cost x leverage
    opens: bool = False  # a sell that opens (or adds to) a short on a contract market


class OrderRouter:
    def __init__(
        self,
        *,
        gate: TradingGate,
        risk: RiskLimits,
        journal: Journal,
        exchanges: Mapping[str, Exchange],
        dry_run: bool,
        prices: PriceCache | None = None,
        sleep: Sleep = asyncio.sleep,
        on_outcome: Callable[[OrderOutcome], None] | None = None,
        fresh_start: FreshStartGuard | None = None,
    ) -> None:
        self._on_outcome = on_outcome
        # A live journal that started empty: orders of the first seconds are looked up before sending.
        self._fresh_start = fresh_start
        # Look-ups of entries whose outcome is unknown run here, outside the announcement's task.
        self._lookups: set[asyncio.Task[None]] = set()
        # The one price source (warm quotes, one fetch at most when stale): caps, estimates, paper fills.
        self.prices = prices if prices is not None else PriceCache(exchanges, refresh_interval=0)
        self._gate = gate
        self.gate = gate
        self.backoff = VenueBackoff(gate)  # shared with the exit orders
        self.dry_run = dry_run
        self._risk = risk
        self._journal = journal
        self._exchanges = exchanges
        self._dry_run = dry_run
        self._paper = PaperBroker(self.prices)
        self.book = OutcomeBook(journal, risk)  # shared with the exit orders
        self._sleep = sleep
        # Margin mode and leverage per contract symbol, set once before its first order.
        self.contracts = ContractSetup(exchanges)
        self.on_held: Callable[[OrderIntent, Announcement], None] | None = None  # a pair's standby (ops.ha)

    async def submit(
        self,
        *,
        strategy: str,
        announcement: Announcement | None,
        exchange: str,
        symbol: str,
        side: Side,
        cost: float | None = None,
        amount: float | None = None,
        exit: ExitPlan | None = None,
        max_slippage: float | None = None,
        leg: str = "",
        price_max_age: float | None = None,
        leverage: Leverage | None = None,
        opens: bool = False,
    ) -> OrderOutcome:
        """Place one order, or say why not. Never raises for an exchange or risk refusal.
        With `max_slippage` (a fraction; strategies get 0.05 by default through Context.buy/sell, the
        router itself defaults to None) the order is a limit IOC capped at the reference price x (1 +
        max_slippage) for a buy (floored at x (1 - max_slippage) for a sell); None: a market order.
        `leg` names one of several orders a strategy places on one symbol for one announcement.
        `exit` (entries): when to sell the position it opens; watched by bridge.exits.
        On a contract market (perpetual): `cost` is the margin and the order's notional is cost x
        `leverage` (default 1x, isolated), which is what the risk limits count; the symbol's margin mode
        and leverage are set before its first order (bridge.trading.contracts). A buy opens or adds to a
        long; a sell with `opens` opens or adds to a short (and may carry an `exit` plan, whose exits buy
        back); a sell without it is reduce-only: it can close a long, never open a short."""
        outcome = await self._submit(
            strategy,
            announcement,
            exchange,
            symbol,
            side,
            cost,
            amount,
            exit,
            _Pricing(max_slippage, leg, price_max_age, leverage, opens),
        )
        self.emit(outcome)
        return outcome

    def emit_exit(self, position: Position, reason: str, amount: float, outcome: OrderOutcome) -> None:
        """Report an exit order's outcome (replay notes the exit's reason too)."""
        self.emit(outcome)

    def emit(self, outcome: OrderOutcome) -> None:
        """Tell the outcome listener (alerts, paper balances) what became of an order."""
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:  # a listener (alerts) must never break the order path
                log.exception("order.listener_failed")

    async def _submit(
        self,
        strategy: str,
        announcement: Announcement | None,
        exchange: str,
        symbol: str,
        side: Side,
        cost: float | None,
        amount: float | None,
        plan: ExitPlan | None,
        pricing: _Pricing,
    ) -> OrderOutcome:
        base = {"exchange": exchange, "symbol": symbol, "side": side}

        def skipped(reason: str, cid: str | None = None) -> OrderOutcome:
            log.info("order.skipped", strategy=strategy, reason=reason, client_order_id=cid, **base)
            metrics.ORDERS.labels(exchange, "skipped", str(self._dry_run).lower()).inc()
            return OrderOutcome("skipped", exchange, symbol, side, cid, reason)

        if (cost is None) == (amount is None):
            return skipped("need_exactly_one_of_cost_or_amount")
        if (cost is not None and cost <= 0) or (amount is not None and amount <= 0):
            return skipped("non_positive_size")
        if announcement is None:
            return skipped("no_announcement")
        ex = self._exchanges.get(exchange)
        if ex is None:
            return skipped("exchange_not_configured")
        if blockers := self._gate.entry_blockers(exchange) - {"ha_standby"}:  # a standby: on to on_held
            return skipped("trading_halted:" + ",".join(sorted(blockers)))
        market = ex.market(symbol) or await ex.find_market(symbol)
        if market is None:
            return skipped("unknown_symbol")
        if not market.active:
            return skipped("market_inactive")
        contract = is_contract(market)
        if not contract and (pricing.opens or pricing.leverage is not None):
            return skipped("needs_a_contract_market")  # a short or leverage on spot: nothing to send
        if side == "sell" and plan is not None and not pricing.opens:
            return skipped("exit_plan_on_a_closing_sell")
        lev = pricing.leverage or Leverage()
        if contract and cost is not None:
            cost = lev.notional(cost)
            if pricing.max_slippage is None:  # a contract market order is sized by amount, not cost
                sized = await market_amount(ex, self.prices, symbol, side, cost, pricing.price_max_age)
                if isinstance(sized, str):
                    return skipped(sized)
                cost, amount = None, sized
        try:
            check_slippage(pricing.max_slippage)
            cid_base = client_order_id(announcement.key, strategy, exchange, symbol, side, leg=pricing.leg)
        except ValueError as exc:
            return skipped(f"bad_order_argument: {exc}")
        terms = await order_terms(
            ex,
            self.prices,
            symbol=symbol,
            side=side,
            cost=cost,
            amount=amount,
            max_slippage=pricing.max_slippage,
            max_age=pricing.price_max_age,
        )
        if isinstance(terms, str):
            return skipped(terms)
        est_cost = terms.estimated_cost

        def refused() -> str | None:
            return self._risk.check(
                strategy=strategy,
                announcement=announcement,
                symbol=symbol,
                side=side,
                quote=market.quote,
                cost=est_cost,
                exchange=exchange,
                opens=pricing.opens,
            )

        refusal = refused()
        if refusal is not None:
            return skipped(refusal)
        if contract:  # margin mode and leverage, once per symbol (off this path when prepared at start)
            problem = await self.contracts.ensure(exchange, symbol, lev, on_order_path=True)
            if problem is not None:
                return skipped(problem)
        cid = ex.format_client_order_id(cid_base)
        # The exchange's request budget, before the last gate check: within budget this is arithmetic
        # and the order goes at once; over it, the order waits here, never after the gate check.
        prepaid = not self._dry_run
        if prepaid and (wait := ex.reserve_order()) > 0:
            left = self._risk.seconds_left(announcement)
            if left is not None and wait > left:  # it would be too old by the time it may go
                ex.refund_order()
                return skipped("rate_limited", cid)
            await self._sleep(wait)
            refusal = refused()  # the world moved on while it waited
            if refusal is not None:
                ex.refund_order()
                return skipped(refusal, cid)
        found: OrderResult | None = None
        if self._fresh_start is not None and not self._dry_run and self._fresh_start.applies(announcement):
            try:  # sent before this journal started empty? (the same announcement gives the same id)
                found = await self._fresh_start.already_sent(ex, symbol, cid)
            except PriorOrderUnknown:
                if prepaid:
                    ex.refund_order()
                return skipped("prior_order_unknown", cid)
        intent = OrderIntent(
            cid,
            announcement.key,
            strategy,
            exchange,
            symbol,
            side,
            market.quote,
            terms.cost,
            terms.amount,
            self._dry_run,
            plan=plan if plan is not None and plan.active else None,
            limit_price=terms.limit_price,
            est_cost=est_cost,
        )
        # Gate again right before the intent: the awaits above may have let a halt in.
        try:
            self._gate.check(exchange)
            reserved = self.reserve(intent)
        except TradingHalted as exc:
            if prepaid:
                ex.refund_order()  # not sent: give the request budget back
            if self.on_held is not None and exc.reasons == {"ha_standby"}:
                self.on_held(intent, announcement)  # what a pair's leader sends: the standby's would-be
            return skipped("trading_halted:" + ",".join(sorted(exc.reasons)), cid)
        if not reserved:
            if prepaid:
                ex.refund_order()
            return skipped("duplicate", cid)
        self._risk.count(strategy, announcement)
        # Counts toward the daily budgets, and toward the open cost when it opens a watched position.
        self._risk.reserve(cid, exchange, market.quote, est_cost, opens_position=intent.plan is not None)
        if found is not None:  # on the venue already: journaled as ours (its fill, its exit plan), not sent
            if prepaid:
                ex.refund_order()
            if is_expired(found):
                return self.book.expired(intent, found)
            self.book.record_fill(intent, "placed", found)
            metrics.ORDERS.labels(exchange, "placed", "false").inc()
            return OrderOutcome("placed", exchange, symbol, side, cid, "already_on_venue", result=found)
        request = OrderRequest(
            symbol=symbol,
            side=side,
            client_order_id=cid,
            cost=terms.cost,
            amount=terms.amount,
            limit_price=terms.limit_price,
            prepaid=prepaid,
            received_mono_ns=announcement.received_mono_ns,
            reduce_only=contract and side == "sell" and not pricing.opens,
        )
        if self._dry_run:
            return await self.paper_fill(ex, request, intent, announcement, pricing.price_max_age)
        return await self._send(ex, request, intent, announcement)

    def reserve(self, intent: OrderIntent) -> bool:
        """Write an order's intent (durable when True; False: a duplicate). A journal that cannot be
        written halts trading (`journal_unwritable`) and raises TradingHalted: nothing is sent that
        the journal did not record."""
        try:
            return self._journal.reserve(intent)
        except OSError as exc:
            log.error(  # noqa: TRY400 - the message says it all; no traceback for a full disk
                "journal.intent_failed", client_order_id=intent.client_order_id, error=str(exc)
            )
            self._gate.halt("journal_unwritable")
            raise TradingHalted(frozenset({"journal_unwritable"})) from None

    async def settled(self) -> None:
        """Wait for the background look-ups started so far (tests, and a bounded shutdown)."""
        while self._lookups:
            await asyncio.gather(*list(self._lookups), return_exceptions=True)

    def cancel_lookups(self) -> None:
        """Stop the background look-ups (shutdown): the next start looks those orders up again."""
        for task in list(self._lookups):
            task.cancel()

    async def _send(
        self,
        ex: Exchange,
        req: OrderRequest,
        intent: OrderIntent,
        announcement: Announcement | None,
        *,
        background: bool = True,
    ) -> OrderOutcome:
        started = time.perf_counter_ns()
        try:
            result = await ex.create_order(req)
        except OrderStatusUnknown as exc:
            self.record_unknown(intent, exc)
            if not background:
                return await self.reconcile(ex, intent)
            # The announcement's task goes on at once; the look-up (about 10 s at worst) runs apart
            # and reports its outcome (alerts, balances, the exit plan's fill) when it ends.
            task = asyncio.create_task(self._lookup(ex, intent), name=f"lookup:{req.client_order_id}")
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)
            return OrderOutcome("unknown", ex.id, req.symbol, req.side, req.client_order_id, "looking_up")
        except ExchangeError as exc:  # rejected, rate limited, auth: the exchange said no
            if isinstance(exc, ExchangeAuthError):
                self._gate.halt("credentials_rejected", venue=ex.id)
            elif isinstance(exc, RateLimited):
                self.backoff.hit(ex.id, exc)  # nothing more goes to this venue until it said
            return self.book.rejected(intent, exc)
        if is_expired(result):
            return self.book.expired(intent, result)
        self.book.placed(intent, announcement, started, result)  # logged first: the order is out
        if result.filled is None and intent.plan is not None:
            # Some exchanges (okx, bybit) answer an order with its id only; an exit needs the fill.
            result = await self._completed(ex, intent, result)
        self.book.record_fill(intent, "placed", result)
        return OrderOutcome("placed", ex.id, req.symbol, req.side, req.client_order_id, result=result)

    def record_unknown(self, intent: OrderIntent, exc: OrderStatusUnknown) -> None:
        self._journal.record_result(
            intent.client_order_id, "unknown", error_code=exc.code, error_message=str(exc)
        )
        log.warning(
            "order.unknown",
            strategy=intent.strategy,
            exchange=intent.exchange,
            symbol=intent.symbol,
            client_order_id=intent.client_order_id,
            error=str(exc),
        )

    async def _lookup(self, ex: Exchange, intent: OrderIntent) -> None:
        try:
            self.emit(await self.reconcile(ex, intent))
        except Exception:  # a look-up must never take the daemon down; the next start retries it
            log.exception("order.lookup_crashed", client_order_id=intent.client_order_id)

    async def _completed(self, ex: Exchange, intent: OrderIntent, result: OrderResult) -> OrderResult:
        try:
            found = await ex.fetch_order_by_client_id(intent.symbol, intent.client_order_id)
        except ExchangeError as exc:
            log.warning("order.fill_lookup_failed", client_order_id=intent.client_order_id, error=str(exc))
            return result
        return found if found is not None else result

    async def paper_fill(
        self,
        ex: Exchange,
        req: OrderRequest,
        intent: OrderIntent,
        announcement: Announcement | None,
        max_age: float | None = None,
    ) -> OrderOutcome:
        started = time.perf_counter_ns()
        result = await self._paper.fill(ex, req, max_age=max_age)
        if is_expired(result):
            return self.book.expired(intent, result)
        self.book.record_fill(intent, "paper", result)
        self.book.placed(intent, announcement, started, result)
        return OrderOutcome("paper", ex.id, req.symbol, req.side, req.client_order_id, result=result)

    async def reconcile(self, ex: Exchange, intent: OrderIntent) -> OrderOutcome:
        """Find out what happened to an order whose request outcome is unknown, by its client id.
        Never resends: an order not found after every look-up is recorded `not_found` for a human,
        unless another look-up settled it meanwhile (then its record stands: "settled_elsewhere")."""
        cid = intent.client_order_id
        answered = False
        for delay in LOOKUP_DELAYS:
            await self._sleep(delay)
            try:
                found = await ex.fetch_order_by_client_id(intent.symbol, cid)
            except ExchangeError as exc:
                log.warning("order.lookup_failed", exchange=ex.id, client_order_id=cid, error=str(exc))
                continue
            answered = True
            if found is not None:
                self.book.record_fill(intent, "placed", found)
                metrics.ORDERS.labels(intent.exchange, "placed", str(intent.dry_run).lower()).inc()
                log.info(
                    "order.reconciled",
                    exchange=ex.id,
                    symbol=intent.symbol,
                    client_order_id=cid,
                    order_id=found.order_id,
                    status=found.status,
                    filled=found.filled,
                )
                return OrderOutcome("placed", ex.id, intent.symbol, intent.side, cid, result=found)
        # The exchange kept saying "no such order", or never answered. Either way a resend could
        # double the position: leave it to a human (and to the start-up reconciliation) and say so.
        final: Literal["unknown", "not_found"] = "not_found" if answered else "unknown"
        if not self._journal.settle_unresolved(
            cid, final, error_message="unresolved after look-ups; not resent"
        ):
            record = self._journal.get(cid)
            if record is not None:  # another look-up (the exits', for an entry) settled it: that stands
                log.info("order.settled_elsewhere", exchange=ex.id, client_order_id=cid, state=record.state)
                status: Status = "placed" if record.state in ("placed", "paper") else final
                return OrderOutcome(status, ex.id, intent.symbol, intent.side, cid, "settled_elsewhere")
        metrics.ORDERS.labels(intent.exchange, "unknown", str(intent.dry_run).lower()).inc()
        log.error(
            "order.unresolved",
            exchange=ex.id,
            symbol=intent.symbol,
            client_order_id=cid,
            state=final,
            action="not resent; check the exchange by hand",
        )
        return OrderOutcome(final, ex.id, intent.symbol, intent.side, cid, "unresolved")
