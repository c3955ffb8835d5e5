"""Which feed link brought each recent announcement first, and the announcements a later title only
re-words. Kept in memory by the dispatcher, off the order path: the first arrival costs two dict
writes; what it learns is logged with the copies that lose.

"The same announcement" across links is the codec's key (publisher, listing type, title, tickers;
never the timestamps, which each endpoint stamps itself). A copy with another title but the same
publisher, listing type and tickers, within TITLE_UPDATE_WINDOW_S of the first, is a title update of
an announcement already handed to the strategies: logged (`announcement.title_updated`), not traded
again. Two different coins in one second have different tickers, so both trade.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from bridge.feed import metrics as feed_metrics
from bridge.feed.codec import Announcement

TITLE_UPDATE_WINDOW_S = 600.0
MAX_REMEMBERED = 4096  # announcements; the oldest are forgotten first


@dataclass(frozen=True, slots=True)
class FirstArrival:
    key: str
    title: str
    link: str | None
    mono_ns: int


def _coin(a: Announcement) -> tuple[str, str, tuple[str, ...]]:
    return a.publisher, a.listing_type, tuple(sorted(a.tickers))


class Arrivals:
    def __init__(self, *, window_s: float = TITLE_UPDATE_WINDOW_S, size: int = MAX_REMEMBERED) -> None:
        self._window_ns = int(window_s * 1e9)
        self._size = size
        self._by_key: OrderedDict[str, FirstArrival] = OrderedDict()
        self._by_coin: OrderedDict[tuple[str, str, tuple[str, ...]], FirstArrival] = OrderedDict()

    def first(self, a: Announcement) -> None:
        """Note the first arrival of a new announcement (handed to the strategies)."""
        arrival = FirstArrival(a.key, a.title, a.link, a.received_mono_ns)
        self._by_key[a.key] = arrival
        coin = _coin(a)
        if a.tickers and coin not in self._by_coin:
            self._by_coin[coin] = arrival
        for table in (self._by_key, self._by_coin):
            while len(table) > self._size:
                table.popitem(last=False)

    def copy_of(self, a: Announcement) -> tuple[FirstArrival | None, float | None]:
        """For a duplicate: its first arrival (if remembered) and how many seconds later this copy
        came (None when unknown). A copy through another link is measured into
        `bridge_feed_link_lead_seconds`: the winner's lead, and the loser's lag (negative)."""
        first = self._by_key.get(a.key)
        if first is None or not first.mono_ns or not a.received_mono_ns:
            return first, None
        lag_s = (a.received_mono_ns - first.mono_ns) / 1e9
        if first.link is not None and a.link is not None and first.link != a.link:
            feed_metrics.LINK_LEAD.labels(first.link).observe(lag_s)
            feed_metrics.LINK_LEAD.labels(a.link).observe(-lag_s)
        return first, lag_s

    def updated_title_of(self, a: Announcement) -> FirstArrival | None:
        """The earlier announcement `a` re-words (same publisher, listing type and tickers, another
        title, within the window), or None."""
        first = self._by_coin.get(_coin(a))
        if first is None or first.key == a.key or first.title == a.title:
            return None
        if a.received_mono_ns and first.mono_ns and a.received_mono_ns - first.mono_ns > self._window_ns:
            return None
        return first
