"""The delisting play: when a matching exchange announces it will delist a coin, short the coin's USDT
perpetual where it still trades (e.g. Binance announces the spot delisting of ABC: sell ABC/USDT:USDT on
the configured exchange at once), with a stop-loss resting on the exchange above the entry and a time
exit, once per coin however many publishers announce it. Its exits buy back, reduce-only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from bridge import Announcement, Context, ExitPlan, OrderOutcome, Strategy


@dataclass(frozen=True)
class DelistingShortParams:
    exchange: str = "binance"  # where to short (a key of `exchanges:`; its market_types must include swap)
    quote: str = "USDT"  # short the perpetual TICKER/QUOTE:QUOTE (USDT-settled)
    # Always swap (only a perpetual can be shorted): named so that check-config finds an exchange whose
    # market_types do not load swap markets.
    market: Literal["swap"] = "swap"
    cost: float = 20.0  # margin per ticker, in the quote currency; the position is cost x leverage
    leverage: int = 1
    margin_mode: Literal["isolated", "cross"] = "isolated"
    # The price floor: a limit IOC at the best bid x (1 - max_slippage); null: a market order.
    max_slippage: float | None = 0.05
    publishers: tuple[str, ...] = ("binance", "upbit", "bithumb")  # whose announcements to act on
    # spot_delisting: the coin leaves a spot market and its perpetual keeps trading. futures_delisting
    # (the perpetual itself closes) is left out by default: its positions are settled by the venue.
    listing_types: tuple[str, ...] = ("spot_delisting",)
    # Short a symbol on the exchange once per this many seconds, whichever publisher announced it.
    once_per_symbol: float = 86400.0
    # Buy back at +15 % over the entry (0.15), by a reduce-only stop resting on the exchange (so the
    # short is covered while bridge, the host or the network is down), and by the daemon itself.
    stop_loss: float = 0.15
    stop_on_exchange: bool = True
    exit_after: float = 3600.0  # buy back this many seconds after the entry, whatever the price
    # Optional: buy back at -30 % under the entry (0.3), or once the price rises 10 % (0.1) from its
    # lowest since the entry.
    take_profit: float | None = None
    trailing_stop: float | None = None
    # Take-profit and time exits are limit IOC buys at the best ask x (1 + exit_slippage), re-sent until
    # filled; stop-loss and trailing exits are market orders.
    exit_slippage: float = 0.05

    def __post_init__(self) -> None:
        if self.cost <= 0:
            raise ValueError("cost must be positive")
        if not 1 <= self.leverage <= 125:
            raise ValueError("leverage is 1 to 125")
        if self.max_slippage is not None and not 0 < self.max_slippage < 1:
            raise ValueError("max_slippage is a fraction in (0, 1): 0.05 = 5 % under the best bid")
        if not 0 < self.once_per_symbol <= 30 * 86400:
            raise ValueError("once_per_symbol is in seconds, at most 30 days (2592000)")
        if self.take_profit is not None and not 0 < self.take_profit < 1:
            raise ValueError("take_profit is a fraction in (0, 1) under the entry: 0.3 = buy back at -30 %")
        self.exit_plan()  # validates the exit settings at load time (a config error, exit 78)

    def exit_plan(self) -> ExitPlan:
        return ExitPlan(
            take_profit=self.take_profit,
            stop_loss=self.stop_loss,
            trailing_stop=self.trailing_stop,
            after=self.exit_after,
            stop_on_exchange=self.stop_on_exchange,
            exit_slippage=self.exit_slippage,
        )


class DelistingShort(Strategy):
    Params = DelistingShortParams
    params: DelistingShortParams

    def __init__(self, name: str, params: DelistingShortParams) -> None:
        super().__init__(name, params)
        self._exit = params.exit_plan()

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        p = self.params
        if announcement.publisher not in p.publishers or announcement.listing_type not in p.listing_types:
            return
        symbols = [f"{t}/{p.quote}:{p.quote}" for t in announcement.tickers]
        if len(symbols) == 1:  # no task to start: the order leaves in this step of the loop
            await self._short(symbols[0], ctx)
            return
        await asyncio.gather(*(self._short(s, ctx) for s in symbols))

    async def _short(self, symbol: str, ctx: Context) -> OrderOutcome | None:
        p = self.params
        if not ctx.claim_symbol(p.exchange, symbol, p.once_per_symbol):  # before the first await
            ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="symbol_shorted_already")
            return None
        market = ctx.market(p.exchange, symbol) or await ctx.find_market(p.exchange, symbol)
        if market is None or not market.active or market.type != "swap":
            ctx.release_symbol(p.exchange, symbol)
            ctx.log.info("order.skipped", exchange=p.exchange, symbol=symbol, reason="no_active_perpetual")
            return None
        outcome = await ctx.sell(
            p.exchange,
            symbol,
            cost=p.cost,
            open=True,
            exit=self._exit,
            max_slippage=p.max_slippage,
            leverage=p.leverage,
            margin_mode=p.margin_mode,
        )
        if outcome.status in ("skipped", "rejected", "expired"):
            ctx.release_symbol(p.exchange, symbol)  # nothing sold: a later announcement may try
        return outcome
