"""A local cryptolisting.ws look-alike on aiohttp.web: key checks, `cex` filtering, welcome, heartbeats,
scripted or on-demand announcements and fault injection. Each client is held to the protocol page's
rules by emulator_session.py; emulator_control.py drives a running one. Used by tests and `bridge emulate`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from aiohttp import web

from bridge.errors import ConfigError
from bridge.feed import stream_format
from bridge.sim.emulator_session import (
    Client,
    Handshake,
    KeyGrant,
    KeyStatus,
    Limits,
    Policy,
    allowed,
    feed_socket,
    redact,
    send_to,
)
from bridge.sim.feed_messages import Rejection, announcement, encode, heartbeat, rejection_response, welcome

__all__ = ["FeedEmulator", "Handshake", "KeyGrant", "Limits"]

log = structlog.get_logger(__name__)

_API_KEY_HEADER = "X-API-Key"


class FeedEmulator:
    """A cryptolisting.ws-compatible server on 127.0.0.1. Use as `async with FeedEmulator(...) as emu`.

    Everything a test may wait for (connections, handshakes, clients gone) is signalled through one
    condition, so tests await states instead of sleeping."""

    def __init__(
        self,
        *,
        api_keys: Mapping[str, KeyGrant] | Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval: float | None = 30.0,
        ping_interval: float | None = 15.0,
        cooldown: float = 0.0,
        script_path: Path | None = None,
        publishers: Iterable[str] | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`publishers`: the exchanges this endpoint carries (None: all), as wss://kr.cryptolisting.ws
        carries only upbit; every client's allowed exchanges (its welcome's allowedCex) are cut to them.
        `limits`: the protocol page's PING, PONG, frame size and rate limits (`ping_interval` alone is
        short for `limits=Limits(ping_interval=...)`); `clock` (monotonic seconds) is what the limits
        and the cooldown are measured on, injectable so a test can step time instead of waiting."""
        if isinstance(api_keys, Mapping):
            self._keys: dict[str, KeyGrant] = dict(api_keys)
        else:
            self._keys = {key: KeyGrant() for key in api_keys}
        self._host = host
        self._port = port
        self._heartbeat_interval = heartbeat_interval
        if limits is None:
            limits = Limits(ping_interval=ping_interval)
        elif ping_interval != Limits.ping_interval:
            raise ValueError("give ping_interval inside limits")
        self._policy = Policy(limits, clock or time.monotonic)
        self._clock = self._policy.clock
        self._cooldown = cooldown
        self._publishers = None if publishers is None else frozenset(p.strip().lower() for p in publishers)
        self._script = _read_script(script_path) if script_path is not None else []
        self._runner: web.AppRunner | None = None
        self._clients: set[Client] = set()
        self._rejections: deque[Rejection] = deque()
        self._last_connect: dict[str, float] = {}
        self._heartbeats_on = asyncio.Event()
        self._heartbeats_on.set()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.handshakes: list[Handshake] = []
        self.connections = 0  # successful upgrades so far
        self.received: list[bytes] = []  # frames clients sent us
        self.pongs = 0  # PONGs clients sent us
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"ws://{host}:{port}"
        if self._script:
            self._spawn(self._play_script())
        log.info("emulator.started", url=self.url, keys=len(self._keys))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.close_all(1001, "server_shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("emulator.stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- waiting for states ----------------------------------------------------------------------

    async def wait_connected(self, n: int = 1) -> None:
        """Return once the n-th successful connection (counted since start) has had its welcome sent."""
        await self._wait_until(lambda: self.connections >= n)

    async def wait_handshakes(self, n: int) -> None:
        """Return once n upgrade requests (accepted or rejected) have been answered."""
        await self._wait_until(lambda: len(self.handshakes) >= n)

    async def wait_clients(self, n: int) -> None:
        """Return once exactly n clients are connected (e.g. 0 after a client closed)."""
        await self._wait_until(lambda: len(self._clients) == n)

    async def wait_received(self, n: int) -> None:
        """Return once clients have sent n data frames in all (each one counted and rate-limited)."""
        await self._wait_until(lambda: len(self.received) >= n)

    async def wait_pongs(self, n: int) -> None:
        """Return once clients have answered n PINGs in all."""
        await self._wait_until(lambda: self.pongs >= n)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---- fault injection and on-demand messages --------------------------------------------------

    def reject_next(
        self,
        status: int,
        retry_after: int | None = None,
        error: str | None = None,
        count: int = 1,
        *,
        body: dict[str, Any] | bytes | None = None,
    ) -> None:
        """Answer the next `count` upgrade requests with HTTP `status`. Without `body`, the body is
        `{"error": ..., "retry_after_s": ...}`; `retry_after` also sets the Retry-After header."""
        for _ in range(count):
            self._rejections.append(Rejection(status, retry_after, error, body))

    def pause_heartbeats(self) -> None:
        """Stop JSON heartbeats; the socket stays open and WebSocket PINGs continue."""
        self._heartbeats_on.clear()

    def resume_heartbeats(self) -> None:
        self._heartbeats_on.set()

    @property
    def heartbeats_on(self) -> bool:
        return self._heartbeats_on.is_set()

    async def send(
        self, message: dict[str, Any] | bytes | str, *, binary: bool = True, key: str | None = None
    ) -> int:
        """Send one frame to every client (only those connected with API key `key`, if given); returns
        how many clients it reached."""
        return len(await self.send_stamped(message, binary=binary, key=key))

    async def send_stamped(
        self, message: dict[str, Any] | bytes | str, *, binary: bool = True, key: str | None = None
    ) -> list[int]:
        """Like `send`, but returns for each client reached the time.time_ns() taken right before its
        frame was written to the socket: the start of an announcement-to-order latency measurement."""
        data = encode(message)
        targets = [c for c in self._clients if key is None or c.key == key]
        sent = await asyncio.gather(*(send_to(c, data, binary) for c in targets))
        return [stamp for stamp in sent if stamp is not None]

    async def announce(self, **fields: Any) -> int:
        """Send an announcement (wire field names, e.g. `ticker="ABC"`, `listingType=...`) to the
        clients subscribed to its publisher."""
        return len(await self.announce_stamped(**fields))

    async def announce_stamped(self, **fields: Any) -> list[int]:
        """Like `announce`, but returns for each client reached the time.time_ns() taken right before
        its frame was written (see `send_stamped`)."""
        message = announcement("announcement", fields)
        return await self._broadcast(encode(message), binary=True, publisher=message["publisher"])

    async def send_test_announcement(self, **fields: Any) -> int:
        """Send a `test_announcement`, as the feed does in answer to a client's test request."""
        return await self.send(announcement("test_announcement", fields))

    async def send_heartbeat(self) -> int:
        """Send one JSON heartbeat now, whatever the heartbeat schedule."""
        return await self.send(heartbeat())

    async def send_garbage(self, data: bytes = b"\xff\xfe not json", *, binary: bool = True) -> int:
        return await self.send(data, binary=binary)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every client with a close frame carrying `code` and `reason`."""
        clients = list(self._clients)
        await asyncio.gather(
            *(c.ws.close(code=code, message=reason.encode()) for c in clients), return_exceptions=True
        )

    async def drop_all(self) -> None:
        """Drop every client's TCP connection without a close frame, like a network failure."""
        for client in list(self._clients):
            if client.transport is not None:
                client.transport.abort()
        await self._wait_until(lambda: not self._clients)

    # ---- the server side -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get(_API_KEY_HEADER)
        grant = self._keys.get(key) if key is not None else None
        key_status: KeyStatus = "missing" if key is None else ("valid" if grant is not None else "unknown")
        rejection = self._check(request, key, grant)
        status = rejection.status if rejection is not None else 101
        self.handshakes.append(
            Handshake(status, key_status, redact(dict(request.headers)), redact(dict(request.query)))
        )
        log.info("emulator.handshake", status=status, key_status=key_status, cex=request.query.get("cex"))
        if rejection is not None:
            await self._notify()
            return rejection_response(rejection)
        assert key is not None and grant is not None  # _check accepted it
        self._last_connect[key] = self._clock()
        return await self._serve_client(request, key, grant)

    def _check(self, request: web.Request, key: str | None, grant: KeyGrant | None) -> Rejection | None:
        if self._rejections:
            return self._rejections.popleft()
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return Rejection(426, None, None, None)
        if "api_key" in request.query:
            # The newer docs refuse keys in the URL: they end up in proxy and access logs.
            return Rejection(401, None, "api_key_in_query_not_allowed", None)
        if key is None:
            return Rejection(401, None, None, None)
        if grant is None:
            return Rejection(403, None, None, None)
        since = self._clock() - self._last_connect.get(key, -math.inf)
        if since < self._cooldown:
            return Rejection(429, math.ceil(self._cooldown - since), "connection_cooldown", None)
        return None

    async def _serve_client(self, request: web.Request, key: str, grant: KeyGrant) -> web.WebSocketResponse:
        exchanges = allowed(grant.exchanges, request.query.get("cex"))
        if self._publishers is not None:
            exchanges = self._publishers if exchanges is None else exchanges & self._publishers
        ws = feed_socket(self._policy.limits)
        transport = request.transport
        await ws.prepare(request)
        client = Client(ws, transport, exchanges, key)
        await ws.send_bytes(encode(welcome(grant.tier, exchanges, grant.expires_in_secs)))
        # Registered only after the welcome, so every broadcast reaches a client after its welcome.
        self._clients.add(client)
        self.connections += 1
        if self._heartbeat_interval is not None:
            client.heartbeat_task = asyncio.create_task(self._heartbeats(client, self._heartbeat_interval))
        await self._notify()
        try:
            await client.serve(self._policy, self._on_message, self._on_pong)
        finally:
            self._clients.discard(client)
            if client.heartbeat_task is not None:
                client.heartbeat_task.cancel()
            await self._notify()
        return ws

    async def _on_message(self, data: bytes) -> None:
        self.received.append(data)
        await self._notify()

    async def _on_pong(self) -> None:
        self.pongs += 1
        await self._notify()

    async def _heartbeats(self, client: Client, interval: float) -> None:
        while True:
            await self._heartbeats_on.wait()
            await asyncio.sleep(interval)  # the server's own cadence, not test synchronisation
            if self._heartbeats_on.is_set() and await send_to(client, encode(heartbeat()), True) is None:
                return

    async def _broadcast(self, data: bytes, *, binary: bool, publisher: str | None) -> list[int]:
        targets = [c for c in self._clients if publisher is None or c.wants(publisher)]
        sent = await asyncio.gather(*(send_to(c, data, binary) for c in targets))
        return [stamp for stamp in sent if stamp is not None]

    async def _play_script(self) -> None:
        """Play the script once, starting when the first client is connected. A message's missing
        timestamps are filled with the time it is sent; a recorded frame goes out byte for byte."""
        for line in self._script:
            await self._wait_until(lambda: bool(self._clients))
            if line.delay > 0:
                await asyncio.sleep(line.delay)  # the script's own pacing
            message = line.message
            data = line.frame or b""
            if message is not None:
                message = stream_format.fill_timestamps(message, time.time_ns())
                data = encode(message)
            publisher = message.get("publisher") if message is not None else None
            if message is None or message.get("type") != "announcement" or not isinstance(publisher, str):
                publisher = None
            reached = len(await self._broadcast(data, binary=line.binary, publisher=publisher))
            kind = message.get("type") if message is not None else "frame"
            log.info("emulator.script_sent", line=line.lineno, type=kind, clients=reached)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# ---- helpers -------------------------------------------------------------------------------------


def _read_script(path: Path) -> list[stream_format.StreamLine]:
    """The frames of a stream file, read up front so a broken script fails at start-up, not halfway
    through a demo. Markets and price lines are for replay: left out here, and said so."""
    stream = stream_format.read(path)
    frames = [line for line in stream.lines if line.frame is not None]
    if len(frames) < len(stream.lines):
        log.info("emulator.script_lines_skipped", file=str(path), lines=len(stream.lines) - len(frames))
    if not frames:
        raise ConfigError(f"{path}: no frame or message lines to send")
    return frames
