"""Watches this host's clock against the venues' (the offset each exchange measured): a warning and an
alert past half of trading.max_clock_offset, the `clock_offset` halt past all of it, lifted once the
offset is back within. Checked at start and hourly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol

import structlog

from bridge.aio import sleep_or_stop
from bridge.trading.gate import TradingGate

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 3600.0

State = Literal["ok", "warning", "halted"]


class ClockSource(Protocol):
    """What ClockWatch needs of an exchange (bridge.venues.Exchange is one)."""

    @property
    def time_offset_ms(self) -> int | None:
        """Our clock minus the venue's, in ms; None while not measured (or the venue cannot tell)."""
        ...

    async def sync_clock(self) -> None:
        """Re-measure the clock offset (one request; no market reload)."""
        ...


def worst_offset(exchanges: Mapping[str, ClockSource]) -> tuple[str, int] | None:
    """The exchange whose clock is furthest from ours, and its offset in ms; None if none is measured."""
    measured = [(name, ex.time_offset_ms) for name, ex in exchanges.items()]
    known = [(name, offset) for name, offset in measured if offset is not None]
    return max(known, key=lambda item: abs(item[1])) if known else None


def classify(offset_ms: int, max_offset_s: float) -> State:
    """`halted` beyond max_offset_s, `warning` beyond half of it, else `ok`."""
    limit_ms = max_offset_s * 1000
    if abs(offset_ms) > limit_ms:
        return "halted"
    if abs(offset_ms) > limit_ms / 2:
        return "warning"
    return "ok"


class ClockWatch:
    """Turns measured clock offsets into a log line, an alert and the `clock_offset` halt.

    `check()` reads the offsets the exchanges hold (no I/O); `run(stop)` checks at once, then every
    `interval_s` re-measures (through `sync_clock`, unless `remeasure` is off because the market
    refresh already re-measures often enough) and checks again, until `stop` is set. `alert(text,
    **fields)` is called each time the state gets worse (ok -> warning -> halted)."""

    def __init__(
        self,
        exchanges: Mapping[str, ClockSource],
        gate: TradingGate,
        *,
        max_offset_s: float,
        alert: Callable[..., None] | None = None,
        interval_s: float = CHECK_INTERVAL_S,
        remeasure: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._exchanges = exchanges
        self._gate = gate
        self._max_offset_s = max_offset_s
        self._alert = alert
        self._interval_s = interval_s
        self._remeasure = remeasure
        self._sleep = sleep
        self.state: State = "ok"

    def check(self) -> State:
        """Compare the worst measured offset with trading.max_clock_offset; halt, resume, warn."""
        worst = worst_offset(self._exchanges)
        if worst is None:
            log.info("clock.offset_unknown", exchanges=sorted(self._exchanges))
            return self.state  # nothing measured: nothing learnt, the last verdict stands
        exchange, offset_ms = worst
        state = classify(offset_ms, self._max_offset_s)
        fields = {
            "exchange": exchange,
            "offset_ms": offset_ms,
            "max_offset_ms": round(self._max_offset_s * 1000),
        }
        if state == "ok":
            log.info("clock.offset", state=state, **fields)
        else:
            log.warning("clock.offset", state=state, **fields)
        worse = _RANK[state] > _RANK[self.state]
        self.state = state
        if state == "halted":
            self._gate.halt("clock_offset")
        else:
            self._gate.resume("clock_offset")
        if worse and self._alert is not None:
            verdict = "trading halted" if state == "halted" else "trading goes on"
            text = f"clock off {exchange}'s by {offset_ms} ms (limit {fields['max_offset_ms']} ms): {verdict}"
            try:
                self._alert(text, **fields)
            except Exception:  # an alert hook must not stop the watch
                log.exception("clock.alert_failed")
        return state

    async def remeasure(self) -> None:
        """Re-measure every exchange's offset at once; one that fails keeps its last measurement."""
        # A venue down at boot (not started) has nothing to re-measure until the daemon starts it.
        names = [n for n, ex in self._exchanges.items() if getattr(ex, "started", True)]
        outcomes = await asyncio.gather(
            *(self._exchanges[name].sync_clock() for name in names), return_exceptions=True
        )
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("clock.remeasure_failed", exchange=name, error=type(outcome).__name__)

    async def run(self, stop: asyncio.Event, *, check_first: bool = True) -> None:
        """Check now (unless the caller just did: `check_first=False`), then every interval until
        `stop` is set. Never raises (but for cancellation)."""
        if check_first:
            self.check()
        while not stop.is_set():
            if await sleep_or_stop(self._sleep, self._interval_s, stop):
                return
            if self._remeasure:
                await self.remeasure()
            self.check()


_RANK: dict[State, int] = {"ok": 0, "warning": 1, "halted": 2}
