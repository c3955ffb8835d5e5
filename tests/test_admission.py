"""Announcements that must be refused, not traded: event times in the future beyond the allowed clock
skew never reach a strategy or SQLite; a flood of tickers is capped with one log line and the next
clean announcement still goes through at once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import structlog

from bridge import telemetry
from bridge.trading.admission import ahead_s, cap_tickers, event_time_problem
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


NOW_NS = 1_800_000_000 * 10**9


@pytest.mark.parametrize(
    ("offset_s", "problem"),
    [
        (-3600.0, None),
        (0.0, None),
        (1.9, None),
        (2.0, None),
        (2.001, "event_time_invalid"),
        (1e6, "event_time_invalid"),
    ],
)
def test_event_time_problem_allows_the_skew_and_no_more(offset_s: float, problem: str | None) -> None:
    """An event up to max_skew_s (2 s) in the future is admitted; a microsecond more is not."""
    a = announcement("ABC", detected_us=NOW_NS // 1000 + int(offset_s * 1_000_000))
    assert event_time_problem(a, NOW_NS, 2.0) == problem


@pytest.mark.parametrize(
    "field",
    ["detected_us", "dispatch_us", "publish_us"],
)
@pytest.mark.parametrize("value", [-1, 2**63, 2**53, 10.5, True, NOW_NS // 1000 + 60_000_000])
def test_any_absurd_or_future_timestamp_is_refused(field: str, value: object) -> None:
    """Every timestamp counts, not only the event time; the codec's range rule holds here too for an
    announcement built elsewhere (negative, 2**53 and beyond, a float, a bool)."""
    a = dataclasses.replace(announcement("ABC", detected_us=NOW_NS // 1000), **{field: value})
    assert event_time_problem(a, NOW_NS, 2.0) == "event_time_invalid"


def test_no_timestamp_is_no_time_problem() -> None:
    """An announcement without any timestamp has no event time to refuse (max_event_age decides)."""
    a = dataclasses.replace(announcement("ABC"), detected_us=None, dispatch_us=None, publish_us=None)
    assert event_time_problem(a, NOW_NS, 2.0) is None and ahead_s(a, NOW_NS) is None


def test_cap_tickers_dedupes_keeps_order_and_counts_the_rest() -> None:
    """Thousands of tickers (with repeats) become the first N distinct ones, in order; the count of the
    rest includes entries the codec refused as not tickers; the key is unchanged; capping is idempotent."""
    many = ",".join(f"T{i}" for i in range(3000)) + ",T5,BTC/USDT,A B"
    a = announcement(many)
    assert a.refused_tickers == 2  # "BTC/USDT" and "A B" are not tickers
    capped = cap_tickers(a, 20)
    assert capped.kept == tuple(f"T{i}" for i in range(20))
    assert capped.refused == 2980 + a.refused_tickers
    assert capped.announcement.key == a.key
    again = cap_tickers(capped.announcement, 20)
    assert again.refused == 0 and again.announcement == capped.announcement


def test_cap_tickers_leaves_a_small_announcement_alone() -> None:
    """Within the cap nothing changes: the very same object is handed on."""
    a = announcement("ABC,DEF")
    capped = cap_tickers(a, 20)
    assert capped.announcement is a and capped.refused == 0
