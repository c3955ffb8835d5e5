"""Price caps: what one order will be, from the freshest reference price and the strategy's slippage.

A capped buy is a limit IOC at reference x (1 + max_slippage), a capped sell at reference x (1 -
max_slippage), rounded by the venue to its tick and lot so the cap is never exceeded; what does not fill
at once expires. `max_slippage` None is a plain market order (no cap). The result's `estimated_cost`
is what the risk limits count: the worst the order can cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.trading.prices import PriceCache
from bridge.venues.exchange import Exchange
from bridge.venues.types import Side

DEFAULT_MAX_SLIPPAGE = 0.05


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """The size and price of one order, ready for an OrderRequest."""

    cost: float | None
    amount: float | None
    limit_price: float | None
    estimated_cost: float | None  # worst case in quote currency; None when no price is known
    reference: float | None  # the price the cap was taken from (None for an uncapped cost-sized buy)


def check_slippage(max_slippage: float | None) -> None:
    """A ValueError for a slippage that is not a fraction in (0, 1): 5 means 500 %, not 5 %."""
    if max_slippage is not None and not 0 < max_slippage < 1:
        raise ValueError(f"max_slippage is a fraction in (0, 1) (0.05 = 5 %), got {max_slippage}")


async def order_terms(
    ex: Exchange,
    prices: PriceCache,
    *,
    symbol: str,
    side: Side,
    cost: float | None,
    amount: float | None,
    max_slippage: float | None,
    max_age: float | None,
) -> OrderTerms | str:
    """The order's terms, or the reason it cannot be priced (`no_price`, `below_market_minimum`).

    Reads the price cache; only when it holds nothing fresher than `max_age` does this cost one request
    for the symbol. An uncapped buy sized by cost needs no price at all (today's market order path)."""
    if max_slippage is None:
        if cost is not None and side == "buy":
            return OrderTerms(cost, None, None, cost, None)
        reference = await prices.reference(ex.id, symbol, side, max_age)
        if cost is not None:
            return OrderTerms(cost, None, None, cost, reference)
        estimate = None if reference is None or amount is None else amount * reference
        return OrderTerms(None, amount, None, estimate, reference)
    reference = await prices.reference(ex.id, symbol, side, max_age)
    if reference is None:
        return "no_price"
    bound = reference * (1 + max_slippage) if side == "buy" else reference * (1 - max_slippage)
    terms = ex.limit_terms(symbol, side, cap_price=bound, amount=amount, cost=cost)
    if terms is None:
        return "below_market_minimum"
    size, limit_price = terms
    return OrderTerms(None, size, limit_price, size * limit_price, reference)
