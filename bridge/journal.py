"""The journal: SQLite in `state_dir`, one file for paper and one for live trading. It remembers every
announcement seen and every order's intent (written before the request), request and result, so the
same announcement never trades twice across reconnects and restarts.

WAL mode with synchronous=NORMAL: a commit survives kill -9 of the daemon (only an OS crash could lose
the last commits) and costs tens of microseconds, so it can sit on the announcement-to-order path.
Checkpoints (which fsync, ~15 ms here) run in a background thread, never inside a hot-path commit.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from bridge.codec import Announcement
from bridge.errors import ConfigError

log = structlog.get_logger(__name__)

OrderState = Literal["sending", "placed", "paper", "rejected", "unknown", "not_found"]
OPEN_STATES: tuple[OrderState, ...] = ("sending", "unknown")
# How often the background thread moves the WAL into the database file (PASSIVE: it never blocks
# the daemon's writes). SQLite's own automatic checkpoint is off: it would run inside whichever
# commit crossed 1000 pages, i.e. now and then inside an order intent's commit.
CHECKPOINT_INTERVAL_S = 5.0

_SCHEMA = """
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
"""


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """When to sell a position an entry opened: `take_profit` / `stop_loss` as fractions of the entry
    price (0.5 = +50 %, 0.2 = -20 %), `after` in seconds from the entry. Any may be None (off)."""

    take_profit: float | None = None
    stop_loss: float | None = None
    after: float | None = None

    def __post_init__(self) -> None:
        for name in ("take_profit", "stop_loss", "after"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.stop_loss is not None and self.stop_loss >= 1:
            raise ValueError("stop_loss is a fraction below 1 (0.2 = sell 20 % under the entry price)")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.take_profit, self.stop_loss, self.after))


@dataclass(frozen=True, slots=True)
class Position:
    """An entry buy that filled, carries an exit plan, and has no exit order yet."""

    client_order_id: str
    strategy: str
    exchange: str
    symbol: str
    filled: float
    average: float | None
    opened_ns: int
    plan: ExitPlan


@dataclass(frozen=True, slots=True)
class OrderIntent:
    client_order_id: str
    announcement_key: str | None
    strategy: str
    exchange: str
    symbol: str
    side: Literal["buy", "sell"]
    quote: str
    cost: float | None
    amount: float | None
    dry_run: bool
    plan: ExitPlan | None = None  # entries: when to exit the position
    exit_of: str | None = None  # exits: the entry's client order id


@dataclass(frozen=True, slots=True)
class OrderRecord:
    intent: OrderIntent
    state: str
    created_ns: int
    order_id: str | None
    filled: float | None
    average: float | None
    result_cost: float | None
    error_code: str | None
    error_message: str | None


class Journal:
    """Synchronous on purpose: each call is one small indexed statement and at most one commit."""

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self._clock_ns = clock_ns  # replay passes the stream's clock: positions age on event time
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=2000")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"state_dir: cannot open journal {path}: {exc}") from None
        self._closed = False
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(checkpoint_interval,), name="journal-checkpoint", daemon=True
        )
        self._checkpointer.start()

    @classmethod
    def open(cls, state_dir: Path, *, dry_run: bool, clock_ns: Callable[[], int] = time.time_ns) -> Journal:
        name = "journal-paper.sqlite" if dry_run else "journal-live.sqlite"
        return cls(state_dir / name, clock_ns=clock_ns)

    def close(self) -> None:
        if self._closed:
            return
        self._closing.set()
        self._checkpointer.join(timeout=10)
        self.commit()
        self._closed = True
        self._db.close()  # the last connection to close checkpoints the WAL itself

    def commit(self) -> None:
        """Commit rows still pending (announcements recorded since the last commit). A no-op once
        closed: a commit scheduled by the dispatcher may fire after shutdown closed the journal."""
        if not self._closed and self._db.in_transaction:
            self._db.execute("COMMIT")

    def checkpoint(self) -> None:
        """Move the WAL into the database file now (the background thread does this every few s)."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpoint_loop(self, interval: float) -> None:
        # Its own connection: sqlite3 releases the GIL while it copies pages and fsyncs.
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("journal.checkpoint_failed", error=str(exc))
            return
        try:
            while not self._closing.wait(interval):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # the next commit still works; only the WAL keeps growing
            log.warning("journal.checkpoint_failed", error=str(exc))
        finally:
            db.close()

    def record_announcement(self, a: Announcement) -> bool:
        """Store an announcement; False if its key was seen before (a duplicate delivery).

        Not committed here: the row joins an open transaction and is committed with the next order
        intent (one disk write for both) or by `commit()`, which the dispatcher schedules right after.
        It need not be durable before any order: a redelivery after a crash is still refused by the
        committed intent of its order (same client order id)."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        cur = self._db.execute(
            "INSERT OR IGNORE INTO announcements VALUES (?,?,?,?,?,?,?,?)",
            (
                a.key,
                a.received_ns or self._clock_ns(),
                a.publisher,
                a.listing_type,
                a.title,
                ",".join(a.tickers),
                a.detected_us,
                orjson.dumps(a.raw).decode(),
            ),
        )
        return cur.rowcount == 1

    def _migrate(self) -> None:
        """Add the exit columns to a journal written by an older bridge."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(orders)")}
        for column, kind in _EXIT_COLUMNS:
            if column not in have:
                self._db.execute(f"ALTER TABLE orders ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS orders_exit_of ON orders(exit_of)")

    def reserve(self, intent: OrderIntent) -> bool:
        """Record an order's intent before it is sent. False if this client order id exists already:
        the order was placed (or attempted) before and must not be sent again."""
        now = self._clock_ns()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO orders (client_order_id, announcement_key, strategy, exchange, symbol,"
            " side, quote, cost, amount, dry_run, state, created_ns, updated_ns,"
            " take_profit, stop_loss, exit_after, exit_of)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,'sending',?,?,?,?,?,?)",
            (
                intent.client_order_id,
                intent.announcement_key,
                intent.strategy,
                intent.exchange,
                intent.symbol,
                intent.side,
                intent.quote,
                intent.cost,
                intent.amount,
                int(intent.dry_run),
                now,
                now,
                None if intent.plan is None else intent.plan.take_profit,
                None if intent.plan is None else intent.plan.stop_loss,
                None if intent.plan is None else intent.plan.after,
                intent.exit_of,
            ),
        )
        self.commit()  # durable before the request is sent (with any announcement rows pending)
        return cur.rowcount == 1

    def record_result(
        self,
        client_order_id: str,
        state: OrderState,
        *,
        order_id: str | None = None,
        filled: float | None = None,
        average: float | None = None,
        cost: float | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        self._db.execute(
            "UPDATE orders SET state=?, updated_ns=?, order_id=?, filled=?, average=?, result_cost=?,"
            " error_code=?, error_message=?, raw=? WHERE client_order_id=?",
            (
                state,
                self._clock_ns(),
                order_id,
                filled,
                average,
                cost,
                error_code,
                error_message,
                None if raw is None else orjson.dumps(raw, default=str).decode(),
                client_order_id,
            ),
        )
        self.commit()

    def spent_since(self, since_ns: int, quote: str) -> float:
        """Quote currency committed to buys since `since_ns`: every buy not known to have failed."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(COALESCE(result_cost, cost, 0)), 0) FROM orders"
            " WHERE side='buy' AND quote=? AND created_ns>=? AND state NOT IN ('rejected','not_found')",
            (quote, since_ns),
        ).fetchone()
        return float(row[0])

    def orders(self, *, states: tuple[str, ...] | None = None) -> list[OrderRecord]:
        sql = "SELECT * FROM orders"
        params: tuple[Any, ...] = ()
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params = states
        return [_record(r) for r in self._rows(sql + " ORDER BY created_ns", params)]

    def get(self, client_order_id: str) -> OrderRecord | None:
        rows = self._rows("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        return _record(rows[0]) if rows else None

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        cur = self._db.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(sql, params).fetchall()

    def open_positions(self) -> list[Position]:
        """Filled entries with an exit plan and no exit order yet (whatever became of that exit: a
        rejected exit is not retried automatically; it is logged for a human)."""
        rows = self._rows(
            "SELECT e.* FROM orders e WHERE e.side='buy' AND e.exit_of IS NULL AND e.state IN ('placed','paper')"
            " AND COALESCE(e.filled, 0) > 0"
            " AND (e.take_profit IS NOT NULL OR e.stop_loss IS NOT NULL OR e.exit_after IS NOT NULL)"
            " AND NOT EXISTS (SELECT 1 FROM orders x WHERE x.exit_of = e.client_order_id)"
            " ORDER BY e.created_ns",
            (),
        )
        return [
            Position(
                client_order_id=r["client_order_id"],
                strategy=r["strategy"],
                exchange=r["exchange"],
                symbol=r["symbol"],
                filled=r["filled"],
                average=r["average"] or (r["result_cost"] / r["filled"] if r["result_cost"] else None),
                opened_ns=r["created_ns"],
                plan=ExitPlan(r["take_profit"], r["stop_loss"], r["exit_after"]),
            )
            for r in rows
        ]


_EXIT_COLUMNS = (("take_profit", "REAL"), ("stop_loss", "REAL"), ("exit_after", "REAL"), ("exit_of", "TEXT"))


def _record(r: sqlite3.Row) -> OrderRecord:
    intent = OrderIntent(
        client_order_id=r["client_order_id"],
        announcement_key=r["announcement_key"],
        strategy=r["strategy"],
        exchange=r["exchange"],
        symbol=r["symbol"],
        side=r["side"],
        quote=r["quote"],
        cost=r["cost"],
        amount=r["amount"],
        dry_run=bool(r["dry_run"]),
        plan=_plan(r),
        exit_of=r["exit_of"],
    )
    return OrderRecord(
        intent=intent,
        state=r["state"],
        created_ns=r["created_ns"],
        order_id=r["order_id"],
        filled=r["filled"],
        average=r["average"],
        result_cost=r["result_cost"],
        error_code=r["error_code"],
        error_message=r["error_message"],
    )


def _plan(r: sqlite3.Row) -> ExitPlan | None:
    plan = ExitPlan(r["take_profit"], r["stop_loss"], r["exit_after"])
    return plan if plan.active else None
