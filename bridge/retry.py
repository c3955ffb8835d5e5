"""The one place for waiting after a failure: capped, jittered exponential backoff, the server's
Retry-After (header or JSON body), and the background refresh loop built on both. Used by the feed
supervisor, the venues, the alert senders and the price and balance caches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime

import orjson

from bridge.aio import Sleep, sleep_or_stop
from bridge.errors import ExchangeError, RateLimited

JITTER = 0.25
# A server asking for more than a week is not asking for a delay; treat the value as garbage.
_MAX_RETRY_AFTER = 86400.0 * 7


def backoff_delay(
    attempt: int, first: float, cap: float, rand: float = 0.0, *, jitter: float = JITTER
) -> float:
    """Delay before retry number `attempt` (1-based): doubling from `first`, plus up to `jitter`
    (a fraction) of itself scaled by `rand` in [0, 1), always within [first, cap]. The exponential part
    is capped below `cap` so delays at the cap still spread out instead of all landing on `cap`."""
    base = min(cap / (1 + jitter), first * 2.0 ** min(max(attempt, 1) - 1, 64))
    return min(cap, max(first, base * (1 + jitter * rand)))


def parse_retry_after(value: object, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds (`"7"`, `7`, `0.5`) or an HTTP date.
    None when absent, unreadable, negative or absurd (over a week); a date in the past gives 0."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:  # the HTTP-date form
                when = parsedate_to_datetime(value).timestamp()
            except (TypeError, ValueError, IndexError):
                return None
            seconds = max(0.0, when - (time.time() if now is None else now))
    else:
        return None
    if seconds != seconds or not 0.0 <= seconds <= _MAX_RETRY_AFTER:  # NaN, negative, absurd
        return None
    return seconds


# Venues that say when a rate limit resets as a moment, not a delay: the epoch time at which the current
# window's budget is back (Bybit v5, on every response; Gate v4), in milliseconds or seconds (read by
# magnitude: no time in seconds is over 1e11 before the year 5000).
_RESET_AT_HEADERS = ("x-bapi-limit-reset-timestamp", "x-gate-ratelimit-reset-timestamp")


def retry_after_header(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait by a response's headers: Retry-After (looked up case-insensitively), else a venue's
    reset moment (_RESET_AT_HEADERS) less `now` (time.time()); None when none says anything readable."""
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    delay = parse_retry_after(lowered.get("retry-after"))
    if delay is not None:
        return delay
    for name in _RESET_AT_HEADERS:
        try:
            moment = float(lowered[name])
        except (KeyError, TypeError, ValueError):
            continue
        if moment > 1e11:  # milliseconds since the epoch
            moment /= 1000
        return parse_retry_after(max(0.0, moment - (time.time() if now is None else now)))
    return None


def retry_after_telegram(body: bytes) -> float | None:
    """`parse_retry_after` of a Telegram Bot API error body: a 429 says how long to wait in
    `{"parameters": {"retry_after": N}}`, not in a header. None when the body says nothing readable."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    parameters = data.get("parameters") if isinstance(data, dict) else None
    return parse_retry_after(parameters.get("retry_after")) if isinstance(parameters, dict) else None


async def refresh_until_stopped(
    refresh: Callable[[], Awaitable[object]],
    *,
    every: float,
    max_wait: float,
    stop: asyncio.Event,
    sleep: Sleep,
    on_failure: Callable[[ExchangeError, float], None],
) -> None:
    """Run `refresh` at once, then every `every` seconds, until `stop`. A failed refresh (an
    ExchangeError) is reported to `on_failure` with the wait before the next try: the shared backoff
    from `every` up to `max_wait`, never less than a rate limit's Retry-After."""
    failures = 0
    while not stop.is_set():
        try:
            await refresh()
        except ExchangeError as exc:
            failures += 1
            wait = backoff_delay(failures, every, max_wait)
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                wait = max(wait, exc.retry_after)
            on_failure(exc, wait)
        else:
            failures = 0
            wait = every
        if await sleep_or_stop(sleep, wait, stop):
            return
