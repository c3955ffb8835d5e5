"""`bridge replay FILE.jsonl`: feed a recorded (or hand-written) stream through the configured
strategies, offline and in paper mode, with the event clock taken from the file, and report the
orders they would have placed. Deterministic: the same file and config give the same output.

The stream file is the one stream format (bridge/feed/stream_format.py, README "Stream files"):
frames as `bridge record` stores them, messages written by hand, markets and prices. Lines are
replayed in file order, which is the order the recorder received them in. A line without `t` takes
its announcement's detection time, else the previous line's time (with a warning: its time is a
guess). `link` names the feed link a frame came through when several ran at once; it is kept on the
event and plays no part in ordering or trading. In such a recording most announcements appear once per
link, perhaps with different dispatch timestamps: the dispatcher keeps the first arrival and drops the
others as duplicates (its key ignores timestamps), as it did live.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge.config import Config, ExchangeConfig
from bridge.feed import stream_format
from bridge.feed.codec import Announcement, DecodeError, TestAnnouncement, decode
from bridge.system import TradingSystem, assemble, stop_strategies
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import OrderOutcome, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.plugins import load_strategies
from bridge.trading.strategy import Strategy
from bridge.venues.exchange import Exchange
from bridge.venues.types import Market, OrderRequest, OrderResult, Quote, Side

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StreamEvent:
    t_ns: int
    frame: bytes | None = None
    price: tuple[str, str, float] | None = None  # exchange, symbol, price
    link: str | None = None  # the feed link a frame came through, if the recording names it


@dataclass
class Stream:
    events: list[StreamEvent]
    markets: dict[str, dict[str, float | None]]  # exchange -> symbol -> starting price (None: unknown)
    untimed: list[int] = field(default_factory=list)  # lines without a time of their own (warned)


def read_stream(path: Path) -> Stream:
    """Parse a stream file; a malformed line is a ConfigError naming the file and line, a newer format
    version a StreamVersionError. Lines without a time are logged once (`replay.missing_timestamps`)."""
    events: list[StreamEvent] = []
    markets: dict[str, dict[str, float | None]] = {}
    untimed: list[int] = []
    last_t = 0
    for line in stream_format.read(path).lines:
        if line.markets is not None:
            for ex_id, symbols in line.markets.items():
                markets.setdefault(ex_id, {}).update(symbols)
            continue
        t = line.t_ns
        detected = (line.message or {}).get("detectedTimestampUs")
        if t is None and isinstance(detected, int) and not isinstance(detected, bool):
            t = detected * 1000
        if t is None:
            untimed.append(line.lineno)
            t = last_t
        last_t = t
        events.append(StreamEvent(t, frame=line.frame, price=line.price, link=line.link))
    if untimed:
        log.warning(
            "replay.missing_timestamps",
            file=str(path),
            lines=len(untimed),
            first_line=untimed[0],
            hint="each takes the previous line's time: add a `t` (ns since the epoch) to time them",
        )
    return Stream(events, markets, untimed)


class ReplayClock:
    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


class ReplayExchange(Exchange):
    """An in-memory exchange for replay: markets and prices from the stream, no network, no ccxt."""

    def __init__(
        self, exchange_id: str, prices: dict[str, float | None], clock: Callable[[], int] = time.time_ns
    ) -> None:
        super().__init__(exchange_id, ExchangeConfig(), dry_run=True)
        self.prices = dict(prices)
        self._event_clock = clock

    async def start(self, *, check_keys: bool) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def ccxt(self) -> Any:
        return None

    @property
    def started(self) -> bool:
        return True  # in memory: up from the start

    def market(self, symbol: str) -> Market | None:
        if symbol not in self.prices or "/" not in symbol:
            return None
        base, quote = symbol.split("/", 1)
        return Market(symbol, symbol.replace("/", ""), base, quote, "spot", True, None, {})

    async def find_market(self, symbol: str) -> Market | None:
        return self.market(symbol)

    async def fetch_price(self, symbol: str) -> float | None:
        return self.prices.get(symbol)

    async def fetch_quote(self, symbol: str) -> Quote | None:
        """The stream's last price for the symbol, as of the file's clock (a stream has no book: the
        last price stands for bid and ask alike)."""
        price = self.prices.get(symbol)
        return None if price is None else Quote(symbol, None, None, price, self._event_clock())

    async def fetch_quotes(self) -> dict[str, Quote]:
        return {s: q for s in self.prices if (q := await self.fetch_quote(s)) is not None}

    def limit_terms(
        self,
        symbol: str,
        side: Side,
        *,
        cap_price: float,
        amount: float | None = None,
        cost: float | None = None,
    ) -> tuple[float, float] | None:
        """A stream knows no ticks or lots: the cap as is, the amount it buys for `cost`."""
        size = amount if amount is not None else (cost or 0.0) / cap_price
        return (size, cap_price) if size > 0 else None

    def format_client_order_id(self, base_id: str) -> str:
        return base_id

    async def create_order(self, req: OrderRequest) -> OrderResult:
        raise AssertionError("replay is paper only")  # pragma: no cover - the router never calls it


@dataclass
class ReplayRow:
    t_ns: int
    strategy: str
    outcome: OrderOutcome
    cost: float | None
    amount: float | None
    exit: str | None = None  # for exit sells: take_profit, stop_loss or time


class RecordingRouter(OrderRouter):
    """The real order router, noting every outcome for the report."""

    def __init__(self, *, rows: list[ReplayRow], clock: ReplayClock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows = rows
        self.clock = clock

    async def submit(self, **kwargs: Any) -> OrderOutcome:
        outcome = await super().submit(**kwargs)
        self.rows.append(
            ReplayRow(
                self.clock.now_ns, kwargs["strategy"], outcome, kwargs.get("cost"), kwargs.get("amount")
            )
        )
        return outcome

    def emit_exit(self, position: Position, reason: str, amount: float, outcome: OrderOutcome) -> None:
        self.rows.append(ReplayRow(self.clock.now_ns, position.strategy, outcome, None, amount, reason))
        super().emit_exit(position, reason, amount, outcome)


@dataclass
class ReplayReport:
    rows: list[ReplayRow] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)  # strategy -> announcements delivered
    errors: Counter[str] = field(default_factory=Counter)
    announcements: int = 0
    duplicates: int = 0
    test_announcements: int = 0
    bad_frames: int = 0

    def render(self) -> str:
        out = ["Orders (paper, replayed):"]
        out.append(
            f"  {'time (UTC)':<26} {'strategy':<14} {'symbol':<12} {'side':<4} {'cost':>9} {'amount':>12} {'price':>11}  result"
        )
        for row in self.rows:
            o = row.outcome
            price = o.result.average if o.result is not None else None
            amount = o.result.filled if o.result is not None and o.result.filled is not None else row.amount
            out.append(
                f"  {_iso(row.t_ns):<26} {row.strategy:<14} {o.symbol:<12} {o.side:<4} "
                f"{_num(row.cost):>9} {_num(amount):>12} {_num(price):>11}  "
                f"{o.status}{'' if o.reason is None else ': ' + o.reason}"
                f"{'' if row.exit is None else ' (exit: ' + row.exit + ')'}"
            )
        if not self.rows:
            out.append("  (none)")
        out.append("")
        out.append(
            f"Stream: {self.announcements} announcements, {self.duplicates} duplicates, "
            f"{self.test_announcements} test announcements, {self.bad_frames} bad frames"
        )
        out.append("Per strategy:")
        strategies = sorted(set(self.seen) | {r.strategy for r in self.rows})
        for name in strategies:
            mine = [r for r in self.rows if r.strategy == name]
            placed = sum(1 for r in mine if r.outcome.ok)
            reasons = Counter(r.outcome.reason or r.outcome.status for r in mine if not r.outcome.ok)
            skipped = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())) or "none"
            out.append(
                f"  {name}: {self.seen[name]} announcements, {placed} orders, "
                f"not placed: {skipped}, errors: {self.errors[name]}"
            )
        return "\n".join(out)


def _iso(t_ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.8g}"


async def replay(
    path: Path, config: Config, *, speed: float | None = None, strategies: list[Strategy] | None = None
) -> ReplayReport:
    """Replay `path` through the config's strategies. `speed` None replays as fast as possible;
    otherwise the gaps between events are slept through, divided by `speed`."""
    stream = read_stream(path)
    strategies = strategies if strategies is not None else load_strategies(config)
    clock = ReplayClock()
    exchanges = {
        ex_id: ReplayExchange(ex_id, stream.markets.get(ex_id, {}), clock) for ex_id in config.exchanges
    }
    for ex_id in stream.markets.keys() - exchanges.keys():
        exchanges[ex_id] = ReplayExchange(ex_id, stream.markets[ex_id], clock)
    report = ReplayReport()
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    with tempfile.TemporaryDirectory(prefix="bridge-replay-") as state:
        journal = Journal.open(Path(state), dry_run=True, clock_ns=clock)
        try:
            system = await assemble(
                config,
                strategies=strategies,
                journal=journal,
                exchanges=exchanges,
                gate=gate,
                dry_run=True,
                clock_ns=clock,
                refresh_prices=False,
                router_factory=functools.partial(RecordingRouter, rows=report.rows, clock=clock),
            )
            tasks = [asyncio.create_task(r.run(), name=f"strategy:{r.name}") for r in system.runners]
            try:
                previous: int | None = None
                for event in stream.events:
                    if speed is not None and previous is not None and event.t_ns > previous:
                        await asyncio.sleep((event.t_ns - previous) / 1e9 / speed)
                    previous = event.t_ns
                    clock.now_ns = event.t_ns
                    await _apply(event, exchanges, system, report)
                    await (
                        system.exits.check()
                    )  # at every event: price moves and time exits on the file's clock
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for runner in system.runners:
                report.seen[runner.name] = runner.handled
                report.errors[runner.name] = runner.errors
            report.duplicates = system.dispatcher.duplicates
            await stop_strategies(system)
        finally:
            journal.close()
    return report


async def _apply(
    event: StreamEvent, exchanges: dict[str, ReplayExchange], system: TradingSystem, report: ReplayReport
) -> None:
    if event.price is not None:
        ex_id, symbol, price = event.price
        exchanges.setdefault(ex_id, ReplayExchange(ex_id, {}, system.prices.clock_ns)).prices[symbol] = price
        return
    assert event.frame is not None
    try:
        message = decode(event.frame, max_bytes=1 << 20, received_ns=event.t_ns, received_mono_ns=0)
    except DecodeError:
        report.bad_frames += 1
        return
    if isinstance(message, TestAnnouncement):
        report.test_announcements += 1
        return
    if not isinstance(message, Announcement):
        return
    report.announcements += 1
    # The live dispatcher and runners, one task per strategy; the next event waits until every
    # strategy is done with this one, so the report is the same on every run.
    if system.dispatcher.dispatch(message):
        await asyncio.gather(*(r.queue.join() for r in system.runners))
