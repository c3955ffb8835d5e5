"""The classic listing play: when a matching exchange announces a listing, market-buy each announced
ticker where it already trades (e.g. Upbit announces ABC/KRW, buy ABC/USDT on Binance at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bridge import Announcement, Context, ExitPlan, OrderOutcome, Strategy


@dataclass(frozen=True)
class ListingBuyParams:
    exchange: str = "binance"  # where to buy (a key of `exchanges:` in the config)
    quote: str = "USDT"  # buy TICKER/QUOTE
    cost: float = 20.0  # quote currency to spend per ticker
    publishers: tuple[str, ...] = ("upbit", "binance")  # whose announcements to act on
    listing_types: tuple[str, ...] = ("spot_listing",)
    # Optional exits, each off when unset: sell the position at +take_profit (0.5 = +50 %), at
    # -stop_loss (0.2 = -20 %), or exit_after seconds after the buy, whichever comes first.
    take_profit: float | None = None
    stop_loss: float | None = None
    exit_after: float | None = None

    def __post_init__(self) -> None:
        if self.cost <= 0:
            raise ValueError("cost must be positive")
        self.exit_plan()  # validates the exit settings at load time (a config error, exit 78)

    def exit_plan(self) -> ExitPlan | None:
        plan = ExitPlan(take_profit=self.take_profit, stop_loss=self.stop_loss, after=self.exit_after)
        return plan if plan.active else None


class ListingBuy(Strategy):
    Params = ListingBuyParams
    params: ListingBuyParams

    def __init__(self, name: str, params: ListingBuyParams) -> None:
        super().__init__(name, params)
        self._exit = params.exit_plan()  # built once, not per order

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
        return await ctx.buy(p.exchange, symbol, cost=p.cost, exit=self._exit)
