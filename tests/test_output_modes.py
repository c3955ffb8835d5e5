"""Readable for a person, parseable for a machine: on a terminal the order table and warnings (the full
log with -v); without one, stdout all JSON lines and the table on stderr; a fatal error printed once (a
JSON line under journald); a port in use one line, never a traceback."""

from __future__ import annotations

import io
import json
import os
import pty
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bridge.ops import console, logs

ROOT = Path(__file__).resolve().parent.parent
STREAM = ROOT / "examples/streams/listings.jsonl"
REPLAY_CONFIG = ROOT / "examples/replay.yaml"


class Terminal(io.StringIO):
    """An in-memory stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def bridge(*args: str, **kwargs: object) -> list[str]:
    return [sys.executable, "-m", "bridge", *args]


def run_in_pty(args: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; its exit code and all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every copy of the slave side is closed, the command has exited
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logs.configure("info", "json", stream=io.StringIO())  # later tests start from a plain set-up


def daemon_config(tmp_path: Path, *, state_dir: Path | None = None, health_port: int | None = None) -> Path:
    path = tmp_path / "config.yaml"
    health = "" if health_port is None else f"health: {{enabled: true, port: {health_port}}}\n"
    path.write_text(
        "feed: {url: 'ws://127.0.0.1:9', api_key: dsk_test_key_0000000000}\n"
        f"state_dir: {state_dir or tmp_path / 'state'}\n{health}"
    )
    return path


def blocked_state_dir(tmp_path: Path) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    return blocker / "state"


# ---- the order table and the log, in process --------------------------------------------------------

ORDER = {
    "strategy": "listing_buy",
    "exchange": "binance",
    "symbol": "ABC/USDT",
    "side": "buy",
    "cost": None,
    "amount": 15.2,
    "limit_price": 1.3125,
    "filled": 15.2,
    "average": 1.25,
    "dry_run": False,
    "status": "closed",
}


def log_a_run() -> None:
    log = structlog.get_logger("bridge.trading.orders")
    log.info("daemon.starting")
    log.info("order.placed", **ORDER)
    log.info(
        "order.skipped",
        strategy="listing_buy",
        exchange="binance",
        symbol="NOPE/USDT",
        side="buy",
        reason="unknown_symbol",
    )
    log.warning("trading.halted", reason="feed_stale")
    logs.flush()


def test_on_a_terminal_the_table_and_warnings_only() -> None:
    """stdout a terminal: the header, one row per order (the skipped one with its reason) and the
    warning, in that order; no info line, no JSON; nothing on stderr."""
    out, err = Terminal(), io.StringIO()
    mode = console.setup(verbose=False, stdout=out, stderr=err)
    log_a_run()
    lines = out.getvalue().splitlines()
    assert mode.terminal and mode.human is out
    assert lines[0].split()[:3] == ["time", "strategy", "venue"]
    assert lines[1].split()[1:] == [
        "listing_buy",
        "binance",
        "ABC/USDT",
        "buy",
        "15.2",
        "ABC",
        "1.3125",
        "placed:",
        "filled",
        "15.2",
        "@",
        "1.25",
    ]
    assert lines[2].split()[1:4] == ["listing_buy", "binance", "NOPE/USDT"]
    assert lines[2].endswith("skipped: unknown_symbol")
    assert "trading.halted" in lines[3] and len(lines) == 4
    assert "daemon.starting" not in out.getvalue() and "{" not in out.getvalue()
    assert err.getvalue() == ""


def test_on_a_terminal_verbose_adds_the_full_log() -> None:
    """-v on a terminal: the info lines too, with the table rows among them."""
    out = Terminal()
    console.setup(verbose=True, stdout=out, stderr=io.StringIO())
    log_a_run()
    text = out.getvalue()
    assert "daemon.starting" in text and "order.placed" in text and "skipped: unknown_symbol" in text


def test_without_a_terminal_stdout_is_json_and_the_table_goes_to_stderr() -> None:
    """stdout not a terminal: every stdout line is a JSON log line (info included), and the human table
    is on stderr."""
    out, err = io.StringIO(), io.StringIO()
    mode = console.setup(verbose=False, stdout=out, stderr=err)
    log_a_run()
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["daemon.starting", "order.placed", "order.skipped", "trading.halted"]
    assert not mode.terminal and mode.human is err
    rows = err.getvalue().splitlines()
    assert len(rows) == 3 and rows[2].endswith("skipped: unknown_symbol")


# ---- the commands, end to end ------------------------------------------------------------------------


def test_replay_on_a_terminal_shows_the_table_not_the_log() -> None:
    """`bridge replay` on a terminal: its order table and summary, no JSON and no info log lines; with
    -v the info log (order.placed) is there too."""
    code, text = run_in_pty(bridge("replay", str(STREAM), "-c", str(REPLAY_CONFIG)))
    assert code == 0, text
    assert "Orders (paper, replayed):" in text and "skipped: event_too_old" in text
    assert "order.placed" not in text and not any(line.startswith("{") for line in text.splitlines())
    code, text = run_in_pty(bridge("replay", str(STREAM), "-c", str(REPLAY_CONFIG), "-v"))
    assert code == 0 and "order.placed" in text and "Orders (paper, replayed):" in text


def test_demo_in_a_pipe_stdout_is_all_json_and_the_table_is_on_stderr() -> None:
    """`bridge demo | ...`: every stdout line is JSON; stderr has the live order table (the skipped
    orders with their reasons) and the summary."""
    proc = subprocess.run(bridge("demo"), capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    assert "order.placed" in events and "daemon.stopped" in events
    assert "skipped: event_too_old" in proc.stderr and "skipped: no_active_market" in proc.stderr
    assert "3 orders." in proc.stderr


def test_a_fatal_error_in_a_pipe_is_one_line_for_each_reader(tmp_path: Path) -> None:
    """stdout and stderr pipes: `bridge: reason` once on stderr (the person), `daemon.fatal` once in the
    JSON log on stdout (the machine)."""
    config = daemon_config(tmp_path, state_dir=blocked_state_dir(tmp_path))
    proc = subprocess.run(
        bridge("run", "-c", str(config)), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 78
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"bridge: {config}: state_dir")
    fatal = [e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "daemon.fatal"]
    assert len(fatal) == 1 and fatal[0]["exit_code"] == 78


def test_a_fatal_error_on_a_terminal_is_printed_once(tmp_path: Path) -> None:
    """On a terminal (the log rendered for a person on it too): the reason appears once, as
    `bridge: reason`, not also as a daemon.fatal log line."""
    config = daemon_config(tmp_path, state_dir=blocked_state_dir(tmp_path))
    code, text = run_in_pty(bridge("run", "-c", str(config)))
    assert code == 78
    assert text.count("state_dir") == 1 and f"bridge: {config}: state_dir" in text
    assert "daemon.fatal" not in text


@pytest.mark.parametrize(
    ("args", "logged"),
    [
        (["run"], True),  # found at run time: the daemon.fatal log line is the one
        (["check-config"], False),  # found at load: main prints it, as JSON
    ],
)
def test_a_fatal_error_under_journald_is_one_json_line(tmp_path: Path, args: list[str], logged: bool) -> None:
    """stdout and stderr both the journal (JOURNAL_STREAM names the stream): the reason is in it once,
    as one JSON line at priority 3, whichever path found it; no plain `bridge:` line beside it."""
    if logged:
        config = daemon_config(tmp_path, state_dir=blocked_state_dir(tmp_path))
    else:
        config = tmp_path / "bad.yaml"
        config.write_text(
            "feed: {url: 'ws://127.0.0.1:9', api_key: dsk_test_key_0000000000}\ntrading: {dry_run: yes}\n"
        )
    journal = tmp_path / "journal"
    with journal.open("w") as sink:
        st = os.fstat(sink.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.run(
            bridge(*args, "-c", str(config)), stdout=sink, stderr=sink, env=env, timeout=60, check=False
        )
    assert proc.returncode == 78
    lines = journal.read_text().splitlines()
    about = [line for line in lines if str(config) in line]
    assert len(about) == 1, lines
    assert about[0].startswith("<3>{")
    event = json.loads(about[0][3:])
    assert event["event"] == ("daemon.fatal" if logged else "cli.fatal") and event["exit_code"] == 78
    assert not any(line.lstrip("<3>").startswith("bridge:") for line in lines)


@pytest.mark.parametrize(
    "verb",
    ["run", "emulate", "fake-exchange", "rehearse"],
)
def test_a_port_in_use_is_one_line_and_exit_78(verb: str, tmp_path: Path, busy_port: int) -> None:
    """Every verb that binds a port, given one in use: exit 78, `bridge: reason` naming the port once on
    stderr (and once in the JSON log when that is on stdout, not repeated where it shares stderr), no
    traceback anywhere."""
    if verb == "run":
        args = ["run", "-c", str(daemon_config(tmp_path, health_port=busy_port))]
    elif verb == "rehearse":
        config = daemon_config(tmp_path)
        args = ["rehearse", "-c", str(config), "--port", str(busy_port)]
    else:
        args = [verb, "--port", str(busy_port)]
    proc = subprocess.run(
        bridge(*args), capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 78, proc.stderr[-2000:]
    about = [line for line in (proc.stdout + proc.stderr).splitlines() if "cannot listen" in line]
    on_stderr = [line for line in proc.stderr.splitlines() if "cannot listen" in line]
    assert len(on_stderr) == 1 and on_stderr[0].startswith("bridge: ")  # the person's line, once
    if verb in ("emulate", "fake-exchange"):  # their log is on stderr too: not repeated there
        assert about == on_stderr
    else:  # the machine's line in the JSON log on stdout
        assert len(about) == 2 and json.loads(about[0])["event"] == "daemon.fatal"
    assert str(busy_port) in about[-1]
    assert "Traceback" not in proc.stderr + proc.stdout
