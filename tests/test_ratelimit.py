"""bridge.venues.ratelimit: a burst goes at once, then callers wait their turn; no window ever sees more than
the exchange's budget."""

from __future__ import annotations

import bisect

import pytest

from bridge.venues.dialect import dialect_for
from bridge.venues.ratelimit import DEFAULT_BURST, Budget, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_goes_at_once_then_callers_wait_in_turn() -> None:
    """Within the burst every reservation may go now (0.0); beyond it each caller gets the wait until
    its own cost has refilled, later callers longer (first come, first served, no queue)."""
    clock = Clock()
    bucket = TokenBucket(Budget(rate=10.0, burst=3.0), clock=clock)
    assert [bucket.reserve(1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(1.0) == pytest.approx(0.1)
    assert bucket.reserve(1.0) == pytest.approx(0.2)
    clock.now += 0.2  # both waiters have gone; the bucket is empty, not in debt
    assert bucket.reserve(0.5) == pytest.approx(0.05)


def test_idle_time_refills_up_to_the_burst_only() -> None:
    """Idle time is credited (unlike ccxt's throttle, which charges each request to the next one), but
    never beyond the burst."""
    clock = Clock()
    bucket = TokenBucket(Budget(rate=10.0, burst=2.0), clock=clock)
    bucket.reserve(2.0)
    clock.now += 3600
    assert bucket.available == 2.0
    assert bucket.reserve(2.0) == 0.0
    assert bucket.reserve(0.1) > 0


def test_refund_gives_back_an_unused_reservation() -> None:
    """A refunded reservation no longer delays the callers after it, and never lifts the bucket above
    its burst."""
    clock = Clock()
    bucket = TokenBucket(Budget(rate=1.0, burst=1.0), clock=clock)
    bucket.reserve(1.0)
    assert bucket.reserve(1.0) == pytest.approx(1.0)
    bucket.refund(1.0)
    assert bucket.reserve(1.0) == pytest.approx(1.0)
    bucket.refund(5.0)
    assert bucket.available == 1.0


@pytest.mark.parametrize("window", [1.0, 10.0, 60.0, 180.0])
def test_binance_budget_never_exceeds_its_weight_window(window: float) -> None:
    """binance: ccxt's rateLimit of 50 ms is 1200 units (6000 weight) per minute. Sending as fast as the
    bucket allows, from full, no span of up to a minute (and no minute of a longer span) sees more."""
    budget = dialect_for("binance").budget(50)
    assert budget.burst > 0 and budget.burst + budget.rate * 60 == pytest.approx(1200)
    clock = Clock()
    bucket = TokenBucket(budget, clock=clock)
    sent: list[float] = []
    start = clock.now
    while clock.now - start < window:
        wait = bucket.reserve(0.2)  # one order
        clock.now += wait
        sent.append(clock.now)
    per_minute = [bisect.bisect_left(sent, s + 60) - i for i, s in enumerate(sent)]
    assert max(per_minute) * 0.2 <= 1200 + 0.2  # the one in flight when a minute starts


def test_unknown_exchange_keeps_ccxts_rate_with_a_small_burst() -> None:
    """An exchange without a known window keeps ccxt's average rate; only a few requests go at once."""
    assert dialect_for("kraken").budget(3000) == Budget(rate=1000 / 3000, burst=DEFAULT_BURST)
