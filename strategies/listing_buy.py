"""The classic listing play: when a matching exchange announces a listing, buy each announced ticker
where it already trades (e.g. Upbit announces ABC/KRW, buy ABC/USDT on Binance at once), with a price
cap, once per coin however many publishers announce it. With `market: swap` it goes long the coin's
USDT-settled perpetual instead (ABC/USDT:USDT), `cost` as the margin at `leverage`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from bridge import Announcement, Context, ExitPlan, OrderOutcome, Strategy, TakeProfitTier


@dataclass(frozen=True)
class ListingBuyParams:
    exchange: str = "binance"  # where to buy (a key of `exchanges:` in the config)
    quote: str = "USDT"  # buy TICKER/QUOTE
    # spot: buy TICKER/QUOTE. swap: go long the perpetual TICKER/QUOTE:QUOTE (the exchange's
    # market_types must include swap); its exits are reduce-only sells.
    market: Literal["spot", "swap"] = "spot"
    # swap only: `cost` is the margin and the position is cost x leverage (what the risk limits count);
    # set on the exchange, with the margin mode, before the symbol's first order.
    leverage: int = 1
    margin_mode: Literal["isolated", "cross"] = "isolated"
    cost: float = 20.0  # quote currency to spend per ticker (at most: a capped buy never spends more)
    # Spend at most this fraction of the free quote balance per ticker (0.01 = 1 %); with `cost`, the
    # smaller of the two. None: `cost` alone. When set and no balance is known, the buy is skipped.
    balance_fraction: float | None = None
    # The price cap: a limit IOC at the best ask x (1 + max_slippage); null: a market order, no cap.
    max_slippage: float | None = 0.05
    # Buy a symbol on the exchange once per this many seconds, whichever publisher or title announced
    # it (Upbit, then Bithumb; a notice and its update): later announcements are skipped.
    once_per_symbol: float = 86400.0
    # Split one `cost` across the tickers of a multi-ticker announcement instead of `cost` each.
    split_tickers: bool = False
    publishers: tuple[str, ...] = ("upbit", "binance")  # whose announcements to act on
    listing_types: tuple[str, ...] = ("spot_listing",)
    # Optional exits, each off when unset; the first reached sells. take_profit: sell all at +50 % (0.5),
    # or in tiers, e.g. [{at: 0.2, sell: 0.5}, {at: 0.5, sell: 1.0}]: at +20 % sell half of what is
    # held, at +50 % the rest. stop_loss: sell at -20 % (0.2). trailing_stop: sell once the price falls
    # 10 % (0.1) from its highest since the buy. exit_after: sell this many seconds after the buy.
    take_profit: float | tuple[TakeProfitTier, ...] | None = None
    stop_loss: float | None = None
    trailing_stop: float | None = None
    exit_after: float | None = None
    # Also rest a stop order on the exchange at the stop-loss price, so the position is protected while
    # bridge, the host or the network is down (needs stop_loss; live only: paper has no order book).
    stop_on_exchange: bool = False
    # Take-profit and time exits are limit IOC sells at the best bid x (1 - exit_slippage), re-sent
    # until filled; stop-loss and trailing exits are market orders.
    exit_slippage: float = 0.05

    def __post_init__(self) -> None:
        if self.cost <= 0:
            raise ValueError("cost must be positive")
        if self.market not in ("spot", "swap"):
            raise ValueError("market is spot or swap")
        if not 1 <= self.leverage <= 125 or (self.market == "spot" and self.leverage != 1):
            raise ValueError("leverage is 1 to 125, and only with market: swap (spot is never leveraged)")
        if self.market == "swap" and self.balance_fraction is not None:
            raise ValueError("balance_fraction reads the spot balance: use cost alone with market: swap")
        if self.balance_fraction is not None and not 0 < self.balance_fraction <= 1:
            raise ValueError("balance_fraction is a fraction in (0, 1]: 0.01 = 1 % of the free quote balance")
        if self.max_slippage is not None and not 0 < self.max_slippage < 1:
            raise ValueError("max_slippage is a fraction in (0, 1): 0.05 = 5 % over the best ask")
        if not 0 < self.once_per_symbol <= 30 * 86400:
            raise ValueError("once_per_symbol is in seconds, at most 30 days (2592000)")
        self.exit_plan()  # validates the exit settings at load time (a config error, exit 78)

    def exit_plan(self) -> ExitPlan | None:
        tiers = self.take_profit if isinstance(self.take_profit, tuple) else ()
        plan = ExitPlan(
            take_profit=None if isinstance(self.take_profit, tuple) else self.take_profit,
            tiers=tiers,
            stop_loss=self.stop_loss,
            trailing_stop=self.trailing_stop,
            after=self.exit_after,
            stop_on_exchange=self.stop_on_exchange,
            exit_slippage=self.exit_slippage,
        )
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
        cost = p.cost / len(tickers) if p.split_tickers and tickers else p.cost
        if len(tickers) == 1:  # no task to start: the order leaves in this step of the loop
            await self._buy(self._symbol(tickers[0]), cost, ctx)
            return
        # One task per ticker, all at once: a ticker that needs a market lookup never delays the
        # orders for tickers already known to trade.
        await asyncio.gather(*(self._buy(self._symbol(t), cost, ctx) for t in tickers))

    def _symbol(self, ticker: str) -> str:
        """ABC/USDT on spot, the USDT-settled perpetual ABC/USDT:USDT on swap (ccxt's unified symbols)."""
        p = self.params
        return f"{ticker}/{p.quote}" if p.market == "spot" else f"{ticker}/{p.quote}:{p.quote}"

    async def _buy(self, symbol: str, cost: float, ctx: Context) -> OrderOutcome | None:
        p = self.params
        # Claimed before the first await: the same coin announced again a millisecond later (another
        # publisher, an updated title) finds it taken and is skipped.
        if not ctx.claim_symbol(p.exchange, symbol, p.once_per_symbol):
            ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="symbol_bought_already")
            return None
        market = ctx.market(p.exchange, symbol) or await ctx.find_market(p.exchange, symbol)
        if market is None or not market.active:
            ctx.release_symbol(p.exchange, symbol)
            ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="no_active_market")
            return None
        if p.balance_fraction is not None:
            free = await ctx.balance(p.exchange, p.quote)
            if free is None:
                ctx.release_symbol(p.exchange, symbol)
                ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="balance_unknown")
                return None
            cost = min(cost, free * p.balance_fraction)
            if cost <= 0:
                ctx.release_symbol(p.exchange, symbol)
                ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="balance_empty")
                return None
        if p.market == "swap":
            outcome = await ctx.buy(
                p.exchange,
                symbol,
                cost=cost,
                exit=self._exit,
                max_slippage=p.max_slippage,
                leverage=p.leverage,
                margin_mode=p.margin_mode,
            )
        else:
            outcome = await ctx.buy(
                p.exchange, symbol, cost=cost, exit=self._exit, max_slippage=p.max_slippage
            )
        if outcome.status in ("skipped", "rejected", "expired"):
            ctx.release_symbol(p.exchange, symbol)  # nothing bought: a later announcement may try
        return outcome
