"""The health endpoint and /metrics over real HTTP, the snapshot built from a real supervisor connected
to the feed emulator, and the periodic status log line (driven by a fake sleep, never waited out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from bridge import telemetry
from bridge.config import FeedConfig, HealthConfig
from bridge.errors import ConfigError
from bridge.feed import metrics as feed_metrics
from bridge.feed.codec import Announcement
from bridge.feed.supervisor import Supervisor
from bridge.ops.health import HealthServer, build_snapshot, run_status_log
from bridge.secrets import Secret
from bridge.sim.emulator import FeedEmulator, KeyGrant
from bridge.trading.gate import TradingGate

KEY = "dsk_" + "4b" * 32
WAIT = 5.0  # safety bound only


@dataclass
class Runner:
    """The fields of a StrategyRunner the snapshot reads."""

    name: str
    handled: int = 0
    errors: int = 0
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    running: int = 0
    stuck: tuple[str, ...] = ()


@asynccontextmanager
async def serving(snapshot: Callable[[], dict[str, Any]], **cfg: Any) -> AsyncIterator[HealthServer]:
    server = HealthServer(HealthConfig(enabled=True, **{"port": 0, **cfg}), snapshot)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def get(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.read()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_health_is_503_while_halted_and_200_when_armed() -> None:
    """/health answers 503 with the halt reasons while trading is halted and 200 once it is armed, so a
    plain HTTP check catches a halt; it listens on 127.0.0.1 unless told otherwise."""
    gate = TradingGate()
    started = time.monotonic()

    def snapshot() -> dict[str, Any]:
        return build_snapshot(gate=gate, supervisor=None, runners=[], started_at=started)

    async with serving(snapshot) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, body = await get_json(server.url + "/health")
        assert status == 503
        assert body["trading"] == {"armed": False, "halt_reasons": ["disconnected", "starting"]}
        assert body["feed"]["state"] == "not_started"
        gate.resume("starting")
        gate.resume("disconnected")
        status, body = await get_json(server.url + "/health")
    assert status == 200 and body["trading"] == {"armed": True, "halt_reasons": []}


async def test_health_status_follows_the_halt_table() -> None:
    """/health answers by the halt table, not by `armed` alone: a daily loss limit (entries halted as
    designed) is 200 with the reason listed; a venue's rejected key is 503 and listed with its venue;
    the snapshot carries the daemon's mode."""
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    gate.halt("loss_limit")
    started = time.monotonic()

    def snapshot() -> dict[str, Any]:
        return build_snapshot(gate=gate, supervisor=None, runners=[], started_at=started, mode="exits_only")

    async with serving(snapshot) as server:
        status, body = await get_json(server.url + "/health")
        assert status == 200 and body["healthy"] is True and body["mode"] == "exits_only"
        assert body["trading"] == {"armed": False, "halt_reasons": ["loss_limit"]}
        gate.halt("credentials_rejected", venue="binance")
        status, body = await get_json(server.url + "/health")
    assert status == 503 and body["healthy"] is False
    assert body["trading"]["halt_reasons"] == ["credentials_rejected:binance", "loss_limit"]


async def test_snapshot_of_a_live_feed_connection() -> None:
    """With a real supervisor connected to the emulator, the snapshot shows the feed state, seconds since
    the last server message and since the welcome, the welcome's tier, exchanges and seconds left on the
    key, trading armed, each strategy's counters and the strategies with a handler past the deadline;
    /health serves exactly that snapshot."""
    grant = KeyGrant(exchanges=frozenset({"upbit", "binance"}), tier="pro", expires_in_secs=3 * 86400)
    async with FeedEmulator(api_keys={KEY: grant}, heartbeat_interval=None, ping_interval=None) as emu:
        gate = TradingGate()
        armed = asyncio.Event()
        gate.subscribe(lambda is_armed, _reasons, _reason: armed.set() if is_armed else None)
        gate.resume("starting")
        queue: asyncio.Queue[Announcement] = asyncio.Queue()
        sup = Supervisor(FeedConfig(api_key=Secret(KEY), url=emu.url), gate, queue)
        task = asyncio.create_task(sup.run())
        try:
            await asyncio.wait_for(armed.wait(), WAIT)
            assert sup.connected_since is not None and sup.last_message_at is not None
            runner = Runner("listing_buy", handled=5, errors=1, running=2, stuck=("k1",))
            runner.queue.put_nowait("a")
            now = sup.connected_since + 12.5

            def snapshot() -> dict[str, Any]:
                return build_snapshot(
                    gate=gate,
                    supervisor=sup,
                    runners=[runner, Runner("log_only")],
                    started_at=now - 100,
                    clock=lambda: now,
                )

            async with serving(snapshot) as server:
                status, served = await get_json(server.url + "/health")
            expected = snapshot()
        finally:
            sup.stop()
            await asyncio.wait_for(task, WAIT)
    assert status == 200
    assert (
        served
        == expected
        == {
            "uptime_s": 100.0,
            "mode": "normal",
            "healthy": True,
            "feed": {
                "state": "connected",
                "last_message_age_s": round(now - sup.last_message_at, 3),
                "connected_for_s": 12.5,
                "welcome": {
                    "tier": "pro",
                    "allowed_cex": ["binance", "upbit"],
                    "key_expires_in_s": 3 * 86400 - 12.5,
                },
            },
            "trading": {"armed": True, "halt_reasons": []},
            "stuck_strategies": ["listing_buy"],
            "strategies": {
                "listing_buy": {"handled": 5, "errors": 1, "queued": 1, "running": 2, "stuck": ["k1"]},
                "log_only": {"handled": 0, "errors": 0, "queued": 0, "running": 0, "stuck": []},
            },
        }
    )


async def test_metrics_exposition() -> None:
    """/metrics serves bridge's own registry in the Prometheus text format with its content type; it
    parses, and counters such as bridge_feed_bad_frames_total carry their current values."""
    feed_metrics.BAD_FRAMES.labels(reason="not_json").inc()
    expected = telemetry.value("bridge_feed_bad_frames_total", reason="not_json")
    async with serving(dict) as server:
        status, content_type, body = await get(server.url + "/metrics")
    assert status == 200 and content_type == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {"bridge_feed_bad_frames", "bridge_feed_frames", "bridge_announcement_to_order_seconds"} <= set(
        families
    )
    samples = {(s.name, s.labels.get("reason")): s.value for s in families["bridge_feed_bad_frames"].samples}
    assert samples[("bridge_feed_bad_frames_total", "not_json")] == expected >= 1


async def test_broken_snapshot_answers_500() -> None:
    """A snapshot that raises is logged (`health.snapshot_failed`) and answered 500, never a hang."""

    def snapshot() -> dict[str, Any]:
        raise RuntimeError("bug")

    with capture_logs() as logs:
        async with serving(snapshot) as server:
            status, body = await get_json(server.url + "/health")
    assert status == 500 and body == {"error": "snapshot_failed"}
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["health.snapshot_failed"]


async def test_port_in_use_is_a_config_error() -> None:
    """A port already taken fails start() with a one-line ConfigError naming the address."""
    async with serving(dict) as first:
        port = int(first.url.rsplit(":", 1)[1])
        second = HealthServer(HealthConfig(enabled=True, port=port), dict)
        with pytest.raises(ConfigError, match=f"health: cannot listen on 127.0.0.1:{port}"):
            await second.start()


async def test_status_log_every_interval_until_stopped() -> None:
    """run_status_log logs `daemon.status` with the snapshot's fields after each interval and returns
    once stop is set; interval 0 turns it off without sleeping at all."""
    stop = asyncio.Event()
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 3:
            stop.set()

    snap = {"uptime_s": 1.0, "trading": {"armed": False, "halt_reasons": ["disconnected"]}}
    with capture_logs() as logs:
        await asyncio.wait_for(run_status_log(lambda: snap, 60, stop, sleep=sleep), WAIT)
        await asyncio.wait_for(run_status_log(lambda: snap, 0, asyncio.Event(), sleep=sleep), WAIT)
    assert delays == [60, 60, 60]
    status = [e for e in logs if e["event"] == "daemon.status"]
    assert len(status) == 2
    assert status[0]["trading"] == snap["trading"] and status[0]["uptime_s"] == 1.0


async def test_status_log_stops_during_a_long_sleep() -> None:
    """Setting stop ends run_status_log at once, even in the middle of a long interval."""
    stop = asyncio.Event()
    never = asyncio.Event()
    sleeping = asyncio.Event()

    async def sleep(delay: float) -> None:
        sleeping.set()
        await never.wait()

    task = asyncio.create_task(run_status_log(dict, 3600, stop, sleep=sleep))
    await asyncio.wait_for(sleeping.wait(), WAIT)
    stop.set()
    await asyncio.wait_for(task, WAIT)
