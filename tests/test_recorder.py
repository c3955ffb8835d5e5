"""The recorder: raw frames with receipt times, replayable, rotated, never blocking the reader."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from bridge.recorder import Recorder
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
