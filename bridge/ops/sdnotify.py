"""sd_notify for a systemd `Type=notify` service (stdlib only): readiness, status, stopping, and a
watchdog that pings only while the event loop and the daemon make progress. A no-op outside systemd.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from bridge.aio import Sleep, sleep_or_stop

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends `KEY=value` datagrams to the service manager. Every call is one datagram and never raises:
    a lost notification must not take the daemon down (the watchdog is what catches a dead daemon)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        """`address` is a socket path, or `@name` for the abstract namespace; None disables everything."""
        self._address = address
        self._target = "\0" + address[1:] if address and address.startswith("@") else address
        self._watchdog_usec = watchdog_usec if address else None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as systemd sets them for the main process."""
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # Newer systemd may pass vsock: addresses (VMs); a host service never gets one.
            log.warning("systemd.notify_socket_unsupported", notify_socket=address)
            address = None
        return cls(address, watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WatchdogSec=), or None when no watchdog is armed."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        return self.notify(READY=1)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC in µs), as systemd wants it for a reload;
        `ready()` ends the reload, applied or refused."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def notify(self, **fields: str | int) -> bool:
        """Send the fields as one datagram. True if it was sent; False when disabled or on failure
        (the first failure is logged, later ones are not: a gone socket would repeat every ping)."""
        if self._target is None:
            return False
        # The protocol is newline-separated assignments: a newline inside a value would forge another.
        payload = "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop on a full receive queue: drop the datagram instead.
                sock.setblocking(False)
                sock.sendto(payload.encode(), self._target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "systemd.notify_failed",
                    notify_socket=self._address,
                    fields=sorted(fields),
                    error=exc.strerror or type(exc).__name__,
                )
            return False
        return True


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog belongs to another process (we were forked or exec'd by it)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


async def run_watchdog(
    notifier: SystemdNotifier,
    *,
    progress: Callable[[], bool],
    stop: asyncio.Event,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ping the watchdog every `watchdog_interval` seconds until `stop` is set, but only while
    `progress()` says the daemon is alive. Withheld pings let systemd kill and restart a wedged daemon;
    `progress()` must not depend on the feed being up, or a feed outage would restart the daemon."""
    interval = notifier.watchdog_interval
    if interval is None:
        return
    log.info("systemd.watchdog_started", interval_s=interval)
    while True:
        started = clock()
        if await sleep_or_stop(sleep, interval, stop):
            return
        late = clock() - started - interval
        if late > interval:
            # The loop was blocked longer than a ping interval: whatever blocked it may do so again,
            # so this round proves nothing; the next on-time wake-up pings again.
            log.warning("systemd.loop_lag", late_s=round(late, 3), interval_s=interval)
            continue
        if not _made_progress(progress):
            log.error("systemd.watchdog_withheld", interval_s=interval)
            continue
        notifier.watchdog()


def _made_progress(progress: Callable[[], bool]) -> bool:
    try:
        return bool(progress())
    except Exception:  # a broken check counts as no progress; it must never kill the pinger
        log.exception("systemd.progress_check_failed")
        return False
