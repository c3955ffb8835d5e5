"""The feed client against a real local emulator: handshake, frame handling, welcome checks, endings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bridge import telemetry
from bridge.config import FeedConfig
from bridge.feed import client as feed
from bridge.feed.codec import Announcement
from bridge.secrets import Secret
from bridge.sim.emulator import FeedEmulator, KeyGrant
from tests.log_probe import probing

KEY = "dsk_" + "c3" * 32
EXPIRING_KEY = "dsk_" + "d4" * 32
WAIT = 5.0  # safety bound only


@pytest.fixture
async def emu() -> AsyncIterator[FeedEmulator]:
    grants = {
        KEY: KeyGrant(exchanges=frozenset({"binance", "upbit"})),
        EXPIRING_KEY: KeyGrant(expires_in_secs=3 * 86400),
    }
    async with FeedEmulator(api_keys=grants, heartbeat_interval=None, ping_interval=None) as emulator:
        yield emulator


def config(emu: FeedEmulator, **overrides: Any) -> FeedConfig:
    values: dict[str, Any] = {"api_key": Secret(KEY), "url": emu.url, "heartbeat_timeout": 30.0}
    values.update(overrides)
    return FeedConfig(**values)


@dataclass
class Live:
    reader: feed.FeedReader
    queue: asyncio.Queue[Announcement]
    task: asyncio.Task[None]
    welcomed: asyncio.Event

    async def next(self) -> Announcement:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    async def ended(self) -> feed.ConnectionLost:
        with pytest.raises(feed.ConnectionLost) as info:
            await asyncio.wait_for(self.task, WAIT)
        return info.value


@asynccontextmanager
async def reading(cfg: FeedConfig, queue: asyncio.Queue[Announcement] | None = None) -> AsyncIterator[Live]:
    """Connect and run a reader in a task; tidy everything up afterwards."""
    queue = asyncio.Queue() if queue is None else queue
    welcomed = asyncio.Event()
    reader = feed.FeedReader(cfg, queue, on_welcome=lambda _: welcomed.set())
    async with feed.open_session(cfg) as session:
        ws = await feed.connect(session, cfg)
        task = asyncio.create_task(reader.read(ws))
        try:
            yield Live(reader, queue, task, welcomed)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ws.close()


class CountingQueue(asyncio.Queue[Announcement]):
    """Counts what was ever put in, however soon it is taken out."""

    puts = 0

    def put_nowait(self, item: Announcement) -> None:
        self.puts += 1
        super().put_nowait(item)


class QueueProbe(logging.Handler):
    """Records, each time `announcement.received` is logged, how many announcements had been queued;
    sets `done` at the `want`-th such line."""

    def __init__(self, queue: CountingQueue, queued: list[int], want: int) -> None:
        super().__init__()
        self.queue, self.queued, self.want = queue, queued, want
        self.done = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict) and record.msg.get("event") == "announcement.received":
            self.queued.append(self.queue.puts)
            if len(self.queued) >= self.want:
                self.done.set()


Events = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Events:
    """The structlog events named `name` logged so far, as raw event dicts (before any redaction).
    Read from the stdlib records: structlog.testing.capture_logs misses loggers cached while an
    earlier test's configuration was active."""
    caplog.set_level(logging.DEBUG)

    def find(name: str) -> list[dict[str, Any]]:
        return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]

    return find


async def test_handshake_sends_key_header_and_cex_query(emu: FeedEmulator) -> None:
    """The key goes in the X-API-Key header (never the URL) and `cex` as one comma-separated param."""
    async with reading(config(emu, cex=("binance", "upbit"))):
        await emu.wait_connected(1)
    async with reading(config(emu)):
        await emu.wait_connected(2)
    first, second = emu.handshakes
    assert first.key_status == "valid" and first.headers["X-API-Key"] == "***"
    assert first.query == {"cex": "binance,upbit"}
    assert second.query == {}


async def test_binary_and_text_announcements_are_enqueued_with_receipt_time(
    emu: FeedEmulator, events: Events
) -> None:
    """Announcements in binary and in text frames are queued in order, stamped with wall-clock and
    perf-counter receipt times, and logged only after being queued (the line is deferred until after
    the order an announcement causes)."""
    queued_when_logged: list[int] = []
    queue = CountingQueue()
    probe = QueueProbe(queue, queued_when_logged, want=2)
    logging.getLogger("bridge.feed.client").addHandler(probe)
    try:
        async with reading(config(emu), queue) as live:
            await emu.wait_connected(1)
            before_ns, before_mono = time.time_ns(), time.perf_counter_ns()
            await emu.announce(ticker="ABC, DEF", title="Binance Will List ABC and DEF")
            await emu.send(
                {"type": "announcement", "title": "t", "ticker": "XYZ", "publisher": "upbit"}, binary=False
            )
            first, second = await live.next(), await live.next()
            await asyncio.wait_for(probe.done.wait(), WAIT)
    finally:
        logging.getLogger("bridge.feed.client").removeHandler(probe)
    assert queued_when_logged[0] >= 1 and queued_when_logged[1] >= 2  # queued before logged
    assert first.tickers == ("ABC", "DEF") and second.tickers == ("XYZ",)
    assert before_ns <= first.received_ns <= second.received_ns <= time.time_ns()
    assert before_mono <= first.received_mono_ns <= second.received_mono_ns
    received = events("announcement.received")
    assert [e["tickers"] for e in received] == [["ABC", "DEF"], ["XYZ"]]
    assert received[0]["publisher"] == "binance" and received[0]["age_ms"] is not None
    assert received[1]["age_ms"] is None  # no timestamps in that frame


async def test_a_full_queue_drops_the_new_announcement_logged_and_reading_goes_on(
    emu: FeedEmulator, events: Events
) -> None:
    """The dispatcher's queue is bounded (the daemon's holds MAX_QUEUED): when it is full, the new
    announcement is dropped with an `announcement.dropped` error naming it and counted; the connection
    is kept, and once the queue has room the next one is queued as usual."""
    before = telemetry.value("bridge_feed_announcements_dropped_total")
    with probing("announcement.dropped", logger="bridge.feed.client") as probes:
        async with reading(config(emu), asyncio.Queue(2)) as live:
            await emu.wait_connected(1)
            for ticker in ("AAA", "BBB", "CCC"):
                await emu.announce(ticker=ticker, title=f"Binance Will List {ticker}")
            await asyncio.wait_for(probes["announcement.dropped"].seen.wait(), WAIT)  # CCC met a full queue
            assert (await live.next()).tickers == ("AAA",)
            await emu.announce(ticker="DDD", title="Binance Will List DDD")
            assert [(await live.next()).tickers for _ in range(2)] == [("BBB",), ("DDD",)]
            assert not live.task.done() and emu.connections == 1
    [dropped] = events("announcement.dropped")
    assert dropped["tickers"] == ["CCC"] and dropped["reason"] == "queue_full" and dropped["queued"] == 2
    assert dropped["level"] == "error"
    assert telemetry.value("bridge_feed_announcements_dropped_total") == before + 1


@pytest.mark.parametrize(
    ("data", "binary", "reason"),
    [
        (b"\xff\xfe\x00", True, "bad_utf8"),
        (b"\xff\xfe\x00", False, "bad_utf8"),
        (b"{not json", True, "not_json"),
        (b"[1]", True, "not_object"),
        (b'{"kind":"x"}', False, "no_type"),
        (b'{"type":"announcement","ticker":7}', True, "bad_field"),
    ],
)
async def test_bad_frames_are_counted_and_the_connection_survives(
    emu: FeedEmulator, data: bytes, binary: bool, reason: str, events: Events
) -> None:
    """A malformed frame is one `feed.bad_frame` line with its reason and one count; the next frame on
    the same connection is handled normally."""
    before = telemetry.value("bridge_feed_bad_frames_total", reason=reason)
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        await emu.send(data, binary=binary)
        await emu.announce(ticker="OK")
        assert (await live.next()).tickers == ("OK",)
        assert not live.task.done()
    assert telemetry.value("bridge_feed_bad_frames_total", reason=reason) == before + 1
    assert [e["reason"] for e in events("feed.bad_frame")] == [reason]
    assert emu.connections == 1


async def test_oversized_frame_is_a_bad_frame_not_a_disconnect(emu: FeedEmulator) -> None:
    """A frame over max_frame_bytes (but under aiohttp's hard cap of twice that) is dropped as
    `oversized` and the connection goes on."""
    before = telemetry.value("bridge_feed_bad_frames_total", reason="oversized")
    async with reading(config(emu, max_frame_bytes=1024)) as live:
        await emu.wait_connected(1)
        await emu.send({"type": "heartbeat", "pad": "x" * 1500})
        await emu.announce(ticker="OK")
        assert (await live.next()).tickers == ("OK",)
    assert telemetry.value("bridge_feed_bad_frames_total", reason="oversized") == before + 1


async def test_unknown_type_is_logged_once_and_counted_each_time(emu: FeedEmulator, events: Events) -> None:
    """An unknown message type is logged once per type, counted every time, and otherwise ignored."""
    before = telemetry.value("bridge_feed_unknown_types_total", type="brand_new")
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        for _ in range(3):
            await emu.send({"type": "brand_new", "x": 1})
        await emu.announce(ticker="OK")
        await live.next()
        assert live.queue.empty()
    assert telemetry.value("bridge_feed_unknown_types_total", type="brand_new") == before + 3
    assert [e["type"] for e in events("feed.unknown_type")] == ["brand_new"]


async def test_test_announcement_is_never_enqueued(emu: FeedEmulator, events: Events) -> None:
    """A test_announcement is logged and counted but never reaches the queue."""
    before = telemetry.value("bridge_feed_frames_total", type="test_announcement")
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        await emu.send_test_announcement(ticker="TEST")
        await emu.announce(ticker="REAL")
        assert (await live.next()).tickers == ("REAL",)
        assert live.queue.empty()
    assert telemetry.value("bridge_feed_frames_total", type="test_announcement") == before + 1
    assert [e["tickers"] for e in events("feed.test_announcement")] == [["TEST"]]


async def test_feed_error_message_is_logged(emu: FeedEmulator, events: Events) -> None:
    """An `error` message from the server is logged with its code and retry hint; the connection stays."""
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        await emu.send({"type": "error", "code": "test_rate_limited", "retryAfterSecs": 42})
        await emu.announce(ticker="OK")
        await live.next()
    (error,) = events("feed.error")
    assert (error["code"], error["retry_after_secs"]) == ("test_rate_limited", 42.0)


async def test_welcome_without_overlap_warns_loudly(emu: FeedEmulator, events: Events) -> None:
    """If the key's exchanges and the configured cex do not overlap, `feed.no_exchanges` is logged at
    error level: the connection would stay up and never carry an announcement."""
    async with reading(config(emu, cex=("bithumb",))) as live:
        await asyncio.wait_for(live.welcomed.wait(), WAIT)
    (warning,) = events("feed.no_exchanges")
    assert warning["level"] == "error"
    assert warning["allowed_cex"] == [] and warning["configured_cex"] == ["bithumb"]
    assert not events("feed.key_expiring")


async def test_welcome_with_overlap_and_expiring_key(emu: FeedEmulator, events: Events) -> None:
    """A key expiring within 7 days logs `feed.key_expiring`; an overlapping cex logs no warning; the
    welcome is logged with tier, exchanges and expiry."""
    async with reading(config(emu, api_key=Secret(EXPIRING_KEY), cex=("binance",))) as live:
        await emu.wait_connected(1)
        await emu.announce(ticker="OK")
        await live.next()
    (welcome,) = events("feed.welcome")
    assert (welcome["tier"], welcome["allowed_cex"], welcome["expires_in_secs"]) == (
        "premium",
        ["binance"],
        3 * 86400,
    )
    (expiring,) = events("feed.key_expiring")
    assert expiring["expires_in_days"] == 3.0
    assert not events("feed.no_exchanges")


@pytest.mark.parametrize(
    ("retry_after", "body", "expected"),
    [
        (11, None, 11.0),  # header and body agree
        (None, {"error": "connection_cooldown", "retry_after_s": 4}, 4.0),  # body only
        (6, {"error": "per_ip_connection_limit_reached"}, 6.0),  # header only
        (None, b"<html>busy</html>", None),  # neither, and the body is not JSON
    ],
)
async def test_429_carries_retry_after_from_body_or_header(
    emu: FeedEmulator, retry_after: int | None, body: dict[str, Any] | bytes | None, expected: float | None
) -> None:
    """A refused upgrade raises HandshakeRejected with the status, the body's `error` and the wait from
    `retry_after_s` (read by the session middleware) or else the Retry-After header."""
    emu.reject_next(429, retry_after=retry_after, error="absolute_connection_cap_reached", body=body)
    cfg = config(emu)
    async with feed.open_session(cfg) as session:
        with pytest.raises(feed.HandshakeRejected) as info:
            await feed.connect(session, cfg)
    assert info.value.status == 429
    assert info.value.retry_after == expected
    if isinstance(body, dict):
        assert info.value.error == body["error"]
    elif body is None:
        assert info.value.error == "absolute_connection_cap_reached"
    assert KEY not in repr(info.value) and KEY not in str(info.value)
    assert info.value.__suppress_context__


async def test_plain_session_still_gets_status_and_header(emu: FeedEmulator) -> None:
    """With a caller's session (no body middleware), the status and Retry-After header still arrive."""
    emu.reject_next(429, retry_after=9)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(feed.HandshakeRejected) as info:
            await feed.connect(session, config(emu))
    assert (info.value.status, info.value.retry_after, info.value.error) == (429, 9.0, None)


async def test_unreachable_server_is_connect_failed() -> None:
    """No server at all is ConnectFailed naming only the exception type."""
    async with FeedEmulator(api_keys=[KEY]) as gone:
        url = gone.url
    cfg = FeedConfig(api_key=Secret(KEY), url=url)
    async with feed.open_session(cfg) as session:
        with pytest.raises(feed.ConnectFailed) as info:
            await feed.connect(session, cfg)
    assert info.value.error == "ClientConnectorError"


async def test_close_frame_ends_reading_with_code_reason_and_health(emu: FeedEmulator) -> None:
    """A close frame ends the reader with its code and reason; `healthy` is true only once a message
    followed the welcome."""
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        await emu.close_all(1000, "key_expired")
        lost = await live.ended()
    assert (lost.cause, lost.code, lost.reason, lost.healthy) == ("closed", 1000, "key_expired", False)

    async with reading(config(emu)) as live:
        await emu.wait_connected(2)
        await emu.send_heartbeat()
        await emu.close_all(1008, "too_slow")
        lost = await live.ended()
    assert (lost.cause, lost.code, lost.reason, lost.healthy) == ("closed", 1008, "too_slow", True)


async def test_tcp_drop_ends_reading_as_dropped(emu: FeedEmulator) -> None:
    """An abrupt TCP drop (no close frame) ends the reader as `dropped` or `error`, never silently."""
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        await emu.drop_all()
        lost = await live.ended()
    assert lost.cause in ("dropped", "error", "reset")
    assert lost.reason == ""


async def test_silence_ends_reading_as_stale_even_with_pings() -> None:
    """With JSON heartbeats paused, no decoded message arrives within heartbeat_timeout and the reader
    ends as `stale`, although the server's WebSocket PINGs keep flowing (they do not count)."""
    grants = {KEY: KeyGrant()}
    async with FeedEmulator(api_keys=grants, heartbeat_interval=0.05, ping_interval=0.05) as emu:
        cfg = config(emu, heartbeat_timeout=0.3)
        async with reading(cfg) as live:
            await emu.wait_connected(1)
            emu.pause_heartbeats()
            lost = await live.ended()
            assert live.reader.last_message_at is not None
    assert lost.cause == "stale"


async def test_handshake_timeout_bounds_a_silent_server() -> None:
    """A server that accepts TCP but never answers the upgrade fails as ConnectFailed after
    handshake_timeout, not aiohttp's default of 300 s."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = FeedConfig(api_key=Secret(KEY), url=f"ws://127.0.0.1:{port}", handshake_timeout=0.2)
    started = time.monotonic()
    async with server, feed.open_session(cfg) as session:
        with pytest.raises(feed.ConnectFailed):
            await asyncio.wait_for(feed.connect(session, cfg), WAIT)
    assert time.monotonic() - started < 2.0
