"""Property tests for the frame decoder through the feed reader: any frame (bytes, text, JSON-shaped
objects with any field values) is a typed message or exactly one counted, logged refusal; never an
exception, never an announcement with a field that is not what it claims (see `assert_valid`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import orjson
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import telemetry
from bridge.config import FeedConfig
from bridge.feed.client import FeedReader
from bridge.feed.codec import MAX_EVENT_US, REASONS, Announcement, DecodeError, decode, is_ticker
from bridge.secrets import Secret
from bridge.trading.admission import cap_tickers, event_time_problem

LIMIT = 16 * 1024
NOW_NS = 1_800_000_000 * 10**9

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_ticker_list = st.lists(st.text(alphabet=st.sampled_from("ABCxyz1/: \t\x00币,"), max_size=6), max_size=8).map(
    ",".join
)
_timestamp = _json | st.integers(min_value=-(2**64), max_value=2**64) | st.sampled_from([2**53 - 1, 2**53, 0])
_message = st.fixed_dictionaries(
    {"type": st.sampled_from(["announcement", "test_announcement", "welcome", "heartbeat", "error", "zz"])},
    optional={
        "title": _json | st.text(max_size=30),
        "ticker": _json | _ticker_list,
        "publisher": _json | st.text(max_size=10),
        "listingType": _json,
        "detectedTimestampUs": _timestamp,
        "dispatchTimestampUs": _timestamp,
        "publishTimestampUs": _timestamp,
        "allowedCex": _json,
        "expiresInSecs": _json,
        "code": _json,
        "retryAfterSecs": _json,
    },
)


def assert_valid(a: Announcement) -> None:
    """What every decoded announcement guarantees to the trading side and to SQLite."""
    assert isinstance(a.title, str) and isinstance(a.listing_type, str) and a.listing_type
    assert a.publisher == a.publisher.strip().lower()
    assert all(is_ticker(t) and t == t.upper() for t in a.tickers)
    assert len(set(a.tickers)) == len(a.tickers)
    assert isinstance(a.refused_tickers, int) and a.refused_tickers >= 0
    for ts in (a.detected_us, a.dispatch_us, a.publish_us):
        assert ts is None or (type(ts) is int and 0 <= ts < MAX_EVENT_US < 2**63)
    assert len(a.key) == 24
    capped = cap_tickers(a, 3)
    assert capped.kept == a.tickers[:3] and capped.refused == max(len(a.tickers) - 3, 0) + a.refused_tickers
    # an admitted announcement's event time is never ahead of the clock by more than the skew
    if event_time_problem(a, NOW_NS, 2.0) is None and a.event_us is not None:
        assert a.event_us <= NOW_NS // 1000 + 2_000_000


def _bad_frames() -> dict[str, float]:
    return {r: telemetry.value("bridge_feed_bad_frames_total", reason=r) for r in REASONS}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _through_the_reader(loop: asyncio.AbstractEventLoop, data: bytes) -> None:
    """Hand `data` to a feed reader as one frame: an announcement is queued (valid), anything else is
    handled, a refusal is counted once under a known reason and logged once."""
    queue: asyncio.Queue[Announcement] = asyncio.Queue()
    reader = FeedReader(FeedConfig(api_key=Secret("k"), max_frame_bytes=LIMIT), queue)

    async def one() -> bool:
        return reader._frame(data)

    before = _bad_frames()
    with structlog.testing.capture_logs() as logs:
        decoded = loop.run_until_complete(one())
    after = _bad_frames()
    refusals = [e for e in logs if e["event"] == "feed.bad_frame"]
    if decoded:
        assert before == after and refusals == []
    else:
        changed = {r: after[r] - before[r] for r in REASONS if after[r] != before[r]}
        assert list(changed.values()) == [1.0] and len(refusals) == 1
        assert refusals[0]["reason"] in changed
    while not queue.empty():
        assert_valid(queue.get_nowait())


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_message_or_one_counted_refusal(loop: asyncio.AbstractEventLoop, data: bytes) -> None:
    """Arbitrary bytes through the reader: never an exception, a refusal counted and logged once."""
    _through_the_reader(loop, data)


@settings(max_examples=150, deadline=None)
@given(_message)
def test_any_message_shaped_object_is_valid_or_refused(
    loop: asyncio.AbstractEventLoop, obj: dict[str, object]
) -> None:
    """Feed-message-shaped objects with any values (timestamps past 64 bits, floats, bools, ticker
    lists of separators and control characters): valid announcements only, else a counted refusal."""
    _through_the_reader(loop, json.dumps(obj).encode())  # stdlib json writes integers past 64 bits too


@settings(max_examples=100, deadline=None)
@given(_message, st.sampled_from(["bytes", "text"]))
def test_decode_never_raises_anything_but_a_known_reason(obj: dict[str, object], form: str) -> None:
    """decode() itself, on bytes or text frames: a message, or a DecodeError whose reason is one of
    REASONS (the metric label set stays fixed)."""
    raw = json.dumps(obj, ensure_ascii=False)
    data: bytes | str = raw.encode() if form == "bytes" else raw
    try:
        message = decode(data, max_bytes=LIMIT)
    except DecodeError as exc:
        assert exc.reason in REASONS
        return
    if isinstance(message, Announcement):
        assert_valid(message)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ABCD", min_size=1, max_size=2), min_size=1, max_size=400))
def test_ticker_floods_are_deduped_and_capped(tickers: list[str]) -> None:
    """However many tickers (and repeats) a frame names: distinct, in order of first mention, at most
    the cap once admitted; the key does not depend on the cap."""
    frame = {"type": "announcement", "title": "t", "ticker": ",".join(tickers), "publisher": "p"}
    a = decode(orjson.dumps(frame), max_bytes=LIMIT)
    assert isinstance(a, Announcement)
    assert a.tickers == tuple(dict.fromkeys(tickers))
    capped = cap_tickers(a, 5)
    assert capped.kept == a.tickers[:5] and capped.announcement.key == a.key
