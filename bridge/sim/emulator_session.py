"""One client of the feed emulator, held to the protocol page's rules: a PING every 15 s and a close
frame when no PONG came for 30 s, client frames over 1 KB closed 1009 `frame_too_large`, more than 30
client messages a minute closed 1008 `rate_limit_exceeded`, test requests once a minute per key.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import orjson
import structlog
from aiohttp import web

from bridge.sim.feed_messages import announcement, encode, is_test_request

log = structlog.get_logger(__name__)

KeyStatus = Literal["missing", "unknown", "valid"]

# The page names no close code for a missing PONG; its table files "no PONG" under "other (1006, 1001,
# ...)", and 1006 can never be sent in a frame: 1001 it is, with a reason saying why.
PONG_TIMEOUT_CLOSE = (1001, "pong_timeout")
FRAME_TOO_LARGE_CLOSE = (1009, "frame_too_large")
RATE_LIMIT_CLOSE = (1008, "rate_limit_exceeded")
_CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class KeyGrant:
    """What a key may see. `exchanges` None means every exchange ("*")."""

    exchanges: frozenset[str] | None = None
    tier: str = "premium"
    expires_in_secs: int | None = None


@dataclass(frozen=True)
class Handshake:
    """One upgrade request as the emulator saw it; the key itself is never kept here."""

    status: int
    key_status: KeyStatus
    headers: dict[str, str]  # X-API-Key shown as "***"
    query: dict[str, str]  # api_key shown as "***"

    @property
    def cex(self) -> tuple[str, ...] | None:
        value = self.query.get("cex")
        return None if value is None else tuple(c for c in value.split(",") if c)


@dataclass(frozen=True)
class Limits:
    """The protocol page's numbers, injectable so tests run in milliseconds. None turns one off."""

    ping_interval: float | None = 15.0  # seconds between WebSocket PINGs
    pong_timeout: float | None = 30.0  # no PONG for this long: close frame PONG_TIMEOUT_CLOSE
    max_frame: int = 1024  # bytes per client frame; larger: FRAME_TOO_LARGE_CLOSE
    max_messages: int = 30  # client messages per `message_window`; one more: RATE_LIMIT_CLOSE
    message_window: float = 60.0
    test_interval: float = 60.0  # seconds between answered test requests, per key


class Policy:
    """The limits, the clock they are measured on, and what is shared between a key's connections."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._last_test: dict[str, float] = {}

    def test_allowed(self, key: str) -> int | None:
        """None if a test request with `key` may be answered now (and note it), else the seconds to
        wait, rounded up, as `retryAfterSecs` says."""
        now = self.clock()
        since = now - self._last_test.get(key, -math.inf)
        if since < self.limits.test_interval:
            return max(1, math.ceil(self.limits.test_interval - since))
        self._last_test[key] = now
        return None


class FeedSocket(web.WebSocketResponse):
    """aiohttp closes an oversized client frame with 1009 and no reason; the feed says why."""

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        if code == FRAME_TOO_LARGE_CLOSE[0] and not message:
            message = FRAME_TOO_LARGE_CLOSE[1].encode()
        return await super().close(code=code, message=message, drain=drain)


def feed_socket(limits: Limits) -> FeedSocket:
    # autoping off: PONGs must reach the read loop to be timed; PINGs are answered there.
    # aiohttp refuses a payload of max_msg_size bytes or more, so +1 lets exactly max_frame through.
    return FeedSocket(
        autoping=False, max_msg_size=limits.max_frame + 1, timeout=_CLOSE_TIMEOUT, compress=False
    )


@dataclass(eq=False)
class Client:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    exchanges: frozenset[str] | None  # None: all
    key: str = field(default="", repr=False)  # the API key it connected with, for targeted sends
    heartbeat_task: asyncio.Task[None] | None = field(default=None, repr=False)
    last_pong: float = 0.0  # Policy.clock() time of the last PONG (or of the connect)
    recent: deque[float] = field(default_factory=deque, repr=False)  # times of its recent messages
    pongs: int = 0

    def wants(self, publisher: str) -> bool:
        return self.exchanges is None or publisher in self.exchanges

    async def serve(
        self,
        policy: Policy,
        on_message: Callable[[bytes], Awaitable[None]],
        on_pong: Callable[[], Awaitable[None]],
    ) -> None:
        """Read until the client is gone, with PINGs going out alongside; `on_message` gets each data
        frame the client sent, `on_pong` is called after each PONG."""
        self.last_pong = policy.clock()
        keepalive = None
        if policy.limits.ping_interval is not None:
            keepalive = asyncio.create_task(self._keepalive(policy, policy.limits.ping_interval))
        try:
            await self._read(policy, on_message, on_pong)
        finally:
            if keepalive is not None:
                keepalive.cancel()

    async def _read(
        self,
        policy: Policy,
        on_message: Callable[[bytes], Awaitable[None]],
        on_pong: Callable[[], Awaitable[None]],
    ) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.PING:
                await self.ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.PONG:
                self.last_pong = policy.clock()
                self.pongs += 1
                await on_pong()
            elif msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                await on_message(data)
                if not self._within_rate(policy):
                    log.info("emulator.client_closed", code=RATE_LIMIT_CLOSE[0], reason=RATE_LIMIT_CLOSE[1])
                    await self.ws.close(code=RATE_LIMIT_CLOSE[0], message=RATE_LIMIT_CLOSE[1].encode())
                    return
                if is_test_request(data):
                    await self._answer_test(policy)
            else:
                if msg.type is aiohttp.WSMsgType.ERROR:
                    log.info("emulator.client_closed", code=self.ws.close_code, error=str(msg.data))
                return  # CLOSE, CLOSING, CLOSED or ERROR: the client is gone

    def _within_rate(self, policy: Policy) -> bool:
        now = policy.clock()
        self.recent.append(now)
        while self.recent and self.recent[0] <= now - policy.limits.message_window:
            self.recent.popleft()
        return len(self.recent) <= policy.limits.max_messages

    async def _answer_test(self, policy: Policy) -> None:
        retry_after = policy.test_allowed(self.key)
        if retry_after is None:
            await send_to(self, encode(announcement("test_announcement", {})), binary=True)
        else:
            error = {"type": "error", "code": "test_rate_limited", "retryAfterSecs": retry_after}
            await send_to(self, orjson.dumps(error), binary=True)

    async def _keepalive(self, policy: Policy, interval: float) -> None:
        timeout = policy.limits.pong_timeout
        while not self.ws.closed:
            await asyncio.sleep(interval)  # the server's own cadence, not test synchronisation
            if timeout is not None and policy.clock() - self.last_pong >= timeout:
                code, reason = PONG_TIMEOUT_CLOSE
                log.info("emulator.client_closed", code=code, reason=reason)
                await self.ws.close(code=code, message=reason.encode())
                return
            try:
                await self.ws.ping()
            except (ConnectionError, RuntimeError):
                return  # closing under us: the reader sees it too


async def send_to(client: Client, data: bytes, binary: bool) -> int | None:
    """Write one frame; the wall-clock ns taken right before the write, or None if it was not sent."""
    if client.ws.closed:
        return None
    kind = aiohttp.WSMsgType.BINARY if binary else aiohttp.WSMsgType.TEXT
    stamp = time.time_ns()
    try:
        await client.ws.send_frame(data, kind)
    except (ConnectionError, aiohttp.ClientError, RuntimeError):
        return None  # the client went away mid-broadcast; the others still get the frame
    return stamp


def allowed(granted: frozenset[str] | None, cex: str | None) -> frozenset[str] | None:
    if cex is None:
        return granted
    wanted = frozenset(c.strip().lower() for c in cex.split(",") if c.strip())
    return wanted if granted is None else granted & wanted


def redact(values: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if k.lower() in ("x-api-key", "api_key") else v) for k, v in values.items()}
