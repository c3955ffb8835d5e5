"""A live journal that started empty (a first start, or a journal lost while the daemon was stopped)
cannot say what was sent before: for the first `max_event_age` seconds, while an announcement the lost
journal traded can still pass the age check, each order is looked up at the venue by its
deterministic client id before it is sent. Later starts, paper trading and later seconds pay nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from bridge.errors import BridgeError, ExchangeError
from bridge.trading.model import Announcement
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderResult

log = structlog.get_logger(__name__)


class PriorOrderUnknown(BridgeError):
    """Whether this order was sent before the journal was lost cannot be known (the venue did not
    answer the look-up): the caller skips the order rather than risk sending it twice."""


class FreshStartGuard:
    """`journal_was_empty`: Journal.started_empty of a live daemon (False for paper trading: nothing it
    did is on a venue). `started_ns`: when the daemon started, on `clock_ns`'s clock."""

    def __init__(
        self,
        journal_was_empty: bool,
        started_ns: int,
        max_event_age: float,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._empty = journal_was_empty
        self._until_ns = started_ns + int(max_event_age * 1e9)
        self._clock_ns = clock_ns
        if journal_was_empty:
            log.warning(
                "journal.started_empty",
                lookup_seconds=max_event_age,
                action="each order is looked up at the venue by its client id before it is sent",
            )

    def applies(self, announcement: Announcement) -> bool:
        """Must an order for `announcement` be looked up first? Only with an empty journal, for what
        arrives within max_event_age of start: after that, whatever the lost journal traded is too old
        to pass the age check. Arrival time, not event time: a redelivery may carry new timestamps."""
        if not self._empty:
            return False
        arrived = announcement.received_ns or self._clock_ns()
        if arrived > self._until_ns:
            self._empty = False  # the window is over for good: no more clock reads
            return False
        return True

    async def already_sent(self, ex: Exchange, symbol: str, client_order_id: str) -> OrderResult | None:
        """The order with this client id on the venue (sent before the journal was lost), or None:
        not there, send it. Raises PriorOrderUnknown when the look-up fails."""
        try:
            found = await ex.fetch_order_by_client_id(symbol, client_order_id)
        except ExchangeError as exc:
            log.warning(
                "order.prior_lookup_failed",
                exchange=ex.id,
                symbol=symbol,
                client_order_id=client_order_id,
                error=str(exc),
            )
            raise PriorOrderUnknown(
                f"{ex.id}: cannot tell whether {client_order_id} was sent before the journal was lost: {exc}"
            ) from None
        if found is not None:
            log.warning(
                "order.found_on_venue",
                exchange=ex.id,
                symbol=symbol,
                client_order_id=client_order_id,
                order_id=found.order_id,
                status=found.status,
                filled=found.filled,
                reason="sent before this journal started empty; not sent again",
            )
        return found
