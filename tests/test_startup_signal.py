"""SIGTERM while an exchange hangs at warm-up: the daemon stops within 5 s, cleanly (run() returns: exit
0), with nothing half-started left behind."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.sim.emulator import FeedEmulator
from tests.test_daemon import KEY


async def test_stop_during_a_hanging_exchange_warm_up(tmp_path: Path) -> None:
    """The exchange accepts connections and never answers (markets never load). A stop request
    ends run() normally within 5 s; the journal is closed and the exchanges released."""
    reached = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        reached.set()
        await reader.read()  # never answers; returns when the client goes away

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    urls = {name: base + "/api/v3" for name in ("public", "private", "sapi", "v1")}
    ccxt = {"urls": {"api": urls}, "timeout": 60_000, "timeout_on_exit": 0}
    try:
        async with FeedEmulator(api_keys={KEY}) as emu:
            cfg = config_mod.loads(
                f"feed: {{url: {emu.url}, api_key: {KEY}}}\n"
                f"exchanges: {{binance: {{ccxt: {json.dumps(ccxt)}}}}}\n"
                f"trading: {{dry_run: true}}\nstate_dir: {tmp_path}\n",
                source="test.yaml",
            )
            daemon = Daemon(cfg, strategies=[])
            run = asyncio.create_task(daemon.run())
            await asyncio.wait_for(reached.wait(), 10)
            began = time.monotonic()
            daemon.request_stop()
            await asyncio.wait_for(run, 5)  # returns: no error, exit 0
            assert time.monotonic() - began < 5
            assert daemon.journal is None  # closed
            assert not daemon.ready.is_set()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
