"""Waiting on a log event: a handler that keeps the structlog events of one name (raw event dicts) and
sets an asyncio.Event at each, so a test waits for the line instead of sleeping or polling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class EventProbe(logging.Handler):
    """Keeps the structlog events named `name` (raw event dicts) and sets `seen` at each."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.name_ = name
        self.events: list[dict[str, Any]] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict) and record.msg.get("event") == self.name_:
            self.events.append(record.msg)
            self.seen.set()


@contextmanager
def probing(*names: str, logger: str = "bridge.trading.dispatch") -> Iterator[dict[str, EventProbe]]:
    """An EventProbe per event name on `logger` ("" for the root logger), at DEBUG, for the block."""
    target = logging.getLogger(logger)
    probes = {name: EventProbe(name) for name in names}
    level = target.level
    target.setLevel(logging.DEBUG)
    for probe in probes.values():
        target.addHandler(probe)
    try:
        yield probes
    finally:
        for probe in probes.values():
            target.removeHandler(probe)
        target.setLevel(level)
