"""The control socket: a Unix stream socket, `<state_dir>/control.sock` (mode 0600), over which the CLI
asks the running daemon to act (`bridge close`). One connection carries one request and its answer,
each one JSON object on one line; every request is logged as `control.request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import structlog

from bridge import secrets
from bridge.errors import BridgeError, ConfigError

log = structlog.get_logger(__name__)

SOCKET_NAMES = {True: "control-paper.sock", False: "control-live.sock"}  # by dry_run: one per journal
# A request or answer is a few hundred bytes; anything near this is a mistake or an attack.
MAX_LINE_BYTES = 64 * 1024
# A client has this long to send its request line: a hung or idle client cannot hold a connection open.
READ_TIMEOUT_S = 5.0
# At stop, a request whose handler is running (a close placing its exit order) gets this long to finish.
STOP_GRACE_S = 2.0
# After a failed accept() (out of file descriptors), wait this long before the next.
ACCEPT_BACKOFF_S = 0.5
# Linux's sun_path is 108 bytes, the terminating NUL included.
MAX_PATH_BYTES = 107

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(BridgeError):
    """Talking to the daemon over the control socket failed (no answer in time, a broken answer). The
    CLI prints the one-line message and exits 1."""


class ControlUnavailable(ControlError):
    """Nobody answers on the control socket: the daemon is not running (or this user may not reach it)."""


def socket_path(state_dir: Path, *, dry_run: bool) -> Path:
    """Where the daemon using `state_dir` listens (a paper and a live daemon may share a state_dir)."""
    return state_dir / SOCKET_NAMES[dry_run]


class ControlServer:
    """Serves `handlers` (command name -> async handler) on a Unix socket at `path`.

    A handler gets the request object (`{"cmd": "close", ...}`) and returns the answer: `{"ok": True,
    "message": "..."}` or `{"ok": False, "error": "..."}`. A BridgeError it raises is answered as
    `{"ok": false, "error": str(exc)}`; any other exception is logged with its traceback and answered as
    an internal error. Nothing a client sends or fails to send stops the server."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        *,
        read_timeout: float = READ_TIMEOUT_S,
        max_line: int = MAX_LINE_BYTES,
        stop_grace: float = STOP_GRACE_S,
    ) -> None:
        self.path = path
        self._handlers = dict(handlers)
        self._read_timeout = read_timeout
        self._max_line = max_line
        self._stop_grace = stop_grace
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._inode: int | None = None  # our socket file: stop() never removes a successor's
        self._connections: set[asyncio.Task[None]] = set()
        self._handling: set[asyncio.Task[Any]] = set()  # connections whose handler is running

    async def start(self) -> None:
        """Listen on `path`. A ConfigError if another live daemon answers there, or if the socket cannot
        be created; a stale socket file (left by a crash: nobody answers) is replaced."""
        path = self.path
        if len(os.fsencode(path)) > MAX_PATH_BYTES:
            raise ConfigError(
                f"state_dir: the control socket path {path} is longer than a Unix socket allows"
                f" ({MAX_PATH_BYTES} bytes): use a shorter state_dir"
            )
        with contextlib.suppress(OSError):  # the state_dir normally exists (the journal is there)
            path.parent.mkdir(parents=True, exist_ok=True)
        await _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            # The file gets its mode at bind() from the umask: 0600 from the first instant, so no other
            # user can connect in a window before the chmod (which holds whatever the umask was).
            old_umask = os.umask(0o177)
            try:
                sock.bind(os.fspath(path))
            finally:
                os.umask(old_umask)
            bound = True
            os.chmod(path, 0o600)
            self._inode = os.stat(path).st_ino
            sock.listen(16)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if bound:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise ConfigError(
                f"state_dir: cannot create the control socket {path}: {exc.strerror or exc}"
            ) from None
        self._listener = sock
        # Our own accept loop, not asyncio.start_unix_server: on Python 3.11 a connection accepted just
        # before Server.close() is left open and never served, and its client hangs.
        self._accepting = asyncio.create_task(self._accept(sock), name="control-accept")
        log.info("control.listening", path=str(path), commands=sorted(self._handlers))

    async def stop(self) -> None:
        """Stop listening and remove the socket file; cut idle clients off, give running handlers
        `stop_grace` seconds, then cancel them. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
            self._accepting = None
        listener.close()
        self._unlink()
        for task in self._connections - self._handling:
            task.cancel()
        if self._handling:
            _, late = await asyncio.wait(set(self._handling), timeout=self._stop_grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        log.info("control.stopped", path=str(self.path))

    def _unlink(self) -> None:
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("control.unlink_failed", path=str(self.path), error=str(exc))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the client gave up before we took it
            except OSError as exc:  # out of file descriptors: back off rather than spin
                log.warning("control.accept_failed", error=str(exc))
                await asyncio.sleep(ACCEPT_BACKOFF_S)
                continue
            # Registered here, before it first runs: stop() sees every accepted connection.
            task = asyncio.create_task(self._serve(conn), name="control-connection")
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = _peer(conn)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=self._max_line)
        except BaseException:
            conn.close()
            raise
        try:
            answer = await self._answer(reader, task, peer)
            if answer is not None:
                writer.write(orjson.dumps(answer, default=str) + b"\n")
                await asyncio.wait_for(writer.drain(), self._read_timeout)
        except (OSError, TimeoutError) as exc:  # the client left or stopped reading: its loss
            log.info("control.client_gone", error=str(exc) or type(exc).__name__, **peer)
        except Exception:  # never let one connection take the server down
            log.exception("control.connection_failed", **peer)
        finally:
            self._handling.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, task: asyncio.Task[Any], peer: dict[str, int]
    ) -> dict[str, Any] | None:
        """Read one request line and answer it; None when the client sent nothing and left."""
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self._read_timeout)
        except TimeoutError:
            log.warning("control.request", error="read_timeout", timeout_s=self._read_timeout, **peer)
            return _error(f"no request line within {self._read_timeout:g} s")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial  # the client closed its side: a last line without "\n" is still a request
            if not line.strip():
                return None
        except asyncio.LimitOverrunError:
            log.warning("control.request", error="too_long", max_bytes=self._max_line, **peer)
            return _error(f"request longer than {self._max_line} bytes")
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("control.request", error="not_json", size=len(line), **peer)
            return _error("malformed request: not JSON")
        if not isinstance(request, dict):
            log.warning("control.request", error="not_an_object", size=len(line), **peer)
            return _error('malformed request: expected a JSON object such as {"cmd": "close", ...}')
        cmd = request.get("cmd")
        args = {k: v for k, v in request.items() if k != "cmd"}
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            log.warning("control.request", cmd=cmd, request=args, error="unknown_command", **peer)
            known = ", ".join(sorted(self._handlers)) or "none"
            return _error(f"unknown command {cmd!r} (known: {known})")
        log.info("control.request", cmd=cmd, request=args, **peer)
        started = time.perf_counter()
        self._handling.add(task)
        try:
            answer = await handler(request)
        except BridgeError as exc:
            answer = _error(str(exc))
        except Exception:
            log.exception("control.handler_failed", cmd=cmd)
            answer = _error(f"{cmd}: internal error in the daemon (see its log)")
        finally:
            self._handling.discard(task)
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            log.error("control.bad_answer", cmd=cmd, answer=repr(answer))
            answer = _error(f"{cmd}: internal error in the daemon (see its log)")
        log.info(
            "control.answered",
            cmd=cmd,
            ok=answer["ok"],
            message=answer.get("message"),
            error=answer.get("error"),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return answer


# A timeout parameter rather than the caller's asyncio.timeout(): the connect and the answer are bounded
# apart, and a timeout is reported as what it means here (nobody listening, or no answer yet).
async def request(
    path: Path,
    message: dict[str, Any],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Send `message` to the daemon listening on `path` and return its answer (`{"ok": ...}`). Raises
    ControlUnavailable when nobody answers there, ControlError when no valid answer came in `timeout`."""
    line = orjson.dumps(message) + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ControlError(f"request longer than {MAX_LINE_BYTES} bytes")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(os.fspath(path), limit=MAX_LINE_BYTES)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlUnavailable(
            f"no running bridge daemon answers on {path} (is the service running?)"
        ) from None
    except PermissionError:
        raise ControlUnavailable(
            f"permission denied on {path}: run this as the daemon's user or as root (sudo)"
        ) from None
    except TimeoutError:
        raise ControlUnavailable(
            f"the bridge daemon did not accept a connection on {path} within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise ControlUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(timeout):
            writer.write(line)
            await writer.drain()
            raw = await reader.readuntil(b"\n")
    except TimeoutError:
        raise ControlError(
            f"the bridge daemon did not answer within {timeout:g} s; it may still carry the request out"
            " (see `bridge positions` and its log)"
        ) from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        raise ControlError(
            "the bridge daemon closed the connection without an answer (see its log)"
        ) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ControlError("the bridge daemon sent a malformed answer")
    return answer


async def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody answers on (a crashed daemon's); refuse if a daemon answers there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(
            f"state_dir: {path} exists and is not a socket; move it away so the daemon can listen"
        )
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_unix_connection(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # one system call at start-up: not worth a thread
        log.warning("control.stale_socket_removed", path=str(path))
        return
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"state_dir: cannot tell whether another bridge daemon listens on {path}: {exc}"
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise ConfigError(
        f"state_dir: another bridge daemon answers on {path}; two daemons must not share a state_dir"
    )


def _error(message: str) -> dict[str, Any]:
    # Scrubbed here too: the answer leaves the process (an exchange's error text may quote a key).
    return {"ok": False, "error": secrets.scrub(message)}


def _peer(conn: socket.socket) -> dict[str, int]:
    """The client's pid and uid (SO_PEERCRED, Linux) for the audit log; {} where unavailable."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return {}
    pid, uid, _ = struct.unpack("3i", creds)
    return {"peer_pid": pid, "peer_uid": uid}
