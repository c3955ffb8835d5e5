"""The control socket between the CLI and the running daemon: a real ControlServer on a Unix socket in
tmp_path with fake handlers, spoken to by the real client and by raw, misbehaving clients."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from bridge.errors import BridgeError, ConfigError
from bridge.ops.control import (
    MAX_LINE_BYTES,
    ControlError,
    ControlServer,
    ControlUnavailable,
    request,
    socket_path,
)

CLOSE = {"cmd": "close", "symbol": "ABC/USDT", "exchange": "binance"}


class FakeDaemon:
    """The daemon's side: records each request; `close` answers as the daemon would."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def close(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(req)
        if req.get("symbol") == "NONE/USDT":
            raise BridgeError("no open position in NONE/USDT")
        if req.get("symbol") == "BUG/USDT":
            raise RuntimeError("a bug in the handler")
        if req.get("symbol") == "JUNK/USDT":
            return {"message": "no ok field"}
        return {"ok": True, "message": f"closing {req['symbol']} on {req['exchange']}"}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return socket_path(tmp_path, dry_run=True)


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
async def server(path: Path, daemon: FakeDaemon) -> AsyncIterator[ControlServer]:
    srv = ControlServer(path, {"close": daemon.close})
    await srv.start()
    yield srv
    await srv.stop()


async def raw(path: Path, data: bytes, *, eof: bool = True) -> dict[str, Any]:
    """Send `data` as is and return the one answer line the server sends before closing."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        writer.write(data)
        await writer.drain()
        if eof:
            writer.write_eof()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer
    result: dict[str, Any] = orjson.loads(answer)
    return result


async def test_round_trip_and_request_logged(server: ControlServer, path: Path, daemon: FakeDaemon) -> None:
    """A request reaches the handler as sent, its answer comes back, and the request is logged with
    its fields and the caller's pid."""
    with capture_logs() as logs:
        answer = await request(path, CLOSE)
    assert answer == {"ok": True, "message": "closing ABC/USDT on binance"}
    assert daemon.requests == [CLOSE]
    [logged] = [e for e in logs if e["event"] == "control.request"]
    assert logged["cmd"] == "close"
    assert logged["request"] == {"symbol": "ABC/USDT", "exchange": "binance"}
    assert logged["peer_pid"] == os.getpid()


async def test_socket_is_mode_0600(server: ControlServer, path: Path) -> None:
    """The socket only its owner (the service user) can connect to, and the process umask is left as
    it was."""
    before = os.umask(0o022)
    os.umask(before)
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    after = os.umask(before)
    assert after == before


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"close ABC/USDT\n", "malformed request: not JSON"),
        (b"[1, 2]\n", "expected a JSON object"),
        (b'{"symbol": "ABC/USDT"}\n', "unknown command None (known: close)"),
        (b'{"cmd": "shutdown"}\n', "unknown command 'shutdown' (known: close)"),
        (b'{"cmd": "close", "symbol": "NONE/USDT"}\n', "no open position in NONE/USDT"),
        (b'{"cmd": "close", "symbol": "BUG/USDT"}\n', "close: internal error in the daemon (see its log)"),
        (b'{"cmd": "close", "symbol": "JUNK/USDT"}\n', "close: internal error in the daemon (see its log)"),
    ],
)
async def test_bad_requests_get_an_error_and_the_server_carries_on(
    server: ControlServer, path: Path, line: bytes, error: str
) -> None:
    """Malformed JSON, a non-object, a missing or unknown command, and a handler that refuses, crashes
    or answers nonsense are each answered with {"ok": false, "error": ...}; the next request works."""
    answer = await raw(path, line)
    assert answer["ok"] is False
    assert error in answer["error"]
    assert (await request(path, CLOSE))["ok"] is True


async def test_last_line_without_newline_is_a_request(server: ControlServer, path: Path) -> None:
    """A client that sends its request and closes its side without a final newline is still answered."""
    answer = await raw(path, orjson.dumps(CLOSE))
    assert answer == {"ok": True, "message": "closing ABC/USDT on binance"}


async def test_overlong_line_is_refused(server: ControlServer, path: Path, daemon: FakeDaemon) -> None:
    """A request line past 64 KiB is answered with an error without reading it all, and the handler
    never sees it; the next request works."""
    huge = b'{"cmd": "close", "symbol": "' + b"A" * MAX_LINE_BYTES + b'"}\n'
    answer = await raw(path, huge)
    assert answer == {"ok": False, "error": f"request longer than {MAX_LINE_BYTES} bytes"}
    assert daemon.requests == []
    assert (await request(path, CLOSE))["ok"] is True


async def test_silent_client_does_not_wedge_the_server(server: ControlServer, path: Path) -> None:
    """While one client holds a connection open and sends nothing, other requests are answered."""
    _, silent = await asyncio.open_unix_connection(os.fspath(path))
    try:
        assert (await request(path, CLOSE))["ok"] is True
        assert (await request(path, CLOSE))["ok"] is True
    finally:
        silent.close()
        await silent.wait_closed()


async def test_silent_client_gets_a_timeout(path: Path, daemon: FakeDaemon) -> None:
    """A client that sends nothing is answered with a timeout error after the read timeout and
    disconnected; the server keeps serving."""
    srv = ControlServer(path, {"close": daemon.close}, read_timeout=0.05)
    await srv.start()
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes the connection
        writer.close()
        await writer.wait_closed()
        assert orjson.loads(answer) == {"ok": False, "error": "no request line within 0.05 s"}
        assert (await request(path, CLOSE))["ok"] is True
    finally:
        await srv.stop()


async def test_stale_socket_file_is_replaced(path: Path, daemon: FakeDaemon) -> None:
    """A socket file nobody listens on (a crashed daemon's) is removed and replaced at start."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(os.fspath(path))
    dead.close()  # the file stays behind, as after kill -9
    with pytest.raises(ControlUnavailable):
        await request(path, CLOSE)
    srv = ControlServer(path, {"close": daemon.close})
    with capture_logs() as logs:
        await srv.start()
    try:
        assert any(e["event"] == "control.stale_socket_removed" for e in logs)
        assert (await request(path, CLOSE))["ok"] is True
    finally:
        await srv.stop()


async def test_second_server_on_a_live_socket_is_refused(
    server: ControlServer, path: Path, daemon: FakeDaemon
) -> None:
    """A second daemon on the same state_dir refuses to start (a config error), and the first keeps
    its socket and answers."""
    second = ControlServer(path, {"close": daemon.close})
    with pytest.raises(ConfigError, match="another bridge daemon answers on"):
        await second.start()
    await second.stop()  # a no-op: it never listened, and must not remove the first one's socket
    assert (await request(path, CLOSE))["ok"] is True


async def test_a_file_in_the_way_is_left_alone(path: Path, daemon: FakeDaemon) -> None:
    """A regular file where the socket goes is never deleted: start refuses with a config error."""
    path.write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        await ControlServer(path, {"close": daemon.close}).start()
    assert path.read_text() == "mine"


async def test_stop_removes_the_socket_and_cuts_idle_clients(path: Path, daemon: FakeDaemon) -> None:
    """stop() returns at once even with an idle client connected (it does not wait out the read
    timeout), removes the socket file, and later requests find no daemon."""
    srv = ControlServer(path, {"close": daemon.close})
    await srv.start()
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    started = time.monotonic()
    await srv.stop()
    assert time.monotonic() - started < 1.0
    assert await asyncio.wait_for(reader.read(), 1) == b""
    writer.close()
    await writer.wait_closed()
    assert not path.exists()
    with pytest.raises(ControlUnavailable):
        await request(path, CLOSE)


async def test_stop_gives_a_running_handler_its_grace_then_cancels_it(path: Path) -> None:
    """A handler still running when the server stops is cancelled after the grace period; its client
    gets a clear error instead of hanging."""
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(_: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"ok": True}

    srv = ControlServer(path, {"close": stuck}, stop_grace=0.05)
    await srv.start()
    client = asyncio.create_task(request(path, CLOSE))
    await entered.wait()
    await srv.stop()
    assert cancelled.is_set()
    with pytest.raises(ControlError, match="closed the connection without an answer"):
        await client


async def test_client_times_out_on_a_slow_answer(path: Path) -> None:
    """A daemon that does not answer in time gives the client a one-line error saying the request
    may still be carried out."""
    release = asyncio.Event()

    async def slow(_: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"ok": True, "message": "late"}

    srv = ControlServer(path, {"close": slow})
    await srv.start()
    try:
        with pytest.raises(ControlError, match=r"did not answer within 0\.05 s; it may still") as exc:
            await request(path, CLOSE, timeout=0.05)
        assert "\n" not in str(exc.value)
    finally:
        release.set()
        await srv.stop()


async def test_client_error_when_nobody_listens(path: Path) -> None:
    """With no daemon, the client raises a BridgeError with one line naming the socket."""
    with pytest.raises(ControlUnavailable) as exc:
        await request(path, CLOSE)
    assert str(exc.value) == f"no running bridge daemon answers on {path} (is the service running?)"
    assert isinstance(exc.value, BridgeError)
