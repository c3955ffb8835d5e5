"""Whether the journal can be written, said once: a failed write (disk full, read-only file, deleted
state_dir) is logged at most once a minute, retried with a capped backoff, and reported to a listener
(the trading gate's `journal_unwritable` halt) when it starts and when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("bridge.trading.journal")

LOG_INTERVAL_S = 60.0
RETRY_MIN_S = 0.05
RETRY_MAX_S = 5.0

# listener(writable, error): False with the error when writes start failing, True when they work again.
Listener = Callable[[bool, str | None], None]


class WriteHealth:
    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ok = True
        self.listener: Listener | None = None
        self._monotonic = monotonic
        self._logged_at: float | None = None
        self._quiet = 0  # failures not logged since the last line
        self._delay = RETRY_MIN_S

    def failed(self, exc: BaseException, what: str, **fields: object) -> None:
        """A write failed: log (at most once a minute, with how many were not logged), report once."""
        now = self._monotonic()
        if self._logged_at is None or now - self._logged_at >= LOG_INTERVAL_S:
            log.error(
                "journal.flush_failed",
                what=what,
                error=str(exc),
                failures_not_logged=self._quiet,
                hint="trading is halted until the journal can be written; what is pending is kept",
                **fields,
            )
            self._logged_at, self._quiet = now, 0
        else:
            self._quiet += 1
        self._delay = min(self._delay * 2, RETRY_MAX_S)
        if self.ok:
            self.ok = False
            self._report(False, str(exc))

    def succeeded(self) -> None:
        self._delay = RETRY_MIN_S
        if not self.ok:
            self.ok = True
            self._logged_at, self._quiet = None, 0
            log.info("journal.writable_again")
            self._report(True, None)

    @property
    def retry_delay(self) -> float:
        """How long to wait before the next try: doubles with each failure, up to RETRY_MAX_S."""
        return self._delay

    def _report(self, writable: bool, error: str | None) -> None:
        if self.listener is None:
            return
        try:
            self.listener(writable, error)
        except Exception:  # a broken listener must never break the journal
            log.exception("journal.listener_failed")
