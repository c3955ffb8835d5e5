"""The plain data types strategies, the order router and the journal share: what an announcement
is, what a strategy asked for, what happened to it, and the positions it left open.

Plugins get them from `bridge` (the public API); nothing here does I/O or imports beyond the feed's
and the venues' own data types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.feed.codec import Announcement
from bridge.venues.types import OrderResult, Side

__all__ = [
    "OPEN_STATES",
    "Announcement",
    "ExitPlan",
    "OrderIntent",
    "OrderOutcome",
    "OrderRecord",
    "OrderResult",
    "OrderState",
    "Position",
    "Side",
    "Status",
]

OrderState = Literal["sending", "placed", "paper", "rejected", "expired", "unknown", "not_found"]
# Orders sent whose outcome nobody knows yet: looked up by client id, never resent.
OPEN_STATES: tuple[OrderState, ...] = ("sending", "unknown")
# expired: a limit IOC order that filled nothing at its price cap (not an error, not retried).
Status = Literal["placed", "paper", "rejected", "expired", "skipped", "unknown", "not_found"]


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """When to sell a position an entry opened: `take_profit` / `stop_loss` as fractions of the entry
    price (0.5 = +50 %, 0.2 = -20 %), `after` in seconds from the entry. Any may be None (off)."""

    take_profit: float | None = None
    stop_loss: float | None = None
    after: float | None = None

    def __post_init__(self) -> None:
        for name in ("take_profit", "stop_loss", "after"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.stop_loss is not None and self.stop_loss >= 1:
            raise ValueError("stop_loss is a fraction below 1 (0.2 = sell 20 % under the entry price)")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.take_profit, self.stop_loss, self.after))


@dataclass(frozen=True, slots=True)
class Position:
    """An entry buy that filled, carries an exit plan, and has no exit order yet."""

    client_order_id: str
    strategy: str
    exchange: str
    symbol: str
    filled: float
    average: float | None
    opened_ns: int
    plan: ExitPlan


@dataclass(frozen=True, slots=True)
class OrderIntent:
    client_order_id: str
    announcement_key: str | None
    strategy: str
    exchange: str
    symbol: str
    side: Side
    quote: str
    cost: float | None
    amount: float | None
    dry_run: bool
    plan: ExitPlan | None = None  # entries: when to exit the position
    exit_of: str | None = None  # exits: the entry's client order id
    limit_price: float | None = None  # a limit IOC order's price cap (buys) or floor (sells); None: market


@dataclass(frozen=True, slots=True)
class OrderRecord:
    intent: OrderIntent
    state: str
    created_ns: int
    order_id: str | None
    filled: float | None
    average: float | None
    result_cost: float | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What happened to one order a strategy asked for. `reason` explains skipped/rejected."""

    status: Status
    exchange: str
    symbol: str
    side: Side
    client_order_id: str | None = None
    reason: str | None = None
    result: OrderResult | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("placed", "paper")
