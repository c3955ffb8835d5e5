"""A running emulator takes announcements and faults from outside: its control endpoint over real HTTP,
and `bridge emulator-send`, seen from a real WebSocket client (the websockets library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from bridge import cli
from bridge.sim.emulator import FeedEmulator, Limits
from bridge.sim.emulator_control import ControlError, EmulatorControl, parse_announcement

KEY = "dsk_" + "e5" * 32
WAIT = 5.0  # safety bound only; every wait ends on a frame, an answer or an emulator state


@pytest.fixture
async def emu() -> AsyncIterator[FeedEmulator]:
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, ping_interval=None) as emulator:
        yield emulator


@pytest.fixture
async def control(emu: FeedEmulator) -> AsyncIterator[EmulatorControl]:
    async with EmulatorControl(emu, port=0) as ctl:
        yield ctl


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def client(emu: FeedEmulator, cex: str | None = None) -> ClientConnection:
    url = emu.url if cex is None else f"{emu.url}/?cex={cex}"
    ws = await connect(url, additional_headers={"X-API-Key": KEY}, ping_interval=None)
    assert (await message(ws))["type"] == "welcome"
    return ws


async def message(ws: ClientConnection) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return obj


async def post(
    http: aiohttp.ClientSession, control: EmulatorControl, path: str, body: Any
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(control.url + path, data=data) as resp:
        return resp.status, await resp.json()


async def test_announce_reaches_the_subscribed_clients(
    emu: FeedEmulator, control: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    """POST /announce with tickers, publisher and listing type sends an announcement (title made up like
    the publisher's, timestamps now) to the clients whose cex takes the publisher, and says how many."""
    upbit_only, everyone = await client(emu, "upbit"), await client(emu)
    try:
        body = {"tickers": ["ABC", "DEF"], "publisher": "Upbit", "listing_type": "spot_listing"}
        status, answer = await post(http, control, "/announce", body)
        assert (status, answer["ok"], answer["reached"]) == (200, True, 2)
        for ws in (upbit_only, everyone):
            got = await message(ws)
            assert (got["type"], got["ticker"], got["publisher"], got["listingType"]) == (
                "announcement",
                "ABC,DEF",
                "upbit",
                "spot_listing",
            )
            assert got["title"] == "[Upbit] ABC, DEF KRW market listing"
            assert got["detectedTimestampUs"] > 0
        body = {
            "tickers": "XYZ",
            "publisher": "binance",
            "title": "Binance Will List XYZ (XYZ)",
            "test": True,
        }
        status, answer = await post(http, control, "/announce", body)
        assert (status, answer["reached"]) == (200, 2)  # a test announcement goes to every client
        got = await message(everyone)
        assert (got["type"], got["title"]) == ("test_announcement", "Binance Will List XYZ (XYZ)")
        status, answer = await post(http, control, "/announce", {"tickers": ["Q"], "publisher": "binance"})
        assert answer["reached"] == 1
        assert (await message(everyone))["ticker"] == "Q"
    finally:
        await upbit_only.close()
        await everyone.close()


async def test_close_sends_the_code_and_reason(
    emu: FeedEmulator, control: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    """POST /close closes every client with a close frame carrying the code and reason given."""
    ws = await client(emu)
    status, answer = await post(http, control, "/close", {"code": 1000, "reason": "key_expired"})
    assert (status, answer) == (200, {"ok": True, "clients": 1, "code": 1000, "reason": "key_expired"})
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), WAIT)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1000, "key_expired")
    await asyncio.wait_for(emu.wait_clients(0), WAIT)


async def test_drop_ends_tcp_without_a_close_frame(
    emu: FeedEmulator, control: EmulatorControl, http: aiohttp.ClientSession
) -> None:
    """POST /drop aborts every client's TCP connection: the client gets no close frame."""
    ws = await client(emu)
    status, answer = await post(http, control, "/drop", {})
    assert (status, answer) == (200, {"ok": True, "clients": 1})
    with pytest.raises(ConnectionClosedError) as info:
        await asyncio.wait_for(ws.recv(), WAIT)
    assert info.value.rcvd is None
    async with http.get(control.url + "/status") as resp:
        assert (await resp.json())["clients"] == 0


async def test_heartbeats_stop_and_resume_while_pings_go_on(http: aiohttp.ClientSession) -> None:
    """POST /heartbeats {"on": false} stops the JSON heartbeats (the client still gets PINGs and what
    is announced); {"on": true} brings them back."""
    limits = Limits(ping_interval=0.01)
    async with (
        FeedEmulator(api_keys=[KEY], heartbeat_interval=0.01, limits=limits) as emu,
        EmulatorControl(emu) as control,
    ):
        ws = await client(emu)
        try:
            assert (await message(ws))["type"] == "heartbeat"
            assert (await post(http, control, "/heartbeats", {"on": False}))[1]["heartbeats"] is False
            await post(http, control, "/announce", {"tickers": ["MARK"], "publisher": "binance"})
            while (got := await message(ws))["type"] == "heartbeat":
                pass  # sent before the stop
            assert got["ticker"] == "MARK"
            pongs = emu.pongs
            await asyncio.wait_for(emu.wait_pongs(pongs + 5), WAIT)  # five PINGs later (answered) ...
            await post(http, control, "/announce", {"tickers": ["MARK2"], "publisher": "binance"})
            assert (await message(ws))["ticker"] == "MARK2"  # ... and no heartbeat came before this
            async with http.get(control.url + "/status") as resp:
                assert (await resp.json())["heartbeats"] is False
            assert (await post(http, control, "/heartbeats", {"on": True}))[1]["heartbeats"] is True
            assert (await message(ws))["type"] == "heartbeat"
        finally:
            await ws.close()


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/announce", b"not json", "not JSON"),
        ("/announce", [1], "JSON object"),
        ("/announce", {"publisher": "upbit"}, "tickers"),
        ("/announce", {"tickers": ["A B"], "publisher": "upbit"}, "tickers"),
        ("/announce", {"tickers": ["ABC"], "publisher": "up bit"}, "publisher"),
        ("/announce", {"tickers": ["ABC"], "publisher": "upbit", "test": "yes"}, "test"),
        ("/close", {"code": 1006, "reason": "x"}, "code"),
        ("/close", {"code": 1000, "reason": "x" * 124}, "reason"),
        ("/heartbeats", {"on": "off"}, "on"),
    ],
)
async def test_bad_requests_are_refused_logged_and_counted(
    emu: FeedEmulator, control: EmulatorControl, http: aiohttp.ClientSession, path: str, body: Any, error: str
) -> None:
    """A request the emulator cannot carry out is answered 400 with the reason, logged as
    emulator.control_refused and counted; the clients are left alone."""
    ws = await client(emu)
    try:
        with capture_logs() as logs:
            status, answer = await post(http, control, path, body)
        assert status == 400 and answer["ok"] is False and error in answer["error"]
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["emulator.control_refused"]
        assert control.refused == 1
        assert emu.client_count == 1
    finally:
        await ws.close()


def test_announcement_words() -> None:
    """`ABC upbit` and `ABC,DEF binance futures_listing` are what a person types; anything else is
    refused with the expected shape."""
    assert parse_announcement(["ABC", "upbit"]) == {
        "title": "[Upbit] ABC KRW market listing",
        "ticker": "ABC",
        "publisher": "upbit",
        "listingType": "spot_listing",
    }
    fields = parse_announcement(["ABC,DEF", "Binance", "futures_listing"])
    assert (fields["ticker"], fields["publisher"], fields["listingType"]) == (
        "ABC,DEF",
        "binance",
        "futures_listing",
    )
    assert fields["title"] == "Binance Will List ABC, DEF"
    assert parse_announcement(["XY", "okx"])["title"] == "Okx lists XY"
    with pytest.raises(ControlError, match="TICKERS PUBLISHER"):
        parse_announcement(["ABC"])


async def test_emulator_send_cli_drives_a_running_emulator(
    emu: FeedEmulator, control: EmulatorControl, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bridge emulator-send --port P announce|heartbeats|close|status`: the command line reaches the
    control endpoint over HTTP and the WebSocket client sees the result; each prints one line."""
    port = str(control.port)
    ws = await client(emu)

    async def send(*words: str) -> int:
        return await asyncio.to_thread(cli.main, ["emulator-send", "--port", port, *words])

    assert await send("announce", "ABC,DEF", "binance", "--title", "Binance Will List ABC and DEF") == 0
    got = await message(ws)
    assert (got["ticker"], got["title"]) == ("ABC,DEF", "Binance Will List ABC and DEF")
    assert await send("heartbeats", "stop") == 0
    assert not emu.heartbeats_on
    assert await send("status") == 0
    assert await send("close", "1008", "too_slow") == 0
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), WAIT)
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (
        1008,
        "too_slow",
    )
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "announced ABC,DEF (binance spot_listing, 'Binance Will List ABC and DEF') to 1 client(s)",
        "heartbeats stopped (PINGs go on)",
        f"{emu.url}: 1 client(s), 1 connection(s) so far, heartbeats stopped",
        "closed 1 client(s) with 1008 too_slow",
    ]


async def test_emulator_send_errors_are_one_line(
    control: EmulatorControl, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    """No endpoint at the port, or a refused request: one line on stderr naming the problem, exit 1."""
    code = await asyncio.to_thread(cli.main, ["emulator-send", "--port", str(unused_tcp_port), "drop"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"bridge: no emulator control endpoint at http://127.0.0.1:{unused_tcp_port} "
        f"(is `bridge emulate --control-port {unused_tcp_port}` running?)\n"
    )
    code = await asyncio.to_thread(cli.main, ["emulator-send", "--port", str(control.port), "close", "1005"])
    err = capsys.readouterr().err
    assert code == 1
    # (the emulator, in this same process, logs its refusal on stderr too)
    lines = [line for line in err.splitlines() if line.startswith("bridge:")]
    assert len(lines) == 1 and lines[0].startswith(
        "bridge: the emulator refused: code: expected a close code"
    )
    assert "Traceback" not in err
