"""sd_notify against a real AF_UNIX datagram socket standing in for systemd; the watchdog loop driven
by an injected sleep and clock, so no test waits."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.ops.sdnotify import SystemdNotifier, run_watchdog

WATCHDOG_30S = str(30_000_000)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket where systemd's notify socket would be, and its path."""
    path = str(tmp_path / "notify")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)  # sendto() has queued the datagram by the time it returns
    with sock:
        yield sock, path


def received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_ready_status_stopping_each_send_one_datagram(manager: tuple[socket.socket, str]) -> None:
    """ready(), status(text) and stopping() each send exactly one datagram with the protocol's field."""
    sock, path = manager
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("trading armed; feed connected")
    assert notifier.stopping()
    assert received(sock) == [b"READY=1", b"STATUS=trading armed; feed connected", b"STOPPING=1"]


def test_notify_sends_several_fields_in_one_datagram(manager: tuple[socket.socket, str]) -> None:
    """notify(**fields) puts every field in the same datagram, one `KEY=value` per line."""
    sock, path = manager
    SystemdNotifier.from_env({"NOTIFY_SOCKET": path}).notify(READY=1, STATUS="ready")
    assert received(sock) == [b"READY=1\nSTATUS=ready"]


def test_newline_in_a_value_cannot_forge_another_field(manager: tuple[socket.socket, str]) -> None:
    """A newline inside STATUS text is flattened, so it cannot smuggle a second assignment (READY=1)."""
    sock, path = manager
    SystemdNotifier.from_env({"NOTIFY_SOCKET": path}).status("halted\nREADY=1")
    assert received(sock) == [b"STATUS=halted READY=1"]


def test_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with `@` names a socket in the abstract namespace."""
    name = f"bridge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        assert SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == [b"READY=1"]


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": WATCHDOG_30S}])
async def test_disabled_without_notify_socket(env: dict[str, str]) -> None:
    """Outside systemd every call is a no-op returning False, no watchdog is armed, and run_watchdog
    returns at once without sleeping."""
    notifier = SystemdNotifier.from_env(env)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready()
    assert not notifier.notify(STATUS="x")

    async def must_not_sleep(_: float) -> None:
        raise AssertionError("slept")

    await asyncio.wait_for(
        run_watchdog(notifier, progress=lambda: True, stop=asyncio.Event(), sleep=must_not_sleep), 5
    )


def test_unsupported_address_disables_and_says_so() -> None:
    """A NOTIFY_SOCKET that is neither a path nor `@name` (e.g. vsock:) disables notifications, logged."""
    with capture_logs() as logs:
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert [e["event"] for e in logs] == ["systemd.notify_socket_unsupported"]


def test_gone_socket_never_raises_and_is_logged_once(tmp_path: Path) -> None:
    """When the manager's socket has disappeared, notify returns False, never raises, and the failure
    is logged once, not on every ping."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    path.unlink()
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert [e["event"] for e in logs] == ["systemd.notify_failed"]
    assert logs[0]["fields"] == ["READY"]


def test_watchdog_interval_is_half_of_watchdog_usec(manager: tuple[socket.socket, str]) -> None:
    """watchdog_interval is half of WATCHDOG_USEC, in seconds."""
    _, path = manager
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_30S})
    assert notifier.watchdog_interval == 15.0


@pytest.mark.parametrize(
    "extra",
    [
        {"WATCHDOG_USEC": WATCHDOG_30S, "WATCHDOG_PID": "1"},  # another process's watchdog
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {},
    ],
)
def test_no_watchdog_unless_armed_for_this_process(
    manager: tuple[socket.socket, str], extra: dict[str, str]
) -> None:
    """No watchdog interval when WATCHDOG_PID names another process or WATCHDOG_USEC is missing, zero
    or not a number; notifications still work."""
    _, path = manager
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, **extra})
    assert notifier.watchdog_interval is None
    assert notifier.enabled


def test_watchdog_pid_of_this_process_arms_the_watchdog(manager: tuple[socket.socket, str]) -> None:
    """WATCHDOG_PID equal to our own pid keeps the watchdog armed."""
    _, path = manager
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_30S, "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_env(env).watchdog_interval == 15.0


class FakeTime:
    """An injected clock and sleep: each sleep advances the clock by its delay plus the lag scripted
    for that round; after `rounds` sleeps it sets `stop` and blocks, as a real sleep would."""

    def __init__(self, stop: asyncio.Event, rounds: int, lags: dict[int, float] | None = None) -> None:
        self.now = 1000.0
        self.delays: list[float] = []
        self._stop = stop
        self._rounds = rounds
        self._lags = lags or {}

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) > self._rounds:
            self._stop.set()
            await asyncio.Future()  # never completes; run_watchdog must return through `stop`
        self.now += delay + self._lags.get(len(self.delays), 0.0)


async def watch(path: str, fake: FakeTime, stop: asyncio.Event) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_30S})
    await asyncio.wait_for(
        run_watchdog(notifier, progress=lambda: True, stop=stop, sleep=fake.sleep, clock=fake.clock),
        5,  # safety bound only; the fake sleep never waits
    )


async def test_watchdog_pings_every_half_watchdog_sec(manager: tuple[socket.socket, str]) -> None:
    """With progress, WATCHDOG=1 goes out once per interval (half of WatchdogSec), and setting `stop`
    ends the loop even in the middle of a sleep."""
    sock, path = manager
    stop = asyncio.Event()
    fake = FakeTime(stop, rounds=4)
    with capture_logs() as logs:
        await watch(path, fake, stop)
    assert fake.delays == [15.0] * 5  # four full rounds, the fifth interrupted by stop
    assert received(sock) == [b"WATCHDOG=1"] * 4
    assert [e["event"] for e in logs] == ["systemd.watchdog_started"]


async def test_no_ping_while_the_daemon_makes_no_progress(manager: tuple[socket.socket, str]) -> None:
    """A round where progress() is False (or raises) sends no ping and logs why; pings resume when
    progress does."""
    sock, path = manager
    stop = asyncio.Event()
    fake = FakeTime(stop, rounds=4)
    answers = iter([True, False, True])

    def progress() -> bool:
        answer = next(answers, None)
        if answer is None:
            raise RuntimeError("check broke")
        return answer

    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_30S})
    with capture_logs() as logs:
        await asyncio.wait_for(
            run_watchdog(notifier, progress=progress, stop=stop, sleep=fake.sleep, clock=fake.clock), 5
        )
    assert received(sock) == [b"WATCHDOG=1"] * 2
    events = [e["event"] for e in logs]
    assert events.count("systemd.watchdog_withheld") == 2
    assert "systemd.progress_check_failed" in events


async def test_late_wake_up_skips_the_ping_and_logs_loop_lag(manager: tuple[socket.socket, str]) -> None:
    """A wake-up later than one interval (the loop was blocked) skips that ping and logs
    systemd.loop_lag; a small delay (under one interval) still pings."""
    sock, path = manager
    stop = asyncio.Event()
    fake = FakeTime(stop, rounds=3, lags={1: 14.0, 2: 16.0})
    with capture_logs() as logs:
        await watch(path, fake, stop)
    assert received(sock) == [b"WATCHDOG=1"] * 2  # rounds 1 and 3
    lag = [e for e in logs if e["event"] == "systemd.loop_lag"]
    assert len(lag) == 1
    assert lag[0]["late_s"] == 16.0


async def test_stop_already_set_returns_without_pinging(manager: tuple[socket.socket, str]) -> None:
    """run_watchdog returns at once when stop is already set."""
    sock, path = manager
    stop = asyncio.Event()
    stop.set()
    fake = FakeTime(stop, rounds=10)
    await watch(path, fake, stop)
    assert fake.delays == []
    assert received(sock) == []
