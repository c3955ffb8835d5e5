"""The leader lease against a real etcd on loopback (its own ports and data dir, never the system one):
one leader of two, renewal, hand-over on close, self-halt when etcd goes away or the clock says the
lease can no longer be proven. Also the `ha:` config checks. The other tests/test_ha*.py use EtcdServer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.config import HAConfig
from bridge.errors import ConfigError, TradingHalted
from bridge.ops.ha import Pair
from bridge.ops.ha.etcd import EtcdGateway, Holder
from bridge.ops.ha.lease import Leadership
from bridge.ops.notify import Notifier
from bridge.trading.gate import TradingGate
from tests.test_notify import Endpoint, running

ETCD = "/usr/bin/etcd"
TTL = 1.0  # etcd allows 1 s with the short election timeout EtcdServer runs it with


def need_etcd() -> None:
    """CI must run these tests (fail loudly without etcd); a laptop without etcd skips them, saying why."""
    if Path(ETCD).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{ETCD} is missing: .ci/run installs etcd-server; the HA tests must run in CI")
    pytest.skip(f"{ETCD} not installed (apt-get install etcd-server) : the HA tests need a real etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """One etcd member on free loopback ports with a temporary data dir. Short heartbeat and election
    timeout, so its minimum lease TTL is 1 s (the default settings round a 1 s lease up to 2 s)."""

    def __init__(self) -> None:
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="bridge-etcd-"))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = await asyncio.create_subprocess_exec(
            ETCD,
            "--name=t",
            f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        seen: list[bytes] = []
        while True:  # etcd says when it serves clients; no polling
            line = await asyncio.wait_for(self.proc.stderr.readline(), 20)
            if not line:
                raise AssertionError(
                    "etcd exited at start:\n" + b"".join(seen[-20:]).decode(errors="replace")
                )
            seen.append(line)
            if b"ready to serve client requests" in line:
                break
        self._drain = asyncio.create_task(self._discard())

    async def _discard(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while await self.proc.stderr.readline():
            pass

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
            await asyncio.gather(self._drain, return_exceptions=True)
        self.proc = None

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_etcd() -> AsyncIterator[EtcdServer]:
    need_etcd()
    server = EtcdServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        server.cleanup()


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdServer]:
    async with running_etcd() as server:
        yield server


class WatchedGateway(EtcdGateway):
    """The real gateway, telling the test each time a look at the key was answered."""

    def __init__(self, url: str) -> None:
        super().__init__([url], timeout=1.0)
        self.looked = asyncio.Event()

    async def get(self, key: str, *, within: float | None = None) -> Holder | None:
        holder = await super().get(key, within=within)
        self.looked.set()
        return holder


def ha_config(server: EtcdServer, name: str, ttl: float = TTL, prefix: str = "/t/") -> HAConfig:
    return HAConfig(endpoints=(server.url,), name=name, lease_ttl=ttl, key_prefix=prefix)


class Member:
    """A Leadership running in a task, on its own gate."""

    def __init__(self, cfg: HAConfig) -> None:
        self.etcd = WatchedGateway(cfg.endpoints[0])
        self.gate = TradingGate()
        self.gate.resume("starting")
        self.gate.resume("disconnected")
        self.changes: list[tuple[str, str, float]] = []
        self.changed = asyncio.Event()
        self.leadership = Leadership(cfg, self.gate, etcd=self.etcd)
        self.leadership.listeners.append(self._note)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.leadership.run(self.stop))

    def _note(self, role: str, why: str) -> None:
        self.changes.append((role, why, time.monotonic()))
        self.changed.set()

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


async def until_role(member: Member, role: str, within: float) -> float:
    """Wait for `member` to take `role`; the monotonic time it did."""

    async def wait() -> float:
        while True:
            if member.changes and member.changes[-1][0] == role:
                return member.changes[-1][2]
            member.changed.clear()
            await member.changed.wait()

    return await asyncio.wait_for(wait(), within)


async def test_one_leader_of_two_and_handover_on_close(etcd: EtcdServer) -> None:
    """Of two hosts only one takes the key and arms; the other stays halted `ha_standby`. Closing the
    leader revokes its lease, so the standby leads within a poll, not a TTL."""
    a = Member(ha_config(etcd, "a"))
    await a.leadership.wait_armed()
    b = Member(ha_config(etcd, "b"))
    try:
        await asyncio.wait_for(b.etcd.looked.wait(), 5)
        assert b.leadership.holder == "a"
        assert a.gate.armed and a.leadership.snapshot()["role"] == "leader"
        assert b.leadership.role == "standby" and b.gate.reasons == {"ha_standby"}
        with pytest.raises(TradingHalted):
            b.leadership.fence()
        lease = a.leadership.fence()
        # Renewals keep it: three TTLs later a still leads, with the same lease.
        await asyncio.sleep(3 * TTL)
        assert a.leadership.role == "leader" and a.leadership.fence() == lease
        assert b.leadership.role == "standby"
        closed = time.monotonic()
        await a.close()
        took = await until_role(b, "leader", 5)
        await b.leadership.wait_armed()
        assert took - closed < TTL, "a revoked lease is handed over at once"
        assert b.gate.armed and a.gate.halted_on("ha_standby", "binance")
    finally:
        await b.close()
        if not a.task.done():
            await a.close()


async def test_etcd_gone_halts_leader_within_ttl(etcd: EtcdServer) -> None:
    """etcd stopped: the leader cannot renew and halts itself before its lease's TTL could run out
    (last renewal sent + TTL - margin); the fence refuses every order from then on."""
    a = Member(ha_config(etcd, "a"))
    try:
        await a.leadership.wait_armed()
        stopped = time.monotonic()
        await etcd.stop()
        halted = await until_role(a, "standby", 5)
        assert halted - stopped < TTL  # halted at its deadline (TTL - margin), before the lease ends
        assert a.gate.reasons == {"ha_standby"} and a.changes[-1][1] == "lease_unproven"
        with pytest.raises(TradingHalted):
            a.leadership.fence()
    finally:
        await a.close()


async def test_fence_checks_the_clock_itself(etcd: EtcdServer) -> None:
    """After a pause longer than the TTL (the process stopped, no timer has run yet), the first order's
    fence reads the monotonic clock, halts and refuses: nothing is sent on a lease that may be gone."""
    now = [time.monotonic()]
    gate = TradingGate()
    leadership = Leadership(ha_config(etcd, "a"), gate, clock=lambda: now[0])
    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(stop))
    try:
        await leadership.wait_armed()
        assert leadership.fence() > 0
        now[0] += TTL  # the pause: the loop's timers are not due on this clock
        with pytest.raises(TradingHalted):
            leadership.fence()
        assert leadership.role == "standby" and gate.halted_on("ha_standby", "binance")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_key_taken_by_another_lease_is_lost(etcd: EtcdServer) -> None:
    """Another holder on the key (an operator deleted it, another host took it): the next renewal
    sees it and halts."""
    a = Member(ha_config(etcd, "a"))
    gw = EtcdGateway([etcd.url], timeout=1)
    try:
        await a.leadership.wait_armed()
        lease = await gw.grant(10)
        await gw._post("/v3/kv/deleterange", {"key": "L3QvbGVhZGVy"})  # base64 of /t/leader
        assert await gw.create("/t/leader", "intruder", lease) is None
        await until_role(a, "standby", 3)
        assert a.changes[-1][1] == "key_taken" and a.leadership.holder == "intruder"
    finally:
        await gw.close()
        await a.close()


def test_ha_config_checked() -> None:
    """`ha:` is optional; when present its endpoints, name and TTL are checked, naming the key."""
    base = "feed: {url: 'ws://127.0.0.1:1/ws', api_key: k}\n"
    assert config_mod.loads(base).ha is None
    cfg = config_mod.loads(base + "ha: {endpoints: ['http://10.0.0.5:2379'], name: tokyo-1}\n")
    assert cfg.ha is not None and cfg.ha.lease_ttl == 3.0 and cfg.ha.backend == "etcd"
    for bad, key in (
        ("{endpoints: [], name: a}", "endpoints"),
        ("{endpoints: ['10.0.0.5:2379'], name: a}", "endpoints[0]"),
        ("{endpoints: ['http://e:2379'], name: 'a b'}", "name"),
        ("{endpoints: ['http://e:2379'], name: a, lease_ttl: 0.5}", "lease_ttl"),
        ("{endpoints: ['http://e:2379'], name: a, backend: zookeeper}", "backend"),
        ("{endpoints: ['http://e:2379'], name: a, ttl: 3}", "ttl"),
    ):
        with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
            config_mod.loads(base + f"ha: {bad}\n")


async def test_every_role_change_alerts_and_shows_in_status(etcd: EtcdServer) -> None:
    """The pair's wiring: an `ha_role` alert (webhook) when this host becomes leader and when it
    falls back to standby; the status text and snapshot say the role and since when."""
    hook = Endpoint()
    await hook.start()
    try:
        await _alerts_on_role_changes(etcd, hook)
    finally:
        await hook.stop()


async def _alerts_on_role_changes(etcd: EtcdServer, hook: Endpoint) -> None:
    cfg = config_mod.loads(
        f"""
feed: {{url: 'ws://127.0.0.1:1/ws', api_key: k}}
alerts: {{webhook: {{url: '{hook.url}/hook'}}, host_label: tokyo-1}}
ha: {{endpoints: ['{etcd.url}'], name: a, lease_ttl: {TTL}, key_prefix: /alerts/}}
"""
    )
    gate = TradingGate()
    notifier = Notifier(cfg.alerts)
    pair = Pair.create(cfg, gate, notifier)
    assert (
        pair is not None
        and Pair.create(config_mod.loads("feed: {url: 'ws://127.0.0.1:1/ws', api_key: k}"), gate) is None
    )
    assert pair.status_text().startswith("standby since ")
    stop = asyncio.Event()
    lease_task = asyncio.create_task(pair.leadership.run(stop))
    try:
        async with running(notifier):
            await pair.leadership.wait_armed()
            assert pair.status_text().startswith("leader since ") and pair.snapshot()["role"] == "leader"
            await etcd.stop()
            received = await hook.wait_received(2)
    finally:
        stop.set()
        await asyncio.wait_for(lease_task, 5)
    bodies = [r.body for r in received]
    assert [(b["event"], b["fields"]["role"]) for b in bodies] == [
        ("ha_role", "leader"),
        ("ha_role", "standby"),
    ]
    assert bodies[1]["fields"]["reason"] == "lease_unproven" and bodies[1]["host"] == "tokyo-1"
    assert pair.snapshot()["role"] == "standby" and gate.halted_on("ha_standby", "binance")
