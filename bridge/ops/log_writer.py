"""The log writer: one thread renders and writes log records, so the threads that log (the event loop
above all) only enqueue and a slow stdout or journald never stalls them. Ordinary records are bounded
and dropped (counted) when the writer is behind; reserved ones (the audit trail) always queue.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter

from bridge.telemetry import REGISTRY

DROPPED = Counter(
    "bridge_log_dropped_total",
    "Log lines dropped because the log writer was behind (never trading, order, daemon or error lines)",
    registry=REGISTRY,
)

Write = Callable[[logging.LogRecord], None]


class LogWriter:
    """A FIFO of log records and the one thread that writes them with `write`, in the order they were
    put. At most `capacity` ordinary records wait; beyond that they are dropped and counted, and once
    the writer has caught up (the queue is empty) it writes `dropped_record(count)`. Reserved records
    are never dropped: the lane has no bound, because what it holds (orders, halts, daemon state,
    errors) is rare by nature, and the one alternative, making the caller wait, is the stall this
    class exists to prevent.

    The thread is a daemon thread, so a reader that never reads cannot keep the process alive; the
    process drains it on the way out (`flush`, `close`: see bridge.ops.logs.flush)."""

    def __init__(
        self,
        write: Write,
        *,
        capacity: int,
        dropped_record: Callable[[int], logging.LogRecord],
        name: str = "bridge-log-writer",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._write = write
        self._capacity = capacity
        self._dropped_record = dropped_record
        # The callers and the writer share no lock on the way in: a record is appended under a lock
        # only callers take (a deque append is atomic; the lock orders callers and the stop), and the
        # counters are each written by one side. Waking a sleeping writer is the only handoff, so a
        # caller never waits for a writer that is busy rendering (it holds the GIL meanwhile anyway).
        self._put_lock = threading.Lock()
        self._lock = threading.Lock()  # the writer's sleep, close() and flush()
        self._wake = threading.Condition(self._lock)  # the writer waits here for work
        self._idle = threading.Condition(self._lock)  # flush() waits here for an empty queue
        self._records: deque[tuple[logging.LogRecord, bool]] = deque()
        self._ordinary_in = 0  # callers only: ordinary records queued, ever
        self._dropped_in = 0  # callers only: records dropped, ever
        self._ordinary_out = 0  # the writer only: ordinary records taken, ever
        self._dropped_out = 0  # the writer only: drops reported in a summary, ever
        self._busy = True  # the writer is not (yet) waiting for work
        self._sleeping = False
        self._closing = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def queued(self) -> int:
        """Records waiting to be written (ordinary and reserved)."""
        return len(self._records)

    def put(self, record: logging.LogRecord, *, reserved: bool) -> bool:
        """Queue `record` for writing; never waits for the output. False if it was dropped (ordinary,
        the queue full). Once the writer has stopped, writes it at once in the calling thread, so the
        last lines of a process that is exiting are not lost."""
        with self._put_lock:
            stopped = self._stopped
            queued = not stopped and (reserved or self._ordinary_in - self._ordinary_out < self._capacity)
            if queued:
                self._records.append((record, reserved))
                self._ordinary_in += not reserved
            elif not stopped:
                self._dropped_in += 1
        if queued:
            if self._sleeping:  # set under _lock before the writer's last look at the queue
                with self._lock:
                    self._wake.notify()
            return True
        if stopped:
            self._write(record)
            return True
        DROPPED.inc()
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far (and the summary of the dropped ones) is written.
        False if `timeout` seconds passed first (the output is blocked)."""
        if threading.current_thread() is self._thread:
            return False  # the writer cannot wait for itself
        with self._lock:
            return self._idle.wait_for(self._caught_up, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, then stop the thread; later records are written by the caller. False
        if `timeout` passed with records still queued (they stay queued; the thread keeps trying)."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        if threading.current_thread() is self._thread:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _caught_up(self) -> bool:
        return self._stopped or (not self._records and not self._owed() and not self._busy)

    def _owed(self) -> int:
        return self._dropped_in - self._dropped_out

    def _run(self) -> None:
        while True:
            record = self._next()
            if record is not None:
                try:
                    self._write(record)
                except Exception:  # noqa: BLE001, S112 - `write` reports its own errors; the thread must live
                    continue
                continue
            with self._lock:
                self._busy = False
                self._idle.notify_all()
                if self._closing:
                    if self._stop():
                        return
                    continue
                self._sleeping = True
                if not self._records and not self._owed():  # looked at after the flag: no lost wake-up
                    self._wake.wait()
                self._sleeping = False

    def _next(self) -> logging.LogRecord | None:
        """The next record to write: the oldest queued one, else the summary of what was dropped while
        the queue was full, else None."""
        self._busy = True
        if self._records:
            record, reserved = self._records.popleft()
            self._ordinary_out += not reserved
            return record
        if owed := self._owed():
            self._dropped_out += owed
            return self._dropped_record(owed)
        return None

    def _stop(self) -> bool:
        """Stop if nothing is queued: from then on callers write their records themselves."""
        with self._put_lock:
            if self._records:
                return False
            self._stopped = True
            return True
