"""Builders for test data: announcements as the feed would deliver them."""

from __future__ import annotations

import time
from typing import Any

import orjson

from bridge.feed.codec import Announcement, decode


def announcement_frame(
    tickers: str = "ABC",
    *,
    publisher: str = "upbit",
    listing_type: str = "spot_listing",
    title: str | None = None,
    detected_us: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    now_us = time.time_ns() // 1000
    return {
        "type": "announcement",
        "title": title if title is not None else f"{publisher} will list {tickers}",
        "ticker": tickers,
        "publisher": publisher,
        "listingType": listing_type,
        "detectedTimestampUs": now_us if detected_us is None else detected_us,
        "dispatchTimestampUs": now_us if detected_us is None else detected_us,
        **extra,
    }


def announcement(tickers: str = "ABC", **kwargs: Any) -> Announcement:
    msg = decode(
        orjson.dumps(announcement_frame(tickers, **kwargs)),
        max_bytes=1 << 20,
        received_ns=time.time_ns(),
        received_mono_ns=time.perf_counter_ns(),
    )
    assert isinstance(msg, Announcement)
    return msg
