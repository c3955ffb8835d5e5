"""Announcements that must be refused, not traded: event times in the future beyond the allowed clock
skew never reach a strategy or SQLite; a flood of tickers is capped with one log line and the next
clean announcement still goes through at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from bridge import telemetry
from bridge.trading.dispatch import Dispatcher, StrategyRunner
from bridge.trading.journal import Journal
from bridge.trading.model import Announcement
from tests.factories import announcement


class Recorder:
    """Stands in for a strategy runner: keeps what the dispatcher hands over."""

    def __init__(self) -> None:
        self.got: list[Announcement] = []

    def put(self, a: Announcement) -> None:
        self.got.append(a)


def dispatcher(tmp_path: Path, recorder: Recorder, now_ns: int) -> tuple[Dispatcher, Journal]:
    journal = Journal.open(tmp_path, dry_run=True)
    runners: list[StrategyRunner] = [recorder]  # type: ignore[list-item]
    queue: asyncio.Queue[Announcement] = asyncio.Queue()
    d = Dispatcher(queue, runners, journal, max_clock_skew=2.0, max_tickers=20, clock_ns=lambda: now_ns)
    return d, journal


def test_future_event_time_is_refused_before_the_journal(tmp_path: Path) -> None:
    """An event 10 s in the future (beyond the 2 s skew) is refused as `event_time_invalid`, counted,
    never recorded; 1 s ahead (within the skew) is accepted."""
    now = time.time_ns()
    rec = Recorder()
    d, journal = dispatcher(tmp_path, rec, now)
    try:
        before = telemetry.value("bridge_announcements_refused_total", reason="event_time_invalid")
        ahead = announcement("ABC", detected_us=now // 1000 + 10_000_000)
        with structlog.testing.capture_logs() as logs:
            assert d.dispatch(ahead) is False
        assert [e["reason"] for e in logs if e["event"] == "announcement.refused"] == ["event_time_invalid"]
        assert (
            telemetry.value("bridge_announcements_refused_total", reason="event_time_invalid") == before + 1
        )
        assert rec.got == [] and d.refused == 1
        assert journal.record_announcement(ahead) is True  # it never reached the journal
        near = announcement("DEF", detected_us=now // 1000 + 1_000_000)
        assert d.dispatch(near) is True and rec.got == [near]
    finally:
        journal.close()


def test_thousands_of_tickers_are_capped_with_one_line(tmp_path: Path) -> None:
    """5000 tickers (and repeats) become the first 20 distinct ones, with one log line for the rest;
    the next clean announcement is handed over as usual."""
    now = time.time_ns()
    rec = Recorder()
    d, journal = dispatcher(tmp_path, rec, now)
    try:
        many = ",".join(f"T{i}" for i in range(5000)) + ",T1,T1"
        with structlog.testing.capture_logs() as logs:
            assert d.dispatch(announcement(many)) is True
            assert d.dispatch(announcement("CLEAN")) is True
        [capped] = [e for e in logs if e["event"] == "announcement.tickers_capped"]
        assert capped["refused"] == 4980 and len(logs) == 1
        assert rec.got[0].tickers == tuple(f"T{i}" for i in range(20))
        assert rec.got[1].tickers == ("CLEAN",)
    finally:
        journal.close()
