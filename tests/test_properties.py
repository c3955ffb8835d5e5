"""Property tests over hostile input: any frame decodes to a typed message or a DecodeError (never
another exception, never an announcement with invalid fields); any YAML document loads to a Config or
one ConfigError line, within a time bound."""

from __future__ import annotations

import json
import time

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import config
from bridge.errors import ConfigError
from bridge.feed.codec import MAX_EVENT_US, Announcement, DecodeError, decode

LIMIT = 64 * 1024

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {"type": st.sampled_from(["announcement", "test_announcement", "welcome", "heartbeat", "error", "x"])},
    optional={
        "title": _json,
        "ticker": _json | st.text(alphabet="ABC, ", max_size=30),
        "publisher": _json,
        "listingType": _json,
        "detectedTimestampUs": _json | st.integers(min_value=-(2**70), max_value=2**70),
        "dispatchTimestampUs": _json,
        "publishTimestampUs": _json,
        "allowedCex": _json,
        "expiresInSecs": _json,
    },
)


def _check(data: bytes | str) -> None:
    try:
        msg = decode(data, max_bytes=LIMIT)
    except DecodeError as exc:
        assert exc.reason
        return
    if isinstance(msg, Announcement):
        assert msg.title and isinstance(msg.title, str) and msg.publisher == msg.publisher.lower()
        assert all(t and t == t.upper() for t in msg.tickers) and len(set(msg.tickers)) == len(msg.tickers)
        for ts in (msg.detected_us, msg.dispatch_us, msg.publish_us):
            assert ts is None or (isinstance(ts, int) and 0 <= ts < MAX_EVENT_US)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_refuse(data: bytes) -> None:
    """Arbitrary bytes: a typed message or a DecodeError with a reason, nothing else."""
    _check(data)


@settings(max_examples=300, deadline=None)
@given(_fields)
def test_any_message_shaped_object_decodes_or_refuses(obj: dict[str, object]) -> None:
    """Objects shaped like feed messages with any field values: valid announcements only."""
    _check(json.dumps(obj))  # stdlib json writes integers past 64 bits too


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.dictionaries(
            st.sampled_from(["feed", "trading", "exchanges", "strategies", "health", "alerts", "log", "x"]),
            _json,
            max_size=5,
        ).map(lambda d: yaml.safe_dump(d)),
    )
)
def test_any_yaml_loads_or_fails_with_one_line(text: str) -> None:
    """Any document: a Config, or one ConfigError line naming the file, within a second."""
    began = time.monotonic()
    try:
        config.loads(text, "config.yaml", env={})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("config.yaml") and "\n" not in message
    assert time.monotonic() - began < 1.0
