"""Records raw feed frames with their receipt time to a JSONL file that `bridge replay` reads.

The reader only appends (frame, time) to a list: encoding and writing happen in a worker thread,
so recording never slows the feed. The file rotates at `max_bytes`, keeping `keep` old files.

The lines are the stream format (bridge/feed/stream_format.py): a `{"version": N}` line opens each
new file, then `{"t": <receipt ns>, "frame": "<frame text>"}` per frame (`"b64"` instead of `"frame"`
for a frame that is not UTF-8), plus `"link": "<name>"` when the frame came through a named feed link
(several links at once: the daemon binds each link's name); a single-link recording has no `link`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from bridge.feed import metrics, stream_format

log = structlog.get_logger(__name__)

FLUSH_INTERVAL = 0.25


class Recorder:
    def __init__(
        self, path: Path, *, max_bytes: int = 100 * 1024 * 1024, keep: int = 5, max_pending: int = 100_000
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self._pending: list[tuple[int, bytes | dict[str, Any], str | None]] = []
        self._file: BinaryIO | None = None
        self._size = 0
        self._header_size = 0  # the bytes of this file's version line (0: appended to an older file)
        self._wake = asyncio.Event()

    def frame(self, data: bytes, received_ns: int, link: str | None = None) -> None:
        """Note one raw frame, and the name of the feed link it came through (None: not written).
        O(1), never blocks: called by the feed reader for every frame."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1  # the disk cannot keep up: lose recording, never the feed
            return
        self._pending.append((received_ns, data, link))

    def note(self, received_ns: int, line: dict[str, Any]) -> None:
        """Add a non-frame line (e.g. a markets snapshot) to the recording."""
        self._pending.append((received_ns, line, None))

    async def run(self, stop: asyncio.Event) -> None:
        """Flush pending frames every FLUSH_INTERVAL until `stop`, then once more and close."""
        await asyncio.to_thread(self._open)
        log.info("record.started", path=str(self.path), max_bytes=self.max_bytes, keep=self.keep)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL)
                await self.flush()
        finally:
            await self.flush()
            await asyncio.to_thread(self._close)
            if self.dropped:
                log.warning("record.dropped", frames=self.dropped)
            log.info("record.stopped", path=str(self.path), frames=self.written)

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self._write, batch)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        self._size = self._file.tell()
        self._header_size = 0
        if self._size == 0:
            self._write_header()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, batch: list[tuple[int, bytes | dict[str, Any], str | None]]) -> None:
        assert self._file is not None
        for received_ns, data, link in batch:
            line = stream_format.dumps(_line(received_ns, data, link))
            # A file holding only its version line is never rotated away, however long the line.
            if self._size + len(line) > self.max_bytes and self._size > self._header_size:
                self._rotate()
            self._file.write(line)
            self._size += len(line)
            self.written += 1
        self._file.flush()
        metrics.RECORDED.inc(len(batch))

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.keep > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self.path.open("ab")
        self._size = 0
        self._write_header()
        log.info("record.rotated", path=str(self.path))

    def _write_header(self) -> None:
        """Every new file starts with the format's version line (appending to a file keeps its own)."""
        assert self._file is not None
        line = stream_format.dumps(stream_format.header())
        self._file.write(line)
        self._size = self._header_size = len(line)


def _line(received_ns: int, data: bytes | dict[str, Any], link: str | None = None) -> dict[str, Any]:
    if isinstance(data, dict):
        return data if "t" in data or "markets" in data else {"t": received_ns, **data}
    return stream_format.frame_line(received_ns, data, link)
