"""The request budget of one exchange account: a token bucket in ccxt's cost units that lets requests
out at once while within the exchange's limits and makes a caller wait only when over them.

It replaces ccxt's own throttle, which charges each request's cost to the *next* request (its bucket
refills only while someone waits), so every order waited ~10 ms on binance even after hours of idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Share of a known window's budget that may go out at once (binance: 60 units = 300 weight = 300
# orders). The refill rate is lowered by as much, so no window ever sees more than the budget.
BURST_SHARE = 0.05
# Burst for exchanges whose window is not known: a few requests above ccxt's own (conservative) rate,
# which itself lets one request through on top of its average.
DEFAULT_BURST = 5.0


@dataclass(frozen=True)
class Budget:
    """`rate` cost units per second, up to `burst` at once."""

    rate: float
    burst: float

    @classmethod
    def for_window(
        cls, rate_limit_ms: float, window_s: float | None, burst_share: float = BURST_SHARE
    ) -> Budget:
        """The budget for ccxt's `rateLimit` (milliseconds per cost unit) of a venue whose published limit
        is a budget per `window_s` seconds (None: not known, then DEFAULT_BURST on top of ccxt's rate).
        Within any such window, burst + rate * window never exceeds ccxt's rate * window. Each venue's
        window is its dialect's (bridge.venues.dialect)."""
        per_s = 1000.0 / rate_limit_ms if rate_limit_ms > 0 else 1e9
        if window_s is None:
            return cls(rate=per_s, burst=DEFAULT_BURST)
        burst = burst_share * per_s * window_s
        return cls(rate=per_s - burst / window_s, burst=burst)


class TokenBucket:
    """`reserve(cost)` takes `cost` now and returns how long the caller must wait before sending:
    0.0 while within budget. The balance may go negative; each later caller then waits for its own
    turn, first come first served, with no queue to keep. Starts full."""

    def __init__(self, budget: Budget, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._tokens = budget.burst
        self._at = clock()

    def reserve(self, cost: float) -> float:
        tokens = self._refill() - cost
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.budget.rate

    def refund(self, cost: float) -> None:
        """Give back a reservation that was not used (never above the burst)."""
        self._tokens = min(self.budget.burst, self._refill() + cost)

    @property
    def available(self) -> float:
        return self._refill()

    def _refill(self) -> float:
        now = self._clock()
        tokens = min(self.budget.burst, self._tokens + (now - self._at) * self.budget.rate)
        self._tokens, self._at = tokens, now
        return tokens
