"""When a position's next exit may go after a failure, and when the position is given up. Waits use the
project's one backoff (bridge.retry.backoff_delay: doubling, capped, jittered).

- Transient (rate limit, venue unavailable, a halt, no price): retried for ever, waiting 0.5 s doubling to
  30 s (never less than a Retry-After). A wait caused by a halt ends as soon as the halt lifts.
- Definitive rejection (the venue refused: market closed, too small, unknown symbol...; or the order could
  not be built: dust, market not found): alerted each time, then a wait of 5 s doubling to 5 min; a
  rejection the next attempt corrects (insufficient balance: the next one is capped at the free balance)
  goes again at the next tick the first time. The position is abandoned only after MAX_EXIT_FAILURES
  rejections in a row AND ABANDON_AFTER_S since the first of them: a market halted for maintenance, or
  markets that failed to load, pass; a delisted market does not.
- A refused resting stop waits the same as a rejection; after MAX_STOP_FAILURES the daemon stops trying
  (its own stop-loss check still watches).

Memory only: the rejection count itself lives in the journal (Position.failures). A restart forgets the
waits and when a streak began, so it may wait longer before abandoning, never shorter.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from bridge.retry import backoff_delay

# Definitive rejections in a row, and the time since the first of them, before a position is abandoned
# (alerted, left to a human): both must be reached.
MAX_EXIT_FAILURES = 5
ABANDON_AFTER_S = 3600.0
# Refused resting stops before the daemon stops trying.
MAX_STOP_FAILURES = 5
# The wait after a transient failure (doubling from, capped at), and after a rejection or refused stop.
TRANSIENT_FIRST_S, TRANSIENT_CAP_S = 0.5, 30.0
REJECTED_FIRST_S, REJECTED_CAP_S = 5.0, 300.0
# Rejections the next attempt corrects (it is capped at the free balance): the first goes again at once.
CORRECTED = frozenset({"insufficient_balance"})


class ExitFailures:
    """Per position (entry client id): the time before which no exit is sent, and the streaks."""

    def __init__(self, monotonic: Callable[[], float], rand: Callable[[], float] = random.random) -> None:
        self._monotonic = monotonic
        self._rand = rand
        self._retry_at: dict[str, float] = {}
        self._for_halt: set[str] = set()  # positions whose wait is for a halt of their venue
        self._transient: dict[str, int] = {}  # transient failures in a row
        self._since: dict[str, float] = {}  # when the current streak of rejections began
        self._stop_failures: dict[str, int] = {}
        self._stop_retry_at: dict[str, float] = {}

    def waiting(self, cid: str, *, halted: bool) -> bool:
        """Must the position's next exit wait? `halted`: a halt still stops exits on its venue (a wait
        for a halt ends with the halt)."""
        until = self._retry_at.get(cid)
        if until is None:
            return False
        if self._monotonic() < until and (halted or cid not in self._for_halt):
            return True
        self._retry_at.pop(cid, None)
        self._for_halt.discard(cid)
        return False

    def clear_wait(self, cid: str) -> None:
        """Send the next exit without waiting (an operator asked to close now)."""
        self._retry_at.pop(cid, None)
        self._for_halt.discard(cid)

    def transient(self, cid: str, retry_after: float | None, *, halt: bool = False) -> float:
        """A transient failure: returns the wait (also for a halt: it ends early when the halt lifts)."""
        n = self._transient.get(cid, 0) + 1
        self._transient[cid] = n
        delay = max(backoff_delay(n, TRANSIENT_FIRST_S, TRANSIENT_CAP_S, self._rand()), retry_after or 0.0)
        self._wait(cid, delay)
        if halt:
            self._for_halt.add(cid)
        return delay

    def rejected(self, cid: str, reason: str, failures: int) -> tuple[float, bool]:
        """The `failures`-th rejection in a row: (the wait before the next attempt, give up now?)."""
        now = self._monotonic()
        since = self._since.setdefault(cid, now)
        give_up = failures >= MAX_EXIT_FAILURES and now - since >= ABANDON_AFTER_S
        if reason in CORRECTED and failures == 1:
            return 0.0, give_up
        delay = backoff_delay(failures, REJECTED_FIRST_S, REJECTED_CAP_S, self._rand())
        self._wait(cid, delay)
        return delay, give_up

    def sold(self, cid: str) -> None:
        """An exit filled something: the streaks are over."""
        self._transient.pop(cid, None)
        self._since.pop(cid, None)

    def stop_due(self, cid: str) -> bool:
        """May a resting stop be tried now (not given up, not waiting)?"""
        if self._stop_failures.get(cid, 0) >= MAX_STOP_FAILURES:
            return False
        return self._monotonic() >= self._stop_retry_at.get(cid, 0.0)

    def stop_placed(self, cid: str) -> None:
        self._stop_failures.pop(cid, None)
        self._stop_retry_at.pop(cid, None)

    def stop_failed(self, cid: str) -> int:
        """A resting stop was refused: returns the refusals in a row (MAX_STOP_FAILURES: given up)."""
        failures = self._stop_failures.get(cid, 0) + 1
        self._stop_failures[cid] = failures
        delay = backoff_delay(failures, REJECTED_FIRST_S, REJECTED_CAP_S, self._rand())
        self._stop_retry_at[cid] = self._monotonic() + delay
        return failures

    def forget(self, cid: str) -> None:
        """The position is over."""
        for memo in (self._retry_at, self._transient, self._since, self._stop_failures, self._stop_retry_at):
            memo.pop(cid, None)
        self._for_halt.discard(cid)

    def _wait(self, cid: str, delay: float) -> None:
        self._retry_at[cid] = max(self._retry_at.get(cid, 0.0), self._monotonic() + delay)
        self._for_halt.discard(cid)
