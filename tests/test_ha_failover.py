"""Failover with the leader in its own process (`python -m bridge run`), where kill -9 and SIGSTOP are
the point; the standby is an in-process daemon, the etcd real. kill -9 mid-order: the standby leads
within TTL + 1 s and does not send that order again. SIGSTOP past the TTL: on SIGCONT the old leader
halts itself before it sends anything, and follows as standby.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from tests.test_ha_etcd import TTL, EtcdServer, running_etcd
from tests.test_ha_pair import KEY, Host, pair_config


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdServer]:
    async with running_etcd() as server:
        yield server


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBinance]]:
    async with (
        FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        yield emu, fake


def write_config(emu: FeedEmulator, fake: FakeBinance, tmp_path: Path, server: EtcdServer) -> Path:
    """The leader's config file: the pair's, as YAML, with JSON logs on stdout."""
    cfg = pair_config(emu, fake, tmp_path, server, "a")
    assert cfg.ha is not None
    path = tmp_path / "a.yaml"
    path.write_text(
        f"""
feed:
  url: {emu.url}
  api_key: {KEY}
  cex: [binance]
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {fake.secret}
    ccxt: {json.dumps(fake.ccxt_config())}
trading: {{dry_run: false, max_event_age: 30, max_order_cost: 100}}
state_dir: {cfg.state_dir}
strategies:
  - name: listing_buy
    module: {cfg.strategies[0].module}
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [binance]}}
ha: {{endpoints: [{server.url}], name: a, lease_ttl: {TTL}, key_prefix: /pair/}}
log: {{level: info, format: json}}
"""
    )
    return path


class Leader:
    """`python -m bridge run` as host `a`; its JSON log lines read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def spawn(cls, config: Path) -> Leader:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "-c",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        )
        return cls(proc)

    async def wait_event(self, name: str, within: float = 30, **match: Any) -> dict[str, Any]:
        assert self.proc.stdout is not None

        async def read() -> dict[str, Any]:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"leader ended before {name}: {self.events[-5:]}")
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                self.events.append(event)
                if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                    return event

        return await asyncio.wait_for(read(), within)

    def index(self, name: str, **match: Any) -> int:
        for i, event in enumerate(self.events):
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                return i
        return -1

    async def end(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def test_kill_9_mid_order_standby_takes_over_without_resending(
    servers: tuple[FeedEmulator, FakeBinance], etcd: EtcdServer, tmp_path: Path
) -> None:
    """The leader's order reaches the venue but its answer is held, so the leader never journals the
    result; kill -9. The standby leads within TTL + 1 s, finds the order at the venue by its client id
    (journaled as its own, filled) and the venue sees it once."""
    emu, fake = servers
    a = await Leader.spawn(write_config(emu, fake, tmp_path, etcd))
    b: Host | None = None
    try:
        await a.wait_event("ha.armed")
        b = Host(pair_config(emu, fake, tmp_path, etcd, "b"))
        await b.following()
        await emu.wait_connected(2)
        fake.fail_next_order("timeout_after")  # created at the venue; the answer never comes
        await emu.announce(title="Binance Will List ABC", ticker="ABC", publisher="binance")
        await asyncio.wait_for(fake.wait_for_orders(1), 10)
        await b.would_have_sent(1)
        cid = fake.orders[0].params["newClientOrderId"]
        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        await b.leading()
        failover = time.monotonic() - killed
        print(f"\nfailover after kill -9: {failover:.2f} s (lease_ttl {TTL} s)")
        assert failover <= TTL + 1
        assert len(fake.orders) == 1
        assert b.daemon.journal is not None
        record = b.daemon.journal.get(cid)
        assert record is not None and record.state == "placed" and record.filled
        assert b.lease_ids() == {cid: b.pair.leadership.lease}
    finally:
        await a.end()
        if b is not None:
            await b.stop()


async def test_sigstop_past_ttl_leader_halts_itself_on_waking(
    servers: tuple[FeedEmulator, FakeBinance], etcd: EtcdServer, tmp_path: Path
) -> None:
    """The leader is paused (SIGSTOP) longer than the TTL: the standby takes over and trades a listing
    that arrives meanwhile. On SIGCONT the old leader, whose feed delivers the same listing, halts
    itself (`ha.role` standby) before it handles it and never sends it: the venue sees one order, the
    new leader's. The old leader keeps running, as standby."""
    emu, fake = servers
    a = await Leader.spawn(write_config(emu, fake, tmp_path, etcd))
    b: Host | None = None
    try:
        await a.wait_event("ha.armed")
        b = Host(pair_config(emu, fake, tmp_path, etcd, "b"))
        await b.following()
        await emu.wait_connected(2)
        a.proc.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        await b.leading()
        assert time.monotonic() - paused <= TTL + 1
        await emu.announce(title="Binance Will List ABC", ticker="ABC", publisher="binance")
        await asyncio.wait_for(fake.wait_for_orders(1), 10)
        assert len(fake.orders) == 1
        a.proc.send_signal(signal.SIGCONT)
        await a.wait_event("ha.role", role="standby")
        await a.wait_event("ha.would_send", symbol="ABC/USDT")
        assert a.index("ha.role", role="standby") < a.index("ha.would_send")
        assert all(a.index(e) == -1 for e in ("order.placed", "order.rejected", "order.unknown"))
        assert len(fake.orders) == 1
        assert a.proc.returncode is None and b.pair.leadership.role == "leader"
    finally:
        if a.proc.returncode is None:
            a.proc.send_signal(signal.SIGCONT)
        await a.end()
        if b is not None:
            await b.stop()
