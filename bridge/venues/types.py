"""The plain data types of the venue interface: order sides, rate-limiter choices, markets, order
requests and results, and `finite_float`, which reads their numbers from ccxt's dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Side = Literal["buy", "sell"]
# Who keeps requests within the exchange's limits. "bridge": bridge.venues.ratelimit (the default; lets orders
# out at once while within budget). "ccxt": ccxt's own throttle, chosen by setting `enableRateLimit:
# true` in the ccxt block (~10 ms per order on binance). "off": `enableRateLimit: false`.
Limiter = Literal["bridge", "ccxt", "off"]


@dataclass(frozen=True)
class Market:
    """A tradable market. `raw` is ccxt's unified market dict (precision, limits, `info`)."""

    symbol: str
    id: str
    base: str
    quote: str
    type: str
    active: bool
    min_cost: float | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OrderRequest:
    """One order: spend `cost` (quote currency) or trade `amount` (base currency), exactly one.

    Without `limit_price` it is a market order. With it, it is a limit order that fills at once at
    `limit_price` or better and expires for whatever does not (IOC, or the venue's exact equivalent);
    a limit order is sized by `amount` only, already rounded to the market's lot, and `limit_price`
    is already rounded to its tick (never above the cap for a buy, never below the floor for a sell)."""

    symbol: str
    side: Side
    client_order_id: str
    cost: float | None = None
    amount: float | None = None
    limit_price: float | None = None
    # Its request budget was taken by Exchange.reserve_order() (and waited for) before the last gate
    # check, so the request itself does not wait again.
    prepaid: bool = False
    # Only reduce a position, never open or flip one: sent as ccxt's `reduceOnly` on contract markets
    # (swap, future); ignored on spot, which has no such flag (a spot sell cannot sell coins not held).
    reduce_only: bool = False
    # time.perf_counter_ns() when the feed frame behind this order was received (0: none, e.g. an exit):
    # its request observes bridge_order_internal_seconds as it is written.
    received_mono_ns: int = 0

    def __post_init__(self) -> None:
        sizes = [v for v in (self.cost, self.amount) if v is not None]
        if len(sizes) != 1:
            raise ValueError("an OrderRequest needs exactly one of cost and amount")
        if not (math.isfinite(sizes[0]) and sizes[0] > 0):
            raise ValueError(f"order size must be a positive number, got {sizes[0]}")
        if self.side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {self.side!r}")
        if self.limit_price is not None:
            if self.amount is None:
                raise ValueError("a limit order is sized by amount")
            if not (math.isfinite(self.limit_price) and self.limit_price > 0):
                raise ValueError(f"limit price must be a positive number, got {self.limit_price}")


@dataclass(frozen=True, slots=True)
class Quote:
    """What a venue said a symbol traded at, received at `ts_ns` (time.time_ns()): best bid and ask
    where the venue gave them, and the last trade. Any may be None (not given, or no trading yet)."""

    symbol: str
    bid: float | None
    ask: float | None
    last: float | None
    ts_ns: int

    @property
    def buy_reference(self) -> float | None:
        """What a buy would pay now: the best ask, else the last trade."""
        return self.ask if self.ask is not None and self.ask > 0 else self.last

    @property
    def sell_reference(self) -> float | None:
        """What a sell would get now: the best bid, else the last trade."""
        return self.bid if self.bid is not None and self.bid > 0 else self.last


@dataclass(frozen=True)
class OrderResult:
    """What the exchange says about an order. `raw` is ccxt's unified order dict (with `info`)."""

    exchange: str
    symbol: str
    side: Side
    client_order_id: str
    order_id: str | None
    status: str
    filled: float | None
    cost: float | None
    average: float | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def finite_float(value: Any) -> float | None:
    """A ccxt number as a float; None for a missing, unparsable or non-finite one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
