"""The feed emulator speaks the cryptolisting.ws protocol as documented: tests use a plain aiohttp client."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge import cli
from bridge import config as config_mod
from bridge.errors import ConfigError
from bridge.feed.client import FeedReader, connect, open_session
from bridge.feed.codec import Announcement
from bridge.sim.demo import DEMO_API_KEY
from bridge.sim.emulator import FeedEmulator, KeyGrant
from bridge.sim.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET
from bridge.sim.verbs import EmulateSettings, control_request, serve_emulator, serve_fake_exchange

KEY = "dsk_" + "a1" * 32
LIMITED_KEY = "dsk_" + "b2" * 32
WAIT = 5.0  # safety bound only; every wait below ends on an event


@pytest.fixture
async def emu() -> AsyncIterator[FeedEmulator]:
    grants = {KEY: KeyGrant(), LIMITED_KEY: KeyGrant(exchanges=frozenset({"binance", "upbit"}))}
    async with FeedEmulator(api_keys=grants, heartbeat_interval=None, ping_interval=None) as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg
    obj: dict[str, Any] = orjson.loads(msg.data)
    return obj


async def handshake_status(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> int:
    try:
        ws = await session.ws_connect(url, **kwargs)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


async def test_welcome_is_binary_and_reports_allowed_exchanges(
    emu: FeedEmulator, session: aiohttp.ClientSession
) -> None:
    """The welcome arrives at once as a binary frame; allowedCex is the key's exchanges intersected with
    `cex`, or "*" for an unrestricted key without `cex`."""
    async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}) as ws:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type is aiohttp.WSMsgType.BINARY
        assert orjson.loads(msg.data)["allowedCex"] == "*"
    async with session.ws_connect(
        emu.url, headers={"X-API-Key": LIMITED_KEY}, params={"cex": "upbit,bithumb"}
    ) as ws:
        welcome = await next_json(ws)
        assert welcome["type"] == "welcome"
        assert welcome["allowedCex"] == "upbit"


async def test_handshake_key_checks(emu: FeedEmulator, session: aiohttp.ClientSession) -> None:
    """Missing key -> 401, unknown key -> 403, key in the query string -> 401 even if the header is
    right; each handshake is recorded with the key redacted."""
    assert await handshake_status(session, emu.url) == 401
    assert await handshake_status(session, emu.url, headers={"X-API-Key": "dsk_wrong"}) == 403
    url_with_key = emu.url + "/?api_key=" + KEY
    assert await handshake_status(session, url_with_key, headers={"X-API-Key": KEY}) == 401
    assert await handshake_status(session, emu.url, headers={"X-API-Key": KEY}) == 101
    assert [h.status for h in emu.handshakes] == [401, 403, 401, 101]
    assert [h.key_status for h in emu.handshakes] == ["missing", "unknown", "valid", "valid"]
    assert KEY not in repr(emu.handshakes)
    assert emu.handshakes[2].query["api_key"] == "***"


async def test_reject_next_sends_status_header_and_json_body(
    emu: FeedEmulator, session: aiohttp.ClientSession
) -> None:
    """reject_next answers the next upgrade with the status, a Retry-After header and a JSON body with
    `error` and `retry_after_s`, then the server accepts again."""
    emu.reject_next(429, retry_after=7, error="per_ip_connection_limit_reached")
    upgrade = {"X-API-Key": KEY, "Upgrade": "websocket", "Connection": "Upgrade"}
    async with session.get(emu.url, headers=upgrade) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        assert await resp.json() == {"error": "per_ip_connection_limit_reached", "retry_after_s": 7}
    emu.reject_next(500, count=2)
    assert await handshake_status(session, emu.url, headers={"X-API-Key": KEY}) == 500
    assert await handshake_status(session, emu.url, headers={"X-API-Key": KEY}) == 500
    assert await handshake_status(session, emu.url, headers={"X-API-Key": KEY}) == 101


async def test_reconnect_cooldown(session: aiohttp.ClientSession) -> None:
    """With a cooldown, the same key reconnecting too soon gets 429 connection_cooldown."""
    async with FeedEmulator(api_keys=[KEY], cooldown=30, ping_interval=None) as emu:
        assert await handshake_status(session, emu.url, headers={"X-API-Key": KEY}) == 101
        upgrade = {"X-API-Key": KEY, "Upgrade": "websocket", "Connection": "Upgrade"}
        async with session.get(emu.url, headers=upgrade) as resp:
            assert resp.status == 429
            body = await resp.json()
        assert body["error"] == "connection_cooldown"
        assert 29 <= body["retry_after_s"] <= 30


async def test_announcements_follow_the_cex_filter(emu: FeedEmulator, session: aiohttp.ClientSession) -> None:
    """announce() reaches only clients subscribed to the publisher and returns how many it reached."""
    async with (
        session.ws_connect(emu.url, headers={"X-API-Key": KEY}, params={"cex": "upbit"}) as upbit,
        session.ws_connect(emu.url, headers={"X-API-Key": LIMITED_KEY}) as both,
    ):
        await emu.wait_connected(2)
        await next_json(upbit)
        await next_json(both)
        assert await emu.announce(publisher="binance", ticker="ABC") == 1
        assert await emu.announce(publisher="upbit", ticker="XYZ", title="Upbit lists XYZ") == 2
        got = await next_json(both)
        assert (got["type"], got["publisher"], got["ticker"]) == ("announcement", "binance", "ABC")
        got = await next_json(upbit)
        assert (got["publisher"], got["ticker"], got["title"]) == ("upbit", "XYZ", "Upbit lists XYZ")


async def test_heartbeats_pause_while_pings_continue(session: aiohttp.ClientSession) -> None:
    """pause_heartbeats stops JSON heartbeats but not WebSocket PINGs; resume brings them back."""
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=0.01, ping_interval=0.02) as emu:
        emu.pause_heartbeats()
        async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}, autoping=False) as ws:
            assert (await next_json(ws))["type"] == "welcome"
            for _ in range(3):
                msg = await asyncio.wait_for(ws.receive(), WAIT)
                assert msg.type is aiohttp.WSMsgType.PING
                await ws.pong(msg.data)
            emu.resume_heartbeats()
            while (msg := await asyncio.wait_for(ws.receive(), WAIT)).type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            assert orjson.loads(msg.data)["type"] == "heartbeat"


async def test_close_all_sends_code_and_reason(emu: FeedEmulator, session: aiohttp.ClientSession) -> None:
    """close_all closes every client with the given close code and reason."""
    async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}) as ws:
        await next_json(ws)
        await emu.close_all(1000, "key_expired")
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "key_expired")
    await emu.wait_clients(0)


async def test_drop_all_sends_no_close_frame(emu: FeedEmulator, session: aiohttp.ClientSession) -> None:
    """drop_all aborts the TCP connection: the client sees the socket closed, never a close frame."""
    async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}) as ws:
        await next_json(ws)
        await emu.drop_all()
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert emu.client_count == 0


async def test_send_raw_frames_and_test_announcements(
    emu: FeedEmulator, session: aiohttp.ClientSession
) -> None:
    """send() passes bytes through untouched as binary or text frames; send_test_announcement and a
    client's {"type": "test"} both produce a test_announcement."""
    async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}, decode_text=False) as ws:
        await next_json(ws)
        await emu.send(b"\xff\xfe", binary=False)
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, b"\xff\xfe")
        await emu.send_garbage(b"[1]")
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"[1]")
        assert await emu.send_test_announcement(ticker="TST") == 1
        assert (await next_json(ws))["type"] == "test_announcement"
        await ws.send_str('{"type":"test"}')
        assert (await next_json(ws))["type"] == "test_announcement"
        assert emu.received == [b'{"type":"test"}']


async def test_send_to_one_key_returns_write_times(emu: FeedEmulator, session: aiohttp.ClientSession) -> None:
    """`send_stamped(key=...)` reaches only the clients connected with that key and returns, per client,
    the wall-clock time taken right before its frame was written (the benchmark's start mark)."""
    async with (
        session.ws_connect(emu.url, headers={"X-API-Key": KEY}) as a,
        session.ws_connect(emu.url, headers={"X-API-Key": LIMITED_KEY}) as b,
    ):
        await next_json(a), await next_json(b)  # welcomes
        await emu.wait_connected(2)
        before = time.time_ns()
        stamps = await emu.send_stamped({"type": "heartbeat", "n": 1}, key=LIMITED_KEY)
        assert len(stamps) == 1 and before <= stamps[0] <= time.time_ns()
        assert (await next_json(b))["n"] == 1
        assert await emu.send({"type": "heartbeat", "n": 2}, key=KEY) == 1
        assert (await next_json(a))["n"] == 2  # `a` never saw n=1
        assert await emu.send({"type": "heartbeat", "n": 3}, key="dsk_nobody") == 0


async def test_script_plays_with_meta_keys_stripped(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """A JSONL script (an old unversioned one: bare messages) plays once a client is connected; `delay`
    and `binary` steer sending and are stripped from the message; announcements respect the cex filter;
    the timestamps a line lacks are the time it was sent."""
    script = tmp_path / "feed.jsonl"
    script.write_text(
        "# demo\n"
        '{"type":"announcement","title":"Upbit lists A","ticker":"A","publisher":"upbit","delay":0}\n'
        "\n"
        '{"type":"announcement","title":"Binance lists B","ticker":"B","publisher":"binance","binary":false}\n'
    )
    emu = FeedEmulator(api_keys=[KEY], script_path=script, ping_interval=None)
    before_us = time.time_ns() // 1000
    async with emu, session.ws_connect(emu.url, headers={"X-API-Key": KEY}, params={"cex": "binance"}) as ws:
        await next_json(ws)
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        after_us = time.time_ns() // 1000
        assert msg.type is aiohttp.WSMsgType.TEXT
        got = orjson.loads(msg.data)
        assert before_us <= got.pop("detectedTimestampUs") <= after_us
        assert before_us <= got.pop("dispatchTimestampUs") <= after_us
        assert got == {
            "type": "announcement",
            "title": "Binance lists B",
            "ticker": "B",
            "publisher": "binance",
        }


def test_bad_script_is_a_config_error(tmp_path: Path) -> None:
    """A script line that is not a JSON object fails at construction, naming file and line."""
    script = tmp_path / "bad.jsonl"
    script.write_text('{"type":"heartbeat"}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        FeedEmulator(api_keys=[KEY], script_path=script)


async def test_an_endpoint_carrying_some_publishers_only(session: aiohttp.ClientSession) -> None:
    """`publishers` makes an endpoint like wss://kr.cryptolisting.ws (upbit only): every welcome's
    allowedCex is cut to them and other publishers' announcements reach nobody; announce_stamped
    returns one write time per client reached."""
    async with FeedEmulator(api_keys=[KEY], publishers=["Upbit"], ping_interval=None) as emu:
        async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}) as ws:
            assert (await next_json(ws))["allowedCex"] == "upbit"
            await emu.wait_connected(1)
            assert await emu.announce_stamped(publisher="binance", ticker="DEF") == []
            before = time.time_ns()
            stamps = await emu.announce_stamped(publisher="upbit", ticker="ABC", title="Upbit lists ABC")
            assert len(stamps) == 1 and before <= stamps[0] <= time.time_ns()
            assert (await next_json(ws))["ticker"] == "ABC"
        async with session.ws_connect(emu.url, headers={"X-API-Key": KEY}, params={"cex": "binance"}) as ws:
            assert (await next_json(ws))["allowedCex"] == ""


# ---- bridge emulate / bridge fake-exchange: what they print is config that works ------------------


async def test_emulate_prints_a_feed_block_the_daemons_feed_client_connects_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bridge emulate` prints its key and a `feed:` block; pasted into a config, check-config accepts
    it and the daemon's own feed client (connect + FeedReader) is welcomed by the emulator and
    receives what is announced through the printed control port."""
    out, stop, ready = io.StringIO(), asyncio.Event(), asyncio.Event()
    settings = EmulateSettings(port=0, control_port=0, heartbeat=60.0)
    task = asyncio.create_task(serve_emulator(settings, stop, out=out, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), WAIT)
        text = out.getvalue()
        assert f"API key: {DEMO_API_KEY} (accepted by this emulator only)" in text
        block = text[text.index("\nfeed:\n") + 1 :]
        assert "heartbeat_timeout: 65" in block  # heartbeats every 60 s: the daemon must wait longer
        path = tmp_path / "config.yaml"
        path.write_text(block + f"trading: {{dry_run: true}}\nstate_dir: {tmp_path / 'state'}\n")
        assert await asyncio.to_thread(cli.main, ["check-config", "-c", str(path)]) == 0
        assert capsys.readouterr().out.startswith("PAPER")
        cfg = config_mod.load(str(path)).feed
        queue: asyncio.Queue[Announcement] = asyncio.Queue()
        welcomed = asyncio.Event()
        reader = FeedReader(cfg, queue, on_welcome=lambda _: welcomed.set())
        async with open_session(cfg) as session:
            ws = await connect(session, cfg)
            reading = asyncio.create_task(reader.read(ws))
            try:
                await asyncio.wait_for(welcomed.wait(), WAIT)
                match = re.search(r"emulator-send --port (\d+) announce", text)
                assert match is not None
                await control_request(int(match[1]), "/announce", {"tickers": ["ABC"], "publisher": "upbit"})
                announced = await asyncio.wait_for(queue.get(), WAIT)
                assert (announced.tickers, announced.publisher) == (("ABC",), "upbit")
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                await ws.close()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, WAIT) == 0


async def test_fake_exchange_prints_keys_and_a_ccxt_block_that_connects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bridge fake-exchange` prints its API key, secret and an `exchanges.binance` block; pasted into a
    config, `check-config --connect` reaches the fake with real ccxt code and the keys are accepted."""
    out, stop, ready = io.StringIO(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_fake_exchange("127.0.0.1", 0, stop, out=out, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), WAIT)
        text = out.getvalue()
        assert f"API key: {DEFAULT_API_KEY}\nSecret: {DEFAULT_SECRET}" in text
        block = text[text.index("\nexchanges:\n") + 1 :]
        path = tmp_path / "config.yaml"
        path.write_text(
            f"feed: {{url: 'ws://127.0.0.1:1', api_key: {KEY}}}\n"
            + block
            + f"trading: {{dry_run: true}}\nstate_dir: {tmp_path / 'state'}\n"
        )
        code = await asyncio.to_thread(cli.main, ["check-config", "-c", str(path), "--connect"])
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert re.search(r"^binance: OK \(\d+ markets, clock offset", printed, re.MULTILINE), printed
    finally:
        stop.set()
        assert await asyncio.wait_for(task, WAIT) == 0


def test_a_port_in_use_is_one_line_and_exit_78(tmp_path: Path) -> None:
    """`bridge emulate --port P` with P taken: one line naming the option and port, exit 78, no
    traceback; the same for fake-exchange."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for argv in (
            ["emulate", "--port", str(port), "--control-port", "0"],
            ["fake-exchange", "--port", str(port)],
        ):
            proc = subprocess.run(
                [sys.executable, "-m", "bridge", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 78, proc.stderr
            assert "Traceback" not in proc.stderr
            assert f"bridge: --port {port}: cannot listen on 127.0.0.1:{port}: " in proc.stderr
            assert proc.stdout == ""


def test_sim_verbs_help_and_readme_agree() -> None:
    """Every option and action of emulate, emulator-send and fake-exchange has help text, and each one
    is named in README's "Local feed and exchange" section."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Local feed and exchange") : readme.index("## Stream files")]
    verbs = cli._parser()._subparsers._group_actions[0].choices
    checked = 0
    for name in ("emulate", "emulator-send", "fake-exchange"):
        assert f"bridge {name}" in section
        parsers = [verbs[name]]
        for action in verbs[name]._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    assert f"`{sub_name}" in section, sub_name
                    assert any(c.dest == sub_name and c.help for c in action._choices_actions), sub_name
                    parsers.append(sub)
        for parser in parsers:
            for action in parser._actions:
                if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                    continue
                assert action.help, (name, action.dest)
                if action.option_strings:
                    assert action.option_strings[-1] in section, (name, action.option_strings)
                checked += 1
    assert checked >= 18
