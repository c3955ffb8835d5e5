"""Which exit a position has reached, and how much it sells: pure decisions from the position, the
price it would sell at now (the best bid) and the clock. No I/O; bridge.trading.exits acts on them.

Order of precedence: stop-loss, trailing stop (both market orders: a stop must not fail to fill), then
the next take-profit tier, then the time exit (both limit IOC orders under the bid, re-sent until filled).
A manual close (`bridge close`) sells everything at market.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.trading.model import Position

ExitReason = Literal["stop_loss", "trailing_stop", "take_profit", "time", "manual"]
# Exits sent as market orders; the others are limit IOC at the bid x (1 - exit_slippage).
MARKET_EXITS: frozenset[str] = frozenset({"stop_loss", "trailing_stop", "manual"})


@dataclass(frozen=True, slots=True)
class ExitDecision:
    reason: ExitReason
    amount: float  # base currency to sell now
    market: bool
    tier: int | None = None  # the take-profit tier this sell belongs to
    hold: float = 0.0  # what the position keeps once this sell has filled


def stop_price(position: Position) -> float | None:
    """The stop-loss price of a position (where a resting stop triggers), or None."""
    if position.plan.stop_loss is None or not position.average:
        return None
    return position.average * (1 - position.plan.stop_loss)


def high_water(position: Position, price: float | None) -> float | None:
    """The highest price seen since the entry, counting `price` (the entry price to begin with)."""
    seen = [p for p in (position.high_water, position.average, price) if p is not None]
    return max(seen) if seen else None


def decide(
    position: Position, price: float | None, now_ns: int, *, manual: bool = False
) -> ExitDecision | None:
    """The exit `position` has reached at `price` (None: no price known) and time `now_ns`, or None."""
    remaining = position.remaining
    if remaining <= 0:
        return None
    if manual:
        return ExitDecision("manual", remaining, market=True)
    plan, entry = position.plan, position.average
    if price is not None and entry:
        stop = stop_price(position)
        if stop is not None and price <= stop:
            return ExitDecision("stop_loss", remaining, market=True)
        high = high_water(position, price)
        if plan.trailing_stop is not None and high is not None and price <= high * (1 - plan.trailing_stop):
            return ExitDecision("trailing_stop", remaining, market=True)
        tiers = plan.take_profit_tiers
        if position.tiers_done < len(tiers):
            tier = tiers[position.tiers_done]
            if price >= entry * (1 + tier.at):
                hold = position.tier_hold
                if hold is None:
                    hold = 0.0 if tier.sell >= 1 else remaining * (1 - tier.sell)
                if remaining > hold:
                    return ExitDecision(
                        "take_profit", remaining - hold, market=False, tier=position.tiers_done, hold=hold
                    )
    if plan.after is not None and now_ns - position.opened_ns >= plan.after * 1e9:
        return ExitDecision("time", remaining, market=False)
    return None


def exit_reason(position: Position, price: float | None, now_ns: int) -> str | None:
    """Which exit, if any, `position` has reached (the reason of `decide`)."""
    decision = decide(position, price, now_ns)
    return None if decision is None else decision.reason
