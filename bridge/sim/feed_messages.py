"""What the emulator writes on the wire: the feed's messages (welcome, heartbeat, announcements) and
its HTTP refusals of an upgrade. The scripts it plays are stream files (bridge/feed/stream_format.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

_DEFAULT_ERRORS = {
    400: "malformed_upgrade",
    401: "missing_api_key",
    403: "invalid_api_key",
    426: "upgrade_required",
    429: "connection_rate_limit_exceeded",
}


def encode(message: dict[str, Any] | bytes | str) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    return orjson.dumps(message)


def welcome(tier: str, exchanges: frozenset[str] | None, expires_in_secs: int | None) -> dict[str, Any]:
    return {
        "type": "welcome",
        "tier": tier,
        "allowedCex": "*" if exchanges is None else ",".join(sorted(exchanges)),
        "expiresInSecs": expires_in_secs,
        "maxConnections": 5,
    }


def heartbeat() -> dict[str, Any]:
    now_ns = time.time_ns()
    stamp = datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"type": "heartbeat", "timestampNs": now_ns, "timeUtc": stamp}


def announcement(mtype: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    now_us = time.time_ns() // 1000
    message: dict[str, Any] = {
        "type": mtype,
        "title": "Binance Will List Emulated Token (EMU)",
        "ticker": "EMU",
        "publisher": "binance",
        "listingType": "spot_listing",
        "detectedTimestampUs": now_us,
        "dispatchTimestampUs": now_us,
    }
    message.update(fields)
    return message


@dataclass
class Rejection:
    status: int
    retry_after: int | None
    error: str | None
    body: dict[str, Any] | bytes | None


def rejection_response(rejection: Rejection) -> web.Response:
    headers = {} if rejection.retry_after is None else {"Retry-After": str(rejection.retry_after)}
    body = rejection.body
    if body is None:
        body = {"error": rejection.error or _DEFAULT_ERRORS.get(rejection.status, "error")}
        if rejection.retry_after is not None:
            body["retry_after_s"] = rejection.retry_after
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(status=rejection.status, body=data, headers=headers, content_type="application/json")


def is_test_request(data: bytes) -> bool:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("type") == "test"
