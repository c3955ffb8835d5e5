"""A local cryptolisting.ws look-alike on aiohttp.web: key checks, `cex` filtering, welcome, heartbeats,
PINGs, scripted or on-demand announcements and fault injection. Used by the tests and `bridge emulate`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp
import structlog
from aiohttp import web

from bridge.sim.feed_messages import (
    Rejection,
    announcement,
    encode,
    heartbeat,
    is_test_request,
    read_script,
    rejection_response,
    welcome,
)

log = structlog.get_logger(__name__)

KeyStatus = Literal["missing", "unknown", "valid"]

_API_KEY_HEADER = "X-API-Key"
# Client frames over 1 KB are refused by the real feed (1009), and so here.
_MAX_CLIENT_FRAME = 1024
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


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    exchanges: frozenset[str] | None  # None: all
    key: str = field(default="", repr=False)  # the API key it connected with, for targeted sends
    heartbeat_task: asyncio.Task[None] | None = field(default=None, repr=False)

    def wants(self, publisher: str) -> bool:
        return self.exchanges is None or publisher in self.exchanges


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
    ) -> None:
        """`publishers`: the exchanges this endpoint carries (None: all), as wss://kr.cryptolisting.ws
        carries only upbit; every client's allowed exchanges (its welcome's allowedCex) are cut to them."""
        if isinstance(api_keys, Mapping):
            self._keys: dict[str, KeyGrant] = dict(api_keys)
        else:
            self._keys = {key: KeyGrant() for key in api_keys}
        self._host = host
        self._port = port
        self._heartbeat_interval = heartbeat_interval
        self._ping_interval = ping_interval
        self._cooldown = cooldown
        self._publishers = None if publishers is None else frozenset(p.strip().lower() for p in publishers)
        self._script = read_script(script_path) if script_path is not None else []
        self._runner: web.AppRunner | None = None
        self._clients: set[_Client] = set()
        self._rejections: deque[Rejection] = deque()
        self._last_connect: dict[str, float] = {}
        self._heartbeats_on = asyncio.Event()
        self._heartbeats_on.set()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.handshakes: list[Handshake] = []
        self.connections = 0  # successful upgrades so far
        self.received: list[bytes] = []  # frames clients sent us
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
        sent = await asyncio.gather(*(_send_to(c, data, binary) for c in targets))
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
            Handshake(status, key_status, _redact(dict(request.headers)), _redact(dict(request.query)))
        )
        log.info("emulator.handshake", status=status, key_status=key_status, cex=request.query.get("cex"))
        if rejection is not None:
            await self._notify()
            return rejection_response(rejection)
        assert key is not None and grant is not None  # _check accepted it
        self._last_connect[key] = time.monotonic()
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
        since = time.monotonic() - self._last_connect.get(key, -math.inf)
        if since < self._cooldown:
            return Rejection(429, math.ceil(self._cooldown - since), "connection_cooldown", None)
        return None

    async def _serve_client(self, request: web.Request, key: str, grant: KeyGrant) -> web.WebSocketResponse:
        exchanges = _allowed(grant.exchanges, request.query.get("cex"))
        if self._publishers is not None:
            exchanges = self._publishers if exchanges is None else exchanges & self._publishers
        ws = web.WebSocketResponse(
            heartbeat=self._ping_interval,
            max_msg_size=_MAX_CLIENT_FRAME,
            timeout=_CLOSE_TIMEOUT,
            compress=False,
        )
        transport = request.transport
        await ws.prepare(request)
        client = _Client(ws, transport, exchanges, key)
        await ws.send_bytes(encode(welcome(grant.tier, exchanges, grant.expires_in_secs)))
        # Registered only after the welcome, so every broadcast reaches a client after its welcome.
        self._clients.add(client)
        self.connections += 1
        if self._heartbeat_interval is not None:
            client.heartbeat_task = asyncio.create_task(self._heartbeats(client, self._heartbeat_interval))
        await self._notify()
        try:
            await self._read_client(client)
        finally:
            self._clients.discard(client)
            if client.heartbeat_task is not None:
                client.heartbeat_task.cancel()
            await self._notify()
        return ws

    async def _read_client(self, client: _Client) -> None:
        while True:
            msg = await client.ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                self.received.append(data)
                if is_test_request(data):
                    await _send_to(client, encode(announcement("test_announcement", {})), binary=True)
                continue
            return  # CLOSE, CLOSING, CLOSED or ERROR: the client is gone

    async def _heartbeats(self, client: _Client, interval: float) -> None:
        while True:
            await self._heartbeats_on.wait()
            await asyncio.sleep(interval)  # the server's own cadence, not test synchronisation
            if self._heartbeats_on.is_set() and await _send_to(client, encode(heartbeat()), True) is None:
                return

    async def _broadcast(self, data: bytes, *, binary: bool, publisher: str | None) -> list[int]:
        targets = [c for c in self._clients if publisher is None or c.wants(publisher)]
        sent = await asyncio.gather(*(_send_to(c, data, binary) for c in targets))
        return [stamp for stamp in sent if stamp is not None]

    async def _play_script(self) -> None:
        """Play the script once, starting when the first client is connected."""
        for line in self._script:
            await self._wait_until(lambda: bool(self._clients))
            if line.delay > 0:
                await asyncio.sleep(line.delay)  # the script's own pacing
            publisher = line.message.get("publisher")
            if line.message.get("type") != "announcement" or not isinstance(publisher, str):
                publisher = None
            reached = len(
                await self._broadcast(encode(line.message), binary=line.binary, publisher=publisher)
            )
            log.info("emulator.script_sent", line=line.lineno, type=line.message.get("type"), clients=reached)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def run_emulator(
    *,
    host: str,
    port: int,
    api_keys: Mapping[str, KeyGrant] | Iterable[str],
    heartbeat_interval: float | None,
    ping_interval: float | None,
    script_path: Path | None,
    cooldown: float,
    stop_event: asyncio.Event,
) -> None:
    """Serve until `stop_event` is set (the `bridge emulate` command)."""
    emulator = FeedEmulator(
        api_keys=api_keys,
        host=host,
        port=port,
        heartbeat_interval=heartbeat_interval,
        ping_interval=ping_interval,
        cooldown=cooldown,
        script_path=script_path,
    )
    async with emulator:
        await stop_event.wait()


# ---- helpers -------------------------------------------------------------------------------------


async def _send_to(client: _Client, data: bytes, binary: bool) -> int | None:
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


def _allowed(granted: frozenset[str] | None, cex: str | None) -> frozenset[str] | None:
    if cex is None:
        return granted
    wanted = frozenset(c.strip().lower() for c in cex.split(",") if c.strip())
    return wanted if granted is None else granted & wanted


def _redact(values: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if k.lower() in ("x-api-key", "api_key") else v) for k, v in values.items()}
