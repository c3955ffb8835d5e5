"""The journal's intent log: an append-only file next to its database, one line per order intent written
before the order's request leaves (one write(), so it survives kill -9), replayed into SQLite at start.
Its lock (flock) marks the journal's one writer."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from bridge.errors import ConfigError

log = structlog.get_logger(__name__)

# Journals this process has open for writing: a second Journal on one of them (the demo's summary
# while its daemon runs) is a reader, without the cross-process warning.
_WRITERS: set[Path] = set()


class IntentLog:
    """The open, locked intent log of a journal. Each line is an intent's SQLite row as a JSON array."""

    def __init__(self, journal_path: Path, path: Path, fd: int) -> None:
        self._journal_path = journal_path.resolve()
        self.path = path
        self._fd: int | None = fd
        self.size = os.fstat(fd).st_size  # bytes in the file: a failed append cuts back to this

    @classmethod
    def acquire(cls, journal_path: Path) -> IntentLog | None:
        """The intent log of the journal at `journal_path`, locked for this process; None (the journal
        is then read-only) if another holder, in this process or another, has it."""
        path = journal_path.with_name(journal_path.stem + ".intents")
        if journal_path.resolve() in _WRITERS:
            log.debug("journal.read_only", path=str(journal_path), reason="open for writing in this process")
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"state_dir: cannot open intent log {path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
        else:
            _WRITERS.add(journal_path.resolve())
            return cls(journal_path, path, fd)
        log.error(
            "journal.locked",
            path=str(journal_path),
            action="read-only: this process records nothing and sends no order",
            hint="another bridge process uses this state_dir; two daemons must not share one",
        )
        return None

    def append(self, row: Sequence[Any]) -> None:
        """Write one row as one line; durable against kill -9 when this returns. An OSError (disk
        full) propagates, with the file cut back to its last complete line."""
        assert self._fd is not None, "intent log is closed"
        line = orjson.dumps(row) + b"\n"
        view = memoryview(line)
        try:
            while view:  # a regular file takes it in one write unless the disk is full
                view = view[os.write(self._fd, view) :]
        except OSError:
            # A partial line would glue itself to the next intent and hide it at replay: cut it off.
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(line)

    def reopen(self) -> bool:
        """After the file at `path` was deleted or replaced (this process still writes to the old one):
        create it again, lock it, and carry over what the old one holds (intents not yet in SQLite).
        False, keeping the old file, if it cannot be opened or another holder has its lock."""
        assert self._fd is not None, "intent log is closed"
        fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: another holder has it
            os.ftruncate(fd, 0)
            kept = os.pread(self._fd, self.size, 0)
            while kept:
                kept = kept[os.write(fd, kept) :]
        except OSError as exc:
            error = str(exc)
        else:
            os.close(self._fd)  # releases the old file's lock; the new file holds it now
            self._fd = fd
            return True
        if fd is not None:
            os.close(fd)
        log.error("journal.intent_log_reopen_failed", path=str(self.path), error=error)
        return False

    def rows(self, row_len: int, *, oldest_len: int | None = None) -> list[tuple[Any, ...]]:
        """The rows in the file, skipping any line that is not a JSON array of `row_len` values. With
        `oldest_len`, shorter rows down to that length (written by an older bridge, before columns were
        added at the end) are kept and padded with None: an upgrade after kill -9 loses no intent."""
        shortest = row_len if oldest_len is None else oldest_len
        rows = []
        for line in self.path.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, list) or not shortest <= len(row) <= row_len:
                # a torn last line: its write never completed, so reserve() raised and nothing was sent
                log.warning("journal.intent_log_bad_line", size=len(line))
                continue
            rows.append(tuple(row) + (None,) * (row_len - len(row)))
        return rows

    def clear(self) -> None:
        """Empty the file: only once every row in it is in SQLite."""
        assert self._fd is not None, "intent log is closed"
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        """Close the file, which releases the lock. Idempotent."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        _WRITERS.discard(self._journal_path)
