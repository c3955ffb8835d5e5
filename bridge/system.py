"""The composition root: builds the trading system from a Config, once, for every way bridge runs.

`Daemon` (live feed, real clock, ccxt venues), `bridge replay` (recorded stream, the file's clock,
in-memory venues) and `bridge demo` (through the daemon) all call `assemble()`; what differs between
them is passed in, never rebuilt. Data flows one way through what it builds:
feed queue -> Dispatcher -> StrategyRunner (one task per strategy) -> OrderRouter (gate, risk,
journal) -> venue. The feed itself is wired by the caller, which hands the gate to its supervisor.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bridge.aio import Sleep
from bridge.config import Config
from bridge.errors import ExchangeError
from bridge.feed.client import MAX_QUEUED
from bridge.feed.codec import Announcement
from bridge.feed.links import FeedLinks
from bridge.feed.recorder import Recorder
from bridge.feed.supervisor import NoStatusSink
from bridge.trading.balances import Balances
from bridge.trading.claims import MAX_WINDOW_S, SymbolClaims
from bridge.trading.dispatch import DEFAULT_MAX_CONCURRENT, Dispatcher, StrategyRunner, call_hook
from bridge.trading.exits import ExitAlerts, ExitManager
from bridge.trading.exposure import Exposure
from bridge.trading.fresh_start import FreshStartGuard
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.journal_retention import Retention
from bridge.trading.model import OrderOutcome
from bridge.trading.orders import OrderRouter
from bridge.trading.prices import PriceCache
from bridge.trading.risk import RiskLimits
from bridge.trading.strategy import Context, Strategy
from bridge.venues.exchange import Exchange

log = structlog.get_logger(__name__)

RouterFactory = Callable[..., OrderRouter]
# A control-socket command: the request's JSON object in, the answer's out ({"ok": ..., ...}).
ControlHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class TradingSystem:
    """Everything downstream of the feed queue, built and connected; the caller runs the tasks."""

    gate: TradingGate
    journal: Journal
    exchanges: Mapping[str, Exchange]
    router: OrderRouter
    prices: PriceCache
    balances: Balances
    exits: ExitManager
    exposure: Exposure
    runners: list[StrategyRunner]
    dispatcher: Dispatcher
    queue: asyncio.Queue[Announcement]
    retention: Retention  # journal.retention_days: the daemon runs it (prunes at start, then daily)
    risk: RiskLimits | None = None  # a reload sets new limits on it (bridge.daemon_reload)
    claims: SymbolClaims | None = None  # shared by every strategy's context, a reloaded one's too


async def assemble(
    config: Config,
    *,
    strategies: list[Strategy],
    journal: Journal,
    exchanges: Mapping[str, Exchange],
    gate: TradingGate,
    queue: asyncio.Queue[Announcement] | None = None,
    dry_run: bool | None = None,
    sleep: Sleep = asyncio.sleep,
    clock_ns: Callable[[], int] = time.time_ns,
    on_outcome: Callable[[OrderOutcome], None] | None = None,
    router_factory: RouterFactory = OrderRouter,
    hook_timeout: float | None = None,
    refresh_prices: bool = True,
    alerts: ExitAlerts | None = None,
) -> TradingSystem:
    """Wire risk limits, router, exits, one context and runner per strategy, and the dispatcher.

    Each strategy's `on_start` runs here, behind the same safety wrapper as every plugin call: a
    strategy whose `on_start` fails (or exceeds `hook_timeout`) is logged and left out, the others run.
    `dry_run` defaults to the config's; replay passes True whatever the config says. `refresh_prices`
    False keeps no prices warm (replay: the stream's price lines are the venue); the caller runs
    `system.prices.run(stop)` otherwise. Balances: live, the caller runs `system.balances.run(stop)`;
    paper, the journal's paper book (seeded from `trading.paper_balance`), moved by paper fills."""
    paper = config.trading.dry_run if dry_run is None else dry_run

    def journal_writable(ok: bool, error: str | None) -> None:
        # Nothing may be sent that the journal did not record: halt entries and exits until it works.
        if ok:
            gate.resume("journal_unwritable")
        else:
            gate.halt("journal_unwritable")

    journal.health.listener = journal_writable
    exposure = Exposure(config.trading, journal, gate, clock_ns=clock_ns)
    price_max_ages = {s.name: s.price_max_age for s in config.strategies}
    max_concurrent = {s.name: s.max_concurrent for s in config.strategies}
    prices = PriceCache(
        exchanges,
        max_age=config.trading.price_max_age,
        refresh_interval=config.trading.price_refresh if refresh_prices else 0.0,
        clock_ns=clock_ns,
    )
    balances = Balances(
        exchanges, paper=config.trading.paper_balance if paper else None, journal=journal if paper else None
    )

    def outcome_listener(outcome: OrderOutcome) -> None:
        balances.on_outcome(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    risk = RiskLimits(
        config.trading, journal, clock_ns=clock_ns, exchanges=config.exchanges, exposure=exposure
    )
    router = router_factory(
        gate=gate,
        risk=risk,
        journal=journal,
        exchanges=exchanges,
        dry_run=paper,
        prices=prices,
        sleep=sleep,
        on_outcome=outcome_listener,
        fresh_start=FreshStartGuard(
            journal.started_empty and not paper, clock_ns(), config.trading.max_event_age, clock_ns=clock_ns
        ),
    )
    exits = ExitManager(
        journal=journal,
        router=router,
        exchanges=exchanges,
        prices=prices,
        gate=gate,
        dry_run=paper,
        alerts=alerts,
        exposure=exposure,
        clock_ns=clock_ns,
    )
    claims = SymbolClaims(journal.buys_since(clock_ns() - int(MAX_WINDOW_S * 1e9)), clock_ns=clock_ns)
    runners: list[StrategyRunner] = []
    for strategy in strategies:
        ctx = Context(
            strategy=strategy.name,
            router=router,
            exchanges=exchanges,
            dry_run=paper,
            claims=claims,
            price_max_age=price_max_ages.get(strategy.name),
            balances=balances,
        )
        if await call_hook(strategy.name, "on_start", strategy.on_start(ctx), within=hook_timeout):
            runners.append(
                StrategyRunner(
                    strategy,
                    ctx,
                    max_concurrent=max_concurrent.get(strategy.name, DEFAULT_MAX_CONCURRENT),
                    deadline=config.trading.strategy_deadline,
                )
            )
    source: asyncio.Queue[Announcement] = asyncio.Queue(MAX_QUEUED) if queue is None else queue
    return TradingSystem(
        gate=gate,
        journal=journal,
        exchanges=exchanges,
        router=router,
        prices=prices,
        balances=balances,
        exits=exits,
        exposure=exposure,
        runners=runners,
        dispatcher=Dispatcher(
            source,
            runners,
            journal,
            max_clock_skew=config.trading.max_clock_skew,
            max_tickers=config.trading.max_tickers_per_announcement,
            clock_ns=clock_ns,
            link_ok=gate.link_healthy,
        ),
        queue=source,
        retention=Retention(journal, config.journal.retention_days, clock_ns=clock_ns),
        risk=risk,
        claims=claims,
    )


def control_handlers(system: TradingSystem) -> dict[str, ControlHandler]:
    """What the daemon's control socket answers (`bridge close`, `bridge resume`)."""

    async def close(request: dict[str, Any]) -> dict[str, Any]:
        symbol, exchange = request.get("symbol"), request.get("exchange")
        if not isinstance(symbol, str) or not symbol or not (exchange is None or isinstance(exchange, str)):
            return {
                "ok": False,
                "error": 'close: expected {"symbol": "ABC/USDT", "exchange": null or a name}',
            }
        ok, text = system.exits.request_close(symbol, exchange)
        return {"ok": True, "message": text} if ok else {"ok": False, "error": text}

    async def resume(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("reason") != "loss_limit":
            return {
                "ok": False,
                "error": "resume: only loss_limit waits for a human; the others lift by themselves",
            }
        was = system.exposure.resume()
        text = "loss_limit lifted until 00:00 UTC" if was else "loss_limit was not halting trading"
        log.warning("risk.loss_limit_resumed", by="control socket", was_halted=was)
        return {"ok": True, "message": text}

    return {"close": close, "resume": resume}


async def stop_strategies(system: TradingSystem, *, within: float | None = None) -> None:
    """Each running strategy's `on_stop`, behind the safety wrapper (a failing hook is logged)."""
    for runner in system.runners:
        await call_hook(runner.name, "on_stop", runner.strategy.on_stop(), within=within)


def market_snapshot(
    exchanges: Mapping[str, Exchange], prices: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float | None]]:
    """Active markets of each started exchange with their last price (None when unknown): what a
    recording starts with, so its replay knows which symbols traded and at what price."""
    return {
        ex.id: {s: prices.get(ex.id, {}).get(s) for s, m in ex.ccxt.markets.items() if m.get("active", True)}
        for ex in exchanges.values()
    }


async def snapshot_markets(config: Config) -> dict[str, dict[str, float | None]]:
    """Active spot markets and last prices of every configured exchange (one tickers request each),
    for `bridge record --markets`. An exchange that cannot be reached is logged and left out."""
    out: dict[str, dict[str, float | None]] = {}
    for ex_id, ex_cfg in config.exchanges.items():
        ex = Exchange(ex_id, ex_cfg, dry_run=True)
        try:
            await ex.start(check_keys=False)
            out.update(market_snapshot({ex_id: ex}, {ex_id: await ex.last_prices()}))
        except ExchangeError as exc:
            log.warning("record.markets_failed", exchange=ex_id, error=str(exc))
        finally:
            await ex.close()
    return out


async def record(
    config: Config, out: Path, *, stop: asyncio.Event, max_bytes: int, keep: int, markets: bool
) -> None:
    """`bridge record`: hold the feed (reconnecting as the daemon does) and record every frame until
    `stop`. With `markets`, first snapshot each configured exchange's markets and prices, so a replay
    of the recording knows what traded and at what price. Nothing trades: the feed reports its state
    to no gate, and announcements are read off the queue and dropped."""
    recorder = Recorder(out, max_bytes=max_bytes, keep=keep)
    if markets:
        recorder.note(time.time_ns(), {"markets": await snapshot_markets(config)})
    queue: asyncio.Queue[Announcement] = asyncio.Queue(MAX_QUEUED)
    supervisor = FeedLinks.build(
        config.feed,
        lambda _: NoStatusSink(),
        queue,
        on_frame_for=lambda link: functools.partial(recorder.frame, link=link),
    )
    writer_stop = asyncio.Event()
    writer = asyncio.create_task(recorder.run(writer_stop), name="recorder")
    feed = asyncio.create_task(supervisor.run(), name="feed-supervisor")
    drain = asyncio.create_task(_discard(queue), name="discard")
    try:
        await asyncio.wait({feed, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        supervisor.stop()
        await asyncio.gather(feed, return_exceptions=True)
        drain.cancel()
        writer_stop.set()
        await asyncio.gather(writer, drain, return_exceptions=True)
    if feed.done() and not feed.cancelled() and feed.exception() is not None:
        raise feed.exception()  # type: ignore[misc]  # key rejected, config: exit code as for run


async def _discard(queue: asyncio.Queue[Announcement]) -> None:
    while True:
        await queue.get()
