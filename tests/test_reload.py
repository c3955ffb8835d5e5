"""Reloading the config of a running daemon (`systemctl reload` = SIGHUP, `bridge reload`, /reload):
strategy params change on the same feed connection; an invalid config or a restart-only change is
refused with the reason and the running config keeps trading; announcements a replaced strategy had
queued are handled by its successor; an open position's exit still runs. Real feed emulator, real fake
Binance, real ccxt; the last test drives `python -m bridge run` in a subprocess with SIGHUP.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from bridge import Announcement, Context, Strategy
from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.daemon_reload import changed_keys, refusal_for
from bridge.ops import control
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from tests.test_service_files import DROP_INS, UNIT, settings

KEY = "dsk_" + "c" * 64
OTHER_KEY = "dsk_" + "d" * 64
ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ROOT / "strategies"
MARKETS = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("GHI", "USDT", 10.0)]

# What the Holding strategy below saw: (strategy, tag, announcement key), in the order handled.
SEEN: list[tuple[str, str, str]] = []
RELEASE = asyncio.Event()


class Holding(Strategy):
    """A test plugin (loaded as `tests.test_reload`, so a reload finds these same globals): records
    each announcement with its `tag` param; with `hold: true` it waits for RELEASE first."""

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        if self.params.get("hold"):
            await RELEASE.wait()
        SEEN.append((self.name, str(self.params.get("tag")), announcement.key))


def config_text(
    emu: FeedEmulator, fake: FakeBinance, state: Path, *, key: str = KEY, strategy: str = ""
) -> str:
    strategy = strategy or (
        f"  - name: listing_buy\n    module: {STRATEGIES}/listing_buy.py\n"
        "    params: {exchange: binance, quote: USDT, cost: 20, publishers: [upbit]}\n"
    )
    return f"""
feed:
  url: {emu.url}
  api_key: {key}
  cex: [upbit]
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {fake.secret}
    ccxt: {json.dumps(fake.ccxt_config())}
trading: {{dry_run: false, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
log: {{format: json}}
strategies:
{strategy}"""


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBinance]]:
    async with (
        FakeBinance(markets=MARKETS) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        yield emu, fake


async def until(condition: Callable[[], bool], task: asyncio.Task[None]) -> None:
    """Wait (bounded) for `condition`, yielding to the daemon's tasks between looks."""
    async with asyncio.timeout(10):
        while not condition():
            if task.done():
                task.result()
                raise AssertionError("daemon stopped")
            await asyncio.sleep(0)


async def running(path: Path) -> tuple[Daemon, asyncio.Task[None]]:
    daemon = Daemon(config_mod.load(path))
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.gate.armed, task)
    return daemon, task


async def stop(daemon: Daemon, task: asyncio.Task[None]) -> None:
    daemon.request_stop()
    await asyncio.wait_for(task, 10)


def notional(order: Any) -> float:
    return float(order.params["price"]) * float(order.params["quantity"])


async def test_param_change_applies_on_the_same_connection(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """listing_buy's cost goes from 20 to 30 by a reload: the next announcement buys for ~30 USDT, the
    one before bought for ~20, and the emulator saw exactly one connection throughout."""
    emu, fake = servers
    path = tmp_path / "config.yaml"
    path.write_text(config_text(emu, fake, tmp_path / "state"))
    daemon, task = await running(path)
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await asyncio.wait_for(fake.wait_for_orders(1), 10)
        path.write_text(path.read_text().replace("cost: 20", "cost: 30"))
        answer = await daemon.reload()
        assert answer == "reloaded; replaced: listing_buy", answer
        await emu.announce(title="[Upbit] DEF KRW listing", ticker="DEF", publisher="upbit")
        await asyncio.wait_for(fake.wait_for_orders(2), 10)
        assert daemon.reloader.reloads == 1
        assert emu.connections == 1 and emu.client_count == 1
    finally:
        await stop(daemon, task)
    first, second = fake.orders
    assert 15 < notional(first) <= 20 and 20 < notional(second) <= 30


async def test_invalid_config_is_refused_and_the_old_one_keeps_trading(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A config with a bad value is refused with check-config's reason (logged daemon.reload_refused),
    and the running strategy buys as before; a plugin param its Params reject is refused too."""
    emu, fake = servers
    path = tmp_path / "config.yaml"
    good = config_text(emu, fake, tmp_path / "state")
    path.write_text(good)
    daemon, task = await running(path)
    try:
        path.write_text(
            good.replace("max_order_cost: 100", "max_order_cost: -5").replace("cost: 20", "cost: 30")
        )
        with structlog.testing.capture_logs() as logs:
            answer = await daemon.reload()
        assert answer.startswith("reload refused: ") and "max_order_cost" in answer, answer
        refused = [e for e in logs if e["event"] == "daemon.reload_refused"]
        assert len(refused) == 1 and "max_order_cost" in refused[0]["reason"]
        path.write_text(good.replace("cost: 20", "cost: -1"))
        answer = await daemon.reload()
        assert answer.startswith("reload refused: ") and "cost" in answer, answer
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await asyncio.wait_for(fake.wait_for_orders(1), 10)
        assert daemon.reloader.reloads == 0
    finally:
        await stop(daemon, task)
    assert 15 < notional(fake.orders[0]) <= 20


async def test_restart_only_change_is_refused_naming_the_key(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A new feed key is refused as `feed.api_key cannot change on reload: restart`, even with a
    strategy change beside it (nothing of that config is applied); the control socket's `reload`
    (`bridge reload`) answers the same, and applies the strategy change alone; the feed stays."""
    emu, fake = servers
    path = tmp_path / "config.yaml"
    good = config_text(emu, fake, tmp_path / "state")
    path.write_text(good)
    daemon, task = await running(path)
    try:
        path.write_text(good.replace(KEY, OTHER_KEY).replace("cost: 20", "cost: 30"))
        answer = await daemon.reload()
        assert answer == "reload refused: feed.api_key cannot change on reload: restart"
        # `bridge reload` asks the same over the control socket, and gets the same answer.
        sock = control.socket_path(daemon.config.state_dir, dry_run=False)
        assert await control.request(sock, {"cmd": "reload"}, timeout=10) == {"ok": False, "error": answer}
        assert daemon.config.strategies[0].params["cost"] == 20
        path.write_text(good.replace("cost: 20", "cost: 30"))
        assert await control.request(sock, {"cmd": "reload"}, timeout=10) == {
            "ok": True,
            "message": "reloaded; replaced: listing_buy",
        }
        assert daemon.config.strategies[0].params["cost"] == 30
        assert emu.connections == 1
    finally:
        await stop(daemon, task)


async def test_a_lower_order_limit_applies_at_once(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """trading.max_order_cost lowered from 100 to 15 by a reload: the strategy (cost 20, unchanged,
    not restarted) has its next buy refused by the risk limits, and nothing reaches the exchange."""
    emu, fake = servers
    path = tmp_path / "config.yaml"
    path.write_text(config_text(emu, fake, tmp_path / "state"))
    daemon, task = await running(path)
    try:
        runner = daemon.runners[0]
        path.write_text(path.read_text().replace("max_order_cost: 100", "max_order_cost: 15"))
        assert await daemon.reload() == "reloaded; changed: trading.max_order_cost"
        assert daemon.runners == [runner]
        with structlog.testing.capture_logs() as logs:
            await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
            await until(lambda: runner.handled == 1, task)
    finally:
        await stop(daemon, task)
    skipped = [e for e in logs if e["event"] in ("order.skipped", "order.refused", "order.rejected")]
    assert skipped and "max_order_cost" in json.dumps(skipped), skipped
    assert fake.orders == []


def test_what_needs_a_restart() -> None:
    """The restart-only keys named: the feed, state_dir, dry_run, an exchange account or its key; the
    strategies, trading limits and alert settings are live."""
    base = config_mod.loads(
        f"feed: {{url: ws://127.0.0.1:1, api_key: {KEY}}}\nexchanges: {{binance: {{api_key: k, secret: s}}}}\n",
        source="a.yaml",
    )
    changed = config_mod.loads(
        f"feed: {{url: ws://127.0.0.1:2, api_key: {OTHER_KEY}}}\nstate_dir: /elsewhere\n"
        "exchanges: {binance: {api_key: k2, secret: s, daily_max_cost: 50}, okx: {api_key: a, secret: b, password: c}}\n"
        "trading: {dry_run: false, max_order_cost: 50}\nalerts: {feed_down_after: 5}\n",
        source="b.yaml",
    )
    keys = changed_keys(base, changed)
    assert set(keys) == {
        "feed.url",
        "feed.api_key",
        "exchanges.binance.api_key",
        "exchanges.binance.daily_max_cost",
        "exchanges.okx",
        "trading.dry_run",
        "trading.max_order_cost",
        "state_dir",
        "alerts.feed_down_after",
    }
    assert refusal_for(keys) == (
        "feed.api_key, feed.url, exchanges.binance.api_key, exchanges.okx, trading.dry_run, state_dir"
        " cannot change on reload: restart"
    )
    assert refusal_for(["trading.max_order_cost", "strategies", "exchanges.binance.daily_max_cost"]) is None


async def test_queued_announcements_go_to_the_replaced_strategy(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A strategy (max_concurrent 1) is busy with one announcement and has two more queued when a
    reload changes its params: the busy one finishes under the old params, the queued two are
    handled by the new instance with the new params; none is lost or handled twice."""
    emu, fake = servers
    SEEN.clear()
    RELEASE.clear()
    spec = (
        "  - name: holding\n    module: tests.test_reload\n    class: Holding\n    max_concurrent: 1\n"
        "    params: {tag: old, hold: true}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(config_text(emu, fake, tmp_path / "state", strategy=spec))
    daemon, task = await running(path)
    try:
        for ticker in ("AAA", "BBB", "CCC"):
            await emu.announce(title=f"[Upbit] {ticker} KRW listing", ticker=ticker, publisher="upbit")
        runner = daemon.runners[0]
        await until(lambda: runner.running == 1 and runner.queue.qsize() == 2, task)
        path.write_text(path.read_text().replace("{tag: old, hold: true}", "{tag: new}"))
        with structlog.testing.capture_logs() as logs:
            assert await daemon.reload() == "reloaded; replaced: holding"
            await until(lambda: len(SEEN) == 2, task)
            assert [tag for _, tag, _ in SEEN] == ["new", "new"]
            RELEASE.set()
            await until(lambda: len(SEEN) == 3, task)
            await until(lambda: any(e["event"] == "strategy.retired" for e in logs), task)
        assert SEEN[2][1] == "old"
        assert len({key for _, _, key in SEEN}) == 3
        assert daemon.runners[0] is not runner and len(daemon.runners) == 1
    finally:
        RELEASE.set()
        await stop(daemon, task)


async def test_open_position_exit_runs_across_a_reload(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A position bought with `exit_after: 1` is sold on time although the strategy that opened it was
    replaced by a reload meanwhile: exits follow the plan journaled with the position."""
    emu, fake = servers
    spec = (
        f"  - name: listing_buy\n    module: {STRATEGIES}/listing_buy.py\n"
        "    params: {exchange: binance, quote: USDT, cost: 20, publishers: [upbit], exit_after: 1}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(config_text(emu, fake, tmp_path / "state", strategy=spec))
    daemon, task = await running(path)
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await asyncio.wait_for(fake.wait_for_orders(1), 10)
        path.write_text(path.read_text().replace("exit_after: 1", "exit_after: 3600"))
        assert await daemon.reload() == "reloaded; replaced: listing_buy"
        await asyncio.wait_for(fake.wait_for_orders(2), 15)
    finally:
        await stop(daemon, task)
    buy, sell = fake.orders
    assert buy.params["side"] == "BUY" and sell.params["side"] == "SELL"
    assert sell.params["symbol"] == "ABCUSDT"


class Output:
    """The subprocess's JSON log lines, read as they come (so its pipe never fills)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            async with self._changed:
                self.lines.append(entry)
                self._changed.notify_all()

    async def wait(self, event: str) -> dict[str, Any]:
        async with self._changed:
            await self._changed.wait_for(lambda: any(e.get("event") == event for e in self.lines))
        return next(e for e in self.lines if e.get("event") == event)


async def datagrams_until(notify: socket.socket, wanted: bytes) -> list[bytes]:
    """sd_notify datagrams received, up to and including the first that is exactly `wanted`."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    while wanted not in got:
        got.append(await loop.sock_recv(notify, 4096))
    return got


async def test_sighup_reloads_a_running_service(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """`python -m bridge run` on loopback: SIGHUP logs daemon.reloaded, sd_notify says RELOADING=1
    with MONOTONIC_USEC then READY=1, the feed is not reconnected, and the next announcement buys with
    the new cost; SIGTERM then stops it with exit 0."""
    emu, fake = servers
    path = tmp_path / "config.yaml"
    path.write_text(config_text(emu, fake, tmp_path / "state"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "-c", str(path),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    out = Output(proc.stdout)
    try:
        async with asyncio.timeout(30):
            await out.wait("daemon.ready")
            await datagrams_until(notify, b"READY=1")
            await emu.wait_connected(1)
            path.write_text(path.read_text().replace("cost: 20", "cost: 30"))
            proc.send_signal(signal.SIGHUP)
            reloaded = await out.wait("daemon.reloaded")
            assert reloaded["summary"] == "reloaded; replaced: listing_buy"
            messages = await datagrams_until(notify, b"READY=1")
            reloading = [m for m in messages if m.startswith(b"RELOADING=1\n")]
            assert len(reloading) == 1, messages
            fields = dict(line.split(b"=", 1) for line in reloading[0].split(b"\n"))
            assert 0 < int(fields[b"MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            await emu.announce(title="[Upbit] GHI KRW listing", ticker="GHI", publisher="upbit")
            await fake.wait_for_orders(1)
            assert emu.connections == 1
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            await out.task
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        out.task.cancel()
        notify.close()
    assert 20 < notional(fake.orders[0]) <= 30
    assert not [e for e in out.lines if e.get("event") == "daemon.reload_refused"]


@pytest.mark.parametrize("unit", [UNIT, *DROP_INS], ids=lambda p: p.name)
def test_unit_reload_checks_the_config_the_daemon_runs_with(unit: Path) -> None:
    """`systemctl reload` runs check-config on the very file ExecStart= runs with (so a broken config
    fails the reload where systemctl shows it), then sends SIGHUP to the main process; a drop-in that
    changes ExecStart= resets ExecReload= the same way."""
    found = settings(unit)
    if unit != UNIT and not found.get("ExecStart"):
        assert not found.get("ExecReload")
        return
    start = shlex.split(found["ExecStart"][-1])
    reload = found["ExecReload"]
    if unit != UNIT:
        assert reload[0] == "", "a drop-in clears the unit's ExecReload= first"
        reload = reload[1:]
    check, hup = (shlex.split(line) for line in reload)
    assert check[:4] == [start[0], "-m", "bridge", "check-config"]
    assert check[check.index("--config") + 1] == start[start.index("--config") + 1]
    assert hup == ["/bin/kill", "-HUP", "$MAINPID"]
