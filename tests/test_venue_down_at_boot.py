"""A venue that is down at boot does not stop the daemon: it starts, halts that venue alone
(`venue_unavailable:NAME`, shown in /health), trades on the other, and retries the down one in the
background; once it answers, the halt lifts and it trades, with no restart. Two real fake Binance
servers and real ccxt; the down one is a port that refuses connections until the server starts on it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.daemon_start import VenueStarter
from bridge.errors import ExchangeAuthError
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.gate import TradingGate
from bridge.venues.exchange import Exchange

KEY = "dsk_" + "b" * 64
STRATEGIES = Path(__file__).resolve().parent.parent / "strategies"
MARKETS = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]


async def quick_sleep(delay: float) -> None:
    """The daemon's backoff (2 s, 4 s, ... 60 s) scaled down so a test does not sit through it;
    nothing waits on it: the test waits on the gate's events."""
    await asyncio.sleep(min(delay, 0.02))


def refusing_port() -> socket.socket:
    """A loopback port that is bound but not listening: a connection to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def two_venue_config(emu: FeedEmulator, up: FakeBinance, down: FakeBinance, state: Path) -> config_mod.Config:
    text = f"""
feed:
  url: {emu.url}
  api_key: {KEY}
  cex: [upbit]
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  binance:
    api_key: {up.api_key}
    secret: {up.secret}
    ccxt: {json.dumps(up.ccxt_config())}
  binance_b:
    venue: binance
    api_key: {down.api_key}
    secret: {down.secret}
    ccxt: {json.dumps(down.ccxt_config())}
trading: {{dry_run: false, max_event_age: 10, max_order_cost: 100}}
health: {{enabled: true, port: 0, status_interval: 0}}
state_dir: {state}
strategies:
  - name: buy_a
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [upbit]}}
  - name: buy_b
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance_b, quote: USDT, cost: 20, publishers: [upbit]}}
"""
    return config_mod.loads(text, source="test.yaml")


async def gate_until(daemon: Daemon, condition: object) -> None:
    """Wait (bounded) until `condition()` holds, woken by every change of the daemon's gate."""
    assert callable(condition)
    changed = asyncio.Event()
    daemon.gate.subscribe(lambda *_: changed.set())
    async with asyncio.timeout(20):
        while not condition():
            changed.clear()
            await changed.wait()


async def health(daemon: Daemon) -> tuple[int, dict[str, object]]:
    assert daemon.health is not None
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.health.url}/health") as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def feed() -> AsyncIterator[FeedEmulator]:
    async with FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu:
        yield emu


async def test_down_venue_is_halted_the_other_trades_then_it_comes_up(
    feed: FeedEmulator, tmp_path: Path
) -> None:
    """binance_b refuses connections at boot: the daemon is ready anyway, /health lists
    `venue_unavailable:binance_b` (and stays 200: the other venue trades), an announcement buys on
    binance only; once binance_b's server is up the halt lifts by itself and the next announcement buys
    there too, over the same feed connection (no restart)."""
    placeholder = refusing_port()
    port = placeholder.getsockname()[1]
    async with FakeBinance(markets=MARKETS) as up:
        down = FakeBinance(markets=MARKETS, port=port)
        daemon = Daemon(two_venue_config(feed, up, down, tmp_path), sleep=quick_sleep)
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            try:
                await asyncio.wait_for(daemon.ready.wait(), 20)
                assert daemon.gate.halted_on("venue_unavailable", "binance_b")
                assert not daemon.exchanges["binance_b"].started
                await feed.wait_connected(1)
                await gate_until(daemon, lambda: daemon.gate.entries_armed("binance"))
                status, body = await health(daemon)
                assert status == 200
                trading = body["trading"]
                assert isinstance(trading, dict)
                assert "venue_unavailable:binance_b" in trading["halt_reasons"]

                await feed.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
                await asyncio.wait_for(up.wait_for_orders(1), 10)
                await settle(daemon)
                assert [o.params["symbol"] for o in up.orders] == ["ABCUSDT"]
                assert daemon.gate.halted_on("venue_unavailable", "binance_b")

                placeholder.close()
                await down.start()
                await gate_until(daemon, lambda: not daemon.gate.halted_on("venue_unavailable", "binance_b"))
                assert daemon.exchanges["binance_b"].started
                await feed.announce(title="[Upbit] DEF KRW listing", ticker="DEF", publisher="upbit")
                await asyncio.wait_for(down.wait_for_orders(1), 10)
                await asyncio.wait_for(up.wait_for_orders(2), 10)
                await settle(daemon)
                assert [o.params["symbol"] for o in down.orders] == ["DEFUSDT"]
                assert [o.params["symbol"] for o in up.orders] == ["ABCUSDT", "DEFUSDT"]
                assert feed.connections == 1
                status, body = await health(daemon)
                trading = body["trading"]
                assert isinstance(trading, dict)
                assert not any(str(r).startswith("venue_unavailable") for r in trading["halt_reasons"])
            finally:
                daemon.request_stop()
                await asyncio.wait_for(task, 10)
                await down.stop()
                placeholder.close()
    events = [e["event"] for e in logs]
    assert "exchange.unavailable" in events and "exchange.recovered" in events
    assert not [e for e in logs if e.get("log_level") in ("error", "critical") and "exc_info" in e]


async def settle(daemon: Daemon) -> None:
    """Until every strategy's queue is drained and its handlers are done."""
    async with asyncio.timeout(10):
        for runner in daemon.runners:
            await runner.queue.join()
            await runner.idle.wait()


async def test_every_key_rejected_at_boot_still_exits_77(tmp_path: Path) -> None:
    """A rejected key is not a venue outage: with every venue's key rejected the start fails with
    ExchangeAuthError (exit 77), nothing is retried; with one of two rejected, that venue alone is
    halted `credentials_rejected` and the other starts."""
    async with FakeBinance(markets=MARKETS) as good, FakeBinance(markets=MARKETS, api_key="other") as bad:
        cfg = config_mod.loads(
            f"""
feed: {{url: ws://127.0.0.1:1, api_key: {KEY}}}
exchanges:
  good: {{venue: binance, api_key: {good.api_key}, secret: {good.secret}, ccxt: {json.dumps(good.ccxt_config())}}}
  bad: {{venue: binance, api_key: wrong, secret: {bad.secret}, ccxt: {json.dumps(bad.ccxt_config())}}}
state_dir: {tmp_path}
""",
            source="test.yaml",
        )
        exchanges = {name: Exchange(name, ex, dry_run=False) for name, ex in cfg.exchanges.items()}
        gate = TradingGate()
        try:
            await VenueStarter(exchanges, gate, check_keys=True, sleep=quick_sleep).start_all()
            assert gate.halted_on("credentials_rejected", "bad")
            assert not gate.halted_on("credentials_rejected", "good")
            assert exchanges["good"].started and not exchanges["bad"].started
            only_bad = {"bad": exchanges["bad"]}
            with pytest.raises(ExchangeAuthError) as err:
                await VenueStarter(only_bad, TradingGate(), check_keys=True, sleep=quick_sleep).start_all()
            assert int(err.value.exit_code) == 77
        finally:
            await asyncio.gather(*(ex.close() for ex in exchanges.values()))


async def test_orders_left_open_on_a_down_venue_are_looked_up_once_it_starts(
    feed: FeedEmulator, tmp_path: Path
) -> None:
    """An order an earlier run left `sending` on binance_b (it executed there) is not looked up while
    binance_b is down at boot (no RuntimeError, no `not_found` verdict from a venue nobody asked); once
    binance_b starts it is looked up and settled `placed` before the venue's halt lifts, never resent."""
    from bridge.config import ExchangeConfig
    from bridge.secrets import Secret
    from bridge.trading.journal import Journal
    from bridge.trading.model import OrderIntent
    from bridge.venues.types import OrderRequest

    cid = "bxexecutedwhiledown000000"
    async with FakeBinance(markets=MARKETS) as up:
        down = FakeBinance(markets=MARKETS)
        await down.start()
        earlier = Exchange(
            "binance_b",
            ExchangeConfig(
                venue="binance",
                api_key=Secret(down.api_key),
                secret=Secret(down.secret),
                ccxt=down.ccxt_config(),
            ),
            dry_run=False,
        )
        await earlier.start(check_keys=False)
        await earlier.create_order(OrderRequest("ABC/USDT", "buy", cid, cost=20))
        await earlier.close()
        await down.stop()
        placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.bind(("127.0.0.1", down.port))  # refused from now until the server starts again
        journal = Journal.open(tmp_path, dry_run=False)
        journal.reserve(
            OrderIntent(cid, "k", "buy_b", "binance_b", "ABC/USDT", "buy", "USDT", 20.0, None, False)
        )
        journal.close()
        daemon = Daemon(two_venue_config(feed, up, down, tmp_path), sleep=quick_sleep)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 20)
            reconcile = next(t for t in daemon._tasks if t.get_name() == "reconcile")
            await asyncio.wait_for(reconcile, 10)
            assert daemon.journal is not None
            assert {r.intent.client_order_id: r.state for r in daemon.journal.orders()} == {cid: "sending"}

            states_when_lifted: list[str] = []

            def on_gate(armed: bool, reasons: frozenset[str], key: str) -> None:
                if key == "venue_unavailable:binance_b" and key not in reasons and daemon.journal is not None:
                    states_when_lifted.extend(r.state for r in daemon.journal.orders())

            daemon.gate.subscribe(on_gate)
            placeholder.close()
            await down.start()
            await gate_until(daemon, lambda: not daemon.gate.halted_on("venue_unavailable", "binance_b"))
            assert states_when_lifted == ["placed"]
            assert down.count("POST", "/api/v3/order") == 1  # the one before the "crash", not resent
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 10)
            await down.stop()
            placeholder.close()
