"""The emulator keeps the protocol page's rules (PING/PONG, frame size, message rate, test requests),
checked with an independent client: the `websockets` library, its asyncio client and, where a test must
control PONGs frame by frame, its sans-I/O protocol over a plain asyncio socket."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bridge.sim.emulator import FeedEmulator, Limits

KEY = "dsk_" + "c3" * 32
OTHER_KEY = "dsk_" + "d4" * 32
WAIT = 5.0  # safety bound only; every wait below ends on a frame or an emulator state


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RawClient:
    """A WebSocket client on websockets' sans-I/O protocol: every frame the server sends is seen, PINGs
    included, and the test decides whether PONGs go back (`answer_pings`, applied as frames arrive off
    the socket; `pongs_sent` counts the PONGs that went)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: ClientProtocol):
        self.reader, self.writer, self.proto = reader, writer, proto
        self.answer_pings = True
        self.pongs_sent = 0
        self._events: deque[Any] = deque()

    @classmethod
    async def open(cls, url: str, key: str = KEY) -> RawClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        proto = ClientProtocol(uri)
        request = proto.connect()
        request.headers["X-API-Key"] = key
        proto.send_request(request)
        client = cls(reader, writer, proto)
        for data in proto.data_to_send():
            writer.write(data)
        response = await client._next_event()
        assert isinstance(response, Response) and response.status_code == 101, response
        return client

    async def next_frame(self) -> Frame:
        event = await self._next_event()
        assert isinstance(event, Frame), event
        return event

    async def next_message(self) -> dict[str, Any]:
        """The next data frame, as JSON, skipping PINGs."""
        while (frame := await self.next_frame()).opcode is Opcode.PING:
            pass
        assert frame.opcode in (Opcode.BINARY, Opcode.TEXT), frame
        obj: dict[str, Any] = orjson.loads(frame.data)
        return obj

    async def eof(self) -> bool:
        """Whether the server closed the TCP connection (after the close handshake)."""
        return await asyncio.wait_for(self.reader.read(1), WAIT) == b""

    def close(self) -> None:
        self.writer.close()

    async def _next_event(self) -> Any:
        while not self._events:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            if not data:
                raise AssertionError("the server dropped the TCP connection without a close frame")
            self.proto.receive_data(data)
            events = self.proto.events_received()
            replies = self.proto.data_to_send()  # the PONGs (and a close reply) the protocol queued
            pings = sum(1 for e in events if isinstance(e, Frame) and e.opcode is Opcode.PING)
            closing = any(isinstance(e, Frame) and e.opcode is Opcode.CLOSE for e in events)
            if self.answer_pings or closing or not pings:
                for reply in replies:
                    self.writer.write(reply)
                self.pongs_sent += pings
            self._events.extend(events)
        return self._events.popleft()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ws_client() -> AsyncIterator[list[ClientConnection]]:
    """Connections opened with the websockets asyncio client, closed at the end."""
    opened: list[ClientConnection] = []
    yield opened
    for ws in opened:
        await ws.close()


async def open_ws(emu: FeedEmulator, opened: list[ClientConnection], key: str = KEY) -> ClientConnection:
    ws = await connect(emu.url, additional_headers={"X-API-Key": key}, ping_interval=None)
    opened.append(ws)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert welcome["type"] == "welcome"
    return ws


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; the code and reason of its close frame."""
    with pytest.raises(ConnectionClosedError) as info:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def test_the_defaults_are_the_protocol_pages_numbers() -> None:
    """PING every 15 s, close after 30 s without a PONG, 1 KB frames, 30 messages a minute, one test
    request a minute: the numbers of docs/cryptolisting-api (changing one must be on purpose)."""
    limits = Limits()
    assert (limits.ping_interval, limits.pong_timeout) == (15.0, 30.0)
    assert (limits.max_frame, limits.max_messages, limits.message_window) == (1024, 30, 60.0)
    assert limits.test_interval == 60.0


async def test_pings_go_out_and_pongs_keep_the_connection_open(clock: Clock) -> None:
    """The server PINGs at its interval; a client that answers stays connected however long it runs
    (here 80 s of the emulator's clock against a 30 s PONG timeout)."""
    limits = Limits(ping_interval=0.01, pong_timeout=30.0)
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, limits=limits, clock=clock) as emu:
        client = await RawClient.open(emu.url)
        try:
            assert (await client.next_message())["type"] == "welcome"
            for _ in range(4):
                frame = await client.next_frame()
                assert frame.opcode is Opcode.PING
                await asyncio.wait_for(emu.wait_pongs(client.pongs_sent), WAIT)
                clock.now += 20.0  # 20 s since this PONG, 20*n since the connect
            assert (await client.next_frame()).opcode is Opcode.PING  # still open, still pinged
            assert emu.client_count == 1
        finally:
            client.close()


async def test_no_pong_for_30_s_is_a_close_frame_not_a_tcp_drop(clock: Clock) -> None:
    """A client that stops answering PINGs gets a close frame (1001 pong_timeout) once 30 s passed
    since its last PONG, and only then the TCP connection ends."""
    limits = Limits(ping_interval=0.01, pong_timeout=30.0)
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, limits=limits, clock=clock) as emu:
        client = await RawClient.open(emu.url)
        try:
            await client.next_message()  # welcome
            assert (await client.next_frame()).opcode is Opcode.PING
            client.answer_pings = False
            await asyncio.wait_for(emu.wait_pongs(client.pongs_sent), WAIT)  # every PONG sent has landed
            clock.now += 29.0
            assert (await client.next_frame()).opcode is Opcode.PING  # 29 s: not yet
            clock.now += 1.0
            while (frame := await client.next_frame()).opcode is Opcode.PING:
                pass  # pings already on their way
            assert frame.opcode is Opcode.CLOSE
            close = Close.parse(frame.data)
            assert (close.code, close.reason) == (1001, "pong_timeout")
            assert await client.eof()
            await asyncio.wait_for(emu.wait_clients(0), WAIT)
        finally:
            client.close()


async def test_pong_timeout_on_the_real_clock(ws_client: list[ClientConnection]) -> None:
    """Without an injected clock: the websockets client, which answers PINGs by itself, stays up past
    several PONG timeouts; a raw client that never answers is closed 1001 pong_timeout."""
    limits = Limits(ping_interval=0.02, pong_timeout=0.3)
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, limits=limits) as emu:
        ws = await open_ws(emu, ws_client)
        await asyncio.wait_for(emu.wait_pongs(40), WAIT)  # >= 0.8 s of PINGs, answered
        assert await emu.send({"type": "heartbeat"}) == 1
        assert orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "heartbeat"
        silent = await RawClient.open(emu.url)
        silent.answer_pings = False
        try:
            await silent.next_message()  # welcome
            while (frame := await silent.next_frame()).opcode is Opcode.PING:
                pass
            close = Close.parse(frame.data)
            assert (frame.opcode, close.code, close.reason) == (Opcode.CLOSE, 1001, "pong_timeout")
        finally:
            silent.close()
        assert emu.client_count <= 1  # the answering client is not touched by the other's timeout


async def test_a_frame_over_1_kb_is_closed_1009_frame_too_large(ws_client: list[ClientConnection]) -> None:
    """A client frame of exactly 1 KB is taken; one byte more and the server closes 1009
    frame_too_large, as the page says."""
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, ping_interval=None) as emu:
        ws = await open_ws(emu, ws_client)
        await ws.send("x" * 1024)
        await asyncio.wait_for(emu.wait_received(1), WAIT)
        assert len(emu.received[0]) == 1024
        await ws.send(b"y" * 1025)
        assert await closed_with(ws) == (1009, "frame_too_large")
        assert len(emu.received) == 1


async def test_31st_message_in_a_minute_is_closed_1008(
    clock: Clock, ws_client: list[ClientConnection]
) -> None:
    """30 client messages in a minute are ignored (the connection stays up); the 31st closes it with
    1008 rate_limit_exceeded. The window slides: 30 more a minute later are fine again."""
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, ping_interval=None, clock=clock) as emu:
        ws = await open_ws(emu, ws_client)
        for i in range(30):
            await ws.send(f'{{"n":{i}}}')
        await asyncio.wait_for(emu.wait_received(30), WAIT)
        clock.now += 60.0  # the first 30 leave the window
        for i in range(30):
            await ws.send(f'{{"n":{30 + i}}}')
        await asyncio.wait_for(emu.wait_received(60), WAIT)
        assert await emu.send({"type": "heartbeat"}) == 1  # still connected after 60 messages
        assert orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "heartbeat"
        clock.now += 59.0  # the second 30 are still in the window
        await ws.send('{"n":60}')
        assert await closed_with(ws) == (1008, "rate_limit_exceeded")


async def test_test_requests_once_a_minute_per_key(clock: Clock, ws_client: list[ClientConnection]) -> None:
    """{"type":"test"} is answered by a test_announcement once a minute per key; a second one sooner
    gets {"type":"error","code":"test_rate_limited","retryAfterSecs":N} on any connection of that key
    and the connection stays up; another key has its own minute."""
    async with FeedEmulator(
        api_keys=[KEY, OTHER_KEY], heartbeat_interval=None, ping_interval=None, clock=clock
    ) as emu:
        first = await open_ws(emu, ws_client)
        second = await open_ws(emu, ws_client)
        other = await open_ws(emu, ws_client, OTHER_KEY)

        async def ask(ws: ClientConnection) -> dict[str, Any]:
            await ws.send('{"type":"test"}')
            answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
            return answer

        assert (await ask(first))["type"] == "test_announcement"
        clock.now += 17.5
        assert await ask(first) == {"type": "error", "code": "test_rate_limited", "retryAfterSecs": 43}
        assert (await ask(second))["retryAfterSecs"] == 43  # the same key on another connection
        assert (await ask(other))["type"] == "test_announcement"
        clock.now += 42.5
        assert (await ask(second))["type"] == "test_announcement"  # a minute after the answered one
        assert emu.client_count == 3
