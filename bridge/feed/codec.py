"""Pure decoding of cryptolisting.ws frames into typed messages. No I/O, no clock: the reader passes
the receipt time in. Unknown fields are ignored; wrong types, bad JSON or bad UTF-8 raise DecodeError.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

# Every reason a frame is refused for: a fixed set, so a metric labelled by it cannot grow without bound.
REASONS = frozenset(
    {"oversized", "bad_utf8", "not_json", "not_object", "no_type", "bad_field", "event_time_invalid"}
)


class DecodeError(ValueError):
    """A frame could not be decoded. `reason` is a short stable tag for counting (one of REASONS)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Welcome:
    tier: str
    allowed_cex: frozenset[str] | None  # None: all exchanges ("*")
    expires_in_secs: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Announcement:
    """A listing announcement. `key` identifies the same announcement delivered twice (the feed has no
    id): a hash of publisher, listing type, title and tickers, but not of timestamps, which a resend
    may change. `received_ns` is time.time_ns() and `received_mono_ns` time.perf_counter_ns() at
    receipt, both set by the reader. `refused_tickers` counts entries of the ticker list that are not
    tickers (see is_ticker), dropped here and reported with the admission's one log line."""

    title: str
    tickers: tuple[str, ...]
    publisher: str
    listing_type: str
    detected_us: int | None
    dispatch_us: int | None
    publish_us: int | None
    key: str
    received_ns: int
    received_mono_ns: int
    raw: dict[str, Any] = field(repr=False, compare=False)
    refused_tickers: int = 0
    link: str | None = None  # the feed link that delivered it (feed.links); None: the single link

    @property
    def event_us(self) -> int | None:
        """When the event happened: detection time, else dispatch time, else publish time."""
        for ts in (self.detected_us, self.dispatch_us, self.publish_us):
            if ts is not None:
                return ts
        return None

    def age_ms(self, now_ns: int) -> float | None:
        """Age of the event at wall-clock time `now_ns`, in milliseconds (None if no timestamp)."""
        ts = self.event_us
        return None if ts is None else (now_ns / 1000 - ts) / 1000


@dataclass(frozen=True, slots=True)
class TestAnnouncement:
    """Answer to a client's test request. Deliberately not an Announcement: it can never be traded."""

    __test__ = False  # not a pytest test class, despite the name

    announcement: Announcement


@dataclass(frozen=True, slots=True)
class FeedError:
    code: str
    retry_after_secs: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    type: str
    raw: dict[str, Any] = field(repr=False, compare=False)


Message = Welcome | Heartbeat | Announcement | TestAnnouncement | FeedError | UnknownMessage


def decode(
    data: bytes | str,
    *,
    max_bytes: int,
    received_ns: int = 0,
    received_mono_ns: int = 0,
    link: str | None = None,
) -> Message:
    """Decode one frame. Raises DecodeError with a reason tag for anything malformed."""
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("bad_utf8", "frame is not valid UTF-8") from None
        raise DecodeError("not_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise DecodeError("not_object", f"expected a JSON object, got {type(obj).__name__}")
    mtype = obj.get("type")
    if not isinstance(mtype, str) or not mtype:
        raise DecodeError("no_type", "object has no string 'type' field")
    if mtype == "heartbeat":
        return Heartbeat(obj)
    if mtype == "announcement":
        return _announcement(obj, received_ns, received_mono_ns, link)
    if mtype == "test_announcement":
        return TestAnnouncement(_announcement(obj, received_ns, received_mono_ns, link))
    if mtype == "welcome":
        return _welcome(obj)
    if mtype == "error":
        code = _opt(obj, "code", str) or "unknown"
        retry = _opt_number(obj, "retryAfterSecs")
        return FeedError(code, retry, obj)
    return UnknownMessage(mtype, obj)


def _announcement(
    obj: dict[str, Any], received_ns: int, received_mono_ns: int, link: str | None = None
) -> Announcement:
    title = _req(obj, "title", str)
    ticker = _req(obj, "ticker", str)
    publisher = _req(obj, "publisher", str).strip().lower()
    listing_type = _opt(obj, "listingType", str) or "unknown"
    # Order kept, duplicates dropped: "ABC,ABC,abc" is one coin (a repeated ticker is never two orders).
    named = dict.fromkeys(t.strip().upper() for t in ticker.split(",") if t.strip())
    tickers = tuple(t for t in named if is_ticker(t))
    key_src = "\x1f".join((publisher, listing_type, title.strip(), ",".join(tickers)))
    key = hashlib.blake2b(key_src.encode(), digest_size=12).hexdigest()
    return Announcement(
        title=title,
        tickers=tickers,
        publisher=publisher,
        listing_type=listing_type,
        detected_us=_opt_time(obj, "detectedTimestampUs"),
        dispatch_us=_opt_time(obj, "dispatchTimestampUs"),
        publish_us=_opt_time(obj, "publishTimestampUs"),
        key=key,
        received_ns=received_ns,
        received_mono_ns=received_mono_ns,
        raw=obj,
        refused_tickers=len(named) - len(tickers),
        link=link,
    )


MAX_TICKER_CHARS = 32
# What can never be part of a coin's ticker: symbol separators ccxt uses (BASE/QUOTE:SETTLE) and
# whitespace. Letters of any script are allowed: listings such as a Chinese-named coin are real.
_NOT_IN_TICKER = frozenset("/:,")


def is_ticker(text: str) -> bool:
    """Whether `text` can be a coin's ticker: 1-32 printable characters, no whitespace, no `/` `:` `,`
    (a "ticker" that would build another symbol, e.g. `BTC/USDT:USDT`, is not one)."""
    return (
        0 < len(text) <= MAX_TICKER_CHARS
        and text.isprintable()
        and not any(ch.isspace() or ch in _NOT_IN_TICKER for ch in text)
    )


def _welcome(obj: dict[str, Any]) -> Welcome:
    tier = _opt(obj, "tier", str) or "unknown"
    allowed = _opt(obj, "allowedCex", str)
    allowed_set: frozenset[str] | None
    if allowed is None or allowed.strip() == "*":
        allowed_set = None
    else:
        allowed_set = frozenset(c.strip().lower() for c in allowed.split(",") if c.strip())
    return Welcome(tier, allowed_set, _opt_number(obj, "expiresInSecs"), obj)


def _req(obj: dict[str, Any], name: str, tp: type[str]) -> str:
    value = obj.get(name)
    if not isinstance(value, tp):
        got = "missing" if value is None else type(value).__name__
        raise DecodeError("bad_field", f"{obj.get('type')}.{name}: expected string, got {got}")
    return value


def _opt(obj: dict[str, Any], name: str, tp: type[str]) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, tp):
        raise DecodeError(
            "bad_field", f"{obj.get('type')}.{name}: expected string, got {type(value).__name__}"
        )
    return value


def _opt_int(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(
            "bad_field", f"{obj.get('type')}.{name}: expected integer, got {type(value).__name__}"
        )
    return value


# Event times are microseconds since the epoch: anything negative or past 2**53 (year ~2255, and the
# largest integer a float or a JSON consumer keeps exactly) is not a time; SQLite's INTEGER stops at 2**63.
MAX_EVENT_US = 2**53


def _opt_time(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_EVENT_US:
        shown = type(value).__name__ if not isinstance(value, int) or isinstance(value, bool) else value
        raise DecodeError(
            "event_time_invalid", f"{obj.get('type')}.{name}: not a time in microseconds ({shown})"
        )
    return value


def _opt_number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            "bad_field", f"{obj.get('type')}.{name}: expected number, got {type(value).__name__}"
        )
    return float(value)
