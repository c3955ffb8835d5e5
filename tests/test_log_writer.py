"""The log writer thread: a blocked or slow output never stalls the event loop; ordinary lines are
dropped and counted when the queue is full, trading/order/daemon lines and errors never; lines are
never torn; and every queued line is written before the process exits, whichever way it exits."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bridge import telemetry
from bridge.ops import logs
from bridge.sim.emulator import FeedEmulator

log = structlog.get_logger("bridge.test_log_writer")
REPO = Path(__file__).resolve().parent.parent
STRATEGIES = REPO / "strategies"
KEY = "dsk_" + "c" * 64
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# The event loop may wake this late while the output is blocked: the loop only enqueues, so what is
# left is scheduling noise on a busy 2-core machine. Writing on the loop thread, it would wait for the
# output (10 s here, the blocked stream's limit; forever in production).
MAX_LOOP_LAG_S = 0.050
# Reserved events the test logs, one of each per round: the audit trail that is never dropped.
RESERVED = ("order.placed", "trading.halted", "daemon.status", "t.failed")


@pytest.fixture(autouse=True)
def own_logging() -> Iterator[None]:
    """Tests configure logging on their own streams; their handlers are closed (drained) after."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)


class BlockedStream(io.StringIO):
    """An output whose write() blocks until `opened` is set: a journald or pipe reader that stopped
    reading. `entered` is set once a write is waiting. Gives up after 10 s so a regression fails."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.opened = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        if not self.opened.wait(10.0):
            raise TimeoutError("the test never opened the stream")
        return super().write(text)


def handler() -> logs.GuardedStreamHandler:
    found = [h for h in logging.getLogger().handlers if isinstance(h, logs.GuardedStreamHandler)]
    assert len(found) == 1
    return found[0]


def writer() -> Any:
    assert handler().writer is not None
    return handler().writer


def parsed(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


class LagProbe:
    """Measures how late the event loop wakes a task that asks to sleep 1 ms, over and over."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.wakes = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            asked = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - asked)
            self.wakes += 1

    def stop(self) -> None:
        self._stop.set()


async def test_a_blocked_output_never_blocks_the_loop() -> None:
    """With the output blocked, the loop keeps waking on time (a lag probe) while 2,000 ordinary and
    80 reserved lines are logged; the 50 ordinary lines that fit the queue are kept, the other 1,950
    dropped and counted (bridge_log_dropped_total), every reserved line kept. Once the output opens,
    everything kept arrives in order, then one `log.dropped` line with the count."""
    stream = BlockedStream()
    logs.configure("info", "json", stream=stream, background=True, queue_size=50, flood_limit=None)
    dropped_before = telemetry.value("bridge_log_dropped_total")
    log.info("t.first")
    assert await asyncio.to_thread(stream.entered.wait, 10.0)  # the writer is stuck in write() now
    probe = LagProbe()
    probing = asyncio.create_task(probe.run())
    for i in range(2000):
        log.info("feed.chatter", i=i)
        if i % 100 == 0:
            log.info("order.placed", i=i)
            log.warning("trading.halted", i=i)
            log.info("daemon.status", i=i)
            log.error("t.failed", i=i)
        await asyncio.sleep(0)  # other tasks (the probe) run between lines, as in the daemon
    probe.stop()
    await probing
    dropped = telemetry.value("bridge_log_dropped_total") - dropped_before
    print(f"\nloop lag with the output blocked: worst {probe.worst * 1000:.2f} ms over {probe.wakes} wakes")
    assert probe.wakes > 10
    assert probe.worst < MAX_LOOP_LAG_S, f"the loop woke {probe.worst * 1000:.1f} ms late"
    assert dropped == 1950
    assert writer().queued == 50 + 80

    stream.opened.set()
    assert logs.flush(timeout=10.0)
    events = parsed(stream.getvalue())
    names = [e["event"] for e in events]
    assert names[0] == "t.first"
    assert [e["i"] for e in events if e["event"] == "feed.chatter"] == list(range(50))
    for name in RESERVED:
        assert [e["i"] for e in events if e["event"] == name] == list(range(0, 2000, 100)), name
    assert names[-1] == "log.dropped"
    assert events[-1]["count"] == 1950
    assert events[-1]["level"] == "warning"
    assert names.count("log.dropped") == 1


async def test_the_drop_summary_is_written_once_per_catch_up() -> None:
    """Each time the writer catches up after dropping it says how many it dropped since it last said
    so; nothing is dropped while it keeps up."""
    stream = BlockedStream()
    logs.configure("info", "json", stream=stream, background=True, queue_size=2, flood_limit=None)
    log.info("t.first")
    assert await asyncio.to_thread(stream.entered.wait, 10.0)
    for i in range(5):
        log.info("t.chatter", i=i)
    stream.opened.set()
    assert logs.flush(timeout=10.0)
    for i in range(5, 7):
        log.info("t.chatter", i=i)
    assert logs.flush(timeout=10.0)
    got = [(e["event"], e.get("i", e.get("count"))) for e in parsed(stream.getvalue())]
    assert got == [
        ("t.first", None),
        ("t.chatter", 0),
        ("t.chatter", 1),
        ("log.dropped", 3),
        ("t.chatter", 5),
        ("t.chatter", 6),
    ]


def test_a_file_descriptor_gets_the_writer_thread_a_memory_stream_does_not(tmp_path: Path) -> None:
    """By default an output that can be slow (a descriptor: stdout, a pipe, a file, journald) is
    written by the writer thread; an in-memory stream, which cannot block, is written at once, so a
    test reads it right after logging."""
    memory = io.StringIO()
    logs.configure("info", "json", stream=memory)
    assert handler().writer is None
    log.info("t.at_once")
    assert parsed(memory.getvalue())[0]["event"] == "t.at_once"
    with (tmp_path / "out.log").open("w") as out:
        logs.configure("info", "json", stream=out)
        assert handler().writer is not None
        assert writer().thread.name == "bridge-log-writer"


def test_lines_are_never_torn_through_a_slowly_read_pipe() -> None:
    """Four threads and the main thread log lines of 20,000 characters (five times what a pipe writes
    atomically) into a 4 KiB pipe read 512 bytes at a time: every line arrives whole, once."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    out = os.fdopen(w, "w", encoding="utf-8")
    chunks: list[bytes] = []

    def read_slowly() -> None:
        with os.fdopen(r, "rb", buffering=0) as pipe:
            while chunk := pipe.read(512):
                chunks.append(chunk)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    logs.configure("info", "json", stream=out, flood_limit=None)  # a real descriptor: background
    assert handler().writer is not None

    def chatter(who: str) -> None:
        for i in range(40):
            log.info("t.big", who=who, i=i, body=who * 20_000)
            log.info("order.placed", who=who, i=i)

    threads = [threading.Thread(target=chatter, args=(str(n),)) for n in range(4)]
    for t in threads:
        t.start()
    chatter("m")
    for t in threads:
        t.join()
    assert logs.flush(timeout=30.0)
    root = logging.getLogger()
    root.removeHandler(handler())
    out.close()
    reader.join(30.0)
    events = parsed(b"".join(chunks).decode())
    assert len(events) == 5 * 80
    for who in "0123m":
        big = [e for e in events if e["event"] == "t.big" and e["who"] == who]
        assert [e["i"] for e in big] == list(range(40))
        assert all(
            e["body"] == who * logs.MAX_FIELD_CHARS + f"…[truncated {20_000 - 8192} chars]" for e in big
        )


def test_an_exception_is_rendered_from_the_thread_that_logged_it() -> None:
    """`log.exception()` names the exception being handled where it is called, although the writer
    renders the line later, on its own thread, after the handler has finished."""
    stream = BlockedStream()
    logs.configure("info", "json", stream=stream, background=True)
    try:
        raise KeyError("lost-key")
    except KeyError:
        log.exception("t.failed")
    logging.getLogger("ccxt.base").error("request %s failed", "GET /x", exc_info=True)  # none current
    stream.opened.set()
    assert logs.flush(timeout=10.0)
    first, second = parsed(stream.getvalue())
    assert first["exception"][0]["exc_type"] == "KeyError"
    assert "lost-key" in first["exception"][0]["exc_value"]
    assert second["event"] == "request GET /x failed"
    assert "exception" not in second


def test_close_writes_every_queued_line_then_logs_inline() -> None:
    """Closing the handler (logging.shutdown at exit, a reconfigure) waits until every queued line is
    written, in order; a line logged after that is written at once by the thread that logs it."""
    stream = BlockedStream()
    logs.configure("info", "json", stream=stream, background=True, flood_limit=None)
    for i in range(300):
        log.info("t.chatter", i=i)
        log.info("order.placed", i=i)
    assert not logs.flush(timeout=0.05)  # blocked: flush says so instead of hanging
    closing = threading.Thread(target=handler().close)
    closing.start()
    stream.opened.set()
    closing.join(10.0)
    assert not closing.is_alive()
    events = parsed(stream.getvalue())
    assert [(e["event"], e["i"]) for e in events] == [
        (name, i) for i in range(300) for name in ("t.chatter", "order.placed")
    ]
    assert not writer().thread.is_alive()
    log.info("t.after_close")
    assert parsed(stream.getvalue())[-1]["event"] == "t.after_close"


# ---- the process exits: every queued line is written first ---------------------------------------


# The CLI as `python -m bridge` runs it, with one fault injected: stdout takes 20 ms per write, a
# journald or pipe reader that keeps up only slowly. So at exit the writer thread is always behind, and
# only a flush on the way out gets the last lines written (without it they are lost: tried).
SLOW_STDOUT_CLI = """
import sys, time

class SlowStdout:
    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        time.sleep(0.02)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)

sys.stdout = SlowStdout(sys.stdout)
from bridge.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def spawn_cli(*args: str, key: str = KEY) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SLOW_STDOUT_CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "FEED_KEY": key},
    )


def json_events(out: bytes) -> list[dict[str, Any]]:
    """Every line of `out` (stdout holds the JSON log only): each must be one whole JSON object."""
    return [json.loads(line) for line in out.decode().splitlines()]


def write_config(tmp_path: Path, url: str, *, state_dir: Path | None = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
feed:
  url: {url}
  api_key: ${{FEED_KEY}}
  reconnect: {{min_delay: 0.05, max_delay: 0.1}}
state_dir: {state_dir or tmp_path / "state"}
strategies:
  - {{name: log_only, module: {STRATEGIES}/log_only.py}}
log: {{level: debug, format: json}}
"""
    )
    return path


async def run_cli(*args: str, key: str = KEY, until: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Run the CLI with a slow stdout; with `until`, send SIGTERM once that event is read. Returns the
    exit code and every JSON line, read to the end."""
    proc = await spawn_cli(*args, key=key)
    assert proc.stdout is not None
    head = b""
    while until is not None and (head := await proc.stdout.readline()):
        if json.loads(head).get("event") == until:
            proc.send_signal(signal.SIGTERM)
            break
    rest = await asyncio.wait_for(proc.stdout.read(), 60.0)
    code = await asyncio.wait_for(proc.wait(), 60.0)
    return code, json_events(head + rest)


@pytest.fixture
async def emu() -> Any:
    async with FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as e:
        yield e


async def test_sigterm_writes_every_line_before_exit(emu: FeedEmulator, tmp_path: Path) -> None:
    """SIGTERM: the daemon's shutdown lines, down to `daemon.stopped`, all reach stdout; exit 0."""
    code, events = await run_cli("run", "-c", str(write_config(tmp_path, emu.url)), until="daemon.ready")
    names = [e["event"] for e in events]
    assert code == 0
    assert names[0] == "daemon.ready"
    assert "daemon.signal" in names
    assert names[-1] == "daemon.stopped"


async def test_a_rejected_key_exit_77_writes_every_line(emu: FeedEmulator, tmp_path: Path) -> None:
    """Exit 77 (the feed refuses the key): the reason, `daemon.fatal`, is the last line written."""
    code, events = await run_cli("run", "-c", str(write_config(tmp_path, emu.url)), key="dsk_" + "0" * 64)
    assert code == 77
    assert (events[-1]["event"], events[-1]["exit_code"]) == ("daemon.fatal", 77)
    assert [e["event"] for e in events].count("daemon.starting") == 1


async def test_a_config_error_exit_78_writes_every_line(emu: FeedEmulator, tmp_path: Path) -> None:
    """Exit 78 found at run time (state_dir cannot be created): `daemon.fatal` is written before exit."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    config = write_config(tmp_path, emu.url, state_dir=blocker / "state")
    code, events = await run_cli("run", "-c", str(config))
    assert code == 78
    assert (events[-1]["event"], events[-1]["exit_code"]) == ("daemon.fatal", 78)


async def test_demo_writes_its_log_to_the_end() -> None:
    """`demo` (exit 0 when its script is played): every log line of the run, down to the last one, is
    written to stdout before exit, each one whole."""
    proc = await spawn_cli("demo")
    assert proc.stdout is not None
    out = await asyncio.wait_for(proc.stdout.read(), 60.0)
    assert await asyncio.wait_for(proc.wait(), 60.0) == 0
    names = [e["event"] for e in json_events(out)]
    assert names.count("order.placed") == 3
    assert names.index("daemon.stopped") < len(names) - 1
    assert names[-1] == "emulator.stopped"
