"""The event loop's lag, measured from inside: a task that asks to wake every INTERVAL_S and notes how
late it woke. A late wake-up is time every other callback (the feed reader, an order) waited too.

Exported as the histogram `bridge_event_loop_lag_seconds` and the gauge
`bridge_event_loop_lag_max_seconds` (the worst lag of the last minute); the worst lag is also in the
`daemon.status` line and /health (`loop_lag_max_s`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from prometheus_client import Gauge, Histogram

from bridge.aio import Sleep
from bridge.telemetry import REGISTRY

log = structlog.get_logger(__name__)

# 25 ms: fine enough to see a stall of a few ms in the histogram, cheap (40 wake-ups a second, each a
# few microseconds).
INTERVAL_S = 0.025
WINDOW_S = 60  # the gauge's "last minute", kept as one worst value per second
# A lag this long is logged (`event_loop.stalled`), at most once per WINDOW_S with the count since: the
# log then shows when the loop stalled, next to what the daemon was doing.
STALL_LOG_S = 0.1

LAG = Histogram(
    "bridge_event_loop_lag_seconds",
    "How late the event loop ran a timer due now (every callback waited as long)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
LAG_MAX = Gauge(
    "bridge_event_loop_lag_max_seconds",
    "The event loop's worst lag in the last minute",
    registry=REGISTRY,
)


class LoopLagProbe:
    """Wakes every `interval` seconds (with `sleep`) and records how late it woke by `clock`
    (seconds, monotonic). `worst_s()` is the worst lag of the last WINDOW_S seconds."""

    def __init__(
        self,
        *,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        # second (int(clock())) -> worst lag seen in that second; at most WINDOW_S + 1 entries
        self._per_second: dict[int, float] = {}
        self.samples = 0
        self._gauge = 0.0  # what LAG_MAX was last set to
        self._stalls = 0  # stalls not logged yet
        self._logged_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Measure until `stop` is set (noticed at the next wake-up: at most `interval` later). A plain
        sleep, no stop-waiter per tick: the probe must cost next to nothing."""
        while not stop.is_set():
            before = self._clock()
            await self._sleep(self.interval)
            self.record(self._clock() - before - self.interval)

    def record(self, lag_s: float) -> None:
        """Note one wake-up `lag_s` seconds late (a negative lag, an early timer, counts as 0)."""
        lag = max(lag_s, 0.0)
        LAG.observe(lag)
        self.samples += 1
        second = int(self._clock())
        new_second = second not in self._per_second
        if lag > self._per_second.get(second, -1.0):
            self._per_second[second] = lag
        if new_second:  # once a second: forget what left the window, publish the minute's worst
            for old in [s for s in self._per_second if s <= second - WINDOW_S]:
                del self._per_second[old]
            self._gauge = self.worst_s()
            LAG_MAX.set(self._gauge)
        elif lag > self._gauge:  # a new worst within the second, at once; the other wake-ups pay nothing
            self._gauge = lag
            LAG_MAX.set(lag)
        if lag >= STALL_LOG_S:
            self._stalls += 1
            now = self._clock()
            if self._logged_at is None or now - self._logged_at >= WINDOW_S:
                log.warning("event_loop.stalled", lag_ms=round(lag * 1000, 1), stalls=self._stalls)
                self._logged_at, self._stalls = now, 0

    def worst_s(self) -> float:
        """The worst lag of the last minute (0.0 before any wake-up)."""
        since = int(self._clock()) - WINDOW_S
        return max((lag for s, lag in self._per_second.items() if s > since), default=0.0)
