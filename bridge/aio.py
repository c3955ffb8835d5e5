"""Small asyncio helpers shared by the background tasks (status line, watchdog, alerts)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


async def sleep_or_stop(sleep: Sleep, delay: float, stop: asyncio.Event) -> bool:
    """Sleep `delay` seconds with the (injectable) `sleep`, or until `stop` is set; True if stopped."""
    if stop.is_set():
        return True
    sleeper = asyncio.ensure_future(sleep(delay))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
        await asyncio.gather(sleeper, stopper, return_exceptions=True)
    return stop.is_set()
