"""The day's spend, in memory: per quote currency and per (exchange, quote currency), so that the risk
check on the order path reads memory only, never SQLite.

What counts, from the moment an order's intent is written until the day ends (00:00 UTC of the clock):
- every order a strategy places (buys and sells; exits never: they reduce risk), at its estimated cost
  (its cost, or amount x reference price; a limit order's amount x limit price) while its outcome is
  not known, which includes `sending`, `unknown` and `not_found` (such an order may exist);
- its real cost (the exchange's or the paper fill's) once known, in place of the estimate;
- nothing once it is known to have bought nothing: rejected, or expired with nothing filled.

At start the ledger is rebuilt from the journal with the same rules (`SpendLedger.load`), so a restart
neither forgets what was spent today nor counts it twice: each intent row keeps the estimate it was
counted at (`est_cost`). Rows written before that column existed (schema < 4) that carry no price (an
uncapped amount-sized order still unresolved) count at the `fallback` the caller passes (the risk limits
pass its quote's max_order_cost: the most the order could have been allowed to cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.trading.model import OrderRecord

DAY_NS = 86_400 * 1_000_000_000  # a UTC day in POSIX time (no leap seconds)
# Journal states of an order that is over and bought nothing (an expired row has nothing filled).
RELEASED_STATES = frozenset({"rejected", "expired"})
# Journal states whose row carries the real cost (when the exchange told it).
SETTLED_STATES = frozenset({"placed", "paper"})


def day_start_ns(now_ns: int) -> int:
    """00:00 UTC of the day `now_ns` falls in."""
    return now_ns - now_ns % DAY_NS


@dataclass(slots=True)
class _Counted:
    exchange: str
    quote: str
    estimate: float
    amount: float  # what it counts now: the estimate, the real cost, or 0 once released


class SpendLedger:
    """Today's spend. `reserve` when an intent is written, `settle` when its outcome is known; reads
    (`spent`) and writes are a few dict operations. Rolls over by itself at 00:00 UTC of `clock_ns`."""

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._day = day_start_ns(clock_ns())
        self._orders: dict[str, _Counted] = {}
        self._by_quote: dict[str, float] = {}
        self._by_exchange: dict[tuple[str, str], float] = {}

    @property
    def day_start_ns(self) -> int:
        self._roll()
        return self._day

    def spent(self, quote: str, exchange: str | None = None) -> float:
        """Today's spend in `quote`, on every exchange or on `exchange` only."""
        self._roll()
        if exchange is None:
            return self._by_quote.get(quote, 0.0)
        return self._by_exchange.get((exchange, quote), 0.0)

    def reserve(self, client_order_id: str, exchange: str, quote: str, estimated_cost: float) -> None:
        """Count an order whose intent was just written, at its estimated cost. Once per order."""
        self._roll()
        if client_order_id in self._orders:
            return
        self._orders[client_order_id] = _Counted(exchange, quote, estimated_cost, estimated_cost)
        self._add(exchange, quote, estimated_cost)

    def settle(self, client_order_id: str, real_cost: float | None, counts: bool) -> None:
        """The order's outcome is known: `counts` False (rejected, expired unfilled) stops counting it;
        otherwise its real cost replaces the estimate (None: not told, the estimate stays). An order
        this ledger does not count (an exit, one from an earlier day) is ignored."""
        self._roll()
        held = self._orders.get(client_order_id)
        if held is None:
            return
        amount = (held.estimate if real_cost is None else real_cost) if counts else 0.0
        self._add(held.exchange, held.quote, amount - held.amount)
        held.amount = amount

    def load(self, records: Iterable[OrderRecord], *, fallback: Callable[[str], float]) -> None:
        """Count today's orders from the journal (its rows since `day_start_ns`), as `reserve` and
        `settle` did when they were placed. `fallback(quote)`: the estimate of an order whose row says
        nothing of its price."""
        since = self.day_start_ns
        for record in records:
            intent = record.intent
            if record.created_ns < since or intent.exit_of is not None:
                continue
            estimate = estimate_of(record)
            self.reserve(
                intent.client_order_id,
                intent.exchange,
                intent.quote,
                fallback(intent.quote) if estimate is None else estimate,
            )
            if record.state in RELEASED_STATES and not record.filled:
                self.settle(intent.client_order_id, None, counts=False)
            elif record.state in RELEASED_STATES or record.state in SETTLED_STATES:
                self.settle(intent.client_order_id, record.result_cost, counts=True)

    def counted(self) -> dict[str, tuple[str, str, float]]:
        """client order id -> (exchange, quote, what it counts now): today's orders, for tests and tools."""
        self._roll()
        return {cid: (c.exchange, c.quote, c.amount) for cid, c in self._orders.items()}

    def _add(self, exchange: str, quote: str, amount: float) -> None:
        self._by_quote[quote] = self._by_quote.get(quote, 0.0) + amount
        key = (exchange, quote)
        self._by_exchange[key] = self._by_exchange.get(key, 0.0) + amount

    def _roll(self) -> None:
        now = self._clock_ns()
        if now - self._day >= DAY_NS:  # a new UTC day: yesterday's orders no longer count
            self._day = day_start_ns(now)
            self._orders.clear()
            self._by_quote.clear()
            self._by_exchange.clear()


def estimate_of(record: OrderRecord) -> float | None:
    """An order's estimated cost from its journal row: the estimate it was counted at, else its cost, or
    amount x limit price; None when an older row says nothing of its price."""
    intent = record.intent
    if intent.est_cost is not None:  # what the check counted (journals from schema v4 on)
        return intent.est_cost
    if intent.cost is not None:
        return intent.cost
    if intent.amount is not None and intent.limit_price is not None:
        return intent.amount * intent.limit_price
    return None
