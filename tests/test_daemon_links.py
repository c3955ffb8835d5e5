"""The whole daemon on two feed links (main, and kr carrying Upbit only) sharing one announcement
source: each announcement trades once, on the link that brought it first, whichever is ahead; one link
killed (TCP drop, stale heartbeats, its key expired) leaves trading armed over the other; both down
halts trading; /health shows the links and the publishers covered; a restart mid-stream trades
nothing twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.sim.fake_exchange import FakeBinance
from bridge.sim.feed_endpoints import EndpointSpec, SharedFeed
from tests.test_daemon import STRATEGIES, Running

KEY = "dsk_" + "f1" * 32
WAIT = 10.0  # safety bound only


@pytest.fixture
async def servers() -> AsyncIterator[tuple[SharedFeed, FakeBinance]]:
    markets = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("GHI", "USDT", 10.0), ("JKL", "USDT", 1.0)]
    endpoints = {"main": EndpointSpec(), "kr": EndpointSpec(publishers={"upbit"})}
    async with (
        FakeBinance(markets=markets) as fake,
        SharedFeed(endpoints, api_keys={KEY}, heartbeat_interval=0.2) as feed,
    ):
        yield feed, fake


def links_config(
    feed: SharedFeed, fake: FakeBinance, state: Path, *, heartbeat_timeout: float = 5
) -> config_mod.Config:
    text = f"""
feed:
  api_key: {KEY}
  cex: [binance, upbit]
  heartbeat_timeout: {heartbeat_timeout}
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
  links:
    - {{name: main, url: "{feed.url("main")}"}}
    - {{name: kr, url: "{feed.url("kr")}", cex: [upbit]}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {fake.secret}
    ccxt: {json.dumps(fake.ccxt_config())}
trading: {{dry_run: false, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [upbit, binance]}}
"""
    return config_mod.loads(text, source="links.yaml")


async def started(cfg: config_mod.Config, *, up: set[str]) -> Running:
    r = Running(Daemon(cfg))
    await asyncio.wait_for(r.until(lambda: r.daemon.gate.covering_links == up and r.daemon.gate.armed), WAIT)
    return r


async def wait_for(r: Running, condition: object) -> None:
    await asyncio.wait_for(r.until(condition), WAIT)  # type: ignore[arg-type]


def arrivals(r: Running) -> int:
    d = r.daemon.dispatcher
    return 0 if d is None else d.seen + d.duplicates


async def test_each_announcement_trades_once_on_the_link_that_came_first(
    servers: tuple[SharedFeed, FakeBinance], tmp_path: Path
) -> None:
    feed, fake = servers
    r = await started(links_config(feed, fake, tmp_path), up={"main", "kr"})
    try:
        with structlog.testing.capture_logs() as logs:
            feed.hold("main")  # kr ahead
            first = feed.schedule(title="Upbit lists ABC", ticker="ABC", publisher="upbit")
            await wait_for(r, lambda: arrivals(r) == 1)
            feed.release("main")
            await wait_for(r, lambda: arrivals(r) == 2)
            feed.hold("kr")  # main ahead
            second = feed.schedule(title="Upbit lists DEF", ticker="DEF", publisher="upbit")
            await wait_for(r, lambda: arrivals(r) == 3)
            feed.release("kr")
            await wait_for(r, lambda: arrivals(r) == 4)
            await asyncio.wait_for(asyncio.gather(first.wait(), second.wait()), WAIT)
            await r.settle(4)
            # the reader logs each receipt just after the order path (bookkeeping is deferred)
            await wait_for(r, lambda: sum(e["event"] == "announcement.received" for e in logs) == 4)
        dups = [e for e in logs if e["event"] == "announcement.duplicate"]
        assert [(e["link"], e["won_by"]) for e in dups] == [("main", "kr"), ("kr", "main")]
        received = [e["link"] for e in logs if e["event"] == "announcement.received"]
        assert sorted(received) == ["kr", "kr", "main", "main"]
        assert sorted(o.params["symbol"] for o in fake.orders) == ["ABCUSDT", "DEFUSDT"]
    finally:
        await r.stop()


@pytest.mark.parametrize("fault", ["tcp_drop", "key_expired", "stale"])
async def test_one_link_killed_trading_goes_on_over_the_other(
    servers: tuple[SharedFeed, FakeBinance], tmp_path: Path, fault: str
) -> None:
    feed, fake = servers
    kr = feed.endpoints["kr"]
    r = await started(links_config(feed, fake, tmp_path, heartbeat_timeout=0.5), up={"main", "kr"})
    gate = r.daemon.gate
    try:
        if fault == "tcp_drop":
            kr.reject_next(503, count=1000)  # and it stays down
            await kr.drop_all()
        elif fault == "key_expired":
            await kr.close_all(4001, "key_expired")
        else:
            kr.pause_heartbeats()
        await wait_for(r, lambda: gate.covering_links == {"main"})
        assert gate.armed and gate.entries_armed("binance")
        await feed.announce(title="Upbit lists GHI", ticker="GHI", publisher="upbit")
        await r.settle(1)
        assert [o.params["symbol"] for o in fake.orders] == ["GHIUSDT"]
        health = r.daemon.snapshot()
        assert health["healthy"] is True and health["feed"]["links"]["kr"]["up"] is False
    finally:
        await r.stop()


async def test_both_links_down_halts_and_health_shows_coverage(
    servers: tuple[SharedFeed, FakeBinance], tmp_path: Path
) -> None:
    """Coverage follows the links: both up, Binance and Upbit; main gone, Upbit only (kr); both
    gone, nothing, trading halted and /health unhealthy."""
    feed, fake = servers
    main, kr = feed.endpoints["main"], feed.endpoints["kr"]
    r = await started(links_config(feed, fake, tmp_path), up={"main", "kr"})
    gate = r.daemon.gate
    try:
        assert r.daemon.snapshot()["feed"]["coverage"] == ["binance", "upbit"]
        main.reject_next(503, count=1000)
        await main.drop_all()
        await wait_for(r, lambda: gate.covering_links == {"kr"})
        assert r.daemon.snapshot()["feed"]["coverage"] == ["upbit"]
        kr.reject_next(503, count=1000)
        await kr.drop_all()
        await wait_for(r, lambda: not gate.covering_links)
        health = r.daemon.snapshot()
        assert not gate.armed and health["healthy"] is False and health["feed"]["coverage"] == []
        assert {"disconnected:main", "disconnected:kr"} <= set(health["trading"]["halt_reasons"])
    finally:
        await r.stop()


async def test_restart_mid_stream_trades_nothing_twice(
    servers: tuple[SharedFeed, FakeBinance], tmp_path: Path
) -> None:
    feed, fake = servers
    cfg = links_config(feed, fake, tmp_path)
    r = await started(cfg, up={"main", "kr"})
    try:
        await feed.announce(title="Upbit lists JKL", ticker="JKL", publisher="upbit")
        await wait_for(r, lambda: arrivals(r) == 2)
        await r.settle(2)
    finally:
        await r.stop()
    again = await started(cfg, up={"main", "kr"})
    try:
        await feed.announce(title="Upbit lists JKL", ticker="JKL", publisher="upbit", dispatch_us="at_send")
        await wait_for(again, lambda: arrivals(again) == 2)
        await again.settle(2)
        assert again.daemon.dispatcher is not None and again.daemon.dispatcher.duplicates == 2
    finally:
        await again.stop()
    assert [o.params["symbol"] for o in fake.orders] == ["JKLUSDT"]
