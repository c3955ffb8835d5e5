"""The classic listing play: when a matching exchange announces a listing, market-buy each announced
ticker where it already trades (e.g. Upbit announces ABC/KRW, buy ABC/USDT on Binance at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bridge import Announcement, Context, OrderOutcome, Strategy


@dataclass(frozen=True)
class ListingBuyParams:
    exchange: str = "binance"  # where to buy (a key of `exchanges:` in the config)
    quote: str = "USDT"  # buy TICKER/QUOTE
    cost: float = 20.0  # quote currency to spend per ticker
    publishers: tuple[str, ...] = ("upbit", "binance")  # whose announcements to act on
    listing_types: tuple[str, ...] = ("spot_listing",)

    def __post_init__(self) -> None:
        if self.cost <= 0:
            raise ValueError("cost must be positive")


class ListingBuy(Strategy):
    Params = ListingBuyParams
    params: ListingBuyParams

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        p = self.params
        if announcement.publisher not in p.publishers or announcement.listing_type not in p.listing_types:
            return
        tickers = announcement.tickers
        if len(tickers) == 1:  # no task to start: the order leaves in this step of the loop
            await self._buy(f"{tickers[0]}/{p.quote}", ctx)
            return
        # One task per ticker, all at once: a ticker that needs a market lookup never delays the
        # orders for tickers already known to trade.
        await asyncio.gather(*(self._buy(f"{t}/{p.quote}", ctx) for t in tickers))

    async def _buy(self, symbol: str, ctx: Context) -> OrderOutcome | None:
        p = self.params
        market = ctx.market(p.exchange, symbol) or await ctx.find_market(p.exchange, symbol)
        if market is None or not market.active:
            ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="no_active_market")
            return None
        return await ctx.buy(p.exchange, symbol, cost=p.cost)
