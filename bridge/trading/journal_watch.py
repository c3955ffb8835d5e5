"""The journal's files watched while the daemon runs: a state_dir, journal file or intent log deleted or
replaced (an operator's `rm -rf state`, a restore over a running daemon, a disk remounted) halts trading
(`journal_missing`: alerted, /health 503) and the journal is written back from the still-open
connection, so its dedupe keys and open positions survive a restart. Checked every few seconds from
its own task, never on the order path (three stat calls).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge.aio import sleep_or_stop
from bridge.trading.journal import Journal

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 5.0

Identity = tuple[int, int]  # st_dev, st_ino


def identity(path: Path) -> Identity | None:
    """The file's (device, inode); None when there is no file at `path`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


class JournalWatch:
    """Trading stays halted once a problem was seen, until a restart: the files this process holds
    are no longer the ones on disk, and a human should find out why before it trades again. Until
    then the restored copy is kept current (results of orders still settling), and written a last
    time when the journal closes."""

    def __init__(self, journal: Journal, on_missing: Callable[[str], None]) -> None:
        self._journal = journal
        self._on_missing = on_missing
        path = journal.path
        self._intents = path.with_name(path.stem + ".intents")
        self._watched = {"state_dir": path.parent, "journal": path, "intent log": self._intents}
        self._known = {p: identity(p) for p in self._watched.values()}
        self.problem: str | None = None  # once set, stays set
        self._restored: Identity | None = None  # the restored file, while it is ours to rewrite
        self._synced_changes = -1

    def check(self) -> str | None:
        """What is wrong with the journal's files (None: nothing). The first time: restore, log, halt."""
        if self.problem is not None:
            return self.problem
        for what, path in self._watched.items():
            known, now = self._known[path], identity(path)
            if known is None or now == known:
                continue  # unchanged, or absent from the start (a reader has no intent log of its own)
            change = "deleted" if now is None else "replaced by another"
            self._missing(f"the {what} {path} was {change} while the daemon ran")
            break
        return self.problem

    async def run(self, stop: asyncio.Event, *, interval: float = CHECK_INTERVAL_S) -> None:
        """Check every `interval` seconds until `stop`; after a problem, keep the restored copy current."""
        while not await sleep_or_stop(asyncio.sleep, interval, stop):
            try:
                if self.check() is not None:
                    self.sync()
            except Exception:  # a failed check is retried at the next interval
                log.exception("journal.watch_failed")

    def sync(self) -> None:
        """Rewrite the restored journal from the open connection if it wrote rows since the last copy,
        unless the file at the path is no longer the one restored (a human put another there)."""
        if self._restored is None or self._journal.changes == self._synced_changes:
            return
        if identity(self._journal.path) != self._restored:
            log.warning("journal.restored_copy_replaced", path=str(self._journal.path))
            self._restored = None
            return
        self._write_copy()

    def _missing(self, what: str) -> None:
        self.problem = what
        restored = self._restore() if self._journal.writable else False
        log.error(
            "journal.missing",
            problem=what,
            restored=restored,
            path=str(self._journal.path),
            action="trading halted until a restart; check the disk and the state_dir before restarting",
        )
        self._on_missing(what)

    def _restore(self) -> bool:
        """Write the database back at its path from the open connection, and the intent log beside it
        (locked, with the intents not yet in SQLite). A file put in place of either is kept, renamed
        `.replaced`, for a human."""
        path = self._journal.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for file in (path, self._intents):
                if identity(file) not in (None, self._known[file]):
                    os.replace(file, file.with_name(file.name + ".replaced"))
            self._write_copy()
            untouched = identity(self._intents) == self._known[self._intents]
            intents_ok = untouched or self._journal.reopen_intent_log()
        except Exception as exc:  # a failed restore must not hide the halt
            log.exception("journal.restore_failed", path=str(path), error=str(exc))
            return False
        self._journal.on_close = self.sync  # results written until the end reach the restored file
        return intents_ok

    def _write_copy(self) -> None:
        path = self._journal.path
        tmp = path.with_name(path.name + ".restoring")
        self._journal.backup_to(tmp)  # flushes what is pending first
        os.replace(tmp, path)  # never a half-written journal at the path
        self._restored, self._synced_changes = identity(path), self._journal.changes
