"""The codec turns frames into typed messages and refuses malformed ones with a stable reason tag."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge.feed import codec  # codec.TestAnnouncement by name would be collected by pytest as tests
from bridge.feed.codec import (
    Announcement,
    DecodeError,
    FeedError,
    Heartbeat,
    UnknownMessage,
    Welcome,
    decode,
)

LIMIT = 64 * 1024

OLD_DOCS_ANNOUNCEMENT = {
    "type": "announcement",
    "title": "Binance Will List ABC, DEF and GHI",
    "ticker": "ABC,DEF,GHI",
    "publisher": "binance",
    "listingType": "spot_listing",
    "publishTimestampUs": 1710345000000000,
    "detectedTimestampUs": 1710345000005000,
    "dispatchTimestampUs": 1710345000006000,
}
NEW_DOCS_ANNOUNCEMENT = {
    "type": "announcement",
    "title": "Binance Will List TOKEN (TOKEN)",
    "ticker": "TOKEN",
    "publisher": "binance",
    "listingType": "spot_listing",
    "detectedTimestampUs": 1710345000005000,
    "dispatchTimestampUs": 1710345000006000,
    "abnormalDetectionLatency": False,
}


def frame(obj: Any) -> bytes:
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'{"type":"heartbeat","x":"\xff"}', "bad_utf8", id="bad-utf8"),
        pytest.param(b"not json", "not_json", id="not-json"),
        pytest.param("{'type': 'heartbeat'}", "not_json", id="not-json-text"),
        pytest.param(b"", "not_json", id="empty"),
        pytest.param(b"[1, 2]", "not_object", id="array"),
        pytest.param(b'"welcome"', "not_object", id="string"),
        pytest.param(b"{}", "no_type", id="no-type"),
        pytest.param(b'{"type": 3}', "no_type", id="type-not-string"),
        pytest.param(b'{"type": ""}', "no_type", id="type-empty"),
        pytest.param(frame({**NEW_DOCS_ANNOUNCEMENT, "ticker": None}), "bad_field", id="ticker-missing"),
        pytest.param(frame({**NEW_DOCS_ANNOUNCEMENT, "ticker": ["A"]}), "bad_field", id="ticker-list"),
        pytest.param(frame({**NEW_DOCS_ANNOUNCEMENT, "title": 5}), "bad_field", id="title-number"),
        pytest.param(frame({**NEW_DOCS_ANNOUNCEMENT, "publisher": None}), "bad_field", id="no-publisher"),
        pytest.param(
            frame({**NEW_DOCS_ANNOUNCEMENT, "detectedTimestampUs": "17"}),
            "event_time_invalid",
            id="timestamp-string",
        ),
        pytest.param(
            frame({**NEW_DOCS_ANNOUNCEMENT, "dispatchTimestampUs": 1.5}),
            "event_time_invalid",
            id="timestamp-float",
        ),
        pytest.param(
            frame({**NEW_DOCS_ANNOUNCEMENT, "detectedTimestampUs": True}),
            "event_time_invalid",
            id="timestamp-bool",
        ),
        pytest.param(
            frame({**NEW_DOCS_ANNOUNCEMENT, "detectedTimestampUs": -1}),
            "event_time_invalid",
            id="timestamp-negative",
        ),
        pytest.param(
            frame({**NEW_DOCS_ANNOUNCEMENT, "publishTimestampUs": 2**63 - 1}),
            "event_time_invalid",
            id="timestamp-2^63",
        ),
        pytest.param(
            frame({**NEW_DOCS_ANNOUNCEMENT, "detectedTimestampUs": 2**53}),
            "event_time_invalid",
            id="timestamp-2^53",
        ),
        pytest.param(
            b'{"type":"announcement","title":"t","ticker":"A","publisher":"p",'
            b'"detectedTimestampUs":123456789012345678901234567890}',
            "event_time_invalid",
            id="timestamp-past-64-bits",  # orjson reads it as a float
        ),
        pytest.param(
            b'{"type":"announcement","title":"t","ticker":"A","publisher":"p","detectedTimestampUs":1e400}',
            "not_json",
            id="timestamp-infinite",
        ),
        pytest.param(b'{"type":"heartbeat","x":NaN}', "not_json", id="nan"),
        pytest.param(frame({"type": "welcome", "allowedCex": ["binance"]}), "bad_field", id="allowed-list"),
        pytest.param(frame({"type": "welcome", "expiresInSecs": "soon"}), "bad_field", id="expiry-string"),
        pytest.param(b'{"type":"heartbeat","pad":"' + b"x" * LIMIT + b'"}', "oversized", id="oversized"),
    ],
)
def test_malformed_frames_raise_with_reason(data: bytes | str, reason: str) -> None:
    """Every malformed frame raises DecodeError tagged with a stable reason for counting."""
    with pytest.raises(DecodeError) as info:
        decode(data, max_bytes=LIMIT)
    assert info.value.reason == reason
    assert reason in codec.REASONS  # a fixed set: the bad-frame metric's label cannot grow unbounded


@pytest.mark.parametrize(
    ("ticker", "expected"),
    [
        ("ABC,DEF,GHI", ("ABC", "DEF", "GHI")),
        (" abc , def ,", ("ABC", "DEF")),
        ("X", ("X",)),
        ("A,B", ("A", "B")),
        ("", ()),
        (" , ", ()),
    ],
)
def test_ticker_splitting(ticker: str, expected: tuple[str, ...]) -> None:
    """`ticker` is a comma list: split, stripped, upper-cased, empties dropped (redacted tiers send "")."""
    msg = decode(frame({**NEW_DOCS_ANNOUNCEMENT, "ticker": ticker}), max_bytes=LIMIT)
    assert isinstance(msg, Announcement)
    assert msg.tickers == expected


def test_both_doc_versions_of_announcement_decode() -> None:
    """The older shape (with publishTimestampUs) and the newer one (extra unknown fields) both decode;
    unknown fields are ignored; the event time prefers detection, then dispatch, then publish."""
    old = decode(frame(OLD_DOCS_ANNOUNCEMENT), max_bytes=LIMIT, received_ns=1, received_mono_ns=2)
    new = decode(frame(NEW_DOCS_ANNOUNCEMENT), max_bytes=LIMIT)
    assert isinstance(old, Announcement) and isinstance(new, Announcement)
    assert old.publish_us == 1710345000000000 and new.publish_us is None
    assert old.event_us == new.event_us == 1710345000005000
    assert (old.received_ns, old.received_mono_ns) == (1, 2)
    assert old.tickers == ("ABC", "DEF", "GHI")
    only_publish = {**OLD_DOCS_ANNOUNCEMENT, "detectedTimestampUs": None, "dispatchTimestampUs": None}
    msg = decode(frame(only_publish), max_bytes=LIMIT)
    assert isinstance(msg, Announcement) and msg.event_us == 1710345000000000


def test_announcement_key_ignores_timestamps() -> None:
    """The dedupe key is the same for a resend with new timestamps, different for another ticker."""
    first = decode(frame(NEW_DOCS_ANNOUNCEMENT), max_bytes=LIMIT)
    resend = decode(frame({**NEW_DOCS_ANNOUNCEMENT, "dispatchTimestampUs": 1}), max_bytes=LIMIT)
    other = decode(frame({**NEW_DOCS_ANNOUNCEMENT, "ticker": "OTHER"}), max_bytes=LIMIT)
    assert isinstance(first, Announcement) and isinstance(resend, Announcement)
    assert isinstance(other, Announcement)
    assert first.key == resend.key != other.key


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [("*", None), (None, None), ("binance,upbit", frozenset({"binance", "upbit"})), ("", frozenset())],
)
def test_welcome_allowed_cex(allowed: str | None, expected: frozenset[str] | None) -> None:
    """allowedCex "*" (or absent) means every exchange (None); a comma list becomes a set; "" is empty."""
    msg = decode(frame({"type": "welcome", "tier": "premium", "allowedCex": allowed}), max_bytes=LIMIT)
    assert isinstance(msg, Welcome)
    assert msg.allowed_cex == expected


def test_welcome_fields_of_both_doc_versions() -> None:
    """Both welcome shapes decode; expiresInSecs may be null; unknown fields are ignored."""
    old = decode(
        frame({"type": "welcome", "tier": "premium", "allowedCex": "*", "expiresInSecs": 2592000}),
        max_bytes=LIMIT,
    )
    new = decode(
        frame(
            {
                "type": "welcome",
                "tier": "FreeDelayed",
                "allowedCex": "binance,upbit",
                "expiresInSecs": None,
                "maxDistinctIps": 2,
            }
        ),
        max_bytes=LIMIT,
    )
    assert isinstance(old, Welcome) and isinstance(new, Welcome)
    assert (old.tier, old.expires_in_secs) == ("premium", 2592000.0)
    assert (new.tier, new.expires_in_secs) == ("FreeDelayed", None)


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"type": "heartbeat", "timestampNs": 1, "timeUtc": "x"}, Heartbeat),
        ({"type": "heartbeat"}, Heartbeat),
        ({**NEW_DOCS_ANNOUNCEMENT, "type": "test_announcement"}, codec.TestAnnouncement),
        ({"type": "error", "code": "test_rate_limited", "retryAfterSecs": 42}, FeedError),
        ({"type": "brand_new_thing", "x": 1}, UnknownMessage),
    ],
)
def test_message_types(obj: dict[str, Any], kind: type) -> None:
    """Each documented type maps to its class; an unknown type is UnknownMessage, not an error."""
    data = frame(obj)
    assert isinstance(decode(data, max_bytes=LIMIT), kind)
    assert isinstance(decode(data.decode(), max_bytes=LIMIT), kind)  # text frames decode the same


def test_test_announcement_is_not_an_announcement() -> None:
    """A test_announcement can never be mistaken for a tradable Announcement."""
    msg = decode(frame({**NEW_DOCS_ANNOUNCEMENT, "type": "test_announcement"}), max_bytes=LIMIT)
    assert not isinstance(msg, Announcement)
    assert isinstance(msg, codec.TestAnnouncement) and msg.announcement.tickers == ("TOKEN",)


def test_feed_error_fields() -> None:
    """An error message carries its code and retryAfterSecs."""
    msg = decode(frame({"type": "error", "code": "test_rate_limited", "retryAfterSecs": 42}), max_bytes=LIMIT)
    assert isinstance(msg, FeedError)
    assert (msg.code, msg.retry_after_secs) == ("test_rate_limited", 42.0)


def test_repeated_tickers_are_one_each_in_order() -> None:
    """A ticker repeated (in any case, with spaces) is one ticker; the order of first mention is kept."""
    msg = decode(frame({**NEW_DOCS_ANNOUNCEMENT, "ticker": "ABC, def,abc,DEF ,GHI,ABC"}), max_bytes=LIMIT)
    assert isinstance(msg, Announcement) and msg.tickers == ("ABC", "DEF", "GHI")


@pytest.mark.parametrize(
    ("ticker", "kept", "refused"),
    [
        ("ABC,BTC/USDT,XYZ", ("ABC", "XYZ"), 1),
        ("ABC,BTC:USDT", ("ABC",), 1),
        ("ABC,A B,\u0000X,\tY", ("ABC", "Y"), 2),  # inner space, control character; outer tab stripped
        ("ABC," + "L" * 33, ("ABC",), 1),
        ("币安人生,1000SATS", ("币安人生", "1000SATS"), 0),  # any script, digits first
    ],
)
def test_entries_that_are_not_tickers_are_dropped_and_counted(
    ticker: str, kept: tuple[str, ...], refused: int
) -> None:
    """A "ticker" that would build another symbol (`/`, `:`), holds whitespace or control characters,
    or is longer than 32 characters is never traded: dropped, and counted in `refused_tickers` for the
    admission's log line. The rest of the announcement stands."""
    msg = decode(frame({**NEW_DOCS_ANNOUNCEMENT, "ticker": ticker}), max_bytes=LIMIT)
    assert isinstance(msg, Announcement)
    assert (msg.tickers, msg.refused_tickers) == (kept, refused)
    assert all(codec.is_ticker(t) for t in msg.tickers)
