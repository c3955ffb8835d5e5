"""The recorder: raw frames with receipt times, replayable, rotated, never blocking the reader."""

from __future__ import annotations

import asyncio
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
    assert lines[0] == {"t": 1, "frame": '{"type":"heartbeat"}'}
    assert "b64" in lines[1] and lines[1]["t"] == 2
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
