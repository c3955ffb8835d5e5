"""The journal's schema version: older files migrate forward on open (by the writer only, one transaction
per step), newer ones are refused."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bridge.errors import ConfigError
from bridge.trading import journal_schema
from bridge.trading.journal import Journal
from bridge.trading.journal_schema import Migration
from bridge.trading.model import OPEN_STATES, ExitPlan, OrderIntent
from tests.factories import announcement

# Frozen copy of the schema Journal.open created before the journal carried a version (user_version
# 0). Never edit it to follow the code: it stands for the files already on disk.
UNVERSIONED_SCHEMA = """
CREATE TABLE IF NOT EXISTS announcements (
    key TEXT PRIMARY KEY,
    first_seen_ns INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    listing_type TEXT NOT NULL,
    title TEXT NOT NULL,
    tickers TEXT NOT NULL,
    detected_us INTEGER,
    raw TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    announcement_key TEXT,
    strategy TEXT NOT NULL,
    exchange TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quote TEXT NOT NULL,
    cost REAL,
    amount REAL,
    dry_run INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    order_id TEXT,
    filled REAL,
    average REAL,
    result_cost REAL,
    error_code TEXT,
    error_message TEXT,
    raw TEXT,
    take_profit REAL,
    stop_loss REAL,
    exit_after REAL,
    exit_of TEXT
);
CREATE INDEX IF NOT EXISTS orders_state ON orders(state);
CREATE INDEX IF NOT EXISTS orders_created ON orders(created_ns);
CREATE INDEX IF NOT EXISTS orders_exit_of ON orders(exit_of);
"""

ANNOUNCEMENT = announcement("ABC")
_ORDER_COLUMNS = (
    "client_order_id, announcement_key, strategy, exchange, symbol, side, quote, cost, amount, dry_run,"
    " state, created_ns, updated_ns, order_id, filled, average, result_cost, take_profit, stop_loss,"
    " exit_after, exit_of"
)


def unversioned_journal(state_dir: Path) -> Path:
    """A live journal file as the unversioned bridge left it: one announcement, one entry that filled
    and carries an exit plan (an open position), one order still `sending` (to be looked up)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "journal-live.sqlite"
    db = sqlite3.connect(path)
    db.executescript(UNVERSIONED_SCHEMA)
    db.execute(
        "INSERT INTO announcements VALUES (?,?,?,?,?,?,?,?)",
        (ANNOUNCEMENT.key, 1, "upbit", "spot_listing", ANNOUNCEMENT.title, "ABC", None, "{}"),
    )
    db.executemany(
        f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({','.join('?' * 21)})",
        [
            ("bxPOS", ANNOUNCEMENT.key, "s", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, 0, "placed",
             10, 11, "42", 2.0, 10.0, 20.0, 0.5, 0.2, 3600.0, None),
            ("bxSENDING", "other", "s", "binance", "DEF/USDT", "buy", "USDT", 30.0, None, 0, "sending",
             12, 12, None, None, None, None, None, None, None, None),
        ],
    )  # fmt: skip
    db.commit()
    assert user_version(path) == 0
    db.close()
    return path


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def set_user_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA user_version = {version:d}")
    finally:
        db.close()


def order_columns(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute("PRAGMA table_info(orders)")}
    finally:
        db.close()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


@pytest.fixture
def held_intent_log(tmp_path: Path) -> Iterator[None]:
    """The journal's intent log locked as another process's writer would hold it."""
    fd = os.open(tmp_path / "journal-live.intents", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # flock locks are per open file: Journal's is refused
    try:
        yield
    finally:
        os.close(fd)


def test_an_unversioned_journal_migrates_and_keeps_its_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal with the schema from before versioning opens at the current version, logs
    journal.migrated from 0, and its rows still work: the announcement is still a duplicate, the open
    position is still listed with its exit plan, the unfinished order is still open and never
    reserved again, and new orders are recorded."""
    path = unversioned_journal(tmp_path)
    j = Journal.open(tmp_path, dry_run=False)
    try:
        assert user_version(path) == journal_schema.SCHEMA_VERSION
        [migrated] = events(caplog, "journal.migrated")
        assert migrated["path"] == str(path)
        assert (migrated["from_version"], migrated["to_version"]) == (0, journal_schema.SCHEMA_VERSION)
        assert j.record_announcement(ANNOUNCEMENT) is False
        [position] = j.open_positions()
        assert position.client_order_id == "bxPOS" and position.filled == 2.0 and position.average == 10.0
        assert position.plan == ExitPlan(take_profit=0.5, stop_loss=0.2, after=3600.0)
        assert [r.intent.client_order_id for r in j.orders(states=OPEN_STATES)] == ["bxSENDING"]
        sending = OrderIntent(
            "bxSENDING", "other", "s", "binance", "DEF/USDT", "buy", "USDT", 30.0, None, False
        )
        assert j.reserve(sending) is False
        new = OrderIntent("bxNEW", None, "s", "binance", "GHI/USDT", "buy", "USDT", 5.0, None, False)
        assert j.reserve(new) is True
        j.record_result("bxNEW", "placed", order_id="43", filled=1.0, cost=5.0)
        assert j.get("bxNEW").state == "placed"  # type: ignore[union-attr]
    finally:
        j.close()


def test_a_journal_from_before_exits_gains_the_exit_columns(tmp_path: Path) -> None:
    """An unversioned journal older still, whose orders table lacks the exit columns, migrates too:
    the columns are added and its orders read back without an exit plan."""
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "journal-live.sqlite"
    db = sqlite3.connect(path)
    before_exits = UNVERSIONED_SCHEMA.replace(
        ",\n    take_profit REAL,\n    stop_loss REAL,\n    exit_after REAL,\n    exit_of TEXT", ""
    ).replace("CREATE INDEX IF NOT EXISTS orders_exit_of ON orders(exit_of);", "")
    db.executescript(before_exits)
    db.execute(
        "INSERT INTO orders (client_order_id, strategy, exchange, symbol, side, quote, cost, dry_run,"
        " state, created_ns, updated_ns) VALUES ('bxOLD','s','binance','ABC/USDT','buy','USDT',20,0,'placed',1,1)"
    )
    db.commit()
    db.close()
    assert "exit_of" not in order_columns(path)
    j = Journal.open(tmp_path, dry_run=False)
    try:
        assert {"take_profit", "stop_loss", "exit_after", "exit_of"} <= order_columns(path)
        rec = j.get("bxOLD")
        assert rec is not None and rec.intent.plan is None and rec.intent.exit_of is None
        assert j.open_positions() == []
    finally:
        j.close()
    assert user_version(path) == journal_schema.SCHEMA_VERSION


def test_migrating_twice_is_a_no_op(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A journal already at the current version opens unchanged: no step runs, nothing is logged as
    migrated, the schema and rows are the same; calling migrate() again directly changes nothing."""
    path = unversioned_journal(tmp_path)
    Journal.open(tmp_path, dry_run=False).close()

    def snapshot() -> tuple[object, ...]:
        db = sqlite3.connect(path)
        try:
            schema = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
            rows = db.execute("SELECT * FROM orders ORDER BY client_order_id").fetchall()
            return (user_version(path), schema, rows)
        finally:
            db.close()

    before = snapshot()
    caplog.clear()
    Journal.open(tmp_path, dry_run=False).close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        journal_schema.migrate(db, path)
    finally:
        db.close()
    assert snapshot() == before
    assert before[0] == journal_schema.SCHEMA_VERSION
    assert events(caplog, "journal.migrated") == []


def test_a_newer_journal_is_refused(tmp_path: Path) -> None:
    """A journal whose version is newer than this code knows (a newer bridge wrote it) does not open:
    a ConfigError names the file and says to upgrade bridge; the file keeps its version (never
    downgraded) and the writer's lock is released."""
    path = tmp_path / "journal-live.sqlite"
    Journal.open(tmp_path, dry_run=False).close()
    newer = journal_schema.SCHEMA_VERSION + 1
    set_user_version(path, newer)
    with pytest.raises(ConfigError) as raised:
        Journal.open(tmp_path, dry_run=False)
    message = str(raised.value)
    assert str(path) in message and "upgrade bridge" in message and f"version {newer}" in message
    assert user_version(path) == newer
    set_user_version(path, journal_schema.SCHEMA_VERSION)
    j = Journal.open(tmp_path, dry_run=False)
    assert j.writable  # the refused open did not keep the intent log locked
    j.close()


def test_a_failing_step_leaves_the_file_at_the_version_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step is one transaction: when a step fails half-way (its first statement ran), the steps
    before it stay committed and it is rolled back entirely, the file stays at the version before it
    without its column, and the open fails with a ConfigError naming the step. Without it, it opens."""
    path = unversioned_journal(tmp_path)
    latest = journal_schema.SCHEMA_VERSION
    bad = Migration(
        latest + 1,
        "orders.fee, then a statement that fails",
        ("ALTER TABLE orders ADD COLUMN fee REAL", "INSERT INTO no_such_table VALUES (1)"),
    )
    monkeypatch.setattr(journal_schema, "MIGRATIONS", (*journal_schema.MIGRATIONS, bad))
    with pytest.raises(
        ConfigError, match=rf"migration to schema version {latest + 1} failed.*left at version {latest}"
    ):
        Journal.open(tmp_path, dry_run=False)
    assert user_version(path) == latest
    assert "fee" not in order_columns(path)
    monkeypatch.undo()
    j = Journal.open(tmp_path, dry_run=False)
    try:
        assert j.writable and [p.client_order_id for p in j.open_positions()] == ["bxPOS"]
    finally:
        j.close()


def test_a_new_step_appended_to_the_list_runs_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The mechanism future schema changes use: appending a step that adds a column migrates a
    current journal to the new version on its next open, keeping its rows."""
    path = unversioned_journal(tmp_path)
    Journal.open(tmp_path, dry_run=False).close()
    latest = journal_schema.SCHEMA_VERSION
    step = Migration(latest + 1, "orders.fee", ("ALTER TABLE orders ADD COLUMN fee REAL",))
    monkeypatch.setattr(journal_schema, "MIGRATIONS", (*journal_schema.MIGRATIONS, step))
    caplog.clear()
    j = Journal.open(tmp_path, dry_run=False)
    try:
        assert user_version(path) == latest + 1 and "fee" in order_columns(path)
        assert j.get("bxPOS") is not None
    finally:
        j.close()
    [migrated] = events(caplog, "journal.migrated")
    assert (migrated["from_version"], migrated["to_version"]) == (latest, latest + 1)


@pytest.mark.usefixtures("held_intent_log")
def test_a_reader_never_migrates(tmp_path: Path) -> None:
    """An opener that does not get the writer's lock is read-only and never migrates: on a file older
    than this code it refuses with a ConfigError (its queries assume the current schema) and the file
    stays at its version."""
    path = unversioned_journal(tmp_path)
    with pytest.raises(ConfigError, match="older than this bridge"):
        Journal.open(tmp_path, dry_run=False)
    assert user_version(path) == 0


def test_a_new_file_starts_at_the_current_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A journal created from nothing is at the current version at once, and nothing is logged as
    migrated."""
    j = Journal.open(tmp_path, dry_run=True)
    j.close()
    assert user_version(j.path) == journal_schema.SCHEMA_VERSION
    assert events(caplog, "journal.migrated") == []


def test_an_older_bridges_intent_log_line_is_replayed_after_the_upgrade(tmp_path: Path) -> None:
    """kill -9 right after an older bridge logged an intent, then an upgrade: the intent-log line has
    the older row's 16 values; the new bridge pads it and journals the order `sending`, so it is looked
    up, never forgotten nor resent."""
    unversioned_journal(tmp_path)
    v1_row = ["bxOLDINTENT", "k", "s", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, 0, 5, 5]
    v1_row += [None, None, None, None]
    (tmp_path / "journal-live.intents").write_bytes(orjson.dumps(v1_row) + b"\n")
    j = Journal.open(tmp_path, dry_run=False)
    try:
        record = j.get("bxOLDINTENT")
        assert record is not None and record.state == "sending" and record.intent.limit_price is None
    finally:
        j.close()
