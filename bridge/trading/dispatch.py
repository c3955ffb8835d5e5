"""Fans announcements out from the feed queue to one queue per strategy, after dropping duplicates.

Each strategy runs in its own task (`StrategyRunner`): an exception or a slow strategy affects only
itself; neither the other strategies nor the feed reader notice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog

from bridge.errors import BridgeError
from bridge.feed import metrics as feed_metrics
from bridge.feed.codec import Announcement
from bridge.trading import metrics
from bridge.trading.journal import Journal
from bridge.trading.strategy import Context, Strategy

log = structlog.get_logger(__name__)


async def call_hook(strategy: str, hook: str, call: Awaitable[None], *, within: float | None) -> bool:
    """Run a strategy's lifecycle hook (`on_start`, `on_stop`) behind the plugin safety wrapper: True if
    it returned, False (logged `strategy.hook_failed`) if it raised or overran `within` seconds. A BridgeError
    (a fatal condition, e.g. a config error the plugin found) and cancellation still propagate."""
    try:
        await asyncio.wait_for(call, within)
    except asyncio.CancelledError:
        raise
    except BridgeError:
        raise
    except Exception:  # plugin code
        log.exception("strategy.hook_failed", strategy=strategy, hook=hook)
        return False
    return True


class StrategyRunner:
    def __init__(self, strategy: Strategy, ctx: Context) -> None:
        self.strategy = strategy
        self.ctx = ctx
        self.queue: asyncio.Queue[Announcement] = asyncio.Queue()
        self.handled = 0
        self.errors = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def name(self) -> str:
        return self.strategy.name

    async def run(self) -> None:
        while True:
            announcement = await self.queue.get()
            self.idle.clear()
            try:
                await self.strategy.on_announcement(announcement, self.ctx.bind(announcement))
            except asyncio.CancelledError:
                raise
            except Exception:  # plugin code: isolate it, whatever it raises
                self.errors += 1
                metrics.STRATEGY_ERRORS.labels(self.name).inc()
                log.exception("strategy.failed", strategy=self.name, announcement=announcement.key)
            finally:
                self.handled += 1
                self.queue.task_done()
                if self.queue.empty():
                    self.idle.set()


class Dispatcher:
    def __init__(
        self, source: asyncio.Queue[Announcement], runners: list[StrategyRunner], journal: Journal
    ) -> None:
        self._source = source
        self._runners = runners
        self._journal = journal
        self.seen = 0
        self.duplicates = 0

    async def run(self) -> None:
        while True:
            announcement = await self._source.get()
            feed_metrics.QUEUE_DEPTH.set(self._source.qsize())
            try:
                self.dispatch(announcement)
            finally:
                self._source.task_done()

    def dispatch(self, a: Announcement) -> bool:
        """Hand a new announcement to every strategy; False (and logged) for a duplicate."""
        if not self._journal.record_announcement(a):
            self.duplicates += 1
            metrics.DUPLICATES.inc()
            log.info("announcement.duplicate", key=a.key, publisher=a.publisher, tickers=list(a.tickers))
            return False
        self.seen += 1
        for runner in self._runners:
            runner.queue.put_nowait(a)
        return True
