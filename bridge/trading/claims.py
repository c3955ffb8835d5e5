"""One position per coin, however it is announced: a strategy claims (exchange, symbol) before its
first await, so two announcements of the same coin (Upbit, then Bithumb; a notice and its update)
a millisecond apart cannot both buy it within the claim's window. Claims are rebuilt from the
journal's buys at start, so a restart does not forget what was bought.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

# The longest window a strategy may ask for; the journal's buys this far back are loaded at start.
MAX_WINDOW_S = 30 * 86400.0


class SymbolClaims:
    def __init__(
        self,
        bought: Iterable[tuple[str, str, str, int]] = (),
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """`bought`: (strategy, exchange, symbol, when_ns) of buys already made (from the journal)."""
        self._clock_ns = clock_ns
        self._claimed: dict[tuple[str, str, str], int] = {}
        for strategy, exchange, symbol, when_ns in bought:
            key = (strategy, exchange, symbol)
            self._claimed[key] = max(when_ns, self._claimed.get(key, 0))

    def claim(self, strategy: str, exchange: str, symbol: str, window_s: float) -> bool:
        """True, and the symbol is this strategy's for `window_s` seconds from now, unless it bought or
        claimed it within the last `window_s` seconds. Synchronous: no other task runs in between."""
        if not 0 < window_s <= MAX_WINDOW_S:
            raise ValueError(f"a claim window is in (0, {MAX_WINDOW_S:g}] seconds, got {window_s}")
        now = self._clock_ns()
        key = (strategy, exchange, symbol)
        last = self._claimed.get(key)
        if last is not None and now - last < window_s * 1e9:
            return False
        self._claimed[key] = now
        self._prune(now)
        return True

    def release(self, strategy: str, exchange: str, symbol: str) -> None:
        """Give a claim back when its buy did not happen (skipped, rejected, expired unfilled)."""
        self._claimed.pop((strategy, exchange, symbol), None)

    def _prune(self, now: int) -> None:
        if len(self._claimed) > 10_000:  # bounded memory: drop claims older than any window
            horizon = now - int(MAX_WINDOW_S * 1e9)
            self._claimed = {k: t for k, t in self._claimed.items() if t >= horizon}
