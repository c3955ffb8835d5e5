"""The journal: duplicates recognised across restarts, intents recorded before sending, kill -9 safe."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
from tests.factories import announcement


def intent(cid: str = "bx1", *, cost: float = 20.0, side: str = "buy") -> OrderIntent:
    return OrderIntent(cid, "key", "s", "binance", "ABC/USDT", side, "USDT", cost, None, True)  # type: ignore[arg-type]


def test_announcement_duplicate_across_restart(tmp_path: Path) -> None:
    """An announcement recorded once is reported as a duplicate after the journal is reopened."""
    a = announcement("ABC")
    j = Journal.open(tmp_path, dry_run=True)
    assert j.record_announcement(a) is True
    assert j.record_announcement(a) is False
    j.close()
    j2 = Journal.open(tmp_path, dry_run=True)
    assert j2.record_announcement(a) is False
    j2.close()


def test_paper_and_live_journals_are_separate_files(tmp_path: Path) -> None:
    """Paper history never mixes with live: a paper order does not block the same live order."""
    paper = Journal.open(tmp_path, dry_run=True)
    live = Journal.open(tmp_path, dry_run=False)
    assert paper.path != live.path
    assert paper.reserve(intent()) is True
    assert live.reserve(intent()) is True
    paper.close()
    live.close()


def test_reserve_is_once_and_result_recorded(tmp_path: Path) -> None:
    """A client order id can be reserved once; the result updates the same row."""
    j = Journal.open(tmp_path, dry_run=True)
    assert j.reserve(intent("bxA")) is True
    assert j.reserve(intent("bxA")) is False
    assert j.get("bxA") is not None and j.get("bxA").state == "sending"  # type: ignore[union-attr]
    j.record_result("bxA", "placed", order_id="42", filled=1.5, average=13.3, cost=19.95)
    rec = j.get("bxA")
    assert rec is not None and rec.state == "placed" and rec.order_id == "42" and rec.result_cost == 19.95
    assert [r.intent.client_order_id for r in j.orders(states=("placed",))] == ["bxA"]
    j.close()


def test_intent_survives_kill_9(tmp_path: Path) -> None:
    """An intent committed by a process killed with SIGKILL right after is intact and readable."""
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path.cwd())!r})
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
j = Journal.open(__import__('pathlib').Path({str(tmp_path)!r}), dry_run=False)
j.reserve(OrderIntent("bxKILL", "k", "s", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, False))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(tmp_path / "journal-live.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    j = Journal.open(tmp_path, dry_run=False)
    rec = j.get("bxKILL")
    assert rec is not None and rec.state == "sending"
    j.close()
    assert os.path.exists(tmp_path / "journal-live.sqlite")


def other_connection_count(path: Path, table: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


async def test_rows_reach_sqlite_after_the_order_path(tmp_path: Path) -> None:
    """With an event loop running, announcement and intent rows wait in memory (the order goes out
    first; the intent is already durable in the intent log), and reach SQLite in one flush: the
    scheduled one, or before any read. Duplicates are recognised at once either way; close() writes
    whatever is left."""
    j = Journal.open(tmp_path, dry_run=False)
    a, b = announcement("ABC"), announcement("DEF")
    assert j.record_announcement(a) is True and j.record_announcement(a) is False
    assert j.reserve(intent("bxA")) is True and j.reserve(intent("bxA")) is False
    assert other_connection_count(j.path, "announcements") == 0
    assert other_connection_count(j.path, "orders") == 0
    assert j.get("bxA") is not None  # a read writes what is pending first
    assert other_connection_count(j.path, "announcements") == 1
    j.record_announcement(b)
    j.flush()
    assert other_connection_count(j.path, "announcements") == 2
    j.record_announcement(announcement("GHI"))
    j.close()
    j.flush()  # after close: nothing to do, no error
    assert other_connection_count(j.path, "announcements") == 3


def test_checkpoints_never_run_inside_a_commit(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint (an fsync inside whichever commit crosses 1000 WAL pages) is
    off; checkpoint() (the background thread's call) moves every committed page into the file."""
    j = Journal.open(tmp_path, dry_run=False)
    try:
        assert j._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for n in range(50):
            j.reserve(intent(f"bx{n}"))
        j.checkpoint()
        busy, wal_pages, done = j._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and wal_pages == done
    finally:
        j.close()


def test_logged_intent_survives_kill_9_before_reaching_sqlite(tmp_path: Path) -> None:
    """Inside the event loop an intent is durable as one intent-log line before its SQLite row is
    written; a process killed in between leaves the line, and the next start inserts it as
    `sending` (to be looked up, never resent) and empties the log."""
    code = f"""
import asyncio, os, signal, sys
sys.path.insert(0, {str(Path.cwd())!r})
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
async def main():
    j = Journal.open(__import__('pathlib').Path({str(tmp_path)!r}), dry_run=False)
    assert j.reserve(OrderIntent("bxLOGGED", "k", "s", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, False))
    os.kill(os.getpid(), signal.SIGKILL)  # before the scheduled flush
asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert other_connection_count(tmp_path / "journal-live.sqlite", "orders") == 0
    j = Journal.open(tmp_path, dry_run=False)
    try:
        rec = j.get("bxLOGGED")
        assert rec is not None and rec.state == "sending" and rec.intent.cost == 20.0
        assert j.reserve(intent("bxLOGGED")) is False  # and never sent twice
    finally:
        j.close()
    assert (tmp_path / "journal-live.intents").stat().st_size == 0


def test_torn_intent_log_line_is_skipped(tmp_path: Path) -> None:
    """A last line cut short (its write never completed, so its order was never sent) is skipped;
    the complete lines before it are replayed."""
    j = Journal.open(tmp_path, dry_run=False)
    j.close()
    whole = b'["bxWHOLE","k","s","binance","ABC/USDT","buy","USDT",20.0,null,0,1,1,null,null,null,null]\n'
    (tmp_path / "journal-live.intents").write_bytes(whole + b'["bxTORN","k","s","bin')
    j = Journal.open(tmp_path, dry_run=False)
    try:
        assert j.get("bxWHOLE") is not None and j.get("bxTORN") is None
    finally:
        j.close()


def test_a_second_process_gets_the_journal_read_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer holds a lock. A second opener (the demo's summary, or a second daemon on the same
    state_dir by mistake) can read, but records nothing and reserves nothing: it can never send an
    order (logged as an error). Once the writer closes, the next opener writes again."""
    first = Journal.open(tmp_path, dry_run=False)
    first.reserve(intent("bxFIRST"))
    second = Journal.open(tmp_path, dry_run=False)
    try:
        assert first.writable and not second.writable
        assert second.get("bxFIRST") is not None  # the writer's rows are visible
        assert second.record_announcement(announcement("NEW")) is False
        assert second.reserve(intent("bxSECOND")) is False
        second.record_result("bxFIRST", "rejected")  # ignored: only the writer records results
    finally:
        second.close()
    assert first.get("bxFIRST").state == "sending"  # type: ignore[union-attr]
    assert first.get("bxSECOND") is None
    first.close()
    third = Journal.open(tmp_path, dry_run=False)
    assert third.writable
    third.close()
    events = [r.msg.get("event") for r in caplog.records if isinstance(r.msg, dict)]
    assert "journal.locked" not in events  # a reader in the same process is expected, not an error


def test_a_journal_locked_by_another_process_is_read_only_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal whose writer is another process (a second daemon on one state_dir) opens read-only
    and says so at error level: this process will send no order."""
    code = f"""
import sys, time
sys.path.insert(0, {str(Path.cwd())!r})
from bridge.trading.journal import Journal
j = Journal.open(__import__('pathlib').Path({str(tmp_path)!r}), dry_run=False)
print("open", flush=True)
sys.stdin.read()
j.close()
"""
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        second = Journal.open(tmp_path, dry_run=False)
        assert not second.writable and second.reserve(intent("bxX")) is False
        second.close()
    finally:
        holder.communicate(b"", timeout=30)
    events = [r.msg.get("event") for r in caplog.records if isinstance(r.msg, dict)]
    assert "journal.locked" in events


def test_intent_log_is_emptied_once_its_rows_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intent log only holds intents whose rows may not be in SQLite yet: past its size limit it
    is emptied right after a flush."""
    from bridge.trading import journal as journal_module

    monkeypatch.setattr(journal_module, "INTENT_LOG_MAX_BYTES", 500)
    j = Journal.open(tmp_path, dry_run=False)
    try:
        log_file = tmp_path / "journal-live.intents"
        for n in range(3):
            j.reserve(intent(f"bx{n}"))
        assert 0 < log_file.stat().st_size < 500  # no loop: each reserve wrote its row at once
        for n in range(3, 10):
            j.reserve(intent(f"bx{n}"))
        assert log_file.stat().st_size < 500
        assert len(j.orders()) == 10
    finally:
        j.close()


class _FailingOnce:
    """Stands in for the journal's SQLite connection: the next executemany fails as a full disk would."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.fail = True

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.executemany(sql, rows)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)

    def __enter__(self) -> sqlite3.Connection:
        return self._db.__enter__()

    def __exit__(self, *exc: object) -> bool | None:
        return self._db.__exit__(*exc)  # type: ignore[arg-type]


def test_failed_flush_keeps_the_intent(tmp_path: Path) -> None:
    """If writing pending rows to SQLite fails, the intents stay pending and in the intent log: the
    result is still recorded once SQLite works again, and a restart still knows the client id."""
    j = Journal.open(tmp_path, dry_run=False)
    real = j._db
    failing = _FailingOnce(real)
    j._db = failing  # type: ignore[assignment]
    assert j.reserve(intent("bxFLUSH", cost=25.0)) is True  # its flush hits the full disk
    assert failing.fail is False
    j._db = real
    j.record_result("bxFLUSH", "placed", order_id="7", filled=1.0, cost=25.0)
    rec = j.get("bxFLUSH")
    assert rec is not None and rec.state == "placed" and rec.result_cost == 25.0
    j.close()
    j2 = Journal.open(tmp_path, dry_run=False)
    assert j2.reserve(intent("bxFLUSH")) is False
    j2.close()


def test_closed_journal_refuses_new_intents(tmp_path: Path) -> None:
    """After close(), reserve() refuses (nothing may be sent without a durable intent)."""
    j = Journal.open(tmp_path, dry_run=False)
    j.close()
    assert j.reserve(intent("bxAFTER")) is False
