"""The orders that close positions: one exit attempt (market, or limit IOC under the bid), the stop that
rests on the exchange, and the look-ups that settle them. Every one is journalled (exit_of = the entry)
before it is sent, with its own client id (the attempt number), and shares the order router's journal
book, look-ups and outcome listener.

What an attempt's failure means is said in its ExitAttempt: transient (rate limit, venue unavailable, a
halt: retry after a backoff), a definitive rejection (with the venue's reason), or an unknown outcome that
the look-ups could not settle (the next attempt waits for it). An order the venue accepted without saying
what it filled (okx, bybit answer with an id only) is looked up at once; until a look-up says, it is
unsettled like an unknown outcome, never sent again. Nothing (sell, stop, cancel) is sent while a halt
stops exits on the venue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from bridge.errors import (
    ExchangeAuthError,
    ExchangeError,
    ExchangeUnavailable,
    OrderStatusUnknown,
    RateLimited,
    TradingHalted,
)
from bridge.trading.contracts import CONTRACT_TYPES, is_contract_symbol
from bridge.trading.exit_rules import ExitDecision, exit_side, stop_price
from bridge.trading.gate import TradingGate
from bridge.trading.ids import client_order_id
from bridge.trading.journal import Journal
from bridge.trading.model import OPEN_STATES, OrderIntent, OrderOutcome, OrderRecord, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.outcomes import is_expired
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest, OrderResult

log = structlog.get_logger(__name__)

# "No such order" answers in a row before a stop the venue accepted is taken for gone (see _settle_stop).
STOP_NOT_FOUND_LIMIT = 3


@dataclass(frozen=True, slots=True)
class ExitAttempt:
    """What one exit attempt did. `sold`: base currency it filled. `transient`: it failed for a reason
    that passes (retry after `retry_after` or a backoff). `rejection`: the venue refused it for good
    (OrderRejected.kind), or why it was not sent (`dust`, `halted`, `unknown_symbol`, `no_price`)."""

    outcome: OrderOutcome | None
    sold: float = 0.0
    transient: bool = False
    retry_after: float | None = None
    rejection: str | None = None
    unresolved: bool = False  # sent, and nobody knows yet whether it executed


class ExitOrders:
    def __init__(
        self,
        *,
        router: OrderRouter,
        journal: Journal,
        exchanges: Mapping[str, Exchange],
        gate: TradingGate,
        dry_run: bool,
    ) -> None:
        self._router = router
        self._journal = journal
        self._exchanges = exchanges
        self._gate = gate
        self._dry_run = dry_run
        self._stop_misses: dict[str, int] = {}  # stop cid -> "no such order" answers in a row

    @property
    def paper(self) -> bool:
        return self._dry_run

    def blockers(self, exchange: str) -> frozenset[str]:
        """The halts that stop every exit order (sell, resting stop, cancel) on `exchange` now."""
        return self._gate.exit_blockers(exchange)

    def sellable(
        self, position: Position, decision: ExitDecision, amount: float, price: float | None
    ) -> bool:
        """Would `amount` of `position`, sold as `decision` says at the reference `price`, be at least the
        venue's minimum amount and cost (as `sell` sizes it)? True when it cannot tell (no price)."""
        ex = self._exchanges.get(position.exchange)
        if ex is None or price is None or ex.market(position.symbol) is None:
            return True
        return _terms(ex, position, decision, amount, price) is not None

    async def free(self, position: Position) -> float:
        """What the account holds free of the position's coin (the cap of an exit after a balance
        refusal); the position's remaining amount when the venue cannot say, and for a perpetual (its
        position is no coin balance; its exits are reduce-only, which the venue cuts to the position)."""
        ex = self._exchanges.get(position.exchange)
        if ex is None or self._dry_run or is_contract_symbol(position.symbol):
            return position.remaining
        try:
            free = await ex.fetch_free_balances()
        except ExchangeError:
            return position.remaining
        base = position.symbol.split("/", 1)[0]
        return min(position.remaining, free.get(base, 0.0))

    def record_entry(self, intent: OrderIntent, found: OrderResult) -> None:
        """An entry whose fill was unknown has been found: record it (its position opens)."""
        self._router.book.record_fill(intent, "placed", found)
        log.info(
            "order.reconciled",
            exchange=intent.exchange,
            client_order_id=intent.client_order_id,
            filled=found.filled,
        )

    def exit_id(self, position: Position, kind: str, attempt: int) -> str:
        """The client id of a position's exit attempt (`kind` "exit") or resting stop ("stop"). Attempt
        0 of an exit is the id bridge gave a position's one exit before attempts existed."""
        ex = self._exchanges[position.exchange]
        return ex.format_client_order_id(
            client_order_id(
                position.client_order_id,
                position.strategy,
                position.exchange,
                position.symbol,
                kind,
                attempt=attempt,
            )
        )

    async def sell(self, position: Position, decision: ExitDecision, amount: float) -> ExitAttempt:
        """Send one exit attempt for `amount` of `position` (journalled first, never twice)."""
        ex = self._exchanges.get(position.exchange)
        if ex is None:
            return ExitAttempt(None, rejection="exchange_not_configured")
        if blockers := self._gate.exit_blockers(position.exchange):
            return ExitAttempt(None, transient=True, rejection="halted:" + ",".join(sorted(blockers)))
        market = ex.market(position.symbol) or await ex.find_market(position.symbol)
        if market is None:  # not listed, or not loaded just now (no refresh allowed): alerted, retried
            return ExitAttempt(None, rejection="unknown_symbol")
        side = exit_side(position)  # a long sells; a short buys back
        reference = await self._router.prices.reference(position.exchange, position.symbol, side)
        limit: float | None = None
        if reference is not None:
            terms = _terms(ex, position, decision, amount, reference)
            if terms is None:  # under the venue's minimum amount or cost: it can never fill
                return ExitAttempt(None, rejection="dust")
            amount = terms[0]
            if not decision.market:
                limit = terms[1]
        elif not decision.market or self._dry_run:  # a paper fill needs a price too
            return ExitAttempt(None, transient=True, rejection="no_price")
        cid = self.exit_id(position, "exit", position.attempts)
        intent = OrderIntent(
            cid,
            None,
            position.strategy,
            position.exchange,
            position.symbol,
            side,
            market.quote,
            None,
            amount,
            self._dry_run,
            exit_of=position.client_order_id,
            limit_price=limit,
        )
        try:
            if not self._router.reserve(intent):
                return ExitAttempt(None, rejection="duplicate")
        except TradingHalted:
            return ExitAttempt(None, transient=True, rejection="halted:journal_unwritable")
        request = OrderRequest(
            symbol=position.symbol,
            side=side,
            client_order_id=cid,
            amount=amount,
            limit_price=limit,
            reduce_only=market.type in CONTRACT_TYPES,
        )
        log.info(
            "exit.sending",
            strategy=position.strategy,
            exchange=position.exchange,
            symbol=position.symbol,
            reason=decision.reason,
            amount=amount,
            limit_price=limit,
            attempt=position.attempts,
            client_order_id=cid,
            entry_client_order_id=position.client_order_id,
        )
        attempt = await self._execute(ex, request, intent)
        if attempt.outcome is not None:
            self._router.emit_exit(position, decision.reason, amount, attempt.outcome)
        return attempt

    async def _execute(self, ex: Exchange, request: OrderRequest, intent: OrderIntent) -> ExitAttempt:
        book = self._router.book
        if self._dry_run:
            outcome = await self._router.paper_fill(ex, request, intent, None)
            if outcome.result is not None and outcome.result.filled is None:  # unpriced: the price vanished
                return ExitAttempt(outcome, transient=True, rejection="no_price")
            return ExitAttempt(outcome, sold=_filled(outcome.result))
        try:
            result = await ex.create_order(request)
        except OrderStatusUnknown as exc:
            self._router.record_unknown(intent, exc)
            outcome = await self._router.reconcile(ex, intent)  # before anything else is sent
            return ExitAttempt(outcome, sold=_filled(outcome.result), unresolved=outcome.status == "unknown")
        except RateLimited as exc:
            self._router.backoff.hit(ex.id, exc)
            return ExitAttempt(book.rejected(intent, exc), transient=True, retry_after=exc.retry_after)
        except ExchangeUnavailable as exc:
            return ExitAttempt(book.rejected(intent, exc), transient=True)
        except ExchangeAuthError as exc:
            self._gate.halt("credentials_rejected", venue=ex.id)
            return ExitAttempt(book.rejected(intent, exc), transient=True, rejection="credentials_rejected")
        except ExchangeError as exc:
            kind = str(getattr(exc, "kind", "other"))
            return ExitAttempt(book.rejected(intent, exc), rejection=kind)
        if is_expired(result):
            return ExitAttempt(book.expired(intent, result))
        book.placed(intent, None, 0, result)
        if result.filled is None:  # accepted, fill not said (okx, bybit): ask now
            result = await self._completed(ex, intent, result)
            if is_expired(result):
                return ExitAttempt(book.expired(intent, result))
        # A fill still unknown is recorded as such (placed, filled NULL): unsettled, looked up next tick.
        book.record_fill(intent, "placed", result)
        outcome = OrderOutcome(
            "placed", ex.id, request.symbol, request.side, request.client_order_id, result=result
        )
        return ExitAttempt(outcome, sold=_filled(result), unresolved=result.filled is None)

    async def _completed(self, ex: Exchange, intent: OrderIntent, result: OrderResult) -> OrderResult:
        """The order as a look-up by client id finds it; `result` when the look-up fails or lags."""
        cid = intent.client_order_id
        try:
            found = await ex.fetch_order_by_client_id(intent.symbol, cid)
        except ExchangeError as exc:
            log.warning("exit.fill_lookup_failed", client_order_id=cid, error=str(exc))
            return result
        return result if found is None else found

    async def resolve(self, record: OrderRecord) -> bool:
        """Look up an exit order that is `unsettled` (one request). True once settled: found with its fill
        (recorded), or the venue says it has no such order (it never executed: `not_found`) and it had
        not accepted it either (an accepted order that a look-up misses is a look-up that lags)."""
        ex = self._exchanges.get(record.intent.exchange)
        if ex is None or self._dry_run:
            return False
        cid = record.intent.client_order_id
        try:
            found = await ex.fetch_order_by_client_id(record.intent.symbol, cid)
        except ExchangeError as exc:
            log.warning("exit.lookup_failed", client_order_id=cid, error=str(exc))
            return False
        if found is None:
            if record.state == "placed":
                log.warning("exit.lookup_lagging", client_order_id=cid, order_id=record.order_id)
                return False
            error = "not on the exchange; never executed"
            if self._journal.settle_unresolved(cid, "not_found", error_message=error):
                log.info("exit.not_found", client_order_id=cid)
            return True
        if found.filled is None:
            log.warning("exit.fill_unknown", client_order_id=cid, status=found.status)
            return False
        self._router.book.record_fill(record.intent, "placed", found)
        log.info(
            "order.reconciled", exchange=ex.id, client_order_id=cid, status=found.status, filled=found.filled
        )
        return True

    def stops_supported(self, position: Position) -> bool:
        ex = self._exchanges.get(position.exchange)
        return ex is not None and not self._dry_run and ex.supports_resting_stops(position.symbol)

    async def place_stop(self, position: Position) -> bool:
        """Rest a stop-loss order on the exchange for what `position` holds. True when one rests."""
        ex = self._exchanges[position.exchange]
        trigger = stop_price(position)
        market = ex.market(position.symbol)
        if trigger is None or market is None or self.blockers(position.exchange):
            return False
        cid = self.exit_id(position, "stop", position.attempts)
        intent = OrderIntent(
            cid,
            None,
            position.strategy,
            position.exchange,
            position.symbol,
            exit_side(position),
            market.quote,
            None,
            position.remaining,
            False,
            exit_of=position.client_order_id,
            limit_price=trigger,  # a stop's row keeps its trigger price here
        )
        try:
            if not self._router.reserve(intent):
                return False
        except TradingHalted:
            return False
        # Known to the position before the request leaves: a crash right after it cannot leave a stop
        # on the exchange that the next start would not know of (it looks it up by this id).
        self._journal.update_position(position.client_order_id, stop_cid=cid)
        try:
            result = await ex.place_stop(
                position.symbol,
                amount=position.remaining,
                stop_price=trigger,
                client_order_id=cid,
                side=exit_side(position),  # a short's stop buys back once the price rises to it
            )
        except OrderStatusUnknown as exc:
            self._router.record_unknown(intent, exc)
            outcome = await self._router.reconcile(ex, intent)
            if outcome.status == "not_found":  # never reached the exchange
                self._journal.update_position(position.client_order_id, stop_cid=None)
            if outcome.status != "placed":
                return False  # "unknown": kept; check_stop settles it later
            if outcome.result is None:  # settled by another look-up: its record stands
                return True
            result = outcome.result
        except ExchangeError as exc:
            self._router.book.rejected(intent, exc)
            self._journal.update_position(position.client_order_id, stop_cid=None)
            log.warning("exit.stop_failed", client_order_id=cid, symbol=position.symbol, error=str(exc))
            return False
        self._record_stop(intent, result)
        log.info(
            "exit.stop_placed",
            symbol=position.symbol,
            stop_price=trigger,
            amount=position.remaining,
            client_order_id=cid,
            entry_client_order_id=position.client_order_id,
        )
        return True

    async def check_stop(self, position: Position) -> None:
        """Look up the resting stop (one request): record what it filled; forget it once it is over."""
        cid = position.stop_client_order_id
        ex = self._exchanges.get(position.exchange)
        if cid is None or ex is None:
            return
        try:
            found = await ex.fetch_order_by_client_id(position.symbol, cid)
        except ExchangeError as exc:
            log.warning("exit.stop_lookup_failed", client_order_id=cid, error=str(exc))
            return
        self._settle_stop(position, cid, found)

    async def cancel_stop(self, position: Position) -> bool:
        """Take the resting stop off the exchange before the daemon sells itself (on a spot venue the
        stop holds the coins). True once no stop rests; what it filled meanwhile (the race) is recorded."""
        cid = position.stop_client_order_id
        ex = self._exchanges.get(position.exchange)
        if cid is None:
            return True
        if ex is None or self.blockers(position.exchange):  # the stop stays: the sell could not go either
            return False
        try:
            result = await ex.cancel_order_by_client_id(position.symbol, cid)
        except ExchangeError as exc:
            log.warning("exit.stop_cancel_failed", client_order_id=cid, error=str(exc))
            return False
        return self._settle_stop(position, cid, result, cancelled=True)

    def _settle_stop(
        self, position: Position, cid: str, found: OrderResult | None, *, cancelled: bool = False
    ) -> bool:
        """Record what the stop filled; forget it once it is over (True). A stop the venue accepted that
        an answer says it has no such order is over only after STOP_NOT_FOUND_LIMIT such answers in a
        row: a look-up may lag the order, and forgetting a stop that rests would rest a second one."""
        record = self._journal.get(cid)
        if found is None and record is not None and record.state == "placed":
            misses = self._stop_misses.get(cid, 0) + 1
            self._stop_misses[cid] = misses
            if misses < STOP_NOT_FOUND_LIMIT:
                log.warning("exit.stop_not_found_yet", client_order_id=cid, misses=misses)
                return False
        self._stop_misses.pop(cid, None)
        if found is not None and record is not None and (found.filled or 0) > 0:
            self._router.book.record_fill(record.intent, "placed", found)
            log.info("exit.stop_filled", client_order_id=cid, filled=found.filled, average=found.average)
        over = found is None or cancelled or found.status not in ("open", "new")
        if over:
            self._journal.update_position(position.client_order_id, stop_cid=None)
            if cancelled:
                log.info(
                    "exit.stop_cancelled", client_order_id=cid, filled=None if found is None else found.filled
                )
        return over

    def _record_stop(self, intent: OrderIntent, result: OrderResult) -> None:
        self._journal.record_result(
            intent.client_order_id,
            "placed",
            order_id=result.order_id,
            filled=result.filled or 0.0,
            raw=result.raw,
        )


def unsettled(record: OrderRecord) -> bool:
    """An exit order that may have executed, or executed without saying how much: never send another
    before a look-up settles it."""
    return record.state in OPEN_STATES or (record.state == "placed" and record.filled is None)


def _terms(
    ex: Exchange, position: Position, decision: ExitDecision, amount: float, reference: float
) -> tuple[float, float] | None:
    """(amount, limit price) of an exit of `amount` at `reference` (a long's limit exit is floored under
    it by the plan's exit_slippage, a short's buy-back capped over it); None under the venue's minimum
    amount or cost."""
    side = exit_side(position)
    slip = 0.0 if decision.market else position.plan.exit_slippage
    bound = reference * (1 + slip) if side == "buy" else reference * (1 - slip)
    return ex.limit_terms(position.symbol, side, cap_price=bound, amount=amount)


def _filled(result: OrderResult | None) -> float:
    return 0.0 if result is None or result.filled is None else float(result.filled)
