"""Keeps the feed connected: reconnects with capped, jittered backoff (tenacity), turns fatal answers
(401, 403, key_expired closes) into exit errors, and tells its status sink whenever the feed is not
live (the composition root passes the trading gate as that sink).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from typing import Literal, NoReturn, Protocol

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from bridge.aio import Sleep
from bridge.config import FeedConfig
from bridge.errors import ConfigError, CredentialsRejected
from bridge.feed import client as feed
from bridge.feed import metrics
from bridge.feed.codec import Announcement, Welcome
from bridge.retry import backoff_delay

log = structlog.get_logger(__name__)

State = Literal["connecting", "connected", "backoff", "stopped"]

FeedProblem = Literal["disconnected", "feed_stale", "key_expired", "key_rejected"]


class FeedStatusSink(Protocol):
    """Told when the feed stops or starts being trustworthy, by reason. The feed knows nothing
    downstream: the composition root passes the trading gate here, which halts trading on `halt`."""

    def halt(self, reason: FeedProblem) -> None: ...

    def resume(self, reason: FeedProblem) -> None: ...


class NoStatusSink:
    """For a feed nobody trades on (`bridge record`): state changes are only logged."""

    def halt(self, reason: FeedProblem) -> None:
        return None

    def resume(self, reason: FeedProblem) -> None:
        return None


KEY_DEAD_REASONS = frozenset({"key_expired", "key_revoked", "key_invalidated"})
# The feed closes a client that sent too much with 1008 rate_limit_exceeded; its docs ask for 60 s.
RATE_LIMIT_WAIT = 60.0


def required_wait(exc: BaseException | None) -> float:
    """The least the server asked us to wait after this failure (Retry-After, rate limit close)."""
    if isinstance(exc, feed.HandshakeRejected) and exc.retry_after is not None:
        return exc.retry_after
    if isinstance(exc, feed.ConnectionLost) and exc.reason == "rate_limit_exceeded":
        return RATE_LIMIT_WAIT
    return 0.0


class KeyPacer:
    """Spaces the connects of links that share one API key: the feed refuses a key reconnecting from
    the same IP within 5 s (`connection_cooldown`), so no two of them connect closer than `spacing`
    (the links' reconnect.min_delay) apart. Shared by the links' supervisors; the single link has none."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    async def turn(self, key: str, spacing: float) -> None:
        """Wait until this key may connect, and book the slot after it."""
        fingerprint = hashlib.sha256(key.encode()).hexdigest()  # no key held in clear as a dict key
        while (wait := self._next.get(fingerprint, 0.0) - self._clock()) > 0:
            await self._sleep(wait)
        self._next[fingerprint] = self._clock() + spacing


class Supervisor:
    """Runs the feed connection until stopped. `run()` returns after `stop()` and raises ConfigError
    (401) or CredentialsRejected (403, key expired/revoked); everything else is retried."""

    def __init__(
        self,
        cfg: FeedConfig,
        status: FeedStatusSink,
        queue: asyncio.Queue[Announcement],
        *,
        sleep: Sleep = asyncio.sleep,
        session: aiohttp.ClientSession | None = None,
        on_welcome: Callable[[Welcome], None] | None = None,
        on_frame: Callable[[bytes, int], None] | None = None,
        pacer: KeyPacer | None = None,
    ) -> None:
        self._cfg = cfg
        self.link = cfg.name  # None: the single link of a `feed:` block without `links`
        self._link_label = cfg.name or "main"
        self._log = log.bind(link=cfg.name) if cfg.name is not None else log
        self._pacer = pacer
        self._welcome_listener = on_welcome
        self._status = status
        self._sleep = sleep
        self._session = session
        self._reader = feed.FeedReader(cfg, queue, on_welcome=self._on_welcome, on_frame=on_frame)
        self._task: asyncio.Task[NoReturn] | None = None
        self._stop_requested = False
        self._state: State = "connecting"
        self._welcome: Welcome | None = None
        self._connected_since: float | None = None

    # ---- read-only state for the health endpoint ---------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def welcome(self) -> Welcome | None:
        """The last welcome received (kept across reconnects)."""
        return self._welcome

    @property
    def covers(self) -> frozenset[str] | None:
        """The publishers this link delivers (None: every one): what its welcome allows, within its
        `cex`; empty while it never was welcomed."""
        if self._welcome is None:
            return frozenset()
        wanted = frozenset(self._cfg.cex) if self._cfg.cex is not None else None
        allowed = self._welcome.allowed_cex
        if allowed is None:
            return wanted
        return allowed if wanted is None else allowed & wanted

    @property
    def last_message_at(self) -> float | None:
        """Monotonic time of the last decoded server message."""
        return self._reader.last_message_at

    @property
    def connected_since(self) -> float | None:
        """Monotonic time the current connection was welcomed; None while not connected."""
        return self._connected_since

    # ---- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        if self._stop_requested:
            self._state = "stopped"
            return
        session = self._session if self._session is not None else feed.open_session(self._cfg)
        # The connection loop runs as its own task so stop() can cancel it without cancelling the
        # caller, and run() can tell the two apart.
        name = "feed-supervisor" if self.link is None else f"feed-supervisor:{self.link}"
        self._task = asyncio.create_task(self._serve(session), name=name)
        try:
            await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stop_requested or (current is not None and current.cancelling()):
                raise
        finally:
            self._connected_since = None
            self._state = "stopped"
            self._status.halt("disconnected")
            if self._session is None:
                await session.close()
            self._log.info("feed.stopped")

    def stop(self) -> None:
        """Stop reading and close the socket; `run()` returns shortly after."""
        if not self._stop_requested:
            self._log.info("feed.stopping", state=self._state)
        self._stop_requested = True
        if self._task is not None:
            self._task.cancel()

    # ---- the connection loop -------------------------------------------------------------------------

    async def _serve(self, session: aiohttp.ClientSession) -> NoReturn:
        replay: feed.ConnectionLost | None = None
        while True:
            # A fresh AsyncRetrying per outage: backoff starts over only after a healthy connection.
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(feed.FeedDown),
                wait=self._wait,
                sleep=self._sleep,
                before_sleep=self._before_sleep,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    if replay is not None:
                        # The loss of the healthy connection is this outage's first failure, so the
                        # wait before reconnecting comes from the same policy as every other wait.
                        lost, replay = replay, None
                        raise lost
                    try:
                        await self._connect_and_read(session)
                    except feed.ConnectionLost as exc:
                        if not exc.healthy:
                            raise
                        replay = exc  # ends this AsyncRetrying; the next one starts with the replay

    async def _connect_and_read(self, session: aiohttp.ClientSession) -> NoReturn:
        if self._pacer is not None:  # links sharing a key never connect within its cooldown
            await self._pacer.turn(self._cfg.key.reveal(), self._cfg.reconnect.min_delay)
        self._state = "connecting"
        self._log.info("feed.connecting", url=self._cfg.url, cex=self._cfg.cex)
        started = time.perf_counter()
        try:
            ws = await feed.connect(session, self._cfg)
        except feed.HandshakeRejected as exc:
            self._rejected(exc)
            raise
        except feed.ConnectFailed as exc:
            metrics.DISCONNECTS.labels(cause=exc.cause).inc()
            self._log.warning("feed.connect_failed", error=exc.error)
            raise
        metrics.CONNECTS.inc()
        metrics.LINK_CONNECTS.labels(self._link_label).inc()
        self._log.debug("feed.handshake_done", handshake_ms=round((time.perf_counter() - started) * 1000, 1))
        try:
            await self._reader.read(ws)
        except feed.ConnectionLost as exc:
            self._lost(exc)
            raise
        finally:
            self._connected_since = None
            self._state = "backoff"  # about to wait (or stop); never "connected" without a socket
            metrics.LINK_UP.labels(self._link_label).set(0)
            self._status.halt("disconnected")
            await ws.close()

    def _on_welcome(self, welcome: Welcome) -> None:
        self._welcome = welcome
        self._state = "connected"
        self._connected_since = time.monotonic()
        metrics.LINK_UP.labels(self._link_label).set(1)
        self._log.info("feed.connected", url=self._cfg.url, tier=welcome.tier)
        self._status.resume("disconnected")
        self._status.resume("feed_stale")
        if self._welcome_listener is not None:
            try:
                self._welcome_listener(welcome)
            except Exception:  # noqa: BLE001 - a listener (alerts) must never break the feed (logged)
                self._log.exception("feed.welcome_listener_failed")

    def _rejected(self, exc: feed.HandshakeRejected) -> None:
        metrics.DISCONNECTS.labels(cause=exc.cause).inc()
        self._log.warning("feed.rejected", status=exc.status, retry_after=exc.retry_after, error=exc.error)
        if exc.status == 401:
            raise ConfigError(
                "the feed refused the connection as unauthenticated (HTTP 401): "
                "feed.api_key must be set; it is sent as the X-API-Key header"
            ) from None
        if exc.status == 403:
            self._status.halt("key_rejected")
            raise CredentialsRejected(
                "the feed rejected the API key (HTTP 403: invalid, revoked or expired); a new key is needed"
            ) from None
        if exc.status in (400, 426):
            self._log.error(
                "feed.upgrade_refused", status=exc.status, hint="a client bug or a proxy in the way"
            )

    def _lost(self, exc: feed.ConnectionLost) -> None:
        cause = (
            exc.reason if exc.reason in KEY_DEAD_REASONS | {"too_slow", "rate_limit_exceeded"} else exc.cause
        )
        metrics.DISCONNECTS.labels(cause=cause).inc()
        if exc.cause == "stale":
            self._log.warning("feed.stale", silent_s=self._cfg.heartbeat_timeout)
            self._status.halt("feed_stale")
        self._log.warning(
            "feed.disconnected",
            code=exc.code,
            reason=exc.reason,
            cause=exc.cause,
            error=exc.error,
            healthy=exc.healthy,
        )
        if exc.reason in KEY_DEAD_REASONS:
            self._status.halt("key_expired")
            self._log.error("feed.key_rejected", reason=exc.reason, hint="a new feed API key is needed")
            raise CredentialsRejected(
                f"the feed closed the connection: {exc.reason}; a new key is needed"
            ) from None
        if exc.reason == "too_slow":
            self._log.warning(
                "feed.too_slow", hint="the reader fell behind; something is blocking the event loop"
            )

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        delay = backoff_delay(
            retry_state.attempt_number,
            self._cfg.reconnect.min_delay,
            self._cfg.reconnect.max_delay,
            random.random(),  # noqa: S311 - jitter, not cryptography
        )
        return max(delay, required_wait(exc))

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self._state = "backoff"
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        self._log.info(
            "feed.backoff",
            delay_s=round(retry_state.upcoming_sleep, 3),
            attempt=retry_state.attempt_number,
            cause=getattr(exc, "cause", None),
        )
