"""A journal deleted or replaced under a running daemon is noticed, trading halts (journal_missing),
and the journal is written back from the open connection: after a restart the same announcement and
the same client order id are still refused (nothing trades twice)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from bridge.trading.journal import Journal
from bridge.trading.journal_watch import JournalWatch
from bridge.trading.model import ExitPlan, OrderIntent
from tests.factories import announcement


def intent(cid: str, key: str, *, plan: ExitPlan | None = None) -> OrderIntent:
    return OrderIntent(cid, key, "s", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, False, plan=plan)


def populated(state: Path) -> tuple[Journal, str]:
    journal = Journal.open(state, dry_run=False)
    a = announcement("ABC")
    assert journal.record_announcement(a)
    assert journal.reserve(intent("bxseen", a.key, plan=ExitPlan(stop_loss=0.2)))
    journal.record_result("bxseen", "placed", filled=10.0, average=2.0, cost=20.0)
    return journal, a.key


def damage(kind: str, journal: Journal, tmp_path: Path) -> None:
    if kind == "delete_file":
        journal.path.unlink()
    elif kind == "delete_state_dir":
        shutil.rmtree(journal.path.parent)
    else:  # another journal moved over it (a backup restored over a running daemon)
        other = tmp_path / "other.sqlite"
        Journal(other).close()
        os.replace(other, journal.path)


@pytest.mark.parametrize("kind", ["delete_file", "delete_state_dir", "replace_file"])
def test_vanished_journal_halts_and_is_restored(tmp_path: Path, kind: str) -> None:
    """Deleted file, deleted state_dir, or a file put in its place: check() says so, the halt callback
    runs once, and the restored file still refuses the announcement key and the client id; the open
    position is still there."""
    state = tmp_path / "state"
    journal, key = populated(state)
    halted: list[str] = []
    watch = JournalWatch(journal, halted.append)
    assert watch.check() is None
    damage(kind, journal, tmp_path)
    problem = watch.check()
    assert problem is not None and halted == [problem]
    assert watch.check() == problem and len(halted) == 1  # stays halted, says it once
    assert journal.path.exists() and journal.path.with_suffix(".intents").exists()
    journal.close()
    again = Journal.open(state, dry_run=False)
    try:
        assert again.record_announcement(announcement("ABC")) is False
        assert again.reserve(intent("bxseen", key)) is False
        [position] = again.open_positions()
        assert position.client_order_id == "bxseen" and position.filled == 10.0
        assert not again.started_empty
    finally:
        again.close()
    if kind == "replace_file":
        assert (state / "journal-live.sqlite.replaced").exists()  # kept for a human


async def test_a_deleted_intent_log_is_recreated_locked_with_what_it_held(tmp_path: Path) -> None:
    """The intent log alone deleted: noticed; it is written again at its path, holding the intents it
    held, and it is the file a second process finds locked (that one opens read-only); intents logged
    after that go to it."""
    journal, key = populated(tmp_path)
    assert journal.reserve(intent("bxpending", key))  # logged; its row waits for the next flush
    halted: list[str] = []
    watch = JournalWatch(journal, halted.append)
    intents = journal.path.with_suffix(".intents")
    intents.unlink()
    assert watch.check() is not None and "intent log" in halted[0]
    assert b"bxpending" in intents.read_bytes()
    reader = Journal(journal.path)
    assert reader.writable is False  # the new file is locked by the running journal
    reader.close()
    assert journal.reserve(intent("bxlater", key))
    assert b"bxlater" in intents.read_bytes()  # new intents go to the file on disk
    journal.close()


def test_results_written_after_the_restore_reach_the_restored_file(tmp_path: Path) -> None:
    """An order still settling when the journal vanished: its result, recorded after the restore, is in
    the restored file after close (the copy is written a last time when the journal closes)."""
    journal, key = populated(tmp_path)
    watch = JournalWatch(journal, lambda _: None)
    assert journal.reserve(intent("bxsettling", key))
    journal.path.unlink()
    assert watch.check() is not None
    journal.record_result("bxsettling", "placed", filled=5.0, average=4.0, cost=20.0)
    watch.sync()
    journal.record_result("bxseen", "placed", filled=9.0, average=2.0, cost=20.0)
    journal.close()
    again = Journal(journal.path)
    try:
        settled, seen = again.get("bxsettling"), again.get("bxseen")
        assert settled is not None and settled.state == "placed" and settled.filled == 5.0
        assert seen is not None and seen.filled == 9.0
    finally:
        again.close()


async def test_run_halts_from_its_own_task(tmp_path: Path) -> None:
    """The daemon's task: checks on its interval and calls on_missing (here: stops itself) when the
    state_dir is gone."""
    state = tmp_path / "state"
    journal, _ = populated(state)
    stop = asyncio.Event()
    halted: list[str] = []

    def on_missing(what: str) -> None:
        halted.append(what)
        stop.set()

    watch = JournalWatch(journal, on_missing)
    shutil.rmtree(state)
    await asyncio.wait_for(watch.run(stop, interval=0.001), timeout=2)
    assert len(halted) == 1 and journal.path.exists()
    journal.close()


def test_an_untouched_journal_raises_nothing(tmp_path: Path) -> None:
    """Checks of a journal nobody touched find nothing and call nothing, whatever it writes."""
    journal, key = populated(tmp_path)
    halted: list[str] = []
    watch = JournalWatch(journal, halted.append)
    for n in range(3):
        assert journal.reserve(intent(f"bx{n}", key))
        journal.checkpoint()
        assert watch.check() is None
    journal.close()
    assert halted == []
