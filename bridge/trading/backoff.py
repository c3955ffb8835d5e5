"""A venue that says "slow down" gets nothing until it said: a 429/418 (Retry-After, or Binance's
"banned until <ms>") halts every order to that venue, entries and exits (`venue_backoff:NAME`, alerted
through the halt table), and a loop timer lifts the halt when the time has passed. Several answers in a
row keep the latest deadline; other venues are untouched. The entry router and the exit orders share one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import structlog

from bridge.errors import RateLimited
from bridge.trading.gate import TradingGate

log = structlog.get_logger(__name__)

# Without a Retry-After or a ban time, the pause is this long (Binance asks for no less after a 429).
DEFAULT_PAUSE_S = 10.0
# A venue that asks for more than this is still paused, but only this long at a time: a bogus header
# cannot halt a venue for days; the next refusal pauses it again.
MAX_PAUSE_S = 3600.0
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")


def pause_for(exc: RateLimited, *, now_wall_s: float) -> float:
    """Seconds to pause a venue after `exc`: its Retry-After, else the ban time in its message, else
    DEFAULT_PAUSE_S; never more than MAX_PAUSE_S."""
    if exc.retry_after is not None and exc.retry_after > 0:
        return min(exc.retry_after, MAX_PAUSE_S)
    banned = _BANNED_UNTIL.search(str(exc))
    if banned is not None:
        return min(max(int(banned.group(1)) / 1000 - now_wall_s, 0.0), MAX_PAUSE_S)
    return DEFAULT_PAUSE_S


class VenueBackoff:
    def __init__(
        self,
        gate: TradingGate,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._gate = gate
        self._monotonic = monotonic
        self._wall = wall
        self._until: dict[str, float] = {}  # venue -> monotonic deadline
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def paused_until(self, venue: str) -> float | None:
        return self._until.get(venue)

    def hit(self, venue: str, exc: RateLimited) -> float:
        """The venue refused for rate: halt it until its deadline (extended, never shortened). Returns
        the pause in seconds."""
        pause = pause_for(exc, now_wall_s=self._wall())
        deadline = self._monotonic() + pause
        if deadline <= self._until.get(venue, 0.0):
            return pause
        self._until[venue] = deadline
        old = self._timers.pop(venue, None)
        if old is not None:
            old.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tools): the halt stays until lift() is called
            loop = None
        if loop is not None:
            self._timers[venue] = loop.call_later(pause, self.lift, venue, deadline)
        log.warning("venue.backoff", exchange=venue, pause_s=round(pause, 3), error=str(exc))
        self._gate.halt("venue_backoff", venue=venue)
        return pause

    def lift(self, venue: str, deadline: float | None = None) -> None:
        """The pause is over (the timer fired; `deadline` must still be the current one)."""
        if deadline is not None and self._until.get(venue) != deadline:
            return  # a later refusal extended it: its own timer lifts it
        self._until.pop(venue, None)
        self._timers.pop(venue, None)
        log.info("venue.backoff_over", exchange=venue)
        self._gate.resume("venue_backoff", venue=venue)
