"""Pure admission rules for announcements the codec decoded: an event time too far in the future (or
absurd), and a flood of tickers. No clock, no I/O, no logging: the dispatcher applies them and logs."""

from __future__ import annotations

import dataclasses

from bridge.feed.codec import MAX_EVENT_US, Announcement

EVENT_TIME_INVALID = "event_time_invalid"


def event_time_problem(announcement: Announcement, now_ns: int, max_skew_s: float) -> str | None:
    """`event_time_invalid` when any of the announcement's timestamps is not a time (negative, past
    MAX_EVENT_US, not an int: the codec refuses those, this is the same rule for announcements built
    elsewhere) or lies more than `max_skew_s` seconds after `now_ns`; else None.

    Every timestamp counts, not only the event time: an event that claims to come from the future
    would read as fresh for too long, and no step before our receipt can happen after it."""
    limit_us = now_ns // 1000 + int(max_skew_s * 1_000_000)
    for ts in (announcement.detected_us, announcement.dispatch_us, announcement.publish_us):
        if ts is None:
            continue
        if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < MAX_EVENT_US or ts > limit_us:
            return EVENT_TIME_INVALID
    return None


def ahead_s(announcement: Announcement, now_ns: int) -> float | None:
    """How many seconds the event time lies after `now_ns` (negative: in the past), for the log line."""
    event_us = announcement.event_us
    return None if event_us is None else round((event_us - now_ns // 1000) / 1e6, 3)


@dataclasses.dataclass(frozen=True, slots=True)
class CappedTickers:
    """An announcement with at most `max_tickers` distinct tickers, and what was cut."""

    announcement: Announcement
    refused: int  # tickers past the cap, plus entries the codec found were not tickers

    @property
    def kept(self) -> tuple[str, ...]:
        return self.announcement.tickers


def cap_tickers(announcement: Announcement, max_tickers: int) -> CappedTickers:
    """Tickers de-duplicated (first mention kept, in order) and cut to the first `max_tickers`. The
    announcement's key is unchanged: a resend with the same flood is still the same announcement."""
    distinct = tuple(dict.fromkeys(announcement.tickers))
    kept = distinct[: max(max_tickers, 0)]
    refused = len(distinct) - len(kept) + announcement.refused_tickers
    if kept != announcement.tickers or announcement.refused_tickers:
        # the count moves here: capping the result again counts nothing twice
        announcement = dataclasses.replace(announcement, tickers=kept, refused_tickers=0)
    return CappedTickers(announcement, refused)
