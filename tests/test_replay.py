"""Replay: a stream file through the configured strategies, offline, paper, deterministic."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge import cli, config
from bridge.errors import ConfigError
from bridge.replay import read_stream, replay

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
    out = capsys.readouterr().out
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
    assert "ABC/USDT" in capsys.readouterr().out


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
