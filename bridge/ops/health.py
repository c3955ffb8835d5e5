"""Health and metrics over HTTP (aiohttp.web, loopback by default: there is no authentication), and the
periodic `daemon.status` log line. Both show one snapshot of the daemon's state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge import telemetry
from bridge.aio import Sleep, sleep_or_stop
from bridge.config import HealthConfig
from bridge.errors import ConfigError

# Imported so /metrics always lists every counter, whichever modules a command happened to load.
from bridge.feed import metrics as _feed_metrics  # noqa: F401
from bridge.feed.codec import Welcome
from bridge.ops import metrics as _ops_metrics  # noqa: F401
from bridge.trading import metrics as _trading_metrics  # noqa: F401
from bridge.trading.gate import TradingGate
from bridge.trading.halts import unhealthy

log = structlog.get_logger(__name__)

Snapshot = Callable[[], dict[str, Any]]
# "exits_only": the feed is gone for good (dead key) and the daemon only watches open positions.
Mode = Literal["normal", "exits_only"]


class FeedStatus(Protocol):
    """What the snapshot reads from the feed supervisor (bridge.supervisor.Supervisor)."""

    @property
    def state(self) -> str: ...
    @property
    def welcome(self) -> Welcome | None: ...
    @property
    def last_message_at(self) -> float | None: ...
    @property
    def connected_since(self) -> float | None: ...


class RunnerStatus(Protocol):
    """What the snapshot reads from a strategy runner (bridge.dispatch.StrategyRunner)."""

    @property
    def name(self) -> str: ...
    @property
    def handled(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def queue(self) -> asyncio.Queue[Any]: ...
    @property
    def running(self) -> int: ...
    @property
    def stuck(self) -> tuple[str, ...]: ...


def build_snapshot(
    *,
    gate: TradingGate,
    supervisor: FeedStatus | None,
    runners: Iterable[RunnerStatus],
    started_at: float,
    mode: Mode = "normal",
    clock: Callable[[], float] = time.monotonic,
    loop_lag_max_s: float | None = None,
    ha: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The daemon's state as plain JSON-ready data. `started_at` and the supervisor's times are on the
    monotonic clock (asyncio's loop.time() is time.monotonic() on every platform bridge runs on).
    `healthy` is what /health answers 200 for: no halt reason the halt table marks as 503. Scoped
    reasons are listed with their venue ("credentials_rejected:binance").
    `stuck_strategies` names the strategies with a handler running past `trading.strategy_deadline`
    (each strategy's `stuck` lists those announcements' keys); it does not make the daemon unhealthy:
    nothing is halted, the strategy's other slots and every other strategy go on."""
    now = clock()
    reasons = gate.reasons
    in_force = gate.in_force  # a link that is down while another covers is listed, not unhealthy
    strategies = {
        r.name: {
            "handled": r.handled,
            "errors": r.errors,
            "queued": r.queue.qsize(),
            "running": r.running,
            "stuck": list(r.stuck),
        }
        for r in runners
    }
    snapshot = {
        "uptime_s": _age(now, started_at),
        "mode": mode,
        "healthy": not unhealthy(in_force),
        "feed": _feed(supervisor, now, gate),
        "trading": {"armed": not in_force, "halt_reasons": sorted(reasons)},
        "stuck_strategies": sorted(name for name, s in strategies.items() if s["stuck"]),
        "strategies": strategies,
    }
    if loop_lag_max_s is not None:  # the event loop's worst lag of the last minute (bridge.ops.loop_lag)
        snapshot["loop_lag_max_s"] = round(loop_lag_max_s, 4)
    if ha is not None:  # a pair's host (ha:): leader or standby, since when, who leads
        snapshot["ha"] = dict(ha)
    return snapshot


class LinkView(FeedStatus, Protocol):
    """One of several feed links (bridge.feed.supervisor.Supervisor of a `feed.links` entry)."""

    @property
    def link(self) -> str | None: ...
    @property
    def covers(self) -> frozenset[str] | None: ...


def _feed(supervisor: FeedStatus | None, now: float, gate: TradingGate) -> dict[str, Any]:
    if supervisor is None:  # the daemon has not got that far yet
        return {"state": "not_started", "last_message_age_s": None, "connected_for_s": None, "welcome": None}
    feed = _one_feed(supervisor, now)
    links: tuple[LinkView, ...] = tuple(getattr(supervisor, "links", ()))
    named = [link for link in links if link.link is not None]
    if named:
        # Per link, and the publishers a link that is up delivers right now ("*": every one).
        feed["links"] = {
            str(link.link): {**_one_feed(link, now), "up": gate.link_healthy(link.link)} for link in named
        }
        covered: set[str] = set()
        for link in named:
            if gate.link_healthy(link.link):
                covers = link.covers
                covered |= {"*"} if covers is None else covers
        feed["coverage"] = sorted(covered)
    return feed


def _one_feed(supervisor: FeedStatus, now: float) -> dict[str, Any]:
    return {
        "state": supervisor.state,
        "last_message_age_s": _age(now, supervisor.last_message_at),
        "connected_for_s": _age(now, supervisor.connected_since),
        "welcome": _welcome(supervisor.welcome, supervisor.connected_since, now),
    }


def _welcome(welcome: Welcome | None, connected_since: float | None, now: float) -> dict[str, Any] | None:
    if welcome is None:
        return None
    # expires_in_secs was true when the welcome arrived (when the connection began); while that
    # connection lasts the time left is known, otherwise it is not.
    expires_in = None
    if welcome.expires_in_secs is not None and connected_since is not None:
        expires_in = round(welcome.expires_in_secs - (now - connected_since), 1)
    allowed = ["*"] if welcome.allowed_cex is None else sorted(welcome.allowed_cex)
    return {"tier": welcome.tier, "allowed_cex": allowed, "key_expires_in_s": expires_in}


def _age(now: float, since: float | None) -> float | None:
    return None if since is None else round(now - since, 3)


class HealthServer:
    """`GET /health`: the snapshot as JSON, 200 while it is `healthy` (no halt reason the halt table
    marks as 503; a snapshot without that field: while trading is armed), else 503, so a plain HTTP
    check alerts on a halt that needs attention. `GET /metrics`: Prometheus text exposition."""

    def __init__(self, cfg: HealthConfig, snapshot: Snapshot) -> None:
        self._cfg = cfg
        self._snapshot = snapshot
        self._runner: web.AppRunner | None = None
        self.url = ""  # http://host:port once started

    async def start(self) -> None:
        """Listen on cfg.host:cfg.port. Raises ConfigError when that address cannot be used."""
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._cfg.host, self._cfg.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"health: cannot listen on {self._cfg.host}:{self._cfg.port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        log.info("health.started", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("health.stopped")

    async def _health(self, request: web.Request) -> web.Response:
        try:
            snapshot = self._snapshot()
        except Exception:  # a health check must answer, even about a broken snapshot
            log.exception("health.snapshot_failed")
            return web.json_response({"error": "snapshot_failed"}, status=500)
        healthy = snapshot.get("healthy")
        if healthy is None:
            healthy = snapshot.get("trading", {}).get("armed")
        return web.Response(
            body=orjson.dumps(snapshot, default=str),
            status=200 if healthy is True else 503,
            content_type="application/json",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(telemetry.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


async def run_status_log(
    snapshot: Snapshot, interval: float, stop: asyncio.Event, *, sleep: Sleep = asyncio.sleep
) -> None:
    """Log `daemon.status` with the snapshot's fields every `interval` seconds until `stop` is set
    (interval 0: never), so the journal shows the daemon's state even without the HTTP endpoint."""
    if interval <= 0:
        return
    while not await sleep_or_stop(sleep, interval, stop):
        try:
            log.info("daemon.status", **snapshot())
        except Exception:  # the status line is informational: never let it end the daemon
            log.exception("daemon.status_failed")
