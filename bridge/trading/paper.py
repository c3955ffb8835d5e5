"""Paper trading: an order that would have been sent is filled on paper at the venue's current price
(best ask for a buy, best bid for a sell, from the price cache), exactly as a live order would be:
a limit IOC fills only at or better than its limit and otherwise expires with nothing filled. An order
with no price known is marked unpriced. Nothing reaches an exchange.
"""

from __future__ import annotations

import asyncio

from bridge.trading.prices import PriceCache
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest, OrderResult

PRICE_TIMEOUT = 2.0


class PaperBroker:
    def __init__(self, prices: PriceCache) -> None:
        self._prices = prices

    async def fill(self, ex: Exchange, req: OrderRequest, *, max_age: float | None = None) -> OrderResult:
        try:
            price = await asyncio.wait_for(
                self._prices.reference(ex.id, req.symbol, req.side, max_age), PRICE_TIMEOUT
            )
        except TimeoutError:
            price = None
        if price is None or price <= 0:
            return OrderResult(
                ex.id,
                req.symbol,
                req.side,
                req.client_order_id,
                order_id=None,
                status="unpriced",
                filled=None,
                cost=req.cost,
                average=None,
                raw={"paper": True, "priced": False},
            )
        limit = req.limit_price
        if limit is not None and (price > limit if req.side == "buy" else price < limit):
            # The book is past the cap: a live IOC would expire with nothing filled.
            return OrderResult(
                ex.id,
                req.symbol,
                req.side,
                req.client_order_id,
                order_id="paper-" + req.client_order_id,
                status="expired",
                filled=0.0,
                cost=0.0,
                average=None,
                raw={"paper": True, "priced": True, "price": price, "limit": limit},
            )
        amount = req.amount if req.amount is not None else (req.cost or 0.0) / price
        cost = req.cost if req.cost is not None else amount * price
        return OrderResult(
            ex.id,
            req.symbol,
            req.side,
            req.client_order_id,
            order_id="paper-" + req.client_order_id,
            status="closed",
            filled=amount,
            cost=cost,
            average=price,
            raw={"paper": True, "priced": True, "price": price, "limit": limit},
        )
