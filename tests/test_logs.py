"""The log pipeline as an operator's journal sees it: priority prefixes, bounded lines, the flood guard,
secret scrubbing and tracebacks without locals in both formats, stdlib loggers as JSON. Every test
runs through the log writer thread, as the daemon does (its own behaviour: tests/test_log_writer.py);
tests/test_secrets_everywhere.py and tests/test_properties_scrub.py cover the pipeline written at once."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from bridge import secrets
from bridge.ops import logs

log = structlog.get_logger("bridge.test_logs")
NOISY = ("aiohttp", "ccxt", "asyncio", "tenacity")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test reconfigures logging on its own stream; put the session configuration back after."""
    root = logging.getLogger()
    session = [h for h in root.handlers if isinstance(h, logs.GuardedStreamHandler)]
    level = root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY}
    yield
    for handler in list(root.handlers):
        if isinstance(handler, logs.GuardedStreamHandler) and handler not in session:
            root.removeHandler(handler)
            handler.close()
    for handler in session:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# This module's tests log through the writer thread, as the daemon does (the fixture below); other
# modules that import these helpers get the default for an in-memory stream: written at once.
_BACKGROUND: list[bool] = [False]


@pytest.fixture(autouse=True)
def through_the_writer_thread() -> Iterator[None]:
    _BACKGROUND[0] = True
    yield
    _BACKGROUND[0] = False


def configure(fmt: str = "json", **kwargs: object) -> io.StringIO:
    """Log to a fresh in-memory stream (through the writer thread in this module's tests)."""
    stream = io.StringIO()
    kwargs.setdefault("background", _BACKGROUND[0])
    logs.configure("debug", fmt, stream=stream, **kwargs)  # type: ignore[arg-type]
    return stream


def written(stream: io.StringIO) -> str:
    """What the writer thread has written once it has caught up."""
    assert logs.flush(timeout=10.0)
    return stream.getvalue()


def lines(stream: io.StringIO) -> list[str]:
    return written(stream).splitlines()


def events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line.split(">", 1)[1] if line.startswith("<") else line) for line in lines(stream)]


def secret_value() -> str:
    # Built at run time so it can never appear in a traceback's source line.
    return f"sk-{uuid.uuid4().hex}"


def test_reconfigure_reaches_loggers_cached_before_it() -> None:
    """A logger cached on first use before configure() runs again follows the new configuration,
    capture_logs included: a second configure never splits loggers between two pipelines."""
    cached = structlog.get_logger("bridge.test_logs.cached")
    cached.info("t.warm")  # cached from here on
    stream = configure()
    cached.info("t.after")
    assert events(stream)[-1]["event"] == "t.after"
    with capture_logs() as captured:
        cached.info("t.captured")
    assert [e["event"] for e in captured] == ["t.captured"]


# ---- journald priority ---------------------------------------------------------------------------


def test_journald_lines_carry_the_syslog_priority() -> None:
    """Under journald each line starts with `<N>`: debug 7, info 6, warning 4, error 3, critical 2,
    for structlog events and stdlib records alike; the rest of the line is the JSON object."""
    stream = configure(journald=True)
    log.debug("t.debug")
    log.info("t.info")
    log.warning("t.warning")
    log.error("t.error")
    log.critical("t.critical")
    logging.getLogger("aiohttp.client").error("stdlib error")
    prefixes = [line[:3] for line in lines(stream)]
    assert prefixes == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"]
    assert [e["event"] for e in events(stream)][:5] == [
        "t.debug",
        "t.info",
        "t.warning",
        "t.error",
        "t.critical",
    ]


def test_console_format_prefixes_every_physical_line() -> None:
    """journald reads a priority per line, so a multi-line console traceback is prefixed on each line."""
    stream = configure("console", journald=True)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("t.failed")
    out = lines(stream)
    assert len(out) > 3
    assert all(line.startswith("<3>") for line in out)


def test_no_prefix_off_journald() -> None:
    """Without journald the line is plain JSON."""
    stream = configure(journald=False)
    log.warning("t.plain")
    assert lines(stream)[0].startswith("{")


def test_journald_detected_from_journal_stream_inode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """journald is detected only when JOURNAL_STREAM names the very file the stream writes to, so a
    stdout redirected elsewhere by the operator stays prefix-free."""
    with (tmp_path / "journal").open("w") as journal, (tmp_path / "other").open("w") as other:
        st = (tmp_path / "journal").stat()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.is_journal_stream(journal)
        assert not logs.is_journal_stream(other)
        assert not logs.is_journal_stream(io.StringIO())
        logs.configure("info", "auto", stream=journal)
        log.info("t.detected")
        logging.getLogger().handlers[0].flush()
    first = (tmp_path / "journal").read_text().splitlines()[0]
    assert first.startswith("<6>{")  # and auto picks JSON under journald


# ---- line length ----------------------------------------------------------------------------------


def test_long_field_is_truncated_and_marked() -> None:
    """A string field over MAX_FIELD_CHARS is cut to that length and says how much was cut."""
    stream = configure()
    log.info("t.big", body="x" * 100_000)
    body = events(stream)[0]["body"]
    assert isinstance(body, str)
    assert body.startswith("x" * logs.MAX_FIELD_CHARS + "…[truncated 91808 chars]")
    assert len(lines(stream)[0]) < 10_000


def test_console_traceback_keeps_its_end_when_truncated() -> None:
    """A rendered traceback longer than the field limit keeps its tail, where the error is."""
    stream = configure("console")
    try:
        raise RuntimeError("y" * 20_000 + " the-end")
    except RuntimeError:
        log.exception("t.long")
    text = written(stream)
    assert "[truncated " in text
    assert text.rstrip().endswith("the-end")
    assert "\x1b[" not in text  # no colour codes when the stream is not a terminal


@pytest.mark.parametrize("char", ["x", "€"])
def test_no_json_line_exceeds_the_cap(char: str) -> None:
    """Many large fields (multi-byte ones too) still give one line under MAX_LINE_BYTES, far from
    journald's 48K split, keeping the event name and level and recording what was dropped."""
    stream = configure(journald=True)
    log.warning("t.huge", nested={"a": [char * 8000] * 10}, **{f"f{i}": char * 8000 for i in range(10)})
    out = lines(stream)
    assert len(out) == 1
    assert len(out[0].encode()) <= logs.MAX_LINE_BYTES
    assert out[0].startswith("<4>")
    event = events(stream)[0]
    assert event["event"] == "t.huge"
    assert event["level"] == "warning"
    assert event["log_dropped"] == ["nested"]
    assert (
        isinstance(event["log_truncated_bytes"], int) and event["log_truncated_bytes"] > logs.MAX_LINE_BYTES
    )


def test_secret_cut_by_truncation_is_still_scrubbed() -> None:
    """Scrubbing runs before truncation, so a secret straddling the cut never leaks even in part."""
    value = secret_value()
    secrets.register(value)
    stream = configure()
    log.info("t.straddle", body="x" * (logs.MAX_FIELD_CHARS - 10) + value)
    assert value[:10] not in written(stream)


# ---- flood guard ---------------------------------------------------------------------------------


def test_repeated_event_is_capped_per_window_then_summarised() -> None:
    """Beyond `flood_limit` identical events (same name and logger) per window the rest are dropped;
    when the window ends one `log.suppressed` line gives the count, before the next line."""
    clock = Clock()
    stream = configure(flood_limit=3, flood_window=60.0, clock=clock)
    for _ in range(10):
        log.info("feed.connecting", url="wss://x")
    log.info("feed.backoff")  # another event has its own budget
    clock.now += 60.0
    log.info("feed.connecting", url="wss://x")
    got = [(e["event"], e.get("count")) for e in events(stream)]
    assert got == [
        ("feed.connecting", None),
        ("feed.connecting", None),
        ("feed.connecting", None),
        ("feed.backoff", None),
        ("log.suppressed", 7),
        ("feed.connecting", None),
    ]
    summary = events(stream)[4]
    assert summary["suppressed_event"] == "feed.connecting"
    assert summary["suppressed_logger"] == "bridge.test_logs"
    assert summary["level"] == "warning"
    assert summary["logger"] == "bridge.ops.logs"
    assert "timestamp" in summary


def test_summary_written_for_a_window_that_ended_quietly() -> None:
    """A storm that stopped still gets its summary with the next line of any event."""
    clock = Clock()
    stream = configure(flood_limit=1, clock=clock)
    for _ in range(5):
        log.info("feed.connect_failed")
    clock.now += logs.FLOOD_WINDOW + 1
    log.info("daemon.status")
    assert [(e["event"], e.get("count")) for e in events(stream)][-2:] == [
        ("log.suppressed", 4),
        ("daemon.status", None),
    ]


def test_owed_summaries_written_when_the_handler_closes() -> None:
    """Shutdown (handler close) writes the summaries of windows still open."""
    stream = configure(flood_limit=2, clock=Clock())
    for _ in range(6):
        log.info("feed.bad_frame")
    logging.getLogger().handlers[0].close()
    assert events(stream)[-1]["event"] == "log.suppressed"
    assert events(stream)[-1]["count"] == 4


@pytest.mark.parametrize(
    "emit",
    [
        lambda: log.warning("trading.halted", reason="disconnected"),
        lambda: log.info("order.placed"),
        lambda: log.info("daemon.status"),
        lambda: log.error("feed.key_rejected"),
        lambda: logging.getLogger("aiohttp.client").error("Unclosed client session"),
    ],
    ids=["trading", "order", "daemon", "error-level", "stdlib-error"],
)
def test_never_suppressed(emit: Callable[[], None]) -> None:
    """trading.*, order.* and daemon.* events and anything at error level always pass."""
    stream = configure(flood_limit=1, clock=Clock())
    for _ in range(20):
        emit()
    assert len(lines(stream)) == 20


def test_stdlib_records_share_the_guard_keyed_by_template() -> None:
    """A stdlib logger repeating one message template with changing arguments counts as one event."""
    clock = Clock()
    stream = configure(flood_limit=2, clock=clock)
    for i in range(5):
        logging.getLogger("aiohttp.client").warning("Unclosed connection %d", i)
    clock.now += logs.FLOOD_WINDOW
    log.info("t.next")
    got = events(stream)
    assert [e["event"] for e in got] == [
        "Unclosed connection 0",
        "Unclosed connection 1",
        "log.suppressed",
        "t.next",
    ]
    assert got[2]["suppressed_logger"] == "aiohttp.client"
    assert got[2]["count"] == 3


def test_flood_guard_can_be_turned_off() -> None:
    """flood_limit=None lets every line through."""
    stream = configure(flood_limit=None)
    for _ in range(50):
        log.info("feed.connecting")
    assert len(lines(stream)) == 50


def test_guard_fails_open_beyond_its_key_budget() -> None:
    """With more distinct live keys than it tracks, the guard admits new keys rather than drop them."""
    guard = logs.FloodGuard(limit=1, window=60.0, max_keys=2)
    assert guard.admit(("a", "l"), 0.0)
    assert guard.admit(("b", "l"), 0.0)
    assert guard.admit(("c", "l"), 0.0)
    assert guard.admit(("c", "l"), 0.0)  # untracked
    assert not guard.admit(("a", "l"), 0.0)


# ---- secrets and tracebacks ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_scrubbed_in_fields_messages_and_tracebacks(fmt: str) -> None:
    """A registered secret is replaced by *** wherever it appears: a field, a stdlib message, an
    exception message in a traceback; a secret-named field is redacted whatever its value."""
    value = secret_value()
    secrets.register(value)
    stream = configure(fmt)
    log.info("t.fields", url=f"wss://feed?key={value}", api_key="whatever-it-is")
    logging.getLogger("ccxt.base").warning("request failed: %s", value)
    try:
        raise RuntimeError(f"rejected key {value}")
    except RuntimeError:
        log.exception("t.failed")
    text = written(stream)
    assert value not in text
    assert "whatever-it-is" not in text
    assert text.count("***") >= 4


def raise_with_secret_local(witness: list[str]) -> None:
    api_secret = secret_value()  # a local of the raising frame, never registered as a secret
    witness.append(api_secret)
    raise ValueError(f"bad signature ({len(api_secret)} chars)")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_traceback_has_no_frame_locals(fmt: str) -> None:
    """Tracebacks name files, lines and functions but never frame locals: an unregistered secret held
    in a local of the raising frame does not reach the log."""
    seen: list[str] = []
    stream = configure(fmt)
    try:
        raise_with_secret_local(seen)
    except ValueError:
        log.exception("t.failed")
    text = written(stream)
    assert "raise_with_secret_local" in text
    assert "bad signature" in text
    assert seen and seen[0] not in text
    if fmt == "json":
        exc = events(stream)[0]["exception"]
        assert isinstance(exc, list)
        assert all("locals" not in frame or frame["locals"] is None for frame in exc[0]["frames"])


def test_stdlib_loggers_render_as_json_through_the_same_pipeline() -> None:
    """aiohttp and ccxt records come out as one JSON object each, with level, logger and timestamp;
    library records below warning are filtered even at debug level."""
    stream = configure()
    logging.getLogger("aiohttp.client").warning("Unclosed client session %s", "abc")
    logging.getLogger("ccxt.base.exchange").info("chatter")
    try:
        raise OSError("reset")
    except OSError:
        logging.getLogger("ccxt.base.exchange").exception("request failed")
    got = events(stream)
    assert [(e["event"], e["level"], e["logger"]) for e in got] == [
        ("Unclosed client session abc", "warning", "aiohttp.client"),
        ("request failed", "error", "ccxt.base.exchange"),
    ]
    assert all("timestamp" in e for e in got)
    exc = got[1]["exception"]
    assert isinstance(exc, list) and exc[0]["exc_type"] == "OSError"
