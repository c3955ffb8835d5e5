"""Paper trading: an order that would have been sent is filled on paper at the exchange's current
public price, or marked unpriced when that price cannot be read (offline). Nothing reaches an exchange.
"""

from __future__ import annotations

import asyncio

from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest, OrderResult

PRICE_TIMEOUT = 2.0


class PaperBroker:
    async def fill(self, ex: Exchange, req: OrderRequest) -> OrderResult:
        try:
            price = await asyncio.wait_for(ex.fetch_price(req.symbol), PRICE_TIMEOUT)
        except TimeoutError:
            price = None
        if price is None or price <= 0:
            return OrderResult(
                exchange=ex.id,
                symbol=req.symbol,
                side=req.side,
                client_order_id=req.client_order_id,
                order_id=None,
                status="unpriced",
                filled=None,
                cost=req.cost,
                average=None,
                raw={"paper": True, "priced": False},
            )
        amount = req.amount if req.amount is not None else (req.cost or 0.0) / price
        cost = req.cost if req.cost is not None else amount * price
        return OrderResult(
            exchange=ex.id,
            symbol=req.symbol,
            side=req.side,
            client_order_id=req.client_order_id,
            order_id="paper-" + req.client_order_id,
            status="closed",
            filled=amount,
            cost=cost,
            average=price,
            raw={"paper": True, "priced": True, "price": price},
        )
