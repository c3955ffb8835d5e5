"""The heartbeat watchdog after an event-loop stall, against a real local WebSocket server: a frame that
is readable when the loop wakes is read and handled, never dropped by the stale timer firing first; and
what the client cuts to a length for a log line or a label is scrubbed of secrets before the cut."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from bridge import secrets, telemetry
from bridge.config import FeedConfig
from bridge.feed import client as feed
from bridge.feed.codec import Announcement
from bridge.secrets import Secret
from bridge.sim.emulator import FeedEmulator
from bridge.sim.feed_messages import announcement, encode, welcome
from tests.log_probe import probing

KEY = "dsk_" + "e5" * 32
WAIT = 5.0  # safety bound only
LIMIT = 0.5  # heartbeat_timeout of these connections (room for a slow machine before the stall)
STALL = 1.2 * LIMIT  # how long the loop is blocked: the watchdog is overdue when it wakes

Order = Literal["sent_then_stall", "stall_then_sent"]


@dataclass
class StallingServer:
    """Sends the welcome, then on `go` one announcement with the event loop blocked for STALL seconds
    around it, then keeps the connection open and silent.

    `sent_then_stall`: the frame is written, then the loop blocks in the same step, so it sits in the
    client's socket buffer the whole stall; when the loop wakes, the read and the overdue watchdog are
    due in the same pass. `stall_then_sent`: the loop blocks, then the frame is written one step later,
    after the loop's pass over the sockets but before the overdue watchdog runs."""

    order: Order
    queue: asyncio.Queue[Announcement]
    go: asyncio.Event = field(default_factory=asyncio.Event)
    queued_at_stall: int | None = None  # what the client had queued when the loop blocked
    url: str = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.send_bytes(encode(welcome("pro", None, None)))
        await self.go.wait()
        frame = encode(announcement("announcement", {"ticker": "STALL"}))
        if self.order == "sent_then_stall":
            await ws.send_bytes(frame)  # a small frame: written at once, no suspension
            self.stall()
        else:
            self.stall()
            await asyncio.sleep(0)  # one step later: the watchdog is already due
            await ws.send_bytes(frame)
        async for _ in ws:  # until the client closes
            pass
        return ws

    def stall(self) -> None:
        self.queued_at_stall = self.queue.qsize()
        time.sleep(STALL)  # the stall itself (a blocking call on the loop), not a wait for anything


@asynccontextmanager
async def stalling_server(order: Order, queue: asyncio.Queue[Announcement]) -> AsyncIterator[StallingServer]:
    server = StallingServer(order, queue)
    app = web.Application()
    app.router.add_get("/", server.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    server.url = f"ws://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def next_or_end(queue: asyncio.Queue[Announcement], reader: asyncio.Task[None]) -> Announcement:
    """The next queued announcement; if the reader ends first (a dropped frame: `stale`), its error."""
    getting = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({getting, reader}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    if getting in done:
        return getting.result()
    getting.cancel()
    reader.result()  # raises the ConnectionLost that ended it
    raise AssertionError("neither an announcement nor the end of the reader")


def feed_events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The structlog events named `name`, as raw event dicts (before any output redaction)."""
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


@pytest.mark.parametrize("order", ["sent_then_stall", "stall_then_sent"])
async def test_frame_readable_after_a_stall_is_handled_not_dropped(
    order: Order, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop is blocked for twice heartbeat_timeout with an announcement readable (or written just
    as it wakes): the announcement is queued, the connection stays up, the averted stale is logged and
    counted once; real silence afterwards still ends the link as `stale`."""
    caplog.set_level(logging.DEBUG)
    queue: asyncio.Queue[Announcement] = asyncio.Queue()
    before = telemetry.value("bridge_feed_stale_averted_total")
    async with stalling_server(order, queue) as server:
        cfg = FeedConfig(api_key=Secret(KEY), url=server.url, heartbeat_timeout=LIMIT)
        welcomed = asyncio.Event()
        reader = feed.FeedReader(cfg, queue, on_welcome=lambda _: welcomed.set())
        async with feed.open_session(cfg) as session:
            ws = await feed.connect(session, cfg)
            task = asyncio.create_task(reader.read(ws))
            try:
                await asyncio.wait_for(welcomed.wait(), WAIT)
                server.go.set()
                got = await next_or_end(queue, task)
                assert server.queued_at_stall == 0  # it was not read before the stall
                assert got.tickers == ("STALL",)
                assert not task.done()  # the connection lives on
                assert telemetry.value("bridge_feed_stale_averted_total") == before + 1
                [averted] = feed_events(caplog, "feed.stale_averted")
                assert averted["heartbeat_timeout"] == LIMIT
                assert averted["silent_s"] >= STALL
                with pytest.raises(feed.ConnectionLost) as info:  # nothing more: a real silence
                    await asyncio.wait_for(task, WAIT)
                assert info.value.cause == "stale" and info.value.healthy
                assert telemetry.value("bridge_feed_stale_averted_total") == before + 1
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await ws.close()


async def test_stall_with_nothing_readable_is_still_stale() -> None:
    """A stall with no frame sent: the overdue watchdog finds nothing readable and ends the link as
    `stale` at once; nothing is counted as averted."""
    queue: asyncio.Queue[Announcement] = asyncio.Queue()
    before = telemetry.value("bridge_feed_stale_averted_total")
    async with stalling_server("sent_then_stall", queue) as server:
        cfg = FeedConfig(api_key=Secret(KEY), url=server.url, heartbeat_timeout=LIMIT)
        welcomed = asyncio.Event()
        reader = feed.FeedReader(cfg, queue, on_welcome=lambda _: welcomed.set())
        async with feed.open_session(cfg) as session:
            ws = await feed.connect(session, cfg)
            task = asyncio.create_task(reader.read(ws))
            try:
                await asyncio.wait_for(welcomed.wait(), WAIT)
                server.stall()
                with pytest.raises(feed.ConnectionLost) as info:
                    await asyncio.wait_for(task, WAIT)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await ws.close()
    assert info.value.cause == "stale" and not info.value.healthy
    assert queue.empty()
    assert telemetry.value("bridge_feed_stale_averted_total") == before


async def test_cut_texts_are_scrubbed_before_the_cut(caplog: pytest.LogCaptureFixture) -> None:
    """A secret straddling the cut of an unknown message type (log field and metric label, 40
    characters) or of a refused handshake's `error` (80) leaves no prefix of itself behind."""
    caplog.set_level(logging.DEBUG)
    secret = "sk-" + "9f" * 16
    with secrets.isolated():
        secrets.register(secret)
        async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, ping_interval=None) as emu:
            cfg = FeedConfig(api_key=Secret(KEY), url=emu.url, heartbeat_timeout=30.0)
            queue: asyncio.Queue[Announcement] = asyncio.Queue()
            welcomed = asyncio.Event()
            reader = feed.FeedReader(cfg, queue, on_welcome=lambda _: welcomed.set())
            with probing("feed.unknown_type", logger="") as probes:
                async with feed.open_session(cfg) as session:
                    ws = await feed.connect(session, cfg)
                    task = asyncio.create_task(reader.read(ws))
                    try:
                        await asyncio.wait_for(welcomed.wait(), WAIT)
                        await emu.send({"type": "t" * 30 + secret})
                        await asyncio.wait_for(probes["feed.unknown_type"].seen.wait(), WAIT)
                    finally:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        await ws.close()
                    emu.reject_next(429, error="e" * 70 + secret)
                    with pytest.raises(feed.HandshakeRejected) as info:
                        await feed.connect(session, cfg)
    [event] = feed_events(caplog, "feed.unknown_type")
    prefix = secret[:8]
    assert event["type"].startswith("t" * 30) and prefix not in event["type"] and len(event["type"]) <= 40
    assert prefix not in generate_latest(telemetry.REGISTRY).decode()
    assert info.value.error is not None and info.value.error.startswith("e" * 70)
    assert prefix not in info.value.error and len(info.value.error) <= 80
