"""The feed client: opens one cryptolisting.ws connection and reads it with a loop that only decodes,
enqueues and counts. Whether and when to reconnect is bridge.feed.supervisor's business.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

import aiohttp
import orjson
import structlog
from aiohttp.http import WSMessageNoDecodeText

from bridge.config import FeedConfig
from bridge.feed import metrics
from bridge.feed.codec import (
    Announcement,
    DecodeError,
    FeedError,
    Heartbeat,
    Message,
    TestAnnouncement,
    UnknownMessage,
    Welcome,
    decode,
)
from bridge.retry import parse_retry_after, retry_after_header
from bridge.secrets import clip

log = structlog.get_logger(__name__)

FeedSocket = aiohttp.ClientWebSocketResponse[Literal[False]]

KEY_EXPIRY_WARNING_SECS = 7 * 24 * 3600
# Our own PINGs are only for a dead TCP path. aiohttp sends one only after this much silence, and the
# server PINGs every 15 s, so against a live server we never send anything (client frames are rate
# limited by the feed).
MIN_CLIENT_PING_INTERVAL = 20.0
CLOSE_TIMEOUT = 1.0
_MAX_ERROR_BODY = 4096
# An announcement's metrics and `announcement.received` line wait this long, so they run after the
# order it causes is on the wire. Rendering and writing the line moved to the log writer thread, but
# the call still builds the event and its record on this thread: measured with that change, doing the
# bookkeeping at once took the reader ~100 us at p50 more than deferring it, the order path's size.
BOOKKEEPING_DELAY_S = 0.005
_MAX_UNKNOWN_TYPES_LOGGED = 64
# Announcements waiting for the dispatcher, at most (the queue the daemon gives the reader): a bound on
# memory if the dispatcher ever stops taking them. Past it a new announcement is dropped, logged
# (`announcement.dropped`, an error) and counted; one that waited behind 10,000 others would be far
# older than trading.max_event_age anyway.
MAX_QUEUED = 10_000
# Empty zero-timeout reads after which an expired watchdog is believed: the first lets the loop read
# the socket once more, the second finds nothing queued (see FeedReader._drain).
_DRAIN_EMPTY_ROUNDS = 2

Cause = Literal["closed", "closing", "dropped", "error", "reset", "stale"]


class FeedDown(Exception):
    """The connection is gone or could not be opened. bridge.feed.supervisor decides whether and when to
    connect again; nothing else should catch this."""

    cause: str = "down"


class HandshakeRejected(FeedDown):
    """The server answered the upgrade with an HTTP error. Carries only safe fields: aiohttp's own
    exception holds the request headers, i.e. the API key."""

    def __init__(self, status: int, retry_after: float | None, error: str | None) -> None:
        super().__init__(f"handshake rejected with HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.error = error
        self.cause = f"http_{status}"


class ConnectFailed(FeedDown):
    """No HTTP answer at all: DNS, TCP, TLS or handshake timeout. `error` is the exception type name."""

    cause = "connect_failed"

    def __init__(self, error: str) -> None:
        super().__init__(f"connect failed: {error}")
        self.error = error


class ConnectionLost(FeedDown):
    """An open connection ended. `healthy` says it had a welcome and at least one message after it,
    which is what resets the reconnect backoff."""

    def __init__(
        self, cause: Cause, *, code: int | None, reason: str, healthy: bool, error: str | None = None
    ) -> None:
        super().__init__(f"connection lost ({cause}, code {code}, reason {reason!r})")
        self.cause = cause
        self.code = code
        self.reason = reason
        self.healthy = healthy
        self.error = error


def open_session(cfg: FeedConfig) -> aiohttp.ClientSession:
    """A session for the feed: the handshake is bounded by `handshake_timeout` (aiohttp's default is
    300 s) and a middleware keeps the JSON body of a refused upgrade, which aiohttp otherwise drops."""
    timeout = aiohttp.ClientTimeout(total=cfg.handshake_timeout)
    return aiohttp.ClientSession(timeout=timeout, middlewares=(_keep_error_body,))


async def connect(session: aiohttp.ClientSession, cfg: FeedConfig) -> FeedSocket:
    """Open the WebSocket. Raises HandshakeRejected or ConnectFailed; never lets aiohttp's exceptions
    (whose repr carries the key) escape."""
    params = {"cex": ",".join(cfg.cex)} if cfg.cex else None
    body = _ErrorBody()
    token = _ERROR_BODY.set(body)
    try:
        return await session.ws_connect(
            cfg.url,
            headers={"X-API-Key": cfg.key.reveal()},
            params=params,
            autoping=True,
            heartbeat=max(MIN_CLIENT_PING_INTERVAL, cfg.heartbeat_timeout / 2),
            # Up to twice the limit is read and then refused by the codec as one bad frame, so an odd
            # big frame does not cost a reconnect; beyond that aiohttp ends the connection.
            max_msg_size=2 * cfg.max_frame_bytes,
            decode_text=False,  # text frames as bytes: orjson parses bytes, bad UTF-8 is a bad frame
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
        )
    except aiohttp.WSServerHandshakeError as exc:
        retry_after = body.retry_after_s
        if retry_after is None and exc.headers is not None:
            retry_after = retry_after_header(exc.headers)
        raise HandshakeRejected(exc.status, retry_after, body.error) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ConnectFailed(type(exc).__name__) from None
    finally:
        _ERROR_BODY.reset(token)


class FeedReader:
    """Reads connections one at a time. Per frame: stamp the receipt time, decode, enqueue an
    announcement; its counting and logging are deferred until after the order it causes (see
    BOOKKEEPING_DELAY_S). Nothing here may block: the server drops slow readers."""

    def __init__(
        self,
        cfg: FeedConfig,
        queue: asyncio.Queue[Announcement],
        *,
        on_welcome: Callable[[Welcome], None] | None = None,
        on_frame: Callable[[bytes, int], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._queue = queue
        self._on_welcome = on_welcome
        self._on_frame = on_frame  # the recorder: every raw frame with its receipt time, O(1)
        self._unknown_logged: set[str] = set()
        self.welcome: Welcome | None = None  # of the current connection
        self.last_message_at: float | None = None  # event-loop clock (monotonic seconds)
        self._healthy = False

    async def read(self, ws: FeedSocket) -> NoReturn:
        """Read `ws` until it ends, then raise ConnectionLost. Silence (no decoded message, PINGs do not
        count) for `heartbeat_timeout` ends it with cause "stale"; the caller closes the socket.

        A watchdog that fires is checked against the socket first: after a stall of the event loop
        (a blocking call, a paused VM) the timer and a frame that arrived meanwhile become due at the
        same moment, and the timer may win. So what is already readable is read and handled
        (`_drain`); only if no message decodes is the link stale."""
        self.welcome = None
        self._healthy = False
        limit = self._cfg.heartbeat_timeout
        try:
            while True:
                # One watchdog per stretch of reading, pushed back on every message. receive(timeout=...)
                # would not do: aiohttp restarts that timeout after every PING it answers.
                watchdog = asyncio.timeout(limit)
                try:
                    async with watchdog:
                        while True:
                            if (at := self._take(ws, await ws.receive())) is not None:
                                watchdog.reschedule(at + limit)
                except TimeoutError:
                    if not watchdog.expired():  # only the watchdog should time out here
                        raise ConnectionLost(
                            "error", code=None, reason="", healthy=self._healthy, error="TimeoutError"
                        ) from None
                silent_since = self.last_message_at
                if (at := await self._drain(ws)) is None:
                    raise ConnectionLost(
                        "stale", code=None, reason="", healthy=self._healthy, error="TimeoutError"
                    )
                # The loop was held up, not the feed: count it, say how long nothing was read.
                metrics.STALE_AVERTED.inc()
                log.warning(
                    "feed.stale_averted",
                    heartbeat_timeout=limit,
                    silent_s=None if silent_since is None else round(at - silent_since, 3),
                )
        except aiohttp.ClientConnectionResetError:
            # The auto-PONG hit a transport that is already gone.
            raise ConnectionLost(
                "reset", code=ws.close_code, reason="", healthy=self._healthy, error="ConnectionReset"
            ) from None

    def _take(self, ws: FeedSocket, msg: WSMessageNoDecodeText) -> float | None:
        """Handle one message from `receive()`. A data frame that decodes is a sign of life: its
        loop time is returned and kept in `last_message_at`; anything else that is data gives None.
        The end of the connection raises ConnectionLost."""
        if msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT:
            if not self._frame(msg.data):
                return None
            self.last_message_at = now = asyncio.get_running_loop().time()
            return now
        raise self._ended(ws, msg)

    async def _drain(self, ws: FeedSocket) -> float | None:
        """Read and handle, without waiting, what is readable now, until a message decodes (its loop
        time is returned, as `_take` does); None if none did.

        `receive()` under a zero timeout (aiohttp's own `receive(timeout=0)` means no timeout at all)
        returns at once what aiohttp has already parsed. A frame still in the kernel's buffer is read
        by the loop's next pass over the sockets, which the first empty round lets run (the frame is
        then queued in aiohttp, not lost with the cancelled wait); the second empty round ends it."""
        empty = 0
        while empty < _DRAIN_EMPTY_ROUNDS:
            try:
                async with asyncio.timeout(0):
                    msg = await ws.receive()
            except TimeoutError:
                empty += 1
                continue
            if (at := self._take(ws, msg)) is not None:
                return at
        return None

    def _frame(self, data: bytes) -> bool:
        """Handle one data frame; True if it decoded (and so counts as a sign of life)."""
        received_ns = time.time_ns()
        received_mono_ns = time.perf_counter_ns()
        try:
            message = decode(
                data,
                max_bytes=self._cfg.max_frame_bytes,
                received_ns=received_ns,
                received_mono_ns=received_mono_ns,
                link=self._cfg.name,
            )
        except DecodeError as exc:
            if self._on_frame is not None:
                self._on_frame(data, received_ns)
            metrics.BAD_FRAMES.labels(reason=exc.reason).inc()
            log.warning("feed.bad_frame", reason=exc.reason, detail=clip(exc.detail, 200), size=len(data))
            return False
        if isinstance(message, Announcement):
            try:
                self._queue.put_nowait(message)  # first, before any counting or logging
            except asyncio.QueueFull:
                self._dropped(message)
                return True
            depth = self._queue.qsize()
            asyncio.get_running_loop().call_later(
                BOOKKEEPING_DELAY_S, self._announcement, message, received_ns, depth
            )
        else:
            self._other(message)
        if self._on_frame is not None:
            self._on_frame(data, received_ns)
        if self.welcome is not None and message is not self.welcome:
            self._healthy = True
        return True

    def _announcement(self, ann: Announcement, received_ns: int, depth: int) -> None:
        metrics.QUEUE_DEPTH.set(depth)
        metrics.FRAMES.labels(type="announcement").inc()
        metrics.ANNOUNCEMENTS.labels(publisher=ann.publisher, listing_type=ann.listing_type).inc()
        age_ms = ann.age_ms(received_ns)
        if age_ms is not None:
            metrics.EVENT_AGE.observe(max(age_ms, 0.0) / 1000)
        log.info(
            "announcement.received",
            publisher=ann.publisher,
            listing_type=ann.listing_type,
            tickers=list(ann.tickers),
            age_ms=None if age_ms is None else round(age_ms, 3),
            key=ann.key,
            link=ann.link,
        )

    def _dropped(self, ann: Announcement) -> None:
        metrics.ANNOUNCEMENTS_DROPPED.inc()
        log.error(
            "announcement.dropped",
            reason="queue_full",
            queued=self._queue.qsize(),
            publisher=ann.publisher,
            tickers=list(ann.tickers),
            key=ann.key,
            link=ann.link,
        )

    def _other(self, message: Message) -> None:
        if isinstance(message, Heartbeat):
            metrics.FRAMES.labels(type="heartbeat").inc()
        elif isinstance(message, Welcome):
            metrics.FRAMES.labels(type="welcome").inc()
            if self.welcome is None:
                self.welcome = message
                self._check_welcome(message)
                if self._on_welcome is not None:
                    self._on_welcome(message)
        elif isinstance(message, TestAnnouncement):
            # Answers a test request; never traded, so never enqueued.
            metrics.FRAMES.labels(type="test_announcement").inc()
            ann = message.announcement
            log.info("feed.test_announcement", publisher=ann.publisher, tickers=list(ann.tickers))
        elif isinstance(message, FeedError):
            metrics.FRAMES.labels(type="error").inc()
            log.warning("feed.error", code=message.code, retry_after_secs=message.retry_after_secs)
        elif isinstance(message, UnknownMessage):
            metrics.FRAMES.labels(type="unknown").inc()
            kind = clip(message.type, 40)  # scrubbed before it is cut: a label and a log field
            metrics.UNKNOWN_TYPES.labels(type=kind).inc()
            if (
                message.type not in self._unknown_logged
                and len(self._unknown_logged) < _MAX_UNKNOWN_TYPES_LOGGED
            ):
                self._unknown_logged.add(message.type)
                log.info("feed.unknown_type", type=kind)

    def _check_welcome(self, welcome: Welcome) -> None:
        allowed = None if welcome.allowed_cex is None else sorted(welcome.allowed_cex)
        log.info(
            "feed.welcome",
            tier=welcome.tier,
            allowed_cex="*" if allowed is None else allowed,
            expires_in_secs=welcome.expires_in_secs,
        )
        wanted = None if self._cfg.cex is None else frozenset(self._cfg.cex)
        if welcome.allowed_cex is not None:
            overlap = welcome.allowed_cex if wanted is None else welcome.allowed_cex & wanted
            if not overlap:
                # The server keeps such a connection up with heartbeats but never sends an announcement.
                log.error(
                    "feed.no_exchanges",
                    allowed_cex=allowed,
                    configured_cex=None if wanted is None else sorted(wanted),
                    hint="this key will receive no announcements; check feed.cex and the key's plan",
                )
        expires = welcome.expires_in_secs
        if expires is not None and expires < KEY_EXPIRY_WARNING_SECS:
            log.warning(
                "feed.key_expiring", expires_in_secs=expires, expires_in_days=round(expires / 86400, 1)
            )

    def _ended(self, ws: FeedSocket, msg: WSMessageNoDecodeText) -> ConnectionLost:
        if msg.type is aiohttp.WSMsgType.CLOSE:
            reason = msg.extra if isinstance(msg.extra, str) else ""
            return ConnectionLost("closed", code=msg.data, reason=reason, healthy=self._healthy)
        if msg.type is aiohttp.WSMsgType.CLOSING:
            return ConnectionLost("closing", code=ws.close_code, reason="", healthy=self._healthy)
        if msg.type is aiohttp.WSMsgType.ERROR:
            error = type(msg.data).__name__
            return ConnectionLost("error", code=ws.close_code, reason="", healthy=self._healthy, error=error)
        return ConnectionLost("dropped", code=ws.close_code, reason="", healthy=self._healthy)


# ---- reading the body of a refused handshake ---------------------------------------------------------


@dataclass
class _ErrorBody:
    error: str | None = None
    retry_after_s: float | None = None


# Set by connect() for the duration of one ws_connect; the middleware runs inside that call, in the
# same task, so it finds the holder of its own request even when a session is shared.
_ERROR_BODY: contextvars.ContextVar[_ErrorBody | None] = contextvars.ContextVar(
    "feed_error_body", default=None
)


async def _keep_error_body(
    request: aiohttp.ClientRequest,
    handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
) -> aiohttp.ClientResponse:
    response = await handler(request)
    holder = _ERROR_BODY.get()
    if holder is not None and response.status >= 400:
        try:
            raw = await response.content.read(_MAX_ERROR_BODY)
            body = orjson.loads(raw)
        except (aiohttp.ClientError, orjson.JSONDecodeError):
            return response  # no usable body: the status and Retry-After header still apply
        if isinstance(body, dict):
            error = body.get("error")
            holder.error = clip(error, 80) if isinstance(error, str) else None
            holder.retry_after_s = parse_retry_after(body.get("retry_after_s"))
    return response
