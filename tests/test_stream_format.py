"""The one stream format (bridge/feed/stream_format.py): what `record` writes, `replay` reads and
`emulate --script` plays; versioned, and every file written before the version line still reads."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from bridge import cli
from bridge.errors import ConfigError, ExitCode
from bridge.feed import stream_format
from bridge.feed.recorder import Recorder
from bridge.feed.stream_format import StreamLine, StreamVersionError
from bridge.replay import read_stream
from bridge.sim.demo import DEMO_API_KEY
from bridge.sim.emulator import FeedEmulator
from bridge.sim.verbs import EmulateSettings, serve_emulator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples/streams").glob("*.jsonl"))
KEY = "dsk_" + "f6" * 32
WAIT = 5.0  # safety bound only


def test_write_then_read_gives_back_every_kind_of_line(tmp_path: Path) -> None:
    """Frames (text, non-UTF-8 with a link), messages with emulator steering, markets and prices are
    written with a version line first and read back as written."""
    path = tmp_path / "s.jsonl"
    announcement = {"type": "announcement", "ticker": "ABC", "publisher": "upbit"}
    stream_format.write(
        path,
        [
            stream_format.markets_line({"binance": {"ABC/USDT": 1.5, "NEW/USDT": None}}),
            stream_format.frame_line(10, b'{"type":"heartbeat"}'),
            stream_format.frame_line(11, b"\xff\x00", link="kr"),
            stream_format.message_line(announcement, t_ns=12, delay=0.5, binary=False),
            stream_format.price_line(13, "binance", "ABC/USDT", 1.75),
        ],
    )
    assert path.read_bytes().splitlines()[0] == b'{"version":1}'
    read = stream_format.read(path)
    assert (read.version, read.versioned) == (1, True)
    assert read.lines == [
        StreamLine(2, markets={"binance": {"ABC/USDT": 1.5, "NEW/USDT": None}}),
        StreamLine(3, 10, frame=b'{"type":"heartbeat"}'),
        StreamLine(4, 11, frame=b"\xff\x00", link="kr"),
        StreamLine(5, 12, frame=orjson.dumps(announcement), message=announcement, delay=0.5, binary=False),
        StreamLine(6, 13, price=("binance", "ABC/USDT", 1.75)),
    ]


async def test_a_recording_is_versioned_and_replays(tmp_path: Path) -> None:
    """The recorder opens each new file with the version line; replay reads the frames back; a
    recording appended to an old, unversioned file gets no version line in its middle."""
    path = tmp_path / "rec.jsonl"
    stop = asyncio.Event()
    recorder = Recorder(path)
    task = asyncio.create_task(recorder.run(stop))
    recorder.frame(b'{"type":"welcome"}', 5)
    stop.set()
    await asyncio.wait_for(task, WAIT)
    assert stream_format.read(path).versioned
    assert [(e.t_ns, e.frame) for e in read_stream(path).events] == [(5, b'{"type":"welcome"}')]

    old = tmp_path / "old.jsonl"
    old.write_bytes(b'{"t":1,"frame":"{\\"type\\":\\"heartbeat\\"}"}\n')
    stop = asyncio.Event()
    recorder = Recorder(old)
    task = asyncio.create_task(recorder.run(stop))
    recorder.frame(b'{"type":"heartbeat"}', 2)
    stop.set()
    await asyncio.wait_for(task, WAIT)
    assert b"version" not in old.read_bytes()
    assert [e.t_ns for e in read_stream(old).events] == [1, 2]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_read_the_same_with_and_without_the_version_line(example: Path, tmp_path: Path) -> None:
    """Each bundled example is version 1; the same lines without the version line (as every file
    before it was written) read to the same events."""
    versioned = stream_format.read(example)
    assert (versioned.version, versioned.versioned) == (1, True)
    unversioned = tmp_path / example.name
    unversioned.write_bytes(b"\n".join(example.read_bytes().splitlines()[1:]) + b"\n")
    old = stream_format.read(unversioned)
    assert (old.version, old.versioned) == (1, False)
    assert [(line.t_ns, line.frame, line.price, line.markets) for line in old.lines] == [
        (line.t_ns, line.frame, line.price, line.markets) for line in versioned.lines
    ]
    assert len(versioned.lines) > 2


def test_an_old_emulator_script_reads_as_messages(tmp_path: Path) -> None:
    """The emulator's old script lines (a bare message with `delay`/`binary`, `#` comments) are
    messages of the one format: steering keys kept apart from the message."""
    path = tmp_path / "script.jsonl"
    path.write_text('# old\n{"type":"heartbeat","delay":1.5,"binary":false}\n')
    (line,) = stream_format.read(path).lines
    assert (line.message, line.delay, line.binary, line.t_ns) == ({"type": "heartbeat"}, 1.5, False, None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"version":2}\n', "version 2 is newer than this bridge reads"),
        ('{"version":0}\n', "version must be a whole number >= 1"),
        ('{"version":"1"}\n', "version must be a whole number >= 1"),
        ('{"markets":{}}\n{"version":1}\n', ":2: the version line must be the first line"),
        ('{"version":1}\n{"t":-1,"frame":"x"}\n', ":2: not a stream line (t must be"),
        ('{"version":1}\n{"t":1,"frame":"x","msg":{}}\n', ":2: not a stream line (one of"),
        ('{"version":1}\n{"t":1,"b64":"%%%"}\n', ":2: not a stream line"),
        ('{"version":1}\n{"delay":-1,"msg":{"type":"x"}}\n', ":2: not a stream line (delay must be"),
        ('{"version":1}\n{"t":1}\n', ":2: not a stream line (expected one of"),
    ],
)
def test_bad_files_are_one_config_error_naming_the_line(tmp_path: Path, text: str, error: str) -> None:
    """A newer version, a malformed version line or a malformed line is a ConfigError (exit 78) naming
    the file (and the line where there is one)."""
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        stream_format.read(path)
    assert str(info.value).startswith(str(path))
    assert error in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG


def test_replay_of_a_newer_version_exits_78_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bridge replay` of a file from a newer bridge: one line on stderr, exit 78."""
    path = tmp_path / "future.jsonl"
    path.write_text('{"version":9}\n{"t":1,"frame":"{}"}\n')
    code = cli.main(["replay", str(path), "-c", str(ROOT / "examples/replay.yaml")])
    err = capsys.readouterr().err
    assert code == 78
    assert err == (
        f"bridge: {path}: stream format version 9 is newer than this bridge reads (version 1 and older): "
        "upgrade bridge to read it\n"
    )


def test_emulate_with_a_newer_script_exits_78_without_a_traceback(tmp_path: Path) -> None:
    """`bridge emulate --script` of a file from a newer bridge: the same one line, exit 78."""
    path = tmp_path / "future.jsonl"
    path.write_text('{"version":2}\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "emulate",
            "--port",
            "0",
            "--control-port",
            "0",
            "--script",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 78
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"bridge: {path}: stream format version 2 is newer than this bridge reads (version 1 and older): "
        "upgrade bridge to read it"
    )
    assert isinstance(StreamVersionError(""), ConfigError)


def test_replay_warns_once_about_lines_without_a_time(tmp_path: Path) -> None:
    """Replay gives a line without `t` its announcement's detection time (no warning: that time is
    known) or else the previous line's time, and warns once with how many and the first line."""
    path = tmp_path / "untimed.jsonl"
    ann = {"type": "announcement", "ticker": "A", "publisher": "binance", "listingType": "spot_listing"}
    stream_format.write(
        path,
        [
            stream_format.message_line({**ann, "detectedTimestampUs": 7}),
            stream_format.message_line({"type": "heartbeat"}, t_ns=9000),
            stream_format.message_line({**ann, "ticker": "B"}),
            stream_format.price_line(10_000, "binance", "B/USDT", 1.0) | {"t": None},
        ],
    )
    with capture_logs() as logs:
        stream = read_stream(path)
    assert [e.t_ns for e in stream.events] == [7000, 9000, 9000, 9000]
    assert stream.untimed == [4, 5]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(w["event"], w["lines"], w["first_line"]) for w in warnings] == [
        ("replay.missing_timestamps", 2, 4)
    ]

    timed = tmp_path / "timed.jsonl"
    stream_format.write(timed, [stream_format.message_line(ann, t_ns=1)])
    with capture_logs() as logs:
        read_stream(timed)
    assert not [e for e in logs if e["log_level"] == "warning"]


def test_missing_timestamps_are_filled_with_now_when_emulating() -> None:
    """The emulator fills what a message lacks (an announcement's detection and dispatch times, a
    heartbeat's time) and keeps what it has."""
    now = 1_767_225_600_123_456_789
    filled = stream_format.fill_timestamps({"type": "announcement", "detectedTimestampUs": 5}, now)
    assert filled == {"type": "announcement", "detectedTimestampUs": 5, "dispatchTimestampUs": now // 1000}
    assert (
        stream_format.fill_timestamps({"type": "test_announcement"}, now)["detectedTimestampUs"]
        == now // 1000
    )
    beat = stream_format.fill_timestamps({"type": "heartbeat"}, now)
    assert beat == {"type": "heartbeat", "timestampNs": now, "timeUtc": "2026-01-01T00:00:00.123456Z"}
    assert stream_format.fill_timestamps({"type": "welcome"}, now) == {"type": "welcome"}


async def test_emulate_plays_the_bundled_script_with_fresh_timestamps(tmp_path: Path) -> None:
    """The bundled emulator script's messages (its delays left out here) go out in order, each stamped
    when sent; a recorded frame line goes out byte for byte."""
    lines = stream_format.read(ROOT / "examples/streams/emulate.jsonl").lines
    messages = [line.message for line in lines if line.message is not None]
    assert len(messages) == len(lines) > 0
    assert not any("detectedTimestampUs" in m for m in messages)
    script = tmp_path / "fast.jsonl"
    raw = b'{"type":"heartbeat","raw":true}'
    stream_format.write(
        script, [*map(stream_format.message_line, messages), stream_format.frame_line(1, raw)]
    )
    async with (
        FeedEmulator(api_keys=[KEY], script_path=script, ping_interval=None) as emu,
        aiohttp.ClientSession() as session,
        session.ws_connect(emu.url, headers={"X-API-Key": KEY}) as ws,
    ):
        got = [await asyncio.wait_for(ws.receive(), WAIT) for _ in range(len(messages) + 2)]
    assert orjson.loads(got[0].data)["type"] == "welcome"
    sent = [orjson.loads(m.data) for m in got[1:-1]]
    assert [m["ticker"] for m in sent] == [m["ticker"] for m in messages]
    assert all(m["detectedTimestampUs"] == m["dispatchTimestampUs"] > 0 for m in sent)
    assert got[-1].data == raw


async def test_serve_emulator_refuses_a_newer_script_before_listening(tmp_path: Path) -> None:
    """The script is read before anything listens: a newer version fails at start-up."""
    path = tmp_path / "future.jsonl"
    path.write_text('{"version":2}\n')
    settings = EmulateSettings(port=0, control_port=0, keys=(DEMO_API_KEY,), script=path)
    with pytest.raises(StreamVersionError):
        await serve_emulator(settings, asyncio.Event(), out=io.StringIO())


def test_the_readme_example_is_a_valid_stream(tmp_path: Path) -> None:
    """The example in README "Stream files" reads as the format it documents, every kind of line in it."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```jsonl\n", readme.index("## Stream files")) + len("```jsonl\n")
    path = tmp_path / "readme.jsonl"
    path.write_text(readme[start : readme.index("```", start)])
    read = stream_format.read(path)
    assert read.versioned and len(read.lines) == 6
    assert {line.link for line in read.lines} == {None, "kr"}
    assert read.lines[-1].delay == 2 and read.lines[-1].message is not None
    assert [e.t_ns for e in read_stream(path).events][-1] == 1767225640000000000  # the untimed last line
