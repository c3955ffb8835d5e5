"""journal.retention_days (bridge.trading.journal_retention): old announcements and their duplicate keys go,
in small batches, at start and then daily; recent ones, every order and every position stay."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from bridge import telemetry
from bridge.config import loads
from bridge.errors import ConfigError
from bridge.feed.codec import Announcement
from bridge.trading.journal import Journal
from bridge.trading.journal_retention import DAY_S, Retention
from bridge.trading.model import ExitPlan, OrderIntent
from tests.factories import announcement

DAY_NS = 86_400 * 1_000_000_000
NOW_NS = 1_800_000_000 * 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ns = NOW_NS

    def __call__(self) -> int:
        return self.now_ns


def seen(tickers: str, days_ago: float) -> Announcement:
    """An announcement as the feed delivered it `days_ago` days before NOW_NS."""
    return dataclasses.replace(announcement(tickers), received_ns=NOW_NS - int(days_ago * DAY_NS))


def stored_keys(journal: Journal) -> set[str]:
    journal.flush()
    db = journal._db  # the rows themselves are what is tested
    return {str(r[0]) for r in db.execute("SELECT key FROM announcements")}


def intent(cid: str, a: Announcement) -> OrderIntent:
    """An entry with an exit plan: it opens a position."""
    plan = ExitPlan(stop_loss=0.2)
    return OrderIntent(cid, a.key, "s", "binance", "ABC/USDT", "buy", "USDT", 10.0, None, True, plan=plan)


async def test_old_announcements_go_orders_and_positions_stay(tmp_path: Path) -> None:
    """Of 7 old and 2 recent announcements (each with an order, one with a position), a pass with batches
    of 3 deletes the 7 old rows (3 + 3 + 1) and forgets their keys: a redelivery of an old one
    is new to the journal, a recent duplicate is still refused. Every order and the position remain,
    also after a restart (the key set is loaded from what is left)."""
    clock = Clock()
    journal = Journal(tmp_path / "j.sqlite", clock_ns=clock)
    old = [seen(f"OLD{i}", 31 + i) for i in range(7)]
    recent = [seen("NEW", 29.9), seen("NOW", 0)]
    for n, a in enumerate(old + recent):
        assert journal.record_announcement(a)
        assert journal.reserve(intent(f"cid{n}", a))
    journal.record_result("cid0", "paper", filled=1.0, cost=10.0)
    journal.update_position("cid0", state="open")
    assert len(stored_keys(journal)) == 9
    pruned = telemetry.value("bridge_journal_pruned_total")
    assert await Retention(journal, 30, clock_ns=clock, batch=3).prune() == 7
    assert telemetry.value("bridge_journal_pruned_total") - pruned == 7
    assert stored_keys(journal) == {a.key for a in recent}
    assert len(journal.orders()) == 9 and len(journal.positions()) == 9
    position = journal.position("cid0")
    assert position is not None and position.state == "open"
    assert not journal.record_announcement(recent[0])  # a recent duplicate: still refused
    assert journal.record_announcement(old[0])  # forgotten: its key is no longer held in memory
    assert not journal.reserve(intent("cid0", old[0]))  # ...but its order's id still refuses a resend
    journal.close()
    again = Journal(tmp_path / "j.sqlite", clock_ns=clock)
    try:
        assert not again.record_announcement(recent[1])
        assert len(again.orders()) == 9 and len(again.positions()) == 9
    finally:
        again.close()


async def test_runs_at_start_then_daily(tmp_path: Path) -> None:
    """run() prunes at once, then sleeps a day and prunes what has aged past retention since."""
    clock = Clock()
    journal = Journal(tmp_path / "j.sqlite", clock_ns=clock)
    stop = asyncio.Event()
    sleeps: list[float] = []
    passes: list[set[str]] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        passes.append(stored_keys(journal))
        clock.now_ns += int(delay * 1e9)
        if len(sleeps) == 2:
            stop.set()

    journal.record_announcement(seen("AGED", 40))
    journal.record_announcement(seen("AGING", 29.5))
    try:
        await Retention(journal, 30, clock_ns=clock, sleep=sleep).run(stop)
        assert sleeps == [DAY_S, DAY_S]
        assert [len(p) for p in passes] == [1, 0]  # AGED at start; AGING a day later
    finally:
        journal.close()


async def test_a_failed_pass_is_counted_not_raised(tmp_path: Path) -> None:
    """A journal that cannot be read (closed here) fails the pass with a log line and a count."""
    journal = Journal(tmp_path / "j.sqlite")
    journal.close()
    journal.writable = True  # as if still open: the statement itself fails
    failures = telemetry.value("bridge_journal_prune_failures_total")
    assert await Retention(journal, 30).prune() == 0
    assert telemetry.value("bridge_journal_prune_failures_total") - failures == 1


def test_retention_days_config() -> None:
    """journal.retention_days defaults to 30; 0, negatives and non-numbers are config errors naming it."""
    base = "feed:\n  api_key: dsk_x\n"
    assert loads(base).journal.retention_days == 30.0
    assert loads(base + "journal:\n  retention_days: 7\n").journal.retention_days == 7.0
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match=r"journal\.retention_days"):
            loads(base + f"journal:\n  retention_days: {bad}\n")
