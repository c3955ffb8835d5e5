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
    "PositionState",
    "Side",
    "Status",
    "TakeProfitTier",
]

OrderState = Literal["sending", "placed", "paper", "rejected", "expired", "unknown", "not_found"]
# Orders sent whose outcome nobody knows yet: looked up by client id, never resent.
OPEN_STATES: tuple[OrderState, ...] = ("sending", "unknown")
# expired: a limit IOC order that filled nothing at its price cap (not an error, not retried).
Status = Literal["placed", "paper", "rejected", "expired", "skipped", "unknown", "not_found"]


@dataclass(frozen=True, slots=True)
class TakeProfitTier:
    """One step of a tiered take-profit: at +`at` over the entry price (0.2 = +20 %), sell the fraction
    `sell` of what the position still holds then (1.0 = all of it)."""

    at: float
    sell: float

    def __post_init__(self) -> None:
        if not self.at > 0:
            raise ValueError("a take_profit tier's `at` must be positive (0.2 = +20 % over the entry)")
        if not 0 < self.sell <= 1:
            raise ValueError("a take_profit tier's `sell` is a fraction in (0, 1] of what is still held")


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """When and how to sell a position an entry opened. Every trigger may be None (off).

    - `take_profit`: a fraction over the entry price (0.5 = +50 %) at which to sell all of it; or
      `tiers`: several steps, each selling a fraction of what is still held (not both).
    - `stop_loss`: a fraction under the entry price (0.2 = sell at -20 %).
    - `trailing_stop`: a fraction under the highest price seen since the entry (0.1 = sell once the
      price falls 10 % from its high).
    - `after`: seconds from the entry (a time exit).
    - `stop_on_exchange`: also rest a stop order on the exchange at the stop-loss price, so the position
      is protected while bridge, the host or the network is down (needs `stop_loss`).
    - `exit_slippage`: take-profit and time exits are limit IOC orders at the best bid x
      (1 - exit_slippage), re-sent until filled; stop-loss and trailing exits are market orders."""

    take_profit: float | None = None
    stop_loss: float | None = None
    after: float | None = None
    trailing_stop: float | None = None
    tiers: tuple[TakeProfitTier, ...] = ()
    stop_on_exchange: bool = False
    exit_slippage: float = 0.05

    def __post_init__(self) -> None:
        for name in ("take_profit", "stop_loss", "after", "trailing_stop"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive")
        if self.stop_loss is not None and self.stop_loss >= 1:
            raise ValueError("stop_loss is a fraction below 1 (0.2 = sell 20 % under the entry price)")
        if self.trailing_stop is not None and self.trailing_stop >= 1:
            raise ValueError("trailing_stop is a fraction below 1 (0.1 = sell 10 % under the high)")
        if self.tiers and self.take_profit is not None:
            raise ValueError("give take_profit as one fraction or as tiers, not both")
        if list(self.tiers) != sorted(self.tiers, key=lambda t: t.at) or len(
            {t.at for t in self.tiers}
        ) != len(self.tiers):
            raise ValueError("take_profit tiers must be in rising order of `at`, each `at` once")
        if self.stop_on_exchange and self.stop_loss is None:
            raise ValueError("stop_on_exchange needs a stop_loss (the price the resting stop sells at)")
        if not 0 < self.exit_slippage < 1:
            raise ValueError("exit_slippage is a fraction in (0, 1): 0.05 = 5 % under the best bid")

    @property
    def active(self) -> bool:
        return bool(self.tiers) or any(
            v is not None for v in (self.take_profit, self.stop_loss, self.after, self.trailing_stop)
        )

    @property
    def take_profit_tiers(self) -> tuple[TakeProfitTier, ...]:
        """The take-profit as tiers (a single `take_profit` is one tier selling everything)."""
        if self.take_profit is not None:
            return (TakeProfitTier(self.take_profit, 1.0),)
        return self.tiers


PositionState = Literal["pending", "open", "closed", "abandoned"]


@dataclass(frozen=True, slots=True)
class Position:
    """An entry buy with an exit plan, and how far its exits got (kept in the journal, so a restart
    carries on where the last run stopped).

    state: `pending` (the entry's fill is not known yet: the exit waits for it), `open` (held, watched),
    `closed` (sold, or gone: `close_reason` says which), `abandoned` (can never fill: dust under the
    venue's minimum, a delisted market; alerted, listed by `bridge positions`)."""

    client_order_id: str  # the entry's
    strategy: str
    exchange: str
    symbol: str
    filled: float  # what the entry left on the account (0 while pending)
    average: float | None
    opened_ns: int
    plan: ExitPlan
    quote: str = ""
    state: PositionState = "open"
    sold: float = 0.0  # filled by its exit orders so far
    high_water: float | None = None  # highest price seen since the entry (trailing stop)
    tiers_done: int = 0  # take-profit tiers already sold
    tier_hold: float | None = None  # while a tier is selling: what the position keeps once it has sold
    attempts: int = 0  # exit orders sent so far: the next one's attempt number
    failures: int = 0  # definitive exit rejections in a row
    stop_client_order_id: str | None = None  # the stop resting on the exchange, if any
    close_reason: str | None = None
    entry_cost: float | None = None  # quote spent by the entry (its estimate while pending)
    # The entry's side: a buy opens a long; a sell opens a short (perpetuals), whose exits buy back.
    side: Side = "buy"

    @property
    def open_cost(self) -> float:
        """The entry cost of what the position still holds (all of it while pending)."""
        if self.entry_cost is None:
            return 0.0
        if self.filled <= 0:
            return self.entry_cost
        return self.entry_cost * self.remaining / self.filled

    @property
    def remaining(self) -> float:
        """What the position still holds."""
        return max(self.filled - self.sold, 0.0)


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
    est_cost: float | None = None  # what the risk limits counted it at (cost, or amount x reference)


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
