"""The journal's SQLite schema as an ordered list of forward migrations, its version kept in
`PRAGMA user_version`. The writer migrates on open, one transaction per step; readers only check."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from bridge.errors import ConfigError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step forward: it takes a journal from `version - 1` to `version`. `apply` is a tuple of SQL
    statements (run one by one) or a function of the connection; it runs inside the step's transaction,
    must not commit, and leaves `user_version` to migrate(). `doc` says what the step changes."""

    version: int
    doc: str
    apply: tuple[str, ...] | Callable[[sqlite3.Connection], None]


# Version 1: the tables as bridge created them before the journal carried a version. CREATE ... IF NOT
# EXISTS so that one step serves a new file and every unversioned one (user_version 0) alike.
_V1_TABLES = (
    """CREATE TABLE IF NOT EXISTS announcements (
    key TEXT PRIMARY KEY,
    first_seen_ns INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    listing_type TEXT NOT NULL,
    title TEXT NOT NULL,
    tickers TEXT NOT NULL,
    detected_us INTEGER,
    raw TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS orders (
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
)""",
)
# Journals written before exits existed lack these columns of `orders`.
_V1_EXIT_COLUMNS = (
    ("take_profit", "REAL"),
    ("stop_loss", "REAL"),
    ("exit_after", "REAL"),
    ("exit_of", "TEXT"),
)
_V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS orders_state ON orders(state)",
    "CREATE INDEX IF NOT EXISTS orders_created ON orders(created_ns)",
    "CREATE INDEX IF NOT EXISTS orders_exit_of ON orders(exit_of)",
)


def _v1_baseline(db: sqlite3.Connection) -> None:
    for statement in _V1_TABLES:
        db.execute(statement)
    have = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
    for column, kind in _V1_EXIT_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE orders ADD COLUMN {column} {kind}")
    for statement in _V1_INDEXES:
        db.execute(statement)


def _v4_positions(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE orders ADD COLUMN exit_plan TEXT")
    db.execute("ALTER TABLE orders ADD COLUMN est_cost REAL")
    db.execute(
        """CREATE TABLE positions (
    entry_cid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    high_water REAL,
    tiers_done INTEGER NOT NULL DEFAULT 0,
    tier_hold REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    stop_cid TEXT,
    close_reason TEXT,
    updated_ns INTEGER NOT NULL
)"""
    )
    # Before v4 a position had one exit order: if it filled, the position is over.
    db.execute(
        "INSERT INTO positions (entry_cid, state, close_reason, updated_ns)"
        " SELECT DISTINCT x.exit_of, 'closed', 'sold', x.updated_ns FROM orders x"
        " WHERE x.exit_of IS NOT NULL AND x.state IN ('placed', 'paper') AND COALESCE(x.filled, 0) > 0"
    )


# In order, one per version. A schema change appends a step, e.g.
#   Migration(2, "orders.fee: the fee the exchange charged", ("ALTER TABLE orders ADD COLUMN fee REAL",)),
# and never edits a released one: files in the field were migrated by it already.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "Stamp the unversioned schema: create the tables on a new file, add the exit columns"
        " (take_profit, stop_loss, exit_after, exit_of) and their index to a journal older than exits.",
        _v1_baseline,
    ),
    Migration(
        2,
        "orders.limit_price: the price cap (buys) or floor (sells) of a limit IOC order; NULL: market order.",
        ("ALTER TABLE orders ADD COLUMN limit_price REAL",),
    ),
    Migration(
        3,
        "paper_balances: the paper account's free amount per asset, moved by paper fills.",
        ("CREATE TABLE paper_balances (asset TEXT PRIMARY KEY, amount REAL NOT NULL)",),
    ),
    Migration(
        4,
        "orders.exit_plan (the whole exit plan as JSON: tiers, trailing stop, resting stop), orders.est_cost"
        " (the cost the risk limits counted at the intent); positions: each position's exit progress. A"
        " position whose exit filled before this version is closed; one whose exit failed is open again.",
        _v4_positions,
    ),
    Migration(
        5,
        "announcements_seen: an index on announcements.first_seen_ns, so journal.retention_days prunes old"
        " announcements a small batch at a time without scanning the table.",
        ("CREATE INDEX IF NOT EXISTS announcements_seen ON announcements(first_seen_ns)",),
    ),
    Migration(
        6,
        "orders.lease_id: the etcd lease (fencing token) a pair's leader held when it sent the order"
        " (bridge.ops.ha); NULL: sent by a single host, or by a bridge older than this version.",
        ("ALTER TABLE orders ADD COLUMN lease_id INTEGER",),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version  # the version this code reads and writes


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _latest(migrations: Sequence[Migration]) -> int:
    for n, step in enumerate(migrations, start=1):
        if step.version != n:
            raise ValueError(
                f"journal migrations must be numbered 1, 2, 3, ...: step {n} says {step.version}"
            )
    return len(migrations)


def check_version(db: sqlite3.Connection, path: Path, migrations: Sequence[Migration] | None = None) -> int:
    """The file's schema version; a ConfigError if it is newer than this code knows (a newer bridge
    wrote it: reading or trading on it with this one could misread or lose what it records)."""
    latest = _latest(MIGRATIONS if migrations is None else migrations)
    version = user_version(db)
    if version > latest:
        raise ConfigError(
            f"state_dir: journal {path} has schema version {version}, newer than this bridge knows"
            f" ({latest}): a newer bridge wrote it; upgrade bridge to use it (it is never downgraded)"
        )
    return version


def check_readable(db: sqlite3.Connection, path: Path, migrations: Sequence[Migration] | None = None) -> None:
    """For a reader, which never migrates: a ConfigError unless the file is at the latest version (its
    queries assume the latest schema)."""
    steps = MIGRATIONS if migrations is None else migrations
    version, latest = check_version(db, path, steps), _latest(steps)
    if version < latest:
        raise ConfigError(
            f"state_dir: journal {path} has schema version {version}, older than this bridge's ({latest}):"
            " it is migrated when this bridge's daemon opens it; if an older bridge still runs on it,"
            " stop that process and start the new one, then try again"
        )


def migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[Migration] | None = None) -> None:
    """Bring the file to the latest version, one transaction per step: a step that fails is rolled
    back, leaving the file at the version before it, and raises a ConfigError. Only the journal's
    writer (the holder of its intent log's lock) may call this. `db` is in autocommit mode."""
    steps = MIGRATIONS if migrations is None else migrations
    start = check_version(db, path, steps)
    latest = _latest(steps)
    if start == latest:
        return
    new_file = db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None
    for step in steps[start:]:
        db.execute("BEGIN IMMEDIATE")
        try:
            if callable(step.apply):
                step.apply(db)
            else:
                for statement in step.apply:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {step.version:d}")
        except BaseException as exc:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. a full disk)
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise ConfigError(
                    f"state_dir: journal {path}: migration to schema version {step.version} failed"
                    f" ({exc}); the file is left at version {step.version - 1}"
                ) from exc
            raise
        db.execute("COMMIT")
    if not new_file:  # a new file is simply created at the latest version, without a word
        log.info("journal.migrated", path=str(path), from_version=start, to_version=latest)
