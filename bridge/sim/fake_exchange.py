"""The fake exchanges' public face: the names tests, the demo and the benchmark import, and the
`bridge fake-exchange` entry point. FakeBinance is in fake_binance.py, the shared part in fake_venue.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from bridge.sim.fake_binance import DEFAULT_API_KEY, DEFAULT_SECRET, RECV_WINDOW_MS, FakeBinance
from bridge.sim.fake_venue import DEFAULT_MARKETS, MIN_NOTIONAL, FakeVenue, FaultKind, ReceivedOrder

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MARKETS",
    "DEFAULT_SECRET",
    "MIN_NOTIONAL",
    "RECV_WINDOW_MS",
    "FakeBinance",
    "FakeVenue",
    "FaultKind",
    "ReceivedOrder",
    "run_fake_exchange",
]

log = structlog.get_logger(__name__)


async def run_fake_exchange(
    host: str,
    port: int,
    stop_event: asyncio.Event,
    *,
    on_ready: Callable[[FakeBinance], None] | None = None,
) -> None:
    """Serve a FakeBinance until `stop_event` is set (the demo and benchmark CLI entry point).
    `on_ready` gets the running fake, e.g. to print its URL and `ccxt_config()`."""
    async with FakeBinance(host=host, port=port) as fake:
        log.info("fake_exchange.serving", url=fake.url)
        if on_ready is not None:
            on_ready(fake)
        await stop_event.wait()
