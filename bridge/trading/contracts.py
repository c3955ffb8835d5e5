"""Perpetuals on the order path: what a contract order is sized at (`cost` is the margin, the notional is
cost x leverage), and the one-time set-up of a symbol's margin mode and leverage before its first order.

The set-up is a venue request or two (Binance: marginType, then leverage), so it belongs off the hot
path: a strategy that knows its symbols in advance calls `Context.prepare_contract` from `on_start`; one
that does not (a listing announced a second ago) pays it on first use, once per symbol, and the log line
`order.contract_setup` says how long it took (`elapsed_ms`, `on_order_path`) for the latency report.
Concurrent orders for one symbol share one set-up; a failed set-up is not remembered (the next order
tries again) and its order is skipped, never sent under a leverage nobody set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from bridge.errors import ExchangeError
from bridge.trading.prices import PriceCache
from bridge.venues.dialect import MarginMode
from bridge.venues.exchange import Exchange
from bridge.venues.types import Market, Side

log = structlog.get_logger(__name__)

MarketKind = Literal["spot", "swap"]
CONTRACT_TYPES = frozenset({"swap", "future"})
DEFAULT_MARGIN_MODE: MarginMode = "isolated"


def is_contract(market: Market) -> bool:
    """A market traded on margin with positions (perpetual swap or dated future), not spot."""
    return market.type in CONTRACT_TYPES


def is_contract_symbol(symbol: str) -> bool:
    """ccxt's unified contract symbols carry their settle currency (`ABC/USDT:USDT`); spot ones do not."""
    return ":" in symbol


def perp_symbol(base: str, quote: str, market: MarketKind) -> str:
    """The ccxt symbol of `base` traded against `quote` on `market`: ABC/USDT, or the USDT-settled
    perpetual ABC/USDT:USDT."""
    return f"{base}/{quote}" if market == "spot" else f"{base}/{quote}:{quote}"


@dataclass(frozen=True, slots=True)
class Leverage:
    """How a contract order is margined: `leverage` times its margin (1 = no leverage)."""

    leverage: float = 1.0
    margin_mode: MarginMode = DEFAULT_MARGIN_MODE

    def __post_init__(self) -> None:
        if not 1 <= self.leverage <= 125:
            raise ValueError(f"leverage is a number from 1 to 125, got {self.leverage}")
        if self.margin_mode not in ("isolated", "cross"):
            raise ValueError(f"margin_mode is isolated or cross, got {self.margin_mode!r}")

    def notional(self, margin: float) -> float:
        """What an order with `margin` of the quote currency controls (and what the risk limits count)."""
        return margin * self.leverage


async def market_amount(
    ex: Exchange, prices: PriceCache, symbol: str, side: Side, notional: float, max_age: float | None
) -> float | str:
    """The amount of an uncapped (market) contract order worth `notional` at the reference price, on the
    market's lot: contract venues size market orders by amount, never by cost. Or why there is none
    (`no_price`, `below_market_minimum`)."""
    reference = await prices.reference(ex.id, symbol, side, max_age)
    if reference is None:
        return "no_price"
    terms = ex.limit_terms(symbol, side, cap_price=reference, cost=notional)
    return "below_market_minimum" if terms is None else terms[0]


class ContractSetup:
    """Which (exchange, symbol) have their margin mode and leverage set, in this process. A restart sets
    them again on first use (the venue answers "no change" where nothing changed)."""

    def __init__(self, exchanges: Mapping[str, Exchange]) -> None:
        self._exchanges = exchanges
        self._done: dict[tuple[str, str], Leverage] = {}
        self._inflight: dict[tuple[str, str, Leverage], asyncio.Task[None]] = {}

    def ready(self, exchange: str, symbol: str, terms: Leverage) -> bool:
        """Set up already with these terms (no I/O)?"""
        return self._done.get((exchange, symbol)) == terms

    async def ensure(self, exchange: str, symbol: str, terms: Leverage, *, on_order_path: bool) -> str | None:
        """Set `symbol`'s margin mode and leverage unless already set so; None when done, else the
        reason it could not be (the order is then skipped)."""
        if self.ready(exchange, symbol, terms):
            return None
        ex = self._exchanges.get(exchange)
        if ex is None:
            return "exchange_not_configured"
        key = (exchange, symbol, terms)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._set_up(ex, symbol, terms, on_order_path))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        try:
            await asyncio.shield(task)  # one impatient order must not cancel the set-up others wait on
        except ExchangeError as exc:
            return f"contract_setup_failed: {exc}"
        return None

    async def _set_up(self, ex: Exchange, symbol: str, terms: Leverage, on_order_path: bool) -> None:
        began = time.perf_counter()
        try:
            await ex.prepare_contract(symbol, leverage=terms.leverage, margin_mode=terms.margin_mode)
        except ExchangeError as exc:
            log.warning(
                "order.contract_setup_failed",
                exchange=ex.id,
                symbol=symbol,
                leverage=terms.leverage,
                margin_mode=terms.margin_mode,
                error=str(exc),
            )
            raise
        self._done[(ex.id, symbol)] = terms
        log.info(
            "order.contract_setup",
            exchange=ex.id,
            symbol=symbol,
            leverage=terms.leverage,
            margin_mode=terms.margin_mode,
            on_order_path=on_order_path,
            elapsed_ms=round((time.perf_counter() - began) * 1000, 2),
        )
