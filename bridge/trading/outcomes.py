"""What the order router writes down once an order's fate is known: the journal row, the spend ledger,
the counters and the log line of a placed, expired or rejected order, in one place for every path
(live, paper, lookups after an unknown outcome)."""

from __future__ import annotations

from typing import Literal

import structlog

from bridge.errors import ExchangeError, RateLimited
from bridge.trading import metrics
from bridge.trading.journal import Journal
from bridge.trading.model import Announcement, OrderIntent, OrderOutcome
from bridge.trading.risk import RiskLimits
from bridge.venues.types import OrderResult

log = structlog.get_logger("bridge.trading.orders")  # the events keep the logger they always had


def held_amount(result: OrderResult, symbol: str) -> float | None:
    """What a buy left on the account: the filled amount less fees charged in the bought coin (an
    exit that sold the gross amount would fail for lack of balance)."""
    if result.filled is None:
        return None
    base = symbol.split("/", 1)[0]
    raw = result.raw or {}
    fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
    paid = sum(float(f.get("cost") or 0) for f in fees if isinstance(f, dict) and f.get("currency") == base)
    return max(result.filled - paid, 0.0)


def is_expired(result: OrderResult) -> bool:
    """An order that is over and filled nothing (an IOC at a cap the book had moved past)."""
    return result.filled == 0 and result.status in ("expired", "canceled", "cancelled")


class OutcomeBook:
    def __init__(self, journal: Journal, risk: RiskLimits) -> None:
        self.journal = journal
        self.risk = risk

    def record_fill(
        self, intent: OrderIntent, state: Literal["placed", "paper"], result: OrderResult
    ) -> None:
        """Journal an order that executed. A buy records what it left on the account (see held_amount),
        which is what its exit will sell, whichever path learned of the fill."""
        self.journal.record_result(
            intent.client_order_id,
            state,
            order_id=result.order_id,
            filled=held_amount(result, intent.symbol) if intent.side == "buy" else result.filled,
            average=result.average,
            cost=result.cost,
            raw=result.raw,
        )
        self.risk.settle(intent.client_order_id, result.cost, counts=True)

    def placed(
        self, intent: OrderIntent, a: Announcement | None, started_ns: int, result: OrderResult
    ) -> None:
        latency_ms = (started_ns - a.received_mono_ns) / 1e6 if a is not None and a.received_mono_ns else None
        if latency_ms is not None:
            metrics.LATENCY.observe(latency_ms / 1000)
        metrics.ORDERS.labels(intent.exchange, "placed", str(intent.dry_run).lower()).inc()
        log.info(
            "order.placed",
            strategy=intent.strategy,
            exchange=intent.exchange,
            symbol=intent.symbol,
            side=intent.side,
            cost=intent.cost,
            amount=intent.amount,
            limit_price=intent.limit_price,
            client_order_id=intent.client_order_id,
            order_id=result.order_id,
            status=result.status,
            filled=result.filled,
            average=result.average,
            dry_run=intent.dry_run,
            latency_ms=None if latency_ms is None else round(latency_ms, 3),
        )

    def expired(self, intent: OrderIntent, result: OrderResult) -> OrderOutcome:
        """A limit IOC that filled nothing at its cap: the book had moved past it. Not an error, not
        retried (the price it would take now is more than the strategy allowed)."""
        self.journal.record_result(
            intent.client_order_id,
            "expired",
            order_id=result.order_id,
            filled=0.0,
            cost=0.0,
            raw=result.raw,
        )
        self.risk.settle(intent.client_order_id, 0.0, counts=False)
        metrics.ORDERS.labels(intent.exchange, "expired", str(intent.dry_run).lower()).inc()
        log.warning(
            "order.expired",
            strategy=intent.strategy,
            exchange=intent.exchange,
            symbol=intent.symbol,
            side=intent.side,
            amount=intent.amount,
            limit_price=intent.limit_price,
            client_order_id=intent.client_order_id,
            order_id=result.order_id,
            dry_run=intent.dry_run,
        )
        return OrderOutcome(
            "expired",
            intent.exchange,
            intent.symbol,
            intent.side,
            intent.client_order_id,
            "nothing_filled_at_limit",
            result=result,
        )

    def rejected(self, intent: OrderIntent, exc: ExchangeError) -> OrderOutcome:
        reason = "rate_limited" if isinstance(exc, RateLimited) else "rejected"
        self.journal.record_result(
            intent.client_order_id, "rejected", error_code=exc.code, error_message=str(exc)
        )
        self.risk.settle(intent.client_order_id, None, counts=False)
        metrics.ORDERS.labels(intent.exchange, "rejected", str(intent.dry_run).lower()).inc()
        log.warning(
            "order.rejected",
            strategy=intent.strategy,
            exchange=intent.exchange,
            symbol=intent.symbol,
            side=intent.side,
            cost=intent.cost,
            amount=intent.amount,
            client_order_id=intent.client_order_id,
            code=exc.code,
            error=str(exc),
            retry_after=getattr(exc, "retry_after", None),
        )
        return OrderOutcome(
            "rejected", intent.exchange, intent.symbol, intent.side, intent.client_order_id, reason
        )
