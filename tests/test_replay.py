"""Replay: a stream file through the configured strategies, offline, paper, deterministic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge import cli, config
from bridge.errors import ConfigError
from bridge.replay import ReplayReport, read_stream, replay

ROOT = Path(__file__).resolve().parent.parent
STREAM = ROOT / "examples/streams/listings.jsonl"
CONFIG = ROOT / "examples/replay.yaml"


async def test_example_stream_orders_and_reasons() -> None:
    """The shipped example stream yields the paper orders a trader expects: listings bought at the
    stream's prices, the duplicate and test announcement ignored, old news refused by max_event_age."""
    report = await replay(STREAM, config.load(CONFIG))
    placed = [
        (r.outcome.symbol, r.outcome.result.average) for r in report.rows if r.outcome.ok and r.outcome.result
    ]
    assert placed == [("ABC/USDT", 1.25), ("DEF/USDT", 0.05), ("GHI/USDT", 17.5)]
    refused = [(r.outcome.symbol, r.outcome.reason) for r in report.rows if not r.outcome.ok]
    assert refused == [("BTC/USDT", "event_too_old")]
    assert (report.announcements, report.duplicates, report.test_announcements) == (5, 1, 1)
    assert report.seen["listing_buy"] == 4


async def test_replay_is_deterministic() -> None:
    """The same file and config give the same rendered output, run after run."""
    cfg = config.load(CONFIG)
    first = (await replay(STREAM, cfg)).render()
    second = (await replay(STREAM, cfg)).render()
    assert first == second
    assert "listing_buy: 4 announcements, 3 orders" in first


async def test_event_clock_comes_from_the_file(tmp_path: Path) -> None:
    """max_event_age is judged against the stream's receipt time, not today's clock: an announcement
    recorded long ago but received 2 s after detection is traded; one received 12 s after is not."""
    t = 1_600_000_000_000_000_000
    lines = [
        {"markets": {"binance": {"AAA/USDT": 1.0, "BBB/USDT": 2.0}}},
        {"t": t + 2_000_000_000, "msg": _ann("AAA", t)},
        {"t": t + 12_000_000_000, "msg": _ann("BBB", t)},
    ]
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    report = await replay(path, config.load(CONFIG))
    assert [(r.outcome.symbol, r.outcome.status, r.outcome.reason) for r in report.rows] == [
        ("AAA/USDT", "paper", None),
        ("BBB/USDT", "skipped", "event_too_old"),
    ]


def _ann(ticker: str, detected_ns: int) -> dict[str, object]:
    return {
        "type": "announcement",
        "title": f"Binance Will List {ticker}",
        "ticker": ticker,
        "publisher": "binance",
        "listingType": "spot_listing",
        "detectedTimestampUs": detected_ns // 1000,
    }


def test_bad_stream_line_names_file_and_line(tmp_path: Path) -> None:
    """A malformed stream line is a clear error with the file and line number."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"markets": {}}\nnot json\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not a stream line"):
        read_stream(path)


def test_cli_replay_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    """`bridge replay FILE -c CONFIG` prints the order table and the per-strategy summary."""
    assert cli.main(["replay", str(STREAM), "-c", str(CONFIG)]) == 0
    out = capsys.readouterr().err  # not a terminal: the table on stderr, the JSON log on stdout
    assert "ABC/USDT" in out and "skipped: event_too_old" in out
    assert "listing_buy: 4 announcements, 3 orders" in out


def test_cli_replay_needs_no_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay runs with the production config.yaml even when its secret variables are unset."""
    for var in ("CRYPTOLISTING_API_KEY", "BINANCE_API_KEY", "BINANCE_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(ROOT)
    assert cli.main(["replay", str(STREAM), "-c", "config.yaml"]) == 0
    assert "ABC/USDT" in capsys.readouterr().err


async def test_example_exits_stream() -> None:
    """The shipped exits example: take-profit, stop-loss and time exits each sell their position once."""
    report = await replay(
        ROOT / "examples/streams/exits.jsonl", config.load(ROOT / "examples/replay-exits.yaml")
    )
    exits = [(r.outcome.symbol, r.exit, r.outcome.status) for r in report.rows if r.exit]
    assert exits == [
        ("PUMP/USDT", "take_profit", "paper"),
        ("DUMP/USDT", "stop_loss", "paper"),
        ("FLAT/USDT", "time", "paper"),
    ]


# ---- recordings of several feed links ---------------------------------------------------------------

MS = 1_000_000
T0 = 1_767_225_600_000_000_000
# (main's receipt offset in ms, publisher, title, ticker, kr's receipt offset from main's in ms or None
# when kr does not carry it). kr carries upbit only; its copy comes a few ms after main's, or before.
LISTINGS = [
    (1_000, "upbit", "[Upbit] ABC (ABC) KRW market listing", "ABC", 5),
    (45_000, "binance", "Binance Will List DEF, GHI and NOPE", "DEF, GHI,NOPE", None),
    (50_000, "upbit", "[Upbit] XYZ (XYZ) KRW market listing", "XYZ", -3),
    (55_000, "upbit", "[Upbit] ABC (ABC) KRW market listing", "ABC", -1),  # news again: no second trade
    (60_000, "binance", "Binance Will List BTC (old news)", "BTC", None),  # refused: event_too_old
]


def _listing_frame(publisher: str, title: str, ticker: str, detected_ns: int, dispatch_us: int) -> bytes:
    return orjson.dumps(
        {
            "type": "announcement",
            "title": title,
            "ticker": ticker,
            "publisher": publisher,
            "listingType": "spot_listing",
            "detectedTimestampUs": detected_ns // 1000,
            "dispatchTimestampUs": dispatch_us,
        }
    )


def _link_frames(*, links: bool) -> list[tuple[int, bytes, str | None]]:
    """The frames a recording of LISTINGS holds: main's alone (no link names, as a single-link daemon
    records), or main's and kr's interleaved by receipt time, each endpoint with its own dispatch stamp."""
    frames: list[tuple[int, bytes, str | None]] = [
        (T0, b'{"type":"welcome","tier":"premium","allowedCex":"*"}', "main" if links else None)
    ]
    if links:
        frames.append((T0 + 2 * MS, b'{"type":"welcome","tier":"premium","allowedCex":"upbit"}', "kr"))
    for offset_ms, publisher, title, ticker, kr_ms in LISTINGS:
        received = T0 + offset_ms * MS
        detected = T0 - 3_600_000 * MS if "old news" in title else received - 5 * MS
        frame = _listing_frame(publisher, title, ticker, detected, received // 1000 - 4_000)
        frames.append((received, frame, "main" if links else None))
        if links and kr_ms is not None:
            kr_frame = _listing_frame(
                publisher, title, ticker, detected, (received + kr_ms * MS) // 1000 - 4_000
            )
            assert kr_frame != frame  # kr stamps its own dispatch time
            frames.append((received + kr_ms * MS, kr_frame, "kr"))
    frames.append((T0 + 30_000 * MS, b'{"type":"heartbeat"}', "kr" if links else None))
    return sorted(frames, key=lambda f: f[0])


async def _record(path: Path, frames: list[tuple[int, bytes, str | None]]) -> None:
    """Write a recording with the recorder itself: markets first, then the frames and a price move."""
    import asyncio

    from bridge.feed.recorder import Recorder

    rec = Recorder(path)
    stop = asyncio.Event()
    task = asyncio.create_task(rec.run(stop))
    prices = {"ABC/USDT": 1.25, "DEF/USDT": 0.042, "GHI/USDT": 17.5, "XYZ/USDT": 3.0, "BTC/USDT": 64000.0}
    rec.note(T0 - MS, {"markets": {"binance": prices}})
    move: dict[str, Any] = {"price": {"exchange": "binance", "symbol": "DEF/USDT", "price": 0.05}}
    lines: list[tuple[int, bytes | dict[str, Any], str | None]] = [*frames, (T0 + 40_000 * MS, move, None)]
    for t, data, link in sorted(lines, key=lambda line: line[0]):
        if isinstance(data, dict):
            rec.note(t, data)
        elif link is None:
            rec.frame(data, t)  # the single-link call, as before links existed
        else:
            rec.frame(data, t, link)
    stop.set()
    await asyncio.wait_for(task, 10)


def _orders(report: ReplayReport) -> list[tuple[object, ...]]:
    """What was ordered and why not, without the time (a kr copy may come first, a few ms earlier)."""
    return [
        (
            r.strategy,
            r.outcome.symbol,
            r.outcome.side,
            r.outcome.status,
            r.outcome.reason,
            r.outcome.client_order_id,
            r.cost,
            r.amount,
            None if r.outcome.result is None else r.outcome.result.average,
        )
        for r in report.rows
    ]


async def test_a_two_link_recording_replays_to_the_single_link_orders(tmp_path: Path) -> None:
    """A recording of two feed links (each frame named by its link, most announcements twice with their
    own dispatch stamps, kr's copy sometimes first) gives the same orders as the single-link recording
    of the same announcements: the dispatcher keeps the first arrival of each (its key ignores
    timestamps) and drops the other as a duplicate, so nothing is ordered twice."""
    single, double = tmp_path / "single.jsonl", tmp_path / "links.jsonl"
    await _record(single, _link_frames(links=False))
    await _record(double, _link_frames(links=True))
    assert b'"link"' not in single.read_bytes()
    events = read_stream(double).events
    assert [e.link for e in events if e.frame is not None and b"XYZ" in e.frame] == ["kr", "main"]
    cfg = config.load(CONFIG)
    one, two = await replay(single, cfg), await replay(double, cfg)
    assert _orders(two) == _orders(one)
    placed = [(o[1], o[3]) for o in _orders(one) if o[3] == "paper"]
    assert placed == [
        ("ABC/USDT", "paper"),
        ("DEF/USDT", "paper"),
        ("GHI/USDT", "paper"),
        ("XYZ/USDT", "paper"),
    ]
    assert [r.outcome.reason for r in one.rows if not r.outcome.ok] == ["event_too_old"]
    # Each order is timed by the first copy to arrive: XYZ's came over kr 3 ms before main's.
    assert [b.t_ns - a.t_ns for a, b in zip(one.rows, two.rows, strict=True)] == [0, 0, 0, -3 * MS, 0]
    kr_copies = sum(1 for *_, kr_ms in LISTINGS if kr_ms is not None)
    assert (two.duplicates, two.announcements) == (one.duplicates + kr_copies, one.announcements + kr_copies)
    assert two.seen == one.seen


def test_link_field_is_read_and_must_be_a_string(tmp_path: Path) -> None:
    """`link` is kept on the event (frame, b64 and msg lines); a link that is not a string is an error."""
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"t": 1, "frame": "{}", "link": "kr"}\n{"t": 2, "b64": "e30=", "link": "main"}\n'
        '{"t": 3, "msg": {"type": "heartbeat"}}\n'
    )
    assert [(e.t_ns, e.frame, e.link) for e in read_stream(path).events] == [
        (1, b"{}", "kr"),
        (2, b"{}", "main"),
        (3, b'{"type":"heartbeat"}', None),
    ]
    path.write_text('{"t": 1, "frame": "{}", "link": 7}\n')
    with pytest.raises(ConfigError, match=r"s.jsonl:1: not a stream line \(link must be a string\)"):
        read_stream(path)
