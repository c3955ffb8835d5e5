"""Entries whose fill is not known yet (the answer never came and the router's own look-ups did not
settle it): the exit manager looks each one up by client id now and then; its exit waits for the answer.
The router's look-ups go first (the first check only notes the entry). After PENDING_NOT_FOUND_LIMIT
"no such order" answers the position is given up (the entry most likely never executed; a human checks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from bridge.errors import ExchangeError
from bridge.trading.exit_orders import ExitOrders
from bridge.trading.journal import Journal
from bridge.trading.model import Position
from bridge.venues.exchange import Exchange

log = structlog.get_logger("bridge.trading.exits")  # the events keep the logger they always had

# How often a pending entry is looked up, and how many "no such order" answers give it up.
PENDING_LOOKUP_INTERVAL_S = 30.0
PENDING_NOT_FOUND_LIMIT = 10


class PendingEntries:
    def __init__(
        self,
        *,
        journal: Journal,
        exchanges: Mapping[str, Exchange],
        orders: ExitOrders,
        monotonic: Callable[[], float],
    ) -> None:
        self._journal = journal
        self._exchanges = exchanges
        self._orders = orders
        self._monotonic = monotonic
        self._seen: dict[str, tuple[float, int]] = {}  # entry cid -> (last look-up, not-found count)

    async def look_up(self, position: Position) -> bool:
        """Look the pending entry up if it is due (one request); its fill, once found, is recorded (the
        position opens). True when the entry is to be given up."""
        cid = position.client_order_id
        now = self._monotonic()
        if cid not in self._seen:
            self._seen[cid] = (now, 0)  # first seen: the router's own look-ups go first
            return False
        last, misses = self._seen[cid]
        if now - last < PENDING_LOOKUP_INTERVAL_S:
            return False
        record = self._journal.get(cid)
        ex = self._exchanges.get(position.exchange)
        if record is None or ex is None or self._orders.paper:
            return False
        try:
            found = await ex.fetch_order_by_client_id(position.symbol, cid)
        except ExchangeError as exc:
            self._seen[cid] = (now, misses)
            log.warning("exit.entry_lookup_failed", entry_client_order_id=cid, error=str(exc))
            return False
        if found is not None:
            self._orders.record_entry(record.intent, found)
            self._seen.pop(cid, None)
            return False
        self._seen[cid] = (now, misses + 1)
        return misses + 1 >= PENDING_NOT_FOUND_LIMIT

    def forget(self, cid: str) -> None:
        self._seen.pop(cid, None)
