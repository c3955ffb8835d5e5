"""bridge.retry: the one backoff and the one Retry-After parser every caller shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bridge.retry import backoff_delay, parse_retry_after, retry_after_header


def test_backoff_doubles_from_first_and_stays_within_bounds() -> None:
    """Doubling from `first`, jitter on top, never below `first` nor above `cap`."""
    assert [backoff_delay(n, 1.0, 100.0, jitter=0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(1, 5.0, 300.0, 0.999) < 6.25
    assert backoff_delay(200, 5.0, 300.0, 0.999) <= 300.0
    assert backoff_delay(200, 5.0, 300.0, 0.0) == 240.0  # room left under the cap for jitter
    assert backoff_delay(3, 2.0, 2.0, 0.5) == 2.0
    assert backoff_delay(0, 1.0, 10.0) == 1.0  # a zero or negative attempt is the first


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        (3, 3.0),
        (2.5, 2.5),
        ("0", 0.0),
        (None, None),
        ("soon", None),
        ("-1", None),
        ("nan", None),
        (True, None),
        ({"s": 1}, None),
        (str(86400 * 30), None),  # a month is not a delay
    ],
)
def test_parse_retry_after_values(value: object, expected: float | None) -> None:
    """Delta-seconds as text or a JSON number; anything else is None (never an exception)."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    """The HTTP-date form gives the seconds until then; a date in the past gives 0."""
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0


def test_retry_after_header_is_case_insensitive() -> None:
    """Servers spell the header any way; an absent header or no headers is None."""
    assert retry_after_header({"retry-after": "4"}) == 4.0
    assert retry_after_header({"RETRY-AFTER": "4"}) == 4.0
    assert retry_after_header({"Content-Type": "text/plain"}) is None
    assert retry_after_header(None) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Bapi-Limit-Reset-Timestamp": "1000000003.5"}, 3.5),  # in seconds
        ({"X-Bapi-Limit-Reset-Timestamp": "1000000003500"}, 3.5),  # bybit v5: epoch milliseconds
        ({"x-gate-ratelimit-reset-timestamp": "1000000002000"}, 2.0),  # gate
        ({"X-Bapi-Limit-Reset-Timestamp": "999999999000"}, 0.0),  # already past: at once
        ({"Retry-After": "7", "X-Bapi-Limit-Reset-Timestamp": "1000000003500"}, 7.0),  # Retry-After wins
        ({"X-Bapi-Limit-Reset-Timestamp": "soon"}, None),
    ],
)
def test_a_venues_reset_moment_is_a_delay(headers: dict[str, str], expected: float | None) -> None:
    """Bybit (on every response, also a rate-limited HTTP 200) and Gate say when the window resets, as an
    epoch time: read through the one parser as the seconds left (now = 1,000,000,000 s)."""
    assert retry_after_header(headers, now=1_000_000_000.0) == expected
