"""Logging set-up: structlog for bridge's own events, stdlib loggers (aiohttp, ccxt, asyncio, tenacity),
warnings and uncaught exceptions routed through the same processors, secrets scrubbed from every line,
tracebacks without frame locals, journald-friendly output (`<N>` priorities, bounded lines, a flood guard),
rendered and written by a writer thread (bridge.ops.log_writer) so the event loop only enqueues.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from bridge import secrets
from bridge.ops.flood_guard import FloodGuard as FloodGuard  # re-exported: part of this module's API
from bridge.ops.flood_guard import Suppressed
from bridge.ops.log_writer import LogWriter

log = structlog.get_logger(__name__)
_SECRET_FIELDS = frozenset({"api_key", "apikey", "secret", "password", "token", "x-api-key"})

# journald splits lines longer than LineMax (48K by default) into separate entries, which breaks one
# JSON object per line. Fields are cut long before that; a whole line is capped below it.
MAX_FIELD_CHARS = 8192
MAX_LINE_BYTES = 32 * 1024
_SHRUNK_FIELD_CHARS = 256

# Flood guard: at most FLOOD_LIMIT records per (event, logger) per FLOOD_WINDOW seconds. journald
# drops *every* line of a service that logs more than 10,000 lines per 30 s, order lines included.
FLOOD_LIMIT = 30
FLOOD_WINDOW = 60.0
# Never suppressed, whatever their rate, nor dropped by a full log queue: the audit trail of what the
# bot did and why (with every record at error level and up: see never_dropped).
NEVER_SUPPRESS = ("trading.", "order.", "daemon.", "log.")

# The log writer thread (background mode): ordinary lines waiting beyond this many are dropped and
# counted (about 10-20 MB of records at most); at exit, the queue gets this long to be written out.
QUEUE_SIZE = 10_000
EXIT_FLUSH_TIMEOUT_S = 30.0

# syslog priorities journald reads from a `<N>` line prefix (it assumes 6, info, without one).
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def scrub_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace secret values anywhere in the event (including rendered tracebacks) with `***`: values of
    every type (bytes, sets, objects by their text), keys at every level, secret-named fields whole.
    What comes out is plain data, so no renderer calls an object's repr after this point."""
    return {
        secrets.scrub(key): secrets.REDACTED
        if key.lower() in _SECRET_FIELDS and value is not None
        else secrets.scrub_value(value, _SECRET_FIELDS)
        for key, value in event_dict.items()
    }


def truncate_long_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Cut any string longer than MAX_FIELD_CHARS (nested ones too) and say how much was cut. A
    rendered traceback keeps its end, where the failing call is."""
    return {k: _truncate(v, MAX_FIELD_CHARS, keep_tail=k == "exception") for k, v in event_dict.items()}


def _truncate(value: Any, limit: int, *, keep_tail: bool = False) -> Any:
    if isinstance(value, str) and len(value) > limit:
        cut = len(value) - limit
        if keep_tail:
            return f"[truncated {cut} chars]…{value[-limit:]}"
        return f"{value[:limit]}…[truncated {cut} chars]"
    if isinstance(value, dict):
        return {k: _truncate(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_truncate(v, limit) for v in value]
    return value


class LineRenderer:
    """The last processor: renders with `renderer`, caps the line at `max_bytes` (JSON: one line per
    event) and, for journald, prefixes every physical line with the event's syslog priority."""

    def __init__(self, renderer: Processor, *, journald: bool, max_bytes: int | None) -> None:
        self._renderer = renderer
        self._journald = journald
        self._max_bytes = max_bytes

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        line = self._render(logger, name, event_dict)
        # Four bytes per character at most: the exact byte count is needed only for long lines.
        if self._max_bytes is not None and len(line) * 4 > self._max_bytes:
            size = len(line.encode())
            if size > self._max_bytes:
                line = self._render(logger, name, _shrunk(event_dict, size))
        if not self._journald:
            return line
        prefix = f"<{_PRIORITY.get(str(event_dict.get('level')), 6)}>"
        return "\n".join(prefix + part for part in line.split("\n"))

    def _render(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        out = self._renderer(logger, name, dict(event_dict))
        return out.decode() if isinstance(out, bytes | bytearray) else str(out)


def _shrunk(event_dict: EventDict, size: int) -> EventDict:
    """Still too long after field truncation (many big fields, a deep chained traceback): keep the
    short scalar fields, drop containers, and record what was dropped."""
    kept: EventDict = {}
    dropped = []
    for key, value in event_dict.items():
        if isinstance(value, str):
            kept[key] = _truncate(value, _SHRUNK_FIELD_CHARS)
        elif value is None or isinstance(value, bool | int | float):
            kept[key] = value
        else:
            dropped.append(key)
    kept["log_truncated_bytes"] = size
    if dropped:
        kept["log_dropped"] = dropped
    return kept


class GuardedStreamHandler(logging.Handler):
    """Runs every record past a FloodGuard (if any) and writes a `log.suppressed` summary for each
    window in which records were dropped; error records and NEVER_SUPPRESS events always pass.

    `background`: what passes is handed to a LogWriter thread that renders and writes it, so the
    thread that logs only enqueues (see bridge.ops.log_writer for what happens when it is behind);
    otherwise it is rendered and written at once, in the thread that logs."""

    terminator = "\n"

    def __init__(
        self,
        stream: TextIO,
        guard: FloodGuard | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        super().__init__()
        self.stream = stream
        self.guard = guard
        self._clock = clock
        self.writer = (
            LogWriter(self._write, capacity=queue_size, dropped_record=_dropped_record)
            if background
            else None
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            reserved = never_dropped(record)
            summaries: list[Suppressed] = []
            admit = True
            if self.guard is not None:
                now = self._clock()
                admit = reserved or self.guard.admit((_event_name(record), record.name), now)
                summaries = self.guard.due(now)
            if admit and self.writer is not None:
                record = _detached(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logs
            self.handleError(record)
            return
        for summary in summaries:
            self._forward(_summary_record(summary), reserved=True)
        if admit:
            self._forward(record, reserved=reserved)

    def _forward(self, record: logging.LogRecord, *, reserved: bool) -> None:
        if self.writer is None:
            self._write(record)
        else:
            self.writer.put(record, reserved=reserved)

    def _write(self, record: logging.LogRecord) -> None:
        """Render and write one record: on the writer thread, or inline. One write() per line."""
        try:
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logs
            self.handleError(record)

    def drain(self, timeout: float | None = EXIT_FLUSH_TIMEOUT_S) -> bool:
        """Wait until every line queued so far is written; False if `timeout` passed first."""
        return True if self.writer is None else self.writer.flush(timeout)

    def flush(self) -> None:
        """logging.shutdown() calls this at exit, before close(): the queue is written out."""
        self.drain()

    def handleError(self, record: logging.LogRecord) -> None:
        """Say in one scrubbed line that a record could not be written. The stdlib version prints the
        record's raw message and arguments: exactly the values the scrubber had not cleaned yet."""
        if not logging.raiseExceptions:
            return
        exc = sys.exc_info()[1]
        with contextlib.suppress(Exception):
            what = f"a log record ({_event_name(record)}) could not be written: {type(exc).__name__}: {exc}"
            sys.stderr.write(f"bridge: {secrets.clip(what, 1000)}\n")

    def close(self) -> None:
        """Write the summaries still owed and everything queued before the handler goes away
        (shutdown, reconfigure); lines logged after this are written in the thread that logs them."""
        self.acquire()
        try:
            for summary in self.guard.drain() if self.guard is not None else []:
                self._forward(_summary_record(summary), reserved=True)
        finally:
            self.release()
        if self.writer is not None:
            self.writer.close(EXIT_FLUSH_TIMEOUT_S)
        super().close()


def never_dropped(record: logging.LogRecord) -> bool:
    """The records neither the flood guard nor a full log queue may drop: error level and up, and the
    NEVER_SUPPRESS events (the audit trail of what the bot did and why)."""
    return record.levelno >= logging.ERROR or _event_name(record).startswith(NEVER_SUPPRESS)


def _detached(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of `record` that another thread can render later. What only the logging thread knows is
    resolved now: `exc_info=True` means *its* current exception (the writer thread has none), and a
    stdlib message is formatted with its arguments as they are now. Other handlers (pytest's caplog)
    still get the original."""
    clone = type(record).__new__(type(record))
    clone.__dict__.update(record.__dict__)
    msg = record.msg
    if isinstance(msg, dict):
        event = dict(msg)
        exc = event.get("exc_info")
        if exc is not None and exc is not False and not isinstance(exc, tuple | BaseException):
            event["exc_info"] = sys.exc_info()
        clone.msg = event
    elif record.args:
        clone.msg = record.getMessage()
        clone.args = None
    return clone


def _event_name(record: logging.LogRecord) -> str:
    # structlog records carry the event dict as msg; stdlib records are keyed by their message
    # template, so "Unclosed %s" with changing arguments still counts as one event.
    msg = record.msg
    return str(msg.get("event")) if isinstance(msg, dict) else str(msg)


def _summary_record(summary: Suppressed) -> logging.LogRecord:
    return _own_record(
        {
            "event": "log.suppressed",
            "suppressed_event": summary.event,
            "suppressed_logger": summary.logger,
            "count": summary.count,
            "window_s": summary.window_s,
        }
    )


def _dropped_record(count: int) -> logging.LogRecord:
    return _own_record({"event": "log.dropped", "count": count, "reason": "log writer behind"})


def _own_record(event: EventDict) -> logging.LogRecord:
    """A warning record shaped like one from structlog, so ProcessorFormatter renders its fields as keys."""
    logger = logging.getLogger(__name__)
    for processor in (
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ):
        event = processor(logger, "warning", event)
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, event, (), None)
    record.__dict__.update(_logger=logger, _name="warning")
    return record


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)  # Ctrl-C at a prompt: the usual short message
        return
    log.critical("process.uncaught", exc_info=(exc_type, exc, tb))


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as the default hook: a thread's sys.exit() ends it quietly
    thread = None if args.thread is None else args.thread.name
    if args.exc_value is None:
        log.error("thread.crashed", thread=thread, error=args.exc_type.__name__)
        return
    log.error("thread.crashed", thread=thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def is_journal_stream(stream: TextIO) -> bool:
    """True if `stream` is the journald stream systemd connected (JOURNAL_STREAM is `device:inode`).
    Comparing the inode, not just the variable's presence, keeps a redirected stdout prefix-free."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # StringIO, a closed stream
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _has_fileno(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):  # StringIO, pytest's capture, a closed stream
        return False
    return True


def flush(timeout: float | None = EXIT_FLUSH_TIMEOUT_S) -> bool:
    """Wait until every log line queued so far is written (the process is about to exit, or to print
    on the stream the log uses); False if `timeout` passed first. Never call it on the event loop
    in normal running: it waits for the output."""
    done = True
    for handler in logging.getLogger().handlers:
        if isinstance(handler, GuardedStreamHandler):
            done = handler.drain(timeout) and done
    return done


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    journald: bool | None = None,
    flood_limit: int | None = FLOOD_LIMIT,
    flood_window: float = FLOOD_WINDOW,
    clock: Callable[[], float] = time.monotonic,
    background: bool | None = None,
    queue_size: int = QUEUE_SIZE,
    output_level: str | None = None,
    also: Sequence[logging.Handler] = (),
) -> None:
    """Configure logging once at start-up. `fmt` auto means console on a terminal, JSON otherwise.
    `output_level` (default `level`) filters what this log writes while other handlers, `also`
    (e.g. bridge.ops.console's order table), see every record at `level` and up.
    `journald` None detects the journal from JOURNAL_STREAM; `flood_limit` None turns the guard off.
    `background` None renders and writes on a writer thread when the stream is a file descriptor
    (stdout, a pipe, a file, journald: anything that can be slow), and at once for an in-memory
    stream, which cannot block (and which tests read right after logging)."""
    stream = stream or sys.stdout
    if background is None:
        background = _has_fileno(stream)
    if journald is None:
        journald = is_journal_stream(stream)
    if fmt == "auto":
        fmt = "console" if stream.isatty() and not os.environ.get("JOURNAL_STREAM") else "json"
    renderer: Processor
    if fmt == "json":
        exceptions: Processor = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exceptions,
            # Scrub before truncating: a cut through the middle of a secret would no longer match.
            scrub_secrets,
            truncate_long_fields,
            LineRenderer(renderer, journald=journald, max_bytes=MAX_LINE_BYTES if fmt == "json" else None),
        ],
    )
    guard = FloodGuard(flood_limit, flood_window) if flood_limit is not None else None
    handler = GuardedStreamHandler(stream, guard, clock=clock, background=background, queue_size=queue_size)
    handler.setFormatter(formatter)
    if output_level is not None:
        handler.setLevel(output_level.upper())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, GuardedStreamHandler):
            old.close()  # writes the suppression summaries it still owes
    for extra in (handler, *also):
        root.addHandler(extra)
    root.setLevel(level.upper())
    # warnings.warn() output goes through the same handler (scrubbed, one line), not raw to stderr; so
    # do uncaught exceptions, whose default hooks print the raw traceback, secrets and all.
    # Only the interpreter's own hooks are replaced: one someone installed on purpose (a test runner
    # collecting thread errors, a debugger) stays.
    logging.captureWarnings(True)
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_thread_crash
    # Library chatter below warning is noise for an operator; bridge's own loggers follow `level`.
    for noisy in ("aiohttp", "ccxt", "asyncio", "tenacity"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

    chain: list[Processor] = [
        *_shared_processors(),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]
    if structlog.is_configured():
        # Loggers cached on first use keep the list object they saw: update it in place, so a second
        # configure() (and structlog.testing.capture_logs) reaches every logger, cached or not.
        current: list[Processor] = structlog.get_config()["processors"]
        current[:] = chain
        chain = current
    structlog.configure(
        processors=chain,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
