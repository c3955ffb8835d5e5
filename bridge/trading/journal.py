"""The journal: SQLite in `state_dir`, one file for paper and one for live trading. It remembers every
announcement seen and every order's intent (written before the request), request and result, so the
same announcement never trades twice across reconnects and restarts.

The one write that must be durable before a request leaves, an order's intent, is a line appended to
an intent log next to the database (one write(): it survives kill -9 of the daemon, as a commit with
synchronous=NORMAL does; only an OS crash could lose it). Its row, and every announcement row, reach
SQLite moments later (FLUSH_DELAY_S, or at once before any read); so do order results and position
updates: no SQLite statement, let alone a commit, runs on the order path. At start, logged intents
missing from SQLite are inserted as `sending` and then looked up like any unfinished order. Duplicate
checks use in-memory sets loaded from SQLite at start. Why: on this project's reference VM a cold
SQLite insert and commit cost ~0.3 ms, most of the journal's share of the path to the order.

WAL mode with synchronous=NORMAL. Checkpoints (which fsync, ~15 ms here) run in a background thread,
never inside a commit. The writer holds a lock (flock on the intent log). A second process opening the
same journal (the demo's summary, a second daemon by mistake) gets it read-only: it reads, and treats
every announcement and order as already recorded, so it can never send an order (logged as an error).
The intent log lives in `intentlog`; the schema and its migrations (run by the writer) in `journal_schema`,
the rows in `journal_rows`. `journal_watch` restores a journal deleted under a running daemon.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog

from bridge.errors import ConfigError
from bridge.trading import journal_rows, journal_schema
from bridge.trading.intentlog import IntentLog
from bridge.trading.journal_health import WriteHealth
from bridge.trading.model import (
    Announcement,
    OrderIntent,
    OrderRecord,
    OrderState,
    Position,
)
from bridge.trading.positions import (
    POSITION_FIELDS,
    POSITIONS_SQL,
    REALISED_SQL,
    position_from_row,
)

log = structlog.get_logger(__name__)

# How often the background thread moves the WAL into the database file (PASSIVE: it never blocks
# the daemon's writes). SQLite's own automatic checkpoint is off: it would run inside whichever
# commit crossed 1000 pages, i.e. now and then inside an order intent's commit.
CHECKPOINT_INTERVAL_S = 5.0
# Rows wait this long before being written to SQLite (any read or update writes them at once):
# the insert and commit run after the order is on the wire, and a burst shares one commit.
FLUSH_DELAY_S = 0.05
# The intent log is emptied when it passes this size, right after a flush (every intent in it then
# has its row in SQLite).
INTENT_LOG_MAX_BYTES = 1 << 20


class Journal:
    """Synchronous on purpose: each call is one small indexed statement and at most one commit."""

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
        clock_ns: Callable[[], int] = time.time_ns,
        read_only: bool = False,
    ) -> None:
        """`read_only`: never take the writer's lock, even when no daemon holds it (tools reading
        while a daemon may start: the daemon must find its state_dir free)."""
        self.path = path
        self._clock_ns = clock_ns  # replay passes the stream's clock: positions age on event time
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"state_dir: cannot open journal {path}: {exc}") from None
        self._intent_log: IntentLog | None = None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=2000")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            # None: another holder writes (or the caller only reads), this one reads
            self._intent_log = None if read_only else IntentLog.acquire(path)
            if self._intent_log is not None:
                journal_schema.migrate(self._db, path)  # only the writer: never two migrating at once
                self._replay_intent_log(self._intent_log)
            else:
                journal_schema.check_readable(self._db, path)
            self._cids = {row[0] for row in self._db.execute("SELECT client_order_id FROM orders")}
            self._keys = {row[0] for row in self._db.execute("SELECT key FROM announcements")}
        except BaseException as exc:
            if self._intent_log is not None:
                self._intent_log.close()
            self._db.close()
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise ConfigError(f"state_dir: cannot open journal {path}: {exc}") from None
            raise
        self.writable = self._intent_log is not None
        # Nothing recorded before this start (a first start, or a journal lost while stopped): a live
        # daemon then asks the venue before sending what the lost journal may have sent (fresh_start).
        self.started_empty = self.writable and not self._cids and not self._keys
        self.on_close: Callable[[], None] | None = None  # after the last flush (journal_watch)
        # A pair's leader lease (bridge.ops.ha): each intent records it; it raises TradingHalted when
        # this host cannot prove it leads at this instant, so nothing is recorded or sent then.
        self.fence: Callable[[], int | None] | None = None
        self._pending_announcements: list[tuple[Announcement, int]] = []
        self._pending_intents: list[tuple[OrderIntent, int, int | None]] = []
        self._pending_balances: dict[str, float] = {}
        self._pending_writes: list[tuple[str, tuple[Any, ...]]] = []  # updates a failed write kept, in order
        self.health = WriteHealth()  # its listener: the trading gate's journal_unwritable halt
        self._flush_due = False
        self._closed = False
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(checkpoint_interval,), name="journal-checkpoint", daemon=True
        )
        self._checkpointer.start()

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        dry_run: bool,
        clock_ns: Callable[[], int] = time.time_ns,
        read_only: bool = False,
    ) -> Journal:
        return cls(cls.path_in(state_dir, dry_run=dry_run), clock_ns=clock_ns, read_only=read_only)

    @staticmethod
    def path_in(state_dir: Path, *, dry_run: bool) -> Path:
        """The journal file of a paper or live daemon using `state_dir`."""
        return state_dir / ("journal-paper.sqlite" if dry_run else "journal-live.sqlite")

    def close(self) -> None:
        if self._closed:
            return
        self._closing.set()
        self._checkpointer.join(timeout=10)
        flushed = self._try_flush()
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception:  # closing must go on: the lock must be released
                log.exception("journal.on_close_failed")
        if self._intent_log is not None:
            if flushed:
                self._intent_log.clear()  # every logged intent has its row now
            self._intent_log.close()  # releases the lock
            self._intent_log = None
            self.writable = False  # a reserve() after close must fail, never write to a closed log
        self._closed = True
        self._db.close()  # the last connection to close checkpoints the WAL itself

    def flush(self) -> None:
        """Write the rows still pending (announcements and intents recorded since the last flush) to
        SQLite in one commit. A no-op once closed: a scheduled flush may fire after shutdown. On a
        failure the rows stay pending (and their intents stay in the intent log) and it raises."""
        pending = self._pending_announcements or self._pending_intents or self._pending_balances
        if self._closed or not (pending or self._pending_writes or not self.health.ok):
            return
        announcements, intents = self._pending_announcements, self._pending_intents
        balances, writes = self._pending_balances, self._pending_writes
        with self._db:  # one transaction; rolled back on error
            self._db.execute("BEGIN")
            # A write, whatever is pending: after a failure it proves the journal works again.
            self._db.execute(f"PRAGMA user_version = {journal_schema.SCHEMA_VERSION:d}")
            self._db.executemany(
                "INSERT OR IGNORE INTO announcements VALUES (?,?,?,?,?,?,?,?)",
                [journal_rows.announcement_row(a, seen_ns) for a, seen_ns in announcements],
            )
            self._db.executemany(
                journal_rows.INSERT_INTENT, [journal_rows.intent_row(i, now, ls) for i, now, ls in intents]
            )
            self._db.executemany("INSERT OR REPLACE INTO paper_balances VALUES (?,?)", list(balances.items()))
            missing = [
                params[-1]
                for sql, params in writes
                if self._db.execute(sql, params).rowcount != 1 and sql == journal_rows.UPDATE_RESULT
            ]
        for cid in missing:
            # Its intent row is not in SQLite (never reserved here): say so loudly rather than lose it.
            log.error("journal.result_not_recorded", client_order_id=cid)
        # Only now, after the commit: a failed flush must leave them to be written again.
        self._pending_announcements, self._pending_intents, self._pending_balances = [], [], {}
        self._pending_writes = []
        if self._intent_log is not None and self._intent_log.size > INTENT_LOG_MAX_BYTES:
            self._intent_log.clear()

    def _try_flush(self) -> bool:
        try:
            self.flush()
        except sqlite3.Error as exc:
            self.health.failed(exc, "flush", pending_intents=len(self._pending_intents))
            return False
        self.health.succeeded()
        return True

    def _flush_soon(self, delay: float | None = None) -> None:
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (tools, tests): write now
            self._try_flush()
            return
        self._flush_due = True
        loop.call_later(FLUSH_DELAY_S if delay is None else delay, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_due = False
        if not self._try_flush():
            self._flush_soon(self.health.retry_delay)  # still pending: try again, backing off

    def _replay_intent_log(self, intent_log: IntentLog) -> None:
        """Insert intents a previous process logged but did not get to write to SQLite (kill -9 between
        the log line and the flush), then empty the log."""
        rows = intent_log.rows(
            journal_rows.INTENT_ROW_LEN, oldest_len=journal_rows.INTENT_ROW_LEN_V1
        )  # each line is an intent's row, as reserve() wrote it
        if rows:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(journal_rows.INSERT_INTENT, rows)
            log.warning("journal.intents_replayed", count=len(rows), path=str(intent_log.path))
        intent_log.clear()

    def backup_to(self, target: Path) -> None:
        """Copy the whole database, as this connection sees it, into `target` (JournalWatch restores a
        deleted journal from it: the open connection still reads the deleted file)."""
        self._try_flush()
        copy = sqlite3.connect(target)
        try:
            self._db.backup(copy)
        finally:
            copy.close()

    def reopen_intent_log(self) -> bool:
        """Write the intent log again at its path, locked, after it was deleted or replaced (False:
        it could not be, see IntentLog.reopen)."""
        return self._intent_log is not None and self._intent_log.reopen()

    @property
    def changes(self) -> int:
        """Rows this connection has written so far (a restored copy is stale when this moved)."""
        return self._db.total_changes

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

        The row is written with the next flush. It need not be durable before any order: after a
        crash, a redelivered announcement's order is still refused by its logged intent (same client
        order id)."""
        if a.key in self._keys or not self.writable:
            return False
        self._keys.add(a.key)
        self._pending_announcements.append((a, a.received_ns or self._clock_ns()))
        self._flush_soon()
        return True

    def paper_balances(self) -> dict[str, float]:
        """The paper account's free amount per asset as last recorded ({}: never seeded)."""
        self._try_flush()
        return {str(a): float(v) for a, v in self._db.execute("SELECT asset, amount FROM paper_balances")}

    def record_paper_balances(self, amounts: dict[str, float]) -> None:
        """Remember paper amounts (the assets given; others keep theirs). Written with the next flush,
        like announcement rows: no commit on the order path."""
        if not self.writable:
            return
        self._pending_balances.update(amounts)
        self._flush_soon()

    def reserve(self, intent: OrderIntent) -> bool:
        """Record an order's intent before it is sent: durable (logged) when this returns True. False
        if this client order id exists already: the order was placed (or attempted) before and must
        not be sent again. An OSError (disk full) propagates: then nothing may be sent."""
        cid = intent.client_order_id
        if cid in self._cids or self._intent_log is None:  # read-only: never send
            return False
        now = self._clock_ns()
        lease = None if self.fence is None else self.fence()
        self._intent_log.append(journal_rows.intent_row(intent, now, lease))
        self._cids.add(cid)
        self._pending_intents.append((intent, now, lease))
        self._flush_soon()
        return True

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
        if not self.writable:  # only the writer records results (this process sent nothing)
            return
        row = (
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
        )
        self._write(journal_rows.UPDATE_RESULT, row)  # with the next flush: off the order path

    def settle_unresolved(
        self, client_order_id: str, state: OrderState, *, error_message: str | None = None
    ) -> bool:
        """Record that look-ups left an order unresolved (`unknown`) or found no such order (`not_found`),
        only if the order is still `sending` or `unknown`: another path (the exits' own look-up) may have
        recorded its fill meanwhile, and that fill stands. False when the order had been settled."""
        if not self.writable:
            return True  # a reader records nothing; nobody else settles it here either
        row = (state, self._clock_ns(), error_message, client_order_id)
        # At once (its answer decides what the look-up reports); look-ups run apart from the order path.
        if self._try_flush() and not self._pending_writes:
            try:
                return self._db.execute(journal_rows.SETTLE_UNRESOLVED, row).rowcount == 1
            except sqlite3.Error as exc:
                self.health.failed(exc, "settle_unresolved")
        self._write(journal_rows.SETTLE_UNRESOLVED, row)
        return True  # kept for the next flush, where the guard applies

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue one update for the next flush (FLUSH_DELAY_S from now, or at once before any read), in
        order behind what already waits: the caller (an order's result, an exit's progress) never waits
        for SQLite. A journal that cannot be written keeps it for the next flush that works."""
        self._pending_writes.append((sql, params))
        self._flush_soon(None if self.health.ok else self.health.retry_delay)

    def prune_announcements(self, before_ns: int, limit: int) -> int:
        """Delete up to `limit` announcements first seen before `before_ns`, their keys from the duplicate
        set too, in one short transaction (journal.retention_days; orders and positions are kept). The
        number deleted; raises sqlite3.Error."""
        if not self.writable:
            return 0
        self.flush()  # rows still pending are in SQLite first (a failure raises, as documented)
        keys = [str(r[0]) for r in self._db.execute(journal_rows.OLD_ANNOUNCEMENTS, (before_ns, limit))]
        if keys:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM announcements WHERE key=?", [(k,) for k in keys])
            self._keys.difference_update(keys)
        return len(keys)

    def buys_since(self, since_ns: int) -> list[tuple[str, str, str, int]]:
        """(strategy, exchange, symbol, created_ns) of entry buys since `since_ns` that may have bought
        something (not rejected, not expired unfilled): what the symbol claims start from."""
        self._try_flush()
        rows = self._db.execute(
            "SELECT strategy, exchange, symbol, created_ns FROM orders WHERE side='buy' AND exit_of IS NULL"
            " AND created_ns>=? AND state NOT IN ('rejected', 'expired')",
            (since_ns,),
        ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def orders(self, *, states: tuple[str, ...] | None = None) -> list[OrderRecord]:
        sql = "SELECT * FROM orders"
        params: tuple[Any, ...] = ()
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params = states
        return [journal_rows.record(r) for r in self._rows(sql + " ORDER BY created_ns", params)]

    def orders_since(self, since_ns: int) -> list[OrderRecord]:
        """Orders whose intent was written at or after `since_ns`, oldest first: the risk limits rebuild
        the day's spend from these once, at start (never on the order path)."""
        sql = "SELECT * FROM orders WHERE created_ns>=? ORDER BY created_ns"
        return [journal_rows.record(r) for r in self._rows(sql, (since_ns,))]

    def select(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query, for tools that read the journal (bridge.ops.report)."""
        return self._rows(sql, params)

    def get(self, client_order_id: str) -> OrderRecord | None:
        rows = self._rows("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        return journal_rows.record(rows[0]) if rows else None

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        self._try_flush()
        cur = self._db.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(sql, params).fetchall()

    def positions(self, states: tuple[str, ...] | None = None) -> list[Position]:
        """Positions in `states` (pending, open, closed, abandoned; all when None), oldest first."""
        sql = POSITIONS_SQL
        if states is not None and not {"closed", "abandoned"} & set(states):
            # The live ones only (the exits read them every second): ended positions are kept for
            # ever, and reading them all made each pass cost more with every position ever closed.
            sql += " AND COALESCE(p.state, 'open') NOT IN ('closed', 'abandoned')"
        found = (position_from_row(r) for r in self._rows(sql + " ORDER BY e.created_ns", ()))
        return [p for p in found if p is not None and (states is None or p.state in states)]

    def open_positions(self) -> list[Position]:
        """The positions the exits watch: open ones, and pending ones (fill not known yet)."""
        return self.positions(("pending", "open"))

    def position(self, entry_client_order_id: str) -> Position | None:
        rows = self._rows(POSITIONS_SQL + " AND e.client_order_id=?", (entry_client_order_id,))
        return position_from_row(rows[0]) if rows else None

    def realised_since(self, since_ns: int) -> dict[str, float]:
        """Realised profit (negative: loss) of exit fills since `since_ns`, per quote currency."""
        return {str(r[0]): float(r[1] or 0.0) for r in self._rows(REALISED_SQL, (since_ns,))}

    def exit_orders(self, entry_client_order_id: str) -> list[OrderRecord]:
        """The orders sent to close a position (exit attempts and resting stops), oldest first."""
        sql = "SELECT * FROM orders WHERE exit_of=? ORDER BY created_ns"
        return [journal_rows.record(r) for r in self._rows(sql, (entry_client_order_id,))]

    def update_position(self, entry_client_order_id: str, **fields: Any) -> None:
        """Set a position's exit progress (`positions` columns), written with the next flush. A no-op
        for a reader."""
        unknown = set(fields) - POSITION_FIELDS
        if unknown:
            raise ValueError(f"not a position field: {sorted(unknown)}")
        if not self.writable:
            return
        self._write(
            "INSERT OR IGNORE INTO positions (entry_cid, state, updated_ns) VALUES (?, 'open', ?)",
            (entry_client_order_id, self._clock_ns()),
        )
        assignments = ", ".join(f"{name}=?" for name in fields)
        self._write(
            f"UPDATE positions SET {assignments}, updated_ns=? WHERE entry_cid=?",  # noqa: S608 - names checked
            (*fields.values(), self._clock_ns(), entry_client_order_id),
        )
