"""The event-loop lag probe (bridge.ops.loop_lag): what it measures, its one-minute worst, its metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from bridge import telemetry
from bridge.daemon import Daemon
from bridge.ops.health import build_snapshot
from bridge.ops.loop_lag import INTERVAL_S, LoopLagProbe
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.gate import TradingGate
from tests.test_daemon import KEY, Running, make_config


class FakeLoopClock:
    """A clock only the fake sleep moves: each sleep lasts its delay plus the next scripted lag."""

    def __init__(self, lags: list[float], stop: asyncio.Event) -> None:
        self.now = 1000.0
        self.lags = lags
        self.stop = stop

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay + self.lags.pop(0)
        if not self.lags:
            self.stop.set()


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-9)


def count() -> float:
    return telemetry.value("bridge_event_loop_lag_seconds_count")


async def test_lag_is_how_late_the_timer_woke() -> None:
    """Each wake-up observes (woken - asked); an early wake-up counts as 0; the gauge and worst_s() hold
    the worst of the last minute."""
    stop = asyncio.Event()
    clock = FakeLoopClock([0.001, 0.2, -0.0001, 0.003], stop)
    probe = LoopLagProbe(clock=clock, sleep=clock.sleep)
    before = count()
    over_100ms = telemetry.value("bridge_event_loop_lag_seconds_bucket", le="0.1")
    with capture_logs() as logs:
        await probe.run(stop)
    assert count() - before == 4 and probe.samples == 4
    assert [(e["event"], e["lag_ms"]) for e in logs] == [("event_loop.stalled", 200.0)]  # only >= 100 ms
    # one of the four was over 100 ms
    assert (
        count() - before - (telemetry.value("bridge_event_loop_lag_seconds_bucket", le="0.1") - over_100ms)
        == 1
    )
    assert probe.worst_s() == approx(0.2)
    assert telemetry.value("bridge_event_loop_lag_max_seconds") == approx(0.2)


async def test_worst_lag_forgets_what_is_older_than_a_minute() -> None:
    """A stall 61 s ago no longer counts as the last minute's worst; a smaller recent one does. Stalls
    are logged at most once a minute, with how many there were since the last line."""
    stop = asyncio.Event()
    clock = FakeLoopClock([0.5], stop)
    probe = LoopLagProbe(clock=clock, sleep=clock.sleep)
    await probe.run(stop)
    assert probe.worst_s() == approx(0.5)
    clock.now += 30
    with capture_logs() as logs:
        probe.record(0.3)  # within the minute of the last line: counted, not logged
        assert probe.worst_s() == approx(0.5)
        clock.now += 31  # the 0.5 s stall is over a minute old now
        probe.record(0.002)
        assert probe.worst_s() == approx(0.3)
        probe.record(0.25)
    assert [(e["lag_ms"], e["stalls"]) for e in logs] == [(250.0, 2)]
    clock.now += 31  # the 0.3 s one too
    assert probe.worst_s() == approx(0.25)
    clock.now += 60
    assert probe.worst_s() == 0.0


async def test_a_real_stall_of_the_loop_is_measured() -> None:
    """On the real loop, a callback that holds the thread for 100 ms while the probe's 25 ms timer is due
    shows as a lag of at least the difference (75 ms; 50 ms asserted)."""
    seen = asyncio.Event()

    class Watched(LoopLagProbe):
        def record(self, lag_s: float) -> None:
            super().record(lag_s)
            if lag_s >= 0.05:
                seen.set()

    stop = asyncio.Event()
    probe = Watched()
    task = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(0)  # the probe's first timer is armed
    time.sleep(0.1)  # noqa: ASYNC251 - the stall under test: a blocking call on the loop thread
    await asyncio.wait_for(seen.wait(), 5)
    stop.set()
    await task
    assert probe.worst_s() >= 0.05
    assert INTERVAL_S <= 0.05  # cheap but fine enough to see a stall of a few ms


def test_metrics_and_status_carry_the_lag() -> None:
    """/metrics lists the histogram and the gauge; the status snapshot carries the last minute's worst
    (rounded to 0.1 ms), and leaves the field out when no probe runs (replay, tools)."""
    text = generate_latest(telemetry.REGISTRY).decode()
    assert "bridge_event_loop_lag_seconds_bucket" in text and "bridge_event_loop_lag_max_seconds" in text
    snap = build_snapshot(
        gate=TradingGate(), supervisor=None, runners=[], started_at=0.0, loop_lag_max_s=0.01234
    )
    assert snap["loop_lag_max_s"] == 0.0123
    without_probe = build_snapshot(gate=TradingGate(), supervisor=None, runners=[], started_at=0.0)
    assert "loop_lag_max_s" not in without_probe


async def test_the_daemon_runs_the_probe_and_the_retention(tmp_path: Path) -> None:
    """The real daemon starts the probe with itself (its samples reach /health's `loop_lag_max_s` and
    /metrics) and the journal's retention task, and stops both when it stops."""
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake, FeedEmulator(api_keys={KEY}) as emu:
        top = "health: {enabled: true, port: 0, status_interval: 0}\n"
        r = Running(Daemon(make_config(emu, fake, tmp_path, dry_run=True, top=top)))
        await r.armed()
        try:
            await asyncio.wait_for(r.until(lambda: r.daemon.loop_lag.samples >= 2), 10)
            assert r.daemon.health is not None
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{r.daemon.health.url}/health") as resp:
                    body = await resp.json()
                async with http.get(f"{r.daemon.health.url}/metrics") as resp:
                    text = await resp.text()
            assert isinstance(body["loop_lag_max_s"], float)
            assert (
                "bridge_event_loop_lag_max_seconds" in text and "bridge_order_internal_seconds_bucket" in text
            )
            assert "retention" in {t.get_name() for t in r.daemon._tasks}
            probe = next(t for t in r.daemon._aux_tasks if t.get_name() == "loop-lag")
        finally:
            await r.stop()
        assert probe.done() and all(t.done() for t in r.daemon._tasks)
