"""The whole daemon, end to end: feed emulator announcement -> strategy -> order at a fake Binance,
with real ccxt. Exactly once across reconnects and restarts; strategies isolated from each other."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge import Announcement, Context, OrderOutcome, Strategy, telemetry
from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance

KEY = "dsk_" + "a" * 64
STRATEGIES = Path(__file__).resolve().parent.parent / "strategies"

CRASHING = """
from bridge import Strategy

class Crashing(Strategy):
    async def on_announcement(self, announcement, ctx):
        raise RuntimeError("boom in plugin")
"""


def make_config(
    emu: FeedEmulator,
    fake: FakeBinance,
    state: Path,
    *,
    dry_run: bool,
    extra: str = "",
    heartbeat_timeout: float = 5,
    top: str = "",
) -> config_mod.Config:
    ccxt = fake.ccxt_config()
    text = f"""
feed:
  url: {emu.url}
  api_key: {KEY}
  cex: [binance, upbit]
  heartbeat_timeout: {heartbeat_timeout}
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {fake.secret}
    ccxt: {json.dumps(ccxt)}
trading: {{dry_run: {str(dry_run).lower()}, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [upbit, binance]}}
{textwrap.indent(extra, "  ")}
{top}
"""
    return config_mod.loads(text, source="test.yaml")


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBinance]]:
    markets = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("GHI", "USDT", 10.0)]
    async with (
        FakeBinance(markets=markets) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        yield emu, fake


class Running:
    """A daemon running in a task, with helpers to wait for what it does."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.task = asyncio.create_task(daemon.run())

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for `condition` by waking on every journal/dispatch step of the daemon."""
        while not condition():
            if self.task.done():
                self.task.result()
                raise AssertionError("daemon stopped")
            await asyncio.sleep(0)  # yield to the daemon's tasks; bounded by the wait_for below

    async def settle(self, announcements: int) -> None:
        """Wait until the dispatcher handled `announcements` and every strategy queue is drained."""
        d = self.daemon
        await asyncio.wait_for(
            self.until(
                lambda: (
                    d.dispatcher is not None and d.dispatcher.seen + d.dispatcher.duplicates >= announcements
                )
            ),
            10,
        )
        for runner in d.runners:
            await asyncio.wait_for(runner.queue.join(), 10)

    async def armed(self) -> None:
        await asyncio.wait_for(self.until(lambda: self.daemon.gate.armed), 10)

    async def stop(self) -> None:
        self.daemon.request_stop()
        await asyncio.wait_for(self.task, 5)


async def start(cfg: config_mod.Config) -> Running:
    r = Running(Daemon(cfg))
    await r.armed()
    return r


async def test_listing_buy_end_to_end_live(servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path) -> None:
    """An Upbit listing of ABC becomes one price-capped buy of ABC/USDT on Binance for at most 20 USDT
    (a LIMIT IOC at the best ask + 5 %), with a bridge client order id; a multi-ticker listing buys
    every ticker that trades."""
    emu, fake = servers
    r = await start(make_config(emu, fake, tmp_path, dry_run=False))
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await emu.announce(
            title="Binance Will List DEF, GHI and NOPE", ticker="DEF,GHI,NOPE", publisher="binance"
        )
        await r.settle(2)
    finally:
        await r.stop()
    by_symbol = {o.params["symbol"]: o.params for o in fake.orders}
    assert sorted(by_symbol) == ["ABCUSDT", "DEFUSDT", "GHIUSDT"]
    abc = by_symbol["ABCUSDT"]
    assert abc["side"] == "BUY" and abc["type"] == "LIMIT" and abc["timeInForce"] == "IOC"
    assert float(abc["price"]) <= 2.001 * 1.05 and float(abc["price"]) * float(abc["quantity"]) <= 20
    assert abc["newClientOrderId"].startswith("bx")


async def test_test_announcement_and_other_listing_types_not_traded(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A test_announcement never reaches a strategy; a delisting is not a listing_buy signal."""
    emu, fake = servers
    r = await start(make_config(emu, fake, tmp_path, dry_run=False))
    try:
        await emu.send_test_announcement(ticker="ABC", publisher="binance")
        await emu.announce(ticker="DEF", publisher="binance", listingType="spot_delisting")
        await r.settle(1)
        assert r.daemon.dispatcher is not None and r.daemon.dispatcher.seen == 1
    finally:
        await r.stop()
    assert fake.orders == []


async def test_duplicate_across_reconnect_orders_once(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """The same announcement delivered again after a dropped connection is not traded twice."""
    emu, fake = servers
    r = await start(make_config(emu, fake, tmp_path, dry_run=False))
    try:
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r.settle(1)
        await emu.drop_all()
        await asyncio.wait_for(emu.wait_connected(2), 10)
        await r.armed()
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r.settle(2)
        assert r.daemon.dispatcher is not None and r.daemon.dispatcher.duplicates == 1
    finally:
        await r.stop()
    assert len(fake.orders) == 1


async def test_duplicate_across_restart_orders_once(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """After a restart with the same state_dir, a redelivered announcement is recognised; no new order."""
    emu, fake = servers
    cfg = make_config(emu, fake, tmp_path, dry_run=False)
    r = await start(cfg)
    await emu.announce(title="Binance Will List ABC", ticker="ABC")
    await r.settle(1)
    await r.stop()
    r2 = await start(cfg)
    try:
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r2.settle(1)
        assert r2.daemon.dispatcher is not None and r2.daemon.dispatcher.duplicates == 1
    finally:
        await r2.stop()
    assert len(fake.orders) == 1


async def test_crashing_strategy_is_isolated(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A strategy that raises is logged and counted; the other strategy still orders, and the crashing
    one keeps receiving announcements."""
    emu, fake = servers
    plugin = tmp_path / "crashing.py"
    plugin.write_text(CRASHING)
    extra = f"- name: crashing\n  module: {plugin}\n"
    before = telemetry.value("bridge_strategy_errors_total", strategy="crashing")
    r = await start(make_config(emu, fake, tmp_path, dry_run=False, extra=extra))
    try:
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await emu.announce(title="Binance Will List DEF", ticker="DEF")
        await r.settle(2)
        crashing = next(x for x in r.daemon.runners if x.name == "crashing")
        assert crashing.errors == 2 and crashing.handled == 2
    finally:
        await r.stop()
    assert telemetry.value("bridge_strategy_errors_total", strategy="crashing") == before + 2
    assert sorted(o.params["symbol"] for o in fake.orders) == ["ABCUSDT", "DEFUSDT"]


async def test_paper_mode_end_to_end(servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path) -> None:
    """Paper trading (the default): the journal records a paper fill at the fake's price; no order
    request reaches the exchange."""
    emu, fake = servers
    r = await start(make_config(emu, fake, tmp_path, dry_run=True))
    try:
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r.settle(1)
        assert r.daemon.journal is not None
        [record] = r.daemon.journal.orders()
    finally:
        await r.stop()
    assert fake.orders == []
    # Filled on paper at the fake's best ask (0.1 % spread), under the cap, for at most the cost.
    assert record.state == "paper" and record.average == pytest.approx(2.001)
    assert record.filled is not None and 0 < record.filled * 2.001 <= 20


class WaitThenBuy(Strategy):
    """Holds each announcement until released, then buys: lets a test change the world in between."""

    def __init__(self) -> None:
        super().__init__("waiter", None)
        self.got = asyncio.Event()
        self.release = asyncio.Event()
        self.outcomes: asyncio.Queue[OrderOutcome] = asyncio.Queue()

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        self.got.set()
        await self.release.wait()
        await self.outcomes.put(await ctx.buy("binance", f"{announcement.tickers[0]}/USDT", cost=20))


async def test_order_refused_once_feed_goes_stale(tmp_path: Path) -> None:
    """An order attempted after the feed went silent (no server message for heartbeat_timeout) is
    refused by the gate: `feed.stale` halts trading before any order can be sent."""
    async with (
        FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=0.05) as emu,
    ):
        cfg = make_config(emu, fake, tmp_path, dry_run=False, heartbeat_timeout=0.5)
        waiter = WaitThenBuy()
        r = Running(Daemon(cfg, strategies=[waiter]))
        await r.armed()
        try:
            await emu.announce(title="Binance Will List ABC", ticker="ABC")
            await asyncio.wait_for(waiter.got.wait(), 5)
            stale = asyncio.Event()
            r.daemon.gate.subscribe(
                lambda armed, reasons, _: stale.set() if "feed_stale" in reasons else None
            )
            emu.reject_next(503, count=10_000)  # keep it down once it is dropped
            emu.pause_heartbeats()
            await asyncio.wait_for(stale.wait(), 5)
            waiter.release.set()
            outcome = await asyncio.wait_for(waiter.outcomes.get(), 5)
        finally:
            await r.stop()
    assert outcome.status == "skipped" and outcome.reason is not None
    assert "feed_stale" in outcome.reason
    assert fake.orders == []


async def test_orders_left_open_by_a_crash_are_looked_up_at_start(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """Orders a previous run left `sending` (killed between intent and answer) are looked up by client
    id at start-up: one the exchange executed ends `placed`, one it never saw ends `not_found`, and
    neither is sent again."""
    from bridge.config import ExchangeConfig
    from bridge.secrets import Secret
    from bridge.trading.journal import Journal
    from bridge.trading.model import OrderIntent
    from bridge.venues.exchange import Exchange
    from bridge.venues.types import OrderRequest

    emu, fake = servers
    ex = Exchange(
        "binance",
        ExchangeConfig(api_key=Secret(fake.api_key), secret=Secret(fake.secret), ccxt=fake.ccxt_config()),
        dry_run=False,
    )
    await ex.start(check_keys=False)
    await ex.create_order(OrderRequest("ABC/USDT", "buy", "bxexecutedbeforecrash0000", cost=20))
    await ex.close()
    journal = Journal.open(tmp_path, dry_run=False)
    for cid in ("bxexecutedbeforecrash0000", "bxneverreachedexchange000"):
        journal.reserve(
            OrderIntent(cid, "k", "listing_buy", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, False)
        )
    journal.close()

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    r = Running(Daemon(make_config(emu, fake, tmp_path, dry_run=False), sleep=no_wait))
    await r.armed()
    try:
        reconcile = next(t for t in r.daemon._tasks if t.get_name() == "reconcile")
        await asyncio.wait_for(reconcile, 10)
        assert r.daemon.journal is not None
        states = {rec.intent.client_order_id: rec.state for rec in r.daemon.journal.orders()}
    finally:
        await r.stop()
    assert states == {"bxexecutedbeforecrash0000": "placed", "bxneverreachedexchange000": "not_found"}
    assert fake.count("POST", "/api/v3/order") == 1


async def test_rejected_exchange_key_stops_before_arming(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """Live mode checks the exchange keys before arming: a rejected key ends the daemon with
    ExchangeAuthError (exit 77) and trading is never armed."""
    from dataclasses import replace

    from bridge.errors import ExchangeAuthError, ExitCode
    from bridge.secrets import Secret

    emu, fake = servers
    cfg = make_config(emu, fake, tmp_path, dry_run=False)
    bad = replace(cfg.exchanges["binance"], secret=Secret("not-the-secret-1234"))
    daemon = Daemon(replace(cfg, exchanges={"binance": bad}))
    armed: list[bool] = []
    daemon.gate.subscribe(lambda is_armed, reasons, _: armed.append(is_armed))
    with pytest.raises(ExchangeAuthError) as err:
        await asyncio.wait_for(daemon.run(), 10)
    assert err.value.exit_code == ExitCode.CREDENTIALS
    assert True not in armed
    assert emu.connections == 0


async def test_second_daemon_on_same_state_dir_refuses_to_start(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """Two daemons sharing a state_dir would trade the same announcements twice: the second one stops
    at start with a config error (exit 78) and never connects."""
    from bridge.errors import ConfigError, ExitCode

    emu, fake = servers
    cfg = make_config(emu, fake, tmp_path, dry_run=False)
    first = await start(cfg)
    try:
        with pytest.raises(ConfigError, match="in use by another bridge process") as err:
            await asyncio.wait_for(Daemon(cfg).run(), 10)
        assert err.value.exit_code == ExitCode.CONFIG
        assert emu.connections == 1
    finally:
        await first.stop()
