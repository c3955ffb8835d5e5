"""Exits-only mode, end to end: a real daemon in paper mode against the feed emulator and the fake
Binance. A dead feed key with a position open keeps the daemon up, entries halted, until the exit
manager has closed the position; then it exits with the feed's code. Without a position it exits at
once; a stop request during exits-only mode is a clean stop that leaves the position journaled."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.errors import CredentialsRejected, ExitCode
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.journal import Journal
from tests.test_daemon import KEY, STRATEGIES, Running

WAIT = 10.0  # safety bound only


class Hook:
    """A webhook on 127.0.0.1 that keeps the event name of every alert it receives."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.events.append((await request.json())["event"])
        return web.Response(status=204)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBinance, Hook]]:
    hook = Hook()
    await hook.start()
    try:
        async with (
            FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake,
            FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
        ):
            yield emu, fake, hook
    finally:
        await hook.stop()


def make_config(
    emu: FeedEmulator, fake: FakeBinance, hook: Hook, state: Path, *, exit_after: float
) -> config_mod.Config:
    """Paper trading, listing_buy with a time exit, /health on a free port, alerts to `hook`."""
    text = f"""
feed:
  url: {emu.url}
  api_key: {KEY}
  cex: [binance]
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  binance:
    ccxt: {json.dumps(fake.ccxt_config())}
trading: {{dry_run: true, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
health: {{enabled: true, port: 0, status_interval: 0}}
alerts: {{webhook: {{url: "{hook.url}"}}}}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [binance], exit_after: {exit_after}}}
"""
    return config_mod.loads(text, source="test.yaml")


async def open_a_position(emu: FeedEmulator, r: Running) -> None:
    """Announce a listing and wait until listing_buy's paper buy is a position in the journal."""
    await r.armed()
    await emu.announce(title="Binance Will List ABC", ticker="ABC", publisher="binance")
    await r.settle(1)
    assert r.daemon.journal is not None
    assert len(r.daemon.journal.open_positions()) == 1


async def health(r: Running) -> tuple[int, dict[str, Any]]:
    assert r.daemon.health is not None
    async with aiohttp.ClientSession() as http, http.get(f"{r.daemon.health.url}/health") as resp:
        return resp.status, await resp.json()


async def test_dead_key_with_a_position_closes_it_then_exits_77(
    servers: tuple[FeedEmulator, FakeBinance, Hook], tmp_path: Path
) -> None:
    """The feed closes with key_expired while a paper position is open: the daemon stays up in
    exits-only mode (/health 503 with mode exits_only, entries halted, an exits_only alert, watchdog
    pings go on, the feed is not retried), the time exit sells the position, and only then does the
    daemon end with CredentialsRejected (exit 77)."""
    emu, fake, hook = servers
    r = Running(Daemon(make_config(emu, fake, hook, tmp_path, exit_after=0.5)))
    await open_a_position(emu, r)
    with capture_logs() as logs:
        await emu.close_all(1000, "key_expired")
        await asyncio.wait_for(r.until(lambda: r.daemon.mode == "exits_only"), WAIT)
        status, body = await health(r)
        assert not r.task.done()
        assert r.daemon._making_progress()  # the systemd watchdog keeps pinging: the feed ended on purpose
        assert not r.daemon.gate.entries_armed("binance") and r.daemon.gate.exits_armed("binance")
        with pytest.raises(CredentialsRejected) as err:
            await asyncio.wait_for(r.task, WAIT)
    assert err.value.exit_code == ExitCode.CREDENTIALS
    assert status == 503 and body["mode"] == "exits_only" and body["healthy"] is False
    assert {"key_expired", "disconnected"} <= set(body["trading"]["halt_reasons"])
    [entered] = [e for e in logs if e["event"] == "daemon.exits_only"]
    assert entered["open_positions"] == 1 and "key_expired" in entered["reason"]
    [ended] = [e for e in logs if e["event"] == "daemon.exits_only_ended"]
    assert ended["outcome"] == "flat"
    assert emu.connections == 1  # the dead key was not tried again
    journal = Journal.open(tmp_path, dry_run=True)
    try:
        sells = [o for o in journal.orders() if o.intent.side == "sell"]
        assert journal.open_positions() == []
    finally:
        journal.close()
    assert len(sells) == 1 and sells[0].intent.exit_of is not None
    assert "exits_only" in hook.events and hook.events.index("exits_only") < hook.events.index("stopping")


async def test_dead_key_without_a_position_exits_77_at_once(
    servers: tuple[FeedEmulator, FakeBinance, Hook], tmp_path: Path
) -> None:
    """With no position open a key_expired close ends the daemon at once with CredentialsRejected
    (exit 77), as before exits-only mode existed: no exits_only mode, log line or alert."""
    emu, fake, hook = servers
    r = Running(Daemon(make_config(emu, fake, hook, tmp_path, exit_after=0.5)))
    await r.armed()
    with capture_logs() as logs:
        await emu.close_all(1000, "key_expired")
        with pytest.raises(CredentialsRejected) as err:
            await asyncio.wait_for(r.task, WAIT)
    assert err.value.exit_code == ExitCode.CREDENTIALS
    assert r.daemon.mode == "normal"
    assert not [e for e in logs if e["event"].startswith("daemon.exits_only")]
    assert "exits_only" not in hook.events


async def test_stop_request_during_exits_only_is_a_clean_stop(
    servers: tuple[FeedEmulator, FakeBinance, Hook], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 on reconnect (ConfigError, exit 78) with a position open also enters exits-only mode, which
    the systemd status line says; a stop request (SIGTERM) then ends the daemon at once without an
    error (exit 0), and the position is still open in the journal for the next run."""
    emu, fake, hook = servers
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    loop = asyncio.get_running_loop()

    async def status_saying(text: str) -> str:
        while not (line := (await loop.sock_recv(sock, 4096)).decode()).startswith(f"STATUS={text}"):
            pass
        return line

    try:
        r = Running(Daemon(make_config(emu, fake, hook, tmp_path, exit_after=3600)))
        await open_a_position(emu, r)
        emu.reject_next(401, count=10_000)
        await emu.drop_all()
        status = await asyncio.wait_for(status_saying("exits only"), WAIT)
        assert r.daemon.mode == "exits_only" and "disconnected" in status
        r.daemon.request_stop()
        await asyncio.wait_for(r.task, WAIT)  # returns: no error, exit 0
    finally:
        sock.close()
    journal = Journal.open(tmp_path, dry_run=True)
    try:
        assert len(journal.open_positions()) == 1
        assert [o for o in journal.orders() if o.intent.side == "sell"] == []
    finally:
        journal.close()


async def test_bridge_close_sells_through_the_running_daemon(
    servers: tuple[FeedEmulator, FakeBinance, Hook], tmp_path: Path
) -> None:
    """`bridge close` reaches the running daemon over its control socket (mode 0600 in state_dir):
    the position is sold at once, whatever its plan says; `resume` lifts only loss_limit; the socket
    is gone after the stop."""
    from bridge.ops.control import request, socket_path

    emu, fake, hook = servers
    r = Running(Daemon(make_config(emu, fake, hook, tmp_path, exit_after=3600)))
    await open_a_position(emu, r)
    path = socket_path(tmp_path, dry_run=True)
    assert path.stat().st_mode & 0o777 == 0o600
    refused = await request(path, {"cmd": "close", "symbol": "XYZ/USDT", "exchange": None})
    assert refused["ok"] is False and "no open position" in refused["error"]
    answer = await request(path, {"cmd": "close", "symbol": "ABC/USDT", "exchange": None})
    assert answer["ok"] is True, answer
    assert r.daemon.journal is not None
    journal = r.daemon.journal
    await r.until(lambda: journal.open_positions() == [])
    [closed] = journal.positions(("closed",))
    assert closed.symbol == "ABC/USDT" and closed.remaining == 0
    resumed = await request(path, {"cmd": "resume", "reason": "loss_limit"})
    assert resumed == {"ok": True, "message": "loss_limit was not halting trading"}
    wrong = await request(path, {"cmd": "resume", "reason": "key_expired"})
    assert wrong["ok"] is False
    await r.stop()
    assert not path.exists()
