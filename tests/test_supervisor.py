"""The supervisor against a real local emulator: reconnect policy, fatal answers, the trading gate,
the stale watchdog and shutdown. Backoff sleeps are recorded by a fake sleep, never waited out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bridge import telemetry
from bridge.config_feed import FeedConfig, ReconnectConfig
from bridge.errors import ConfigError, CredentialsRejected
from bridge.feed.codec import Announcement
from bridge.feed.supervisor import RATE_LIMIT_WAIT, Supervisor
from bridge.retry import backoff_delay
from bridge.secrets import Secret
from bridge.sim.emulator import FeedEmulator
from bridge.trading.gate import TradingGate

KEY = "dsk_" + "e5" * 32
WAIT = 5.0  # safety bound only


class FakeSleep:
    """Stands in for asyncio.sleep: records each delay and returns at once, or, while `hold` is
    clear, only when a test releases it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self._called = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self._called.set()
        await self.hold.wait()

    async def calls(self, n: int) -> list[float]:
        while len(self.delays) < n:
            self._called.clear()
            await self._called.wait()
        return self.delays


class GateWatch:
    """Lets a test await a state of the trading gate and see the order of changes."""

    def __init__(self, gate: TradingGate) -> None:
        self.gate = gate
        self.history: list[tuple[str, frozenset[str]]] = []
        self._changed = asyncio.Event()
        gate.subscribe(self._on_change)

    def _on_change(self, armed: bool, reasons: frozenset[str], reason: str) -> None:
        self.history.append((reason, reasons))
        self._changed.set()

    async def until(self, predicate: Callable[[frozenset[str]], bool]) -> None:
        while not predicate(self.gate.reasons):
            self._changed.clear()
            await self._changed.wait()


@dataclass
class Run:
    sup: Supervisor
    gate: GateWatch
    queue: asyncio.Queue[Announcement]
    sleep: FakeSleep
    task: asyncio.Task[None]

    async def outcome(self) -> None:
        await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
async def emu() -> AsyncIterator[FeedEmulator]:
    async with FeedEmulator(api_keys=[KEY], heartbeat_interval=None, ping_interval=None) as emulator:
        yield emulator


def config(url: str, **overrides: Any) -> FeedConfig:
    values: dict[str, Any] = {
        "api_key": Secret(KEY),
        "url": url,
        "heartbeat_timeout": 30.0,
        "reconnect": ReconnectConfig(min_delay=1.0, max_delay=8.0),
    }
    values.update(overrides)
    return FeedConfig(**values)


@asynccontextmanager
async def running(cfg: FeedConfig, *, session: aiohttp.ClientSession | None = None) -> AsyncIterator[Run]:
    gate = TradingGate()
    gate.resume("starting")  # only the feed's own halt reasons matter here
    queue: asyncio.Queue[Announcement] = asyncio.Queue()
    sleep = FakeSleep()
    sup = Supervisor(cfg, gate, queue, sleep=sleep, session=session)
    run = Run(sup, GateWatch(gate), queue, sleep, asyncio.create_task(sup.run()))
    try:
        yield run
    finally:
        sup.stop()
        await asyncio.wait_for(asyncio.gather(run.task, return_exceptions=True), WAIT)


Events = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> Events:
    """Raw structlog event dicts by name, from the stdlib records (see tests/test_feed.py)."""
    caplog.set_level(logging.DEBUG)

    def find(name: str) -> list[dict[str, Any]]:
        return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]

    return find


def armed(reasons: frozenset[str]) -> bool:
    return not reasons


async def test_connects_arms_gate_and_enqueues(emu: FeedEmulator, events: Events) -> None:
    """After the welcome the gate's "disconnected" reason clears, the state is connected, health fields
    are set and announcements reach the queue."""
    connects = telemetry.value("bridge_feed_connects_total")
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        assert run.sup.state == "connected"
        assert run.sup.welcome is not None and run.sup.welcome.tier == "premium"
        assert run.sup.connected_since is not None and run.sup.last_message_at is not None
        await emu.announce(ticker="ABC")
        ann = await asyncio.wait_for(run.queue.get(), WAIT)
        assert ann.tickers == ("ABC",)
    assert run.sup.state == "stopped"
    assert "disconnected" in run.gate.gate.reasons
    assert telemetry.value("bridge_feed_connects_total") == connects + 1
    assert events("feed.connecting") and events("feed.connected")


async def test_401_is_a_config_error_without_retry(emu: FeedEmulator, events: Events) -> None:
    """HTTP 401 raises ConfigError (exit 78) at once: no backoff, no second handshake."""
    emu.reject_next(401)
    async with running(config(emu.url)) as run:
        with pytest.raises(ConfigError):
            await run.outcome()
    assert len(emu.handshakes) == 1 and run.sleep.delays == []
    assert [e["status"] for e in events("feed.rejected")] == [401]


async def test_403_is_credentials_rejected_without_retry(emu: FeedEmulator) -> None:
    """HTTP 403 raises CredentialsRejected (exit 77) at once and halts trading with "key_rejected" (not key_expired: nothing expired as far as the client knows)."""
    async with running(config(emu.url, api_key=Secret("dsk_" + "0" * 64))) as run:
        with pytest.raises(CredentialsRejected):
            await run.outcome()
    assert [h.status for h in emu.handshakes] == [403] and run.sleep.delays == []
    assert "key_rejected" in run.gate.gate.reasons


@pytest.mark.parametrize(
    ("retry_after", "body", "floor"),
    [
        (30, None, 30.0),  # Retry-After header (and the same retry_after_s in the body)
        (None, {"error": "connection_cooldown", "retry_after_s": 20}, 20.0),  # body only
    ],
)
async def test_429_waits_at_least_retry_after(
    emu: FeedEmulator, events: Events, retry_after: int | None, body: dict[str, Any] | None, floor: float
) -> None:
    """A 429 is retried, but never sooner than Retry-After / retry_after_s, even when that exceeds
    the backoff cap; the rejection is logged with status, wait and error."""
    emu.reject_next(429, retry_after=retry_after, error="connection_cooldown", body=body)
    async with running(config(emu.url)) as run:
        await emu.wait_connected(1)
        assert run.sleep.delays == [floor]
    (rejected,) = events("feed.rejected")
    assert (rejected["status"], rejected["retry_after"], rejected["error"]) == (
        429,
        floor,
        "connection_cooldown",
    )


@pytest.mark.parametrize("status", [500, 503, 400, 426])
async def test_server_errors_back_off_growing_capped_and_jittered(
    emu: FeedEmulator, events: Events, status: int
) -> None:
    """5xx, 400 and 426 are retried; delays double from min_delay with up to 25 % jitter, never exceed
    max_delay, and each attempt is logged (`feed.rejected`, `feed.backoff`)."""
    emu.reject_next(status, count=6)
    async with running(config(emu.url)) as run:
        await emu.wait_connected(1)
    delays = run.sleep.delays
    assert len(delays) == 6
    for n, delay in enumerate(delays, start=1):
        base = min(8.0 / 1.25, 2.0 ** (n - 1))
        assert max(1.0, base) <= delay <= min(8.0, base * 1.25)
    assert delays[0] < delays[1] < delays[2] < delays[3]  # growing until the cap
    assert max(delays) <= 8.0
    assert [e["status"] for e in events("feed.rejected")] == [status] * 6
    assert [e["attempt"] for e in events("feed.backoff")] == [1, 2, 3, 4, 5, 6]


def test_backoff_delay_bounds() -> None:
    """The delay is always within [min_delay, max_delay] and still jittered at the cap."""
    assert backoff_delay(1, 5.0, 300.0, 0.0) == 5.0
    assert backoff_delay(1, 5.0, 300.0, 0.999) < 6.25
    assert backoff_delay(200, 5.0, 300.0, 0.999) <= 300.0
    assert backoff_delay(200, 5.0, 300.0, 0.0) == 240.0
    assert backoff_delay(3, 2.0, 2.0, 0.5) == 2.0
    assert backoff_delay(1, 0.0, 0.0, 0.5) == 0.0


async def test_backoff_resets_only_after_a_healthy_connection(emu: FeedEmulator) -> None:
    """A connection that ended right after its welcome does not reset the backoff; one that also
    carried a further message does, so the next wait is back at min_delay."""
    cfg = config(emu.url, reconnect=ReconnectConfig(min_delay=1.0, max_delay=64.0))
    emu.reject_next(500, count=2)
    async with running(cfg) as run:
        await emu.wait_connected(1)
        await emu.close_all(1001, "going_away")  # welcome only: not healthy
        await emu.wait_connected(2)
        await emu.send_heartbeat()  # a message after the welcome: healthy
        await emu.close_all(1001, "going_away")
        await emu.wait_connected(3)
    first, second, third, fresh = run.sleep.delays
    assert 1.0 <= first <= 1.25 and 2.0 <= second <= 2.5
    assert 4.0 <= third <= 5.0  # the unhealthy connection continued the same outage
    assert 1.0 <= fresh <= 1.25  # a new outage starts over


@pytest.mark.parametrize(
    ("code", "reason"),
    [(1000, "key_expired"), (1000, "key_revoked"), (1000, "key_invalidated"), (4001, "key_revoked")],
)
async def test_key_closes_halt_and_stop_without_reconnect(
    emu: FeedEmulator, events: Events, code: int, reason: str
) -> None:
    """A close whose reason says the key is dead (whatever the code) halts trading with "key_expired",
    raises CredentialsRejected and never reconnects."""
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        await emu.close_all(code, reason)
        with pytest.raises(CredentialsRejected):
            await run.outcome()
    assert {"key_expired", "disconnected"} <= run.gate.gate.reasons
    assert len(emu.handshakes) == 1 and run.sleep.delays == []
    assert [e["reason"] for e in events("feed.disconnected")] == [reason]


async def test_rate_limit_close_waits_at_least_60s(emu: FeedEmulator) -> None:
    """1008 rate_limit_exceeded reconnects only after at least 60 s, although max_delay is 8 s."""
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        await emu.send_heartbeat()
        await emu.close_all(1008, "rate_limit_exceeded")
        await emu.wait_connected(2)
    assert run.sleep.delays == [RATE_LIMIT_WAIT]


async def test_too_slow_warns_and_reconnects(emu: FeedEmulator, events: Events) -> None:
    """1008 too_slow logs `feed.too_slow` and reconnects after the usual backoff."""
    disconnects = telemetry.value("bridge_feed_disconnects_total", cause="too_slow")
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        await emu.close_all(1008, "too_slow")
        await emu.wait_connected(2)
    assert events("feed.too_slow")
    assert len(run.sleep.delays) == 1 and 1.0 <= run.sleep.delays[0] <= 1.25
    assert telemetry.value("bridge_feed_disconnects_total", cause="too_slow") == disconnects + 1


async def test_tcp_drop_halts_then_resumes_on_fresh_welcome(emu: FeedEmulator, events: Events) -> None:
    """An abrupt TCP drop halts trading ("disconnected"), reconnects, and the fresh welcome arms the
    gate again; `feed.disconnected` names the cause."""
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        run.sleep.hold.clear()  # keep it in backoff so the halted state can be seen
        await emu.drop_all()
        await run.gate.until(lambda reasons: "disconnected" in reasons)
        await run.sleep.calls(1)
        assert run.sup.state == "backoff" and run.sup.connected_since is None
        run.sleep.hold.set()
        await emu.wait_connected(2)
        await run.gate.until(armed)
        assert run.sup.state == "connected"
    (lost,) = events("feed.disconnected")
    assert lost["cause"] in ("dropped", "error", "reset")


async def test_stale_feed_halts_reconnects_and_resumes(events: Events) -> None:
    """With heartbeats paused (PINGs still flowing), silence for heartbeat_timeout logs `feed.stale`,
    halts trading with "feed_stale", closes and reconnects; the new welcome resumes trading."""
    emu = FeedEmulator(api_keys=[KEY], heartbeat_interval=0.05, ping_interval=0.05)
    async with emu, running(config(emu.url, heartbeat_timeout=0.3)) as run:
        await run.gate.until(armed)
        emu.pause_heartbeats()
        await run.gate.until(lambda reasons: "feed_stale" in reasons)
        emu.resume_heartbeats()
        await emu.wait_connected(2)
        await run.gate.until(armed)
    halted_at = run.gate.history.index(("feed_stale", frozenset({"feed_stale"})))
    assert ("feed_stale", frozenset()) in run.gate.history[halted_at:]  # resumed after the halt
    assert [h.status for h in emu.handshakes[:2]] == [101, 101]
    assert events("feed.stale")


async def test_stop_closes_promptly_and_cleanly(emu: FeedEmulator, events: Events) -> None:
    """stop() while connected makes run() return well within a second; the server sees the client
    leave, the gate is halted and the owned session is closed (no unclosed-session warning)."""
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        started = time.monotonic()
        run.sup.stop()
        await run.outcome()
        assert time.monotonic() - started < 1.0
        await emu.wait_clients(0)
    assert run.sup.state == "stopped"
    assert "disconnected" in run.gate.gate.reasons
    assert events("feed.stopped")


async def test_stop_interrupts_a_long_backoff(emu: FeedEmulator) -> None:
    """stop() during a real 300 s backoff sleep returns at once."""
    cfg = config(emu.url, reconnect=ReconnectConfig(min_delay=300.0, max_delay=300.0))
    emu.reject_next(503)
    sleeping = asyncio.Event()

    async def real_sleep(delay: float) -> None:
        sleeping.set()
        await asyncio.sleep(delay)  # the real thing, to be interrupted

    sup = Supervisor(cfg, TradingGate(), asyncio.Queue(), sleep=real_sleep)
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(sleeping.wait(), WAIT)
    assert sup.state == "backoff"
    started = time.monotonic()
    sup.stop()
    await asyncio.wait_for(task, WAIT)
    assert time.monotonic() - started < 1.0


async def test_stop_before_run_and_external_cancel(emu: FeedEmulator) -> None:
    """run() after stop() returns at once; cancelling run()'s own task still propagates CancelledError."""
    sup = Supervisor(config(emu.url), TradingGate(), asyncio.Queue())
    sup.stop()
    await asyncio.wait_for(sup.run(), WAIT)
    assert sup.state == "stopped"

    other = Supervisor(config(emu.url), TradingGate(), asyncio.Queue())
    task = asyncio.create_task(other.run())
    await emu.wait_connected(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert other.state == "stopped"


async def test_network_errors_are_retried(events: Events) -> None:
    """With no server listening, each attempt fails as `feed.connect_failed` and is retried."""
    async with FeedEmulator(api_keys=[KEY]) as gone:
        url = gone.url
    async with running(config(url)) as run:
        await asyncio.wait_for(run.sleep.calls(3), WAIT)
    assert len(events("feed.connect_failed")) >= 3
    assert run.sup.state == "stopped"


async def test_callers_session_is_left_open(emu: FeedEmulator) -> None:
    """A session passed in is used and not closed by the supervisor."""
    async with aiohttp.ClientSession() as session:
        async with running(config(emu.url), session=session) as run:
            await run.gate.until(armed)
        assert not session.closed


async def test_api_key_never_logged(emu: FeedEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """Across refusals (429, 500, 403), a connection and a key_expired close, no log record of any
    logger (bridge's or aiohttp's), raw and unredacted, contains the API key."""
    caplog.set_level(logging.DEBUG)
    emu.reject_next(429, retry_after=3)
    emu.reject_next(500)
    async with running(config(emu.url)) as run:
        await run.gate.until(armed)
        await emu.close_all(1000, "key_expired")
        with pytest.raises(CredentialsRejected):
            await run.outcome()
    async with running(config(emu.url, api_key=Secret("dsk_" + "f" * 64))) as run:
        with pytest.raises(CredentialsRejected):
            await run.outcome()
    assert len(caplog.records) > 10
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in repr(record.msg) and KEY not in repr(record.args)
        assert record.exc_info is None or KEY not in repr(record.exc_info[1])
