"""Free balances per exchange and asset, for sizing orders: `ctx.balance` reads memory, never the network.

Live: each venue's free balances (one fetch_balance request), fetched when `run` starts, again in the
background after each fill, and every `refresh_interval` seconds. Paper: one book of amounts per asset
(`trading.paper_balance`), moved by every paper fill (a buy spends its cost of the quote and adds what
it filled of the base; a sell the reverse) and kept in the paper journal across restarts, seeded from
the config on first use. Replay's journal is a temporary one: its book starts from the config each run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from bridge.aio import Sleep
from bridge.errors import ExchangeError
from bridge.retry import refresh_until_stopped
from bridge.trading.journal import Journal
from bridge.trading.model import OrderOutcome
from bridge.venues.exchange import Exchange

log = structlog.get_logger(__name__)

BALANCE_REFRESH_S = 30.0  # seconds between live balance refreshes per exchange


class Balances:
    """`paper` None: live balances from the venues; else the paper book, starting from `paper` (or from
    what `journal` recorded, when it has)."""

    def __init__(
        self,
        exchanges: Mapping[str, Exchange],
        *,
        paper: Mapping[str, float] | None = None,
        journal: Journal | None = None,
        refresh_interval: float = BALANCE_REFRESH_S,
    ) -> None:
        self._exchanges = exchanges
        self.refresh_interval = refresh_interval
        self._journal = journal
        self._free: dict[str, dict[str, float]] = {}  # live: exchange -> asset -> free amount
        self._paper: dict[str, float] | None = None
        if paper is not None:
            stored = journal.paper_balances() if journal is not None else {}
            self._paper = stored or {asset: float(amount) for asset, amount in paper.items()}
            if not stored and journal is not None:
                journal.record_paper_balances(dict(self._paper))
        self._refreshing: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()  # exchanges with a refresh after fills running
        self._again: set[str] = set()  # ... and a fill since it started: one more after it
        self.refreshes = 0  # live refreshes done, for tests

    @property
    def paper(self) -> bool:
        return self._paper is not None

    def free(self, exchange: str, asset: str) -> float | None:
        """The free amount of `asset` on `exchange` (0.0 for an asset the account holds none of); None
        when no balance is known (an unknown exchange, or live balances not fetched yet)."""
        if exchange not in self._exchanges:
            return None
        if self._paper is not None:
            return self._paper.get(asset, 0.0)
        known = self._free.get(exchange)
        return None if known is None else known.get(asset, 0.0)

    # ---- after an order --------------------------------------------------------------------------

    def on_outcome(self, outcome: OrderOutcome) -> None:
        """Follow a fill: a paper fill moves the paper book; a live one starts a background refresh of
        its exchange's balances. Never raises, never waits (it runs on the order path)."""
        result = outcome.result
        if outcome.status == "paper" and self._paper is not None and result is not None:
            self._apply_paper_fill(outcome.symbol, outcome.side == "buy", result.filled, result.cost)
        elif outcome.status == "placed" and self._paper is None and outcome.exchange in self._exchanges:
            # Coalesced: fills that land while a refresh is in flight earn one more refresh after it,
            # not one each (an account read weighs 20 orders on Binance).
            if outcome.exchange in self._inflight:
                self._again.add(outcome.exchange)
                return
            self._inflight.add(outcome.exchange)
            task = asyncio.ensure_future(self._refresh_after_fills(outcome.exchange))
            self._refreshing.add(task)
            task.add_done_callback(self._refreshing.discard)

    async def _refresh_after_fills(self, exchange: str) -> None:
        try:
            while True:
                self._again.discard(exchange)
                await self._refresh_logged(exchange)
                if exchange not in self._again:
                    return
        finally:
            self._inflight.discard(exchange)

    def _apply_paper_fill(self, symbol: str, buy: bool, filled: float | None, cost: float | None) -> None:
        assert self._paper is not None
        if "/" not in symbol or not filled or cost is None:
            return
        base, quote = symbol.split("/", 1)
        quote = quote.split(":", 1)[0]
        sign = 1.0 if buy else -1.0
        book = self._paper
        book[quote] = book.get(quote, 0.0) - sign * cost
        book[base] = book.get(base, 0.0) + sign * filled
        if self._journal is not None:
            self._journal.record_paper_balances({quote: book[quote], base: book[base]})

    async def settled(self) -> None:
        """Wait for the refreshes started after fills (tests; nothing on the order path waits)."""
        while self._refreshing:
            await asyncio.gather(*self._refreshing, return_exceptions=True)

    # ---- live refreshes ----------------------------------------------------------------------------

    async def refresh(self, exchange: str) -> None:
        """One fetch_balance request for `exchange`; raises ExchangeError when it fails."""
        ex = self._exchanges[exchange]
        if not ex.started:  # a venue down at boot: nothing to ask until the daemon has started it
            return
        self._free[exchange] = await ex.fetch_free_balances()
        self.refreshes += 1

    async def _refresh_logged(self, exchange: str) -> None:
        try:
            await self.refresh(exchange)
        except ExchangeError as exc:
            log.warning("balances.refresh_failed", exchange=exchange, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a background refresh (e.g. cut off by shutdown) must never surface as an unretrieved task error
            log.warning("balances.refresh_failed", exchange=exchange, error=type(exc).__name__)

    async def run(self, stop: asyncio.Event, *, sleep: Sleep = asyncio.sleep) -> None:
        """Keep every venue's live balances fresh until `stop` (at once, then every `refresh_interval`
        seconds): one task per venue; failures are logged and retried with the shared backoff.
        Nothing to do in paper mode."""
        if self._paper is not None or self.refresh_interval <= 0 or not self._exchanges:
            return
        await asyncio.gather(*(self._run_one(ex_id, stop, sleep) for ex_id in self._exchanges))

    async def _run_one(self, exchange: str, stop: asyncio.Event, sleep: Sleep) -> None:
        def failed(exc: ExchangeError, wait: float) -> None:
            log.warning("balances.refresh_failed", exchange=exchange, error=str(exc), retry_in=round(wait, 2))

        await refresh_until_stopped(
            lambda: self.refresh(exchange),
            every=self.refresh_interval,
            max_wait=300.0,
            stop=stop,
            sleep=sleep,
            on_failure=failed,
        )
