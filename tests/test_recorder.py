"""The recorder: raw frames with receipt times, replayable, rotated, never blocking the reader."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import orjson

from bridge.feed.recorder import Recorder
from bridge.replay import read_stream


async def run_recorder(rec: Recorder, frames: list[tuple[bytes, int]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(rec.run(stop))
    for data, t in frames:
        rec.frame(data, t)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_frames_written_with_receipt_time_and_read_back(tmp_path: Path) -> None:
    """Every frame is stored with its receipt time; text stays text, bad UTF-8 is kept as base64, and
    replay reads back the exact bytes."""
    frames = [(b'{"type":"heartbeat"}', 1), (b"\xff\xfe garbage", 2), ('{"type":"x","t":"é"}'.encode(), 3)]
    path = tmp_path / "rec.jsonl"
    await run_recorder(Recorder(path), frames)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert lines[0] == {"version": 1}  # the stream format's version line opens every new file
    assert lines[1] == {"t": 1, "frame": '{"type":"heartbeat"}'}
    assert "b64" in lines[2] and lines[2]["t"] == 2
    stream = read_stream(path)
    assert [(e.frame, e.t_ns) for e in stream.events] == frames


async def test_rotation_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    """Past max_bytes the file rotates to .1, .2 ...; no more than `keep` old files remain."""
    path = tmp_path / "rec.jsonl"
    frame = b'{"type":"heartbeat","pad":"' + b"x" * 100 + b'"}'
    await run_recorder(Recorder(path, max_bytes=500, keep=2), [(frame, i) for i in range(40)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rec.jsonl", "rec.jsonl.1", "rec.jsonl.2"]
    assert all(p.stat().st_size <= 500 for p in tmp_path.iterdir())


async def test_full_buffer_drops_recording_not_the_feed(tmp_path: Path) -> None:
    """If the disk falls behind, frames beyond max_pending are dropped from the recording (counted);
    frame() itself never blocks or raises."""
    rec = Recorder(tmp_path / "rec.jsonl", max_pending=3)
    for i in range(5):
        rec.frame(b"{}", i)
    assert rec.dropped == 2
    stop = asyncio.Event()
    stop.set()
    await rec.run(stop)
    assert rec.written == 3


async def test_record_then_replay_gives_the_live_orders(tmp_path: Path) -> None:
    """A live session recorded by the daemon (`run --record`), replayed through the same strategy,
    yields the same orders: same symbols, sides, costs and client order ids."""
    from bridge.daemon import Daemon
    from bridge.replay import replay
    from bridge.sim.emulator import FeedEmulator
    from bridge.sim.fake_exchange import FakeBinance
    from tests.test_daemon import KEY, Running, make_config

    path = tmp_path / "session.jsonl"
    markets = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("GHI", "USDT", 10.0)]
    async with (
        FakeBinance(markets=markets) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        cfg = make_config(emu, fake, tmp_path / "state", dry_run=False)
        r = Running(Daemon(cfg, recorder=Recorder(path)))
        await r.armed()
        try:
            await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
            await emu.send_garbage()
            await emu.announce(title="Binance Will List DEF, GHI and NOPE", ticker="DEF,GHI,NOPE")
            await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
            await r.settle(3)
        finally:
            await r.stop()
        live = sorted(
            (
                o.params["symbol"],
                o.params["side"],
                o.params["newClientOrderId"],
            )
            for o in fake.orders
        )
    report = await replay(path, cfg)
    replayed = sorted(
        (r.outcome.symbol.replace("/", ""), r.outcome.side.upper(), r.outcome.client_order_id)
        for r in report.rows
        if r.outcome.ok
    )
    assert live == replayed
    assert len(live) == 3
    assert (report.duplicates, report.bad_frames) == (1, 1)


async def test_link_names_are_recorded_only_when_given(tmp_path: Path) -> None:
    """frame(..., link) adds `"link": name` after the frame (the daemon binds it per link with
    functools.partial); without a link the line is byte for byte what it always was."""
    path = tmp_path / "rec.jsonl"
    rec = Recorder(path)
    stop = asyncio.Event()
    task = asyncio.create_task(rec.run(stop))
    rec.frame(b'{"type":"heartbeat"}', 1)
    functools.partial(rec.frame, link="kr")(b'{"type":"heartbeat"}', 2)
    rec.frame(b"\xff", 3, link="main")
    rec.note(4, {"markets": {}})
    stop.set()
    await asyncio.wait_for(task, 10)
    assert path.read_bytes().splitlines() == [
        b'{"version":1}',
        b'{"t":1,"frame":"{\\"type\\":\\"heartbeat\\"}"}',
        b'{"t":2,"frame":"{\\"type\\":\\"heartbeat\\"}","link":"kr"}',
        b'{"t":3,"b64":"/w==","link":"main"}',
        b'{"markets":{}}',
    ]
    assert [(e.t_ns, e.link) for e in read_stream(path).events] == [(1, None), (2, "kr"), (3, "main")]


async def test_two_link_session_recorded_then_replayed_gives_the_live_orders(tmp_path: Path) -> None:
    """A daemon on two links (main, and kr carrying upbit only, 5 ms behind) records every frame with
    its link; upbit announcements appear once per link. Replayed, the recording gives the live orders,
    each once: the copies that came second are duplicates, live and in replay."""
    from bridge import config as config_mod
    from bridge.daemon import Daemon
    from bridge.replay import replay
    from bridge.sim.fake_exchange import FakeBinance
    from bridge.sim.feed_endpoints import EndpointSpec, SharedFeed
    from tests.test_daemon import KEY, STRATEGIES, Running

    path = tmp_path / "session.jsonl"
    markets = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("GHI", "USDT", 10.0)]
    specs = {"main": EndpointSpec(), "kr": EndpointSpec(delay_s=0.005, publishers={"upbit"})}
    async with (
        FakeBinance(markets=markets) as fake,
        SharedFeed(specs, api_keys=[KEY], heartbeat_interval=1.0) as feed,
    ):
        cfg = config_mod.loads(
            f"""
feed:
  api_key: {KEY}
  heartbeat_timeout: 5
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
  links:
    - {{name: main, url: "{feed.url("main")}"}}
    - {{name: kr, url: "{feed.url("kr")}"}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {fake.secret}
    ccxt: {json.dumps(fake.ccxt_config())}
trading: {{dry_run: false, max_event_age: 10, max_order_cost: 100}}
state_dir: {tmp_path / "state"}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [upbit, binance]}}
""",
            source="links.yaml",
        )
        r = Running(Daemon(cfg, recorder=Recorder(path)))
        await r.armed()
        try:
            await asyncio.wait_for(feed.endpoints["main"].wait_connected(1), 10)
            await asyncio.wait_for(feed.endpoints["kr"].wait_connected(1), 10)
            await feed.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
            await feed.endpoints["main"].send_garbage()
            await feed.announce(title="Binance Will List DEF, GHI and NOPE", ticker="DEF,GHI,NOPE")
            await feed.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
            await r.settle(5)  # 3 over main, 2 over kr
        finally:
            await r.stop()
        live = sorted(
            (o.params["symbol"], o.params["side"], o.params["newClientOrderId"]) for o in fake.orders
        )
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    announced = [
        (line["link"], orjson.loads(line["frame"])["ticker"])
        for line in lines
        if "frame" in line and b"announcement" in line["frame"].encode()
    ]
    assert sorted(announced) == sorted(
        [("main", "ABC"), ("kr", "ABC"), ("main", "DEF,GHI,NOPE"), ("main", "ABC"), ("kr", "ABC")]
    )
    assert all("link" in line for line in lines if "frame" in line or "b64" in line)
    report = await replay(path, cfg)
    replayed = sorted(
        (r.outcome.symbol.replace("/", ""), r.outcome.side.upper(), r.outcome.client_order_id)
        for r in report.rows
        if r.outcome.ok
    )
    assert live == replayed
    assert len(live) == 3
    assert (report.duplicates, report.bad_frames) == (3, 1)
