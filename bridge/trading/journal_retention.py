"""`journal.retention_days`: announcements older than that leave SQLite and the journal's duplicate-key set,
at start and then daily, a small batch per step of the event loop (never a long transaction on it).
Orders and positions are kept whatever their age.

Why pruning keys is safe: an announcement that old is refused by `trading.max_event_age` long before
its key matters, and its orders keep their client order ids (the journal's other duplicate check).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

import structlog
from prometheus_client import Counter

from bridge.aio import Sleep, sleep_or_stop
from bridge.telemetry import REGISTRY
from bridge.trading.journal import Journal

log = structlog.get_logger(__name__)

DAY_S = 86_400.0
BATCH = 200  # rows per transaction: well under a millisecond of the loop each
PRUNED = Counter(
    "bridge_journal_pruned_total", "Announcements pruned past journal.retention_days", registry=REGISTRY
)
PRUNE_FAILURES = Counter(
    "bridge_journal_prune_failures_total",
    "Journal prune passes that failed (retried the next day)",
    registry=REGISTRY,
)


class Retention:
    """Prunes `journal` of announcements first seen more than `days` ago by `clock_ns`."""

    def __init__(
        self,
        journal: Journal,
        days: float,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Sleep = asyncio.sleep,
        batch: int = BATCH,
    ) -> None:
        self._journal = journal
        self._keep_ns = int(days * DAY_S * 1e9)
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now, then once a day, until `stop` is set."""
        while not stop.is_set():
            await self.prune(stop)
            if await sleep_or_stop(self._sleep, DAY_S, stop):
                return

    async def prune(self, stop: asyncio.Event | None = None) -> int:
        """One pass: delete what is past retention, a batch at a time, yielding to the loop between
        batches. The number deleted. A failure (a locked or broken journal) is logged and counted; the
        next pass tries again."""
        before_ns = self._clock_ns() - self._keep_ns
        total = 0
        while stop is None or not stop.is_set():
            try:
                deleted = self._journal.prune_announcements(before_ns, self._batch)
            except sqlite3.Error as exc:
                PRUNE_FAILURES.inc()
                log.warning("journal.prune_failed", error=str(exc), pruned=total)
                break
            total += deleted
            PRUNED.inc(deleted)
            if deleted < self._batch:
                break
            await asyncio.sleep(0)  # let the feed and the orders in between batches
        if total:
            log.info("journal.pruned", announcements=total, before_ns=before_ns)
        return total
