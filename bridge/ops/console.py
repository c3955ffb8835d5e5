"""What a person sees and what a machine reads. On a terminal, `demo`, `replay` and `rehearse` show the
order table and warnings (the full log with -v); without one, stdout is all JSON log lines and the table
goes to stderr. The table is drawn from the order.* audit events as they are logged. A fatal error is
printed once: a line for a person, or one JSON line where stderr is the journal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from bridge import secrets
from bridge.ops import logs

# The events the table shows: every order outcome, and the announcements that were not traded at all.
TABLE_EVENTS = frozenset(
    {
        "order.placed",
        "order.skipped",
        "order.rejected",
        "order.expired",
        "order.unknown",
        "announcement.duplicate",
        "announcement.refused",
        "announcement.title_updated",
    }
)
VERBOSE_HELP = "on a terminal, show the full log, not only the order table and warnings"
_COLUMNS = (
    ("time", 12),
    ("strategy", 14),
    ("venue", 10),
    ("symbol", 14),
    ("side", 4),
    ("size", 14),
    ("price cap", 12),
)


@dataclass(frozen=True)
class Output:
    """Where a command's human output goes: `human` holds the order table and summaries (stdout on a
    terminal, else stderr, stdout then being the JSON log)."""

    terminal: bool
    human: TextIO
    table: OrderTable | None = None


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):  # a closed or odd stream
        return False


def setup(
    *,
    verbose: bool,
    table: bool = True,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> Output:
    """Configure logging for a command a person watches (`demo`, `replay`, `rehearse`). On a terminal:
    the table and warnings on stdout, in the order they happen (written at once: a terminal does not
    block), the info log too with `verbose`. Otherwise: the JSON log (info) on stdout, the table on
    stderr. `table` False: the command prints its own table at the end (replay, on the file's clock)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    terminal = is_terminal(stdout)
    human = stdout if terminal else stderr
    handler = OrderTable(human) if table else None
    also = [] if handler is None else [handler]
    if terminal:
        logs.configure(
            "info",
            "console",
            stream=stdout,
            output_level=None if verbose else "warning",
            background=False,
            also=also,
        )
    else:
        logs.configure("info", "json", stream=stdout, also=also)
    return Output(terminal, human, handler)


class OrderTable(logs.GuardedStreamHandler):
    """Writes one table line per TABLE_EVENTS record (the header before the first); `rows` counts them.
    A GuardedStreamHandler without a flood guard, written at once (a few lines per announcement, and
    the command's own lines on the same stream stay in order with them)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream, None, background=False)
        self.rows = 0
        self.setFormatter(OrderTableFormatter())

    def filter(self, record: logging.LogRecord) -> bool:
        if _event(record).get("event") not in TABLE_EVENTS:
            return False
        self.rows += 1
        return True


def table_header() -> str:
    return "  ".join(f"{name:<{width}}" for name, width in _COLUMNS) + "  outcome"


class OrderTableFormatter(logging.Formatter):
    """Renders an order event as a table row: time, strategy, venue, symbol, side, size, price cap,
    outcome (a skipped order with its reason). Scrubbed: a rejection may quote the exchange."""

    def __init__(self) -> None:
        super().__init__()
        self._header_done = False

    def format(self, record: logging.LogRecord) -> str:
        line = secrets.scrub(table_row(_event(record)))
        if not self._header_done:
            self._header_done = True
            return f"{table_header()}\n{line}"
        return line


def table_row(event: Mapping[str, Any]) -> str:
    name = str(event.get("event"))
    symbol = _text(event.get("symbol"))
    if name.startswith("announcement."):
        tickers = event.get("tickers")
        what = ",".join(map(str, tickers)) if isinstance(tickers, list) else _text(event.get("key"))
        cells = [_time(event), "-", _text(event.get("publisher")), what, "-", "-", "-"]
        outcome = {
            "announcement.duplicate": "not traded: duplicate announcement",
            "announcement.refused": f"not traded: {_text(event.get('reason'))}",
            "announcement.title_updated": "not traded: same announcement, title updated",
        }[name]
    else:
        cells = [
            _time(event),
            _text(event.get("strategy")),
            _text(event.get("exchange")),
            symbol,
            _text(event.get("side")),
            _size(event, symbol),
            _number(event.get("limit_price")),
        ]
        outcome = _outcome(name, event)
    row = "  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, _COLUMNS, strict=True))
    return f"{row}  {outcome}"


def _outcome(name: str, event: Mapping[str, Any]) -> str:
    if name == "order.skipped":
        return f"skipped: {_text(event.get('reason'))}"
    if name == "order.rejected":
        return f"rejected: {_text(event.get('error'))}"
    if name == "order.expired":
        return "expired: nothing filled at the cap"
    if name == "order.unknown":
        return "unknown: looking it up"
    filled, average = event.get("filled"), event.get("average")
    paper = "paper" if event.get("dry_run") else "placed"
    if filled is None:
        return f"{paper} ({_text(event.get('status'))})"
    return f"{paper}: filled {_number(filled)} @ {_number(average)}"


def _size(event: Mapping[str, Any], symbol: str) -> str:
    base, _, quote = symbol.partition("/")
    cost, amount = event.get("cost"), event.get("amount")
    if isinstance(cost, int | float):
        return f"{cost:g} {quote.split(':')[0]}".strip()
    if isinstance(amount, int | float):
        return f"{amount:.8g} {base}".strip()
    return "-"


def _time(event: Mapping[str, Any]) -> str:
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            return stamp[:12]
    else:
        when = datetime.now(UTC)
    return when.strftime("%H:%M:%S.%f")[:12]


def _number(value: Any) -> str:
    return f"{value:.8g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _event(record: logging.LogRecord) -> Mapping[str, Any]:
    msg = record.msg
    return msg if isinstance(msg, dict) else {"event": record.getMessage()}


# ---- fatal errors ------------------------------------------------------------------------------------


def _log_stream() -> TextIO | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logs.GuardedStreamHandler) and not isinstance(handler, OrderTable):
            return handler.stream
    return None


def _same_stream(a: TextIO, b: TextIO) -> bool:
    if a is b:
        return True
    try:
        sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):  # in-memory streams: only the same object is the same
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _log_is_journal() -> bool:
    stream = _log_stream()
    return stream is not None and logs.is_journal_stream(stream)


def log_fatal_too() -> bool:
    """Whether a fatal error also goes in the log as `daemon.fatal`: when a machine reads the log on a
    stream of its own (JSON on stdout, while stderr gets the person's line), or in the journal (where it
    is the one line). Not on a terminal, nor on the stderr the person's line goes to: printed once."""
    stream = _log_stream()
    if stream is None or is_terminal(stream):
        return False
    return logs.is_journal_stream(sys.stderr) or not _same_stream(stream, sys.stderr)


def print_fatal(reason: str, exit_code: int, *, logged: bool, stream: TextIO | None = None) -> None:
    """Print a fatal error once: `bridge: reason` on stderr; where stderr is the journal, one JSON line
    at priority 3 instead, or nothing when the log (`logged`: `daemon.fatal`, `cli.crashed`), also the
    journal, has it already."""
    stream = stream or sys.stderr
    reason = secrets.scrub(reason)
    if not logs.is_journal_stream(stream):
        print(f"bridge: {reason}", file=stream)
        return
    if logged and _log_is_journal():
        return
    line = {
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "level": "error",
        "event": "cli.fatal",
        "error": reason,
        "exit_code": exit_code,
    }
    print("<3>" + orjson.dumps(line).decode(), file=stream)
