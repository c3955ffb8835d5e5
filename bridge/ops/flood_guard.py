"""The flood guard: at most `limit` log records per (event, logger) per window, the rest counted and
summarised, so a reconnect storm cannot push the lines that matter out of the journal."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Suppressed:
    """`count` records of `event` from `logger` were dropped in one window of `window_s` seconds."""

    event: str
    logger: str
    count: int
    window_s: float


class _Window:
    __slots__ = ("seen", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.seen = 0


class FloodGuard:
    """Lets at most `limit` records per key through in each `window` seconds and counts the rest, so a
    reconnect storm cannot push the lines that matter out of the journal. Not thread-safe: the
    handler calls it under its lock."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 1024) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}
        self._owed: list[Suppressed] = []
        self._next_sweep = -math.inf

    def admit(self, key: tuple[str, str], now: float) -> bool:
        """Count one record for `key`; False if it must be dropped."""
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.window:
            self._close(key, window)
            window = None
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._sweep(now)
                if len(self._windows) >= self._max_keys:
                    return True  # too many distinct keys to track: fail open, never drop blindly
            window = self._windows[key] = _Window(now)
        window.seen += 1
        return window.seen <= self.limit

    def due(self, now: float) -> list[Suppressed]:
        """Summaries of windows that have ended with records dropped (checked about once a second)."""
        if now >= self._next_sweep:
            self._sweep(now)
        owed, self._owed = self._owed, []
        return owed

    def drain(self) -> list[Suppressed]:
        """Every summary still owed, windows open or not (the handler is closing)."""
        for key, window in list(self._windows.items()):
            self._close(key, window)
        owed, self._owed = self._owed, []
        return owed

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + min(1.0, self.window)
        for key, window in list(self._windows.items()):
            if now - window.started >= self.window:
                self._close(key, window)

    def _close(self, key: tuple[str, str], window: _Window) -> None:
        del self._windows[key]
        if window.seen > self.limit:
            self._owed.append(Suppressed(key[0], key[1], window.seen - self.limit, self.window))
