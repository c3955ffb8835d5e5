"""Which exit a position has reached, and how much it sells: pure decisions from the position, the
price it would exit at now (the best bid for a long, the best ask for a short, which buys back) and the
clock. No I/O; bridge.trading.exits acts on them.

Order of precedence: stop-loss, trailing stop (both market orders: a stop must not fail to fill), then
the next take-profit tier, then the time exit (both limit IOC orders past the book, re-sent until filled).
A manual close (`bridge close`) exits everything at market.

A short (a perpetual's sell entry) mirrors a long: its take-profit is under the entry, its stop above
it, its trailing stop follows the lowest price since the entry (kept where a long keeps its highest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.trading.model import Position, Side

ExitReason = Literal["stop_loss", "trailing_stop", "take_profit", "time", "manual"]
# Exits sent as market orders; the others are limit IOC at the bid x (1 - exit_slippage) (a short's at
# the ask x (1 + exit_slippage)).
MARKET_EXITS: frozenset[str] = frozenset({"stop_loss", "trailing_stop", "manual"})


@dataclass(frozen=True, slots=True)
class ExitDecision:
    reason: ExitReason
    amount: float  # base currency to sell (a short: buy back) now
    market: bool
    tier: int | None = None  # the take-profit tier this exit belongs to
    hold: float = 0.0  # what the position keeps once this exit has filled


def is_short(position: Position) -> bool:
    return position.side == "sell"


def exit_side(position: Position) -> Side:
    """The side of the position's exit orders: a long sells, a short buys back."""
    return "buy" if is_short(position) else "sell"


def stop_price(position: Position) -> float | None:
    """The stop-loss price of a position (where a resting stop triggers), or None: under the entry for a
    long, above it for a short."""
    if position.plan.stop_loss is None or not position.average:
        return None
    if is_short(position):
        return position.average * (1 + position.plan.stop_loss)
    return position.average * (1 - position.plan.stop_loss)


def stop_reached(position: Position, price: float, trigger: float) -> bool:
    """Has `price` crossed the stop `trigger`: fallen to it (long) or risen to it (short)?"""
    return price >= trigger if is_short(position) else price <= trigger


def high_water(position: Position, price: float | None) -> float | None:
    """The best price seen since the entry, counting `price` (the entry price to begin with): the highest
    for a long, the lowest for a short (the `high_water` column keeps either)."""
    seen = [p for p in (position.high_water, position.average, price) if p is not None]
    if not seen:
        return None
    return min(seen) if is_short(position) else max(seen)


def improved(position: Position, best: float) -> bool:
    """Is `best` a better water mark than the one the position keeps?"""
    if position.high_water is None:
        return True
    return best < position.high_water if is_short(position) else best > position.high_water


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
    short = is_short(position)
    if price is not None and entry:
        stop = stop_price(position)
        if stop is not None and stop_reached(position, price, stop):
            return ExitDecision("stop_loss", remaining, market=True)
        best = high_water(position, price)
        if plan.trailing_stop is not None and best is not None:
            trail = best * (1 + plan.trailing_stop) if short else best * (1 - plan.trailing_stop)
            if stop_reached(position, price, trail):
                return ExitDecision("trailing_stop", remaining, market=True)
        tiers = plan.take_profit_tiers
        if position.tiers_done < len(tiers):
            tier = tiers[position.tiers_done]
            reached = price <= entry * (1 - tier.at) if short else price >= entry * (1 + tier.at)
            if reached:
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
