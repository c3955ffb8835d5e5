"""The daemon's production wiring: /health and /metrics, alerts, and sd_notify, each observed over a
real local socket while the real daemon runs against the feed emulator and the fake exchange."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.daemon import Daemon
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from tests.test_daemon import KEY, Running, make_config


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBinance]]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake, FeedEmulator(api_keys={KEY}) as emu:
        yield emu, fake


async def test_health_follows_the_gate(servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path) -> None:
    """/health answers 200 with the feed state while trading is armed and 503 once the feed is lost;
    /metrics serves Prometheus text."""
    emu, fake = servers
    extra_top = "health: {enabled: true, port: 0, status_interval: 0}\n"
    cfg = make_config(emu, fake, tmp_path, dry_run=True, top=extra_top)
    r = Running(Daemon(cfg))
    await r.armed()
    try:
        assert r.daemon.health is not None
        url = r.daemon.health.url
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/health") as resp:
                body = await resp.json()
                assert resp.status == 200
            assert body["trading"] == {"armed": True, "halt_reasons": []}
            assert body["feed"]["state"] == "connected"
            assert "listing_buy" in body["strategies"]
            emu.reject_next(503, count=10_000)
            halted = asyncio.Event()
            r.daemon.gate.subscribe(lambda armed, *_: None if armed else halted.set())
            await emu.drop_all()
            await asyncio.wait_for(halted.wait(), 5)
            async with http.get(f"{url}/health") as resp:
                body = await resp.json()
                assert resp.status == 503
            assert "disconnected" in body["trading"]["halt_reasons"]
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                assert "bridge_feed_connects_total" in await resp.text()
    finally:
        await r.stop()


async def test_alerts_on_start_key_expiry_and_stop(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """A webhook receives `started`, then `trading_halted` and `stopping` when the feed key expires;
    sending never blocks the daemon's own fatal exit."""
    emu, fake = servers
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook/secret-token-123", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        top = f'alerts: {{webhook: {{url: "http://127.0.0.1:{port}/hook/secret-token-123"}}}}\n'
        r = Running(Daemon(make_config(emu, fake, tmp_path, dry_run=True, top=top)))
        await r.armed()
        first = await asyncio.wait_for(received.get(), 5)
        assert first["event"] == "started"
        await emu.close_all(1000, "key_expired")
        from bridge.errors import CredentialsRejected

        with pytest.raises(CredentialsRejected):
            await asyncio.wait_for(r.task, 10)
        events = [(await asyncio.wait_for(received.get(), 5))["event"] for _ in range(2)]
        assert events == ["trading_halted", "stopping"]
    finally:
        await runner.cleanup()


async def test_sd_notify_ready_status_stopping(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd (NOTIFY_SOCKET set) the daemon sends READY=1 after start-up, STATUS= lines as the
    gate changes, STOPPING=1 at shutdown and, last, an empty STATUS= (no stale "halted: ..." left in
    systemctl status), as datagrams on a real AF_UNIX socket."""
    emu, fake = servers
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    loop = asyncio.get_running_loop()

    async def next_datagram() -> str:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        return data.decode()

    try:
        r = Running(Daemon(make_config(emu, fake, tmp_path, dry_run=True)))
        seen: list[str] = []
        while "READY=1" not in seen:
            seen.append(await next_datagram())
        while not any(s.startswith("STATUS=trading armed") for s in seen):
            seen.append(await next_datagram())
        await r.stop()
        while "STOPPING=1" not in seen:
            seen.append(await next_datagram())
        while seen[-1] != "STATUS=":  # the status line is cleared last, after shutdown
            seen.append(await next_datagram())
    finally:
        sock.close()
    assert seen.index("READY=1") < seen.index("STOPPING=1") < len(seen) - 1
