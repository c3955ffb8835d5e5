"""StrategyRunner: each announcement in its own task, bounded per strategy, in arrival order; nothing
waits behind a hung order. Real runners, contexts, routers and journals; the tests wait on events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from bridge import config, telemetry
from bridge.config import ExchangeConfig, TradingConfig
from bridge.errors import ConfigError
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.dispatch import DEFAULT_MAX_CONCURRENT, StrategyRunner
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import Announcement, OrderOutcome
from bridge.trading.orders import OrderRouter
from bridge.trading.risk import RiskLimits
from bridge.trading.strategy import Context, Strategy
from bridge.venues.exchange import Exchange
from tests.factories import announcement

WAIT = 5.0  # safety bound only: every wait below ends on an event long before


class Scripted(Strategy):
    """Handles an announcement by its ticker: records when it starts and ends, blocks until the test
    releases it (standing in for a hung order), raises for the tickers in `fail`."""

    def __init__(self, *, block: bool = True, fail: frozenset[str] = frozenset()) -> None:
        super().__init__("scripted", None)
        self.block = block
        self.fail = fail
        self.events: list[str] = []  # "start ABC", "end ABC", "cancelled ABC", in the order they happen
        self._started: dict[str, asyncio.Event] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._release: dict[str, asyncio.Event] = {}

    def started(self, ticker: str) -> asyncio.Event:
        return self._started.setdefault(ticker, asyncio.Event())

    def ended(self, ticker: str) -> asyncio.Event:
        return self._ended.setdefault(ticker, asyncio.Event())

    def release(self, ticker: str) -> None:
        self._release.setdefault(ticker, asyncio.Event()).set()

    def starts(self) -> list[str]:
        return [e.split()[1] for e in self.events if e.startswith("start ")]

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        assert ctx.announcement is announcement
        ticker = announcement.tickers[0]
        self.events.append(f"start {ticker}")
        self.started(ticker).set()
        try:
            if ticker in self.fail:
                raise RuntimeError(f"boom in {ticker}")
            if self.block:
                await self._release.setdefault(ticker, asyncio.Event()).wait()
        except asyncio.CancelledError:
            self.events.append(f"cancelled {ticker}")
            raise
        finally:
            self.events.append(f"end {ticker}")
            self.ended(ticker).set()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[OrderRouter]:
    journal = Journal.open(tmp_path, dry_run=True)
    try:
        yield OrderRouter(
            gate=TradingGate(),
            risk=RiskLimits(TradingConfig(), journal),
            journal=journal,
            exchanges={},
            dry_run=True,
        )
    finally:
        journal.close()


def runner_for(strategy: Strategy, router: OrderRouter, **kwargs: int) -> StrategyRunner:
    ctx = Context(strategy=strategy.name, router=router, exchanges={}, dry_run=True)
    return StrategyRunner(strategy, ctx, **kwargs)


@asynccontextmanager
async def running(runner: StrategyRunner) -> AsyncIterator[asyncio.Task[None]]:
    """The runner's task, as the daemon runs it; cancelled and awaited on the way out (shutdown)."""
    task = asyncio.create_task(runner.run(), name=f"strategy:{runner.name}")
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def announcements(*tickers: str) -> list[Announcement]:
    return [announcement(t, title=f"listing {t}") for t in tickers]


async def started(strategy: Scripted, *tickers: str) -> None:
    await asyncio.wait_for(asyncio.gather(*(strategy.started(t).wait() for t in tickers)), WAIT)


def in_flight() -> list[asyncio.Task[object]]:
    """Announcement tasks still pending anywhere on the loop."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("strategy:scripted:") and not t.done()]


@contextmanager
def counted_errors(strategy: str) -> Iterator[list[float]]:
    """bridge_strategy_errors_total for `strategy` gained over the block: [delta] once it ends."""
    before = telemetry.value("bridge_strategy_errors_total", strategy=strategy)
    out: list[float] = []
    yield out
    out.append(telemetry.value("bridge_strategy_errors_total", strategy=strategy) - before)


async def test_a_hung_announcement_does_not_hold_the_next(router: OrderRouter) -> None:
    """The first announcement's handler blocks (a hung order); the second starts at once, while the
    first is still blocked, and finishes without waiting for it."""
    strategy = Scripted()
    runner = runner_for(strategy, router)
    first, second = announcements("ABC", "DEF")
    async with running(runner):
        runner.put(first)
        await started(strategy, "ABC")
        runner.put(second)
        await started(strategy, "DEF")
        assert "end ABC" not in strategy.events  # the first is still blocked
        assert runner.running == 2 and runner.queue.qsize() == 0
        strategy.release("DEF")
        await asyncio.wait_for(strategy.ended("DEF").wait(), WAIT)
        assert "end ABC" not in strategy.events
        strategy.release("ABC")
        await asyncio.wait_for(runner.queue.join(), WAIT)
    assert strategy.events == ["start ABC", "start DEF", "end DEF", "end ABC"]
    assert runner.handled == 2 and runner.errors == 0


async def test_past_the_bound_announcements_wait_and_start_in_arrival_order(router: OrderRouter) -> None:
    """max_concurrent=2: the third and fourth announcements wait in the queue until a running one
    finishes (whichever it is), and start in arrival order."""
    strategy = Scripted()
    runner = runner_for(strategy, router, max_concurrent=2)
    async with running(runner):
        for a in announcements("A", "B", "C", "D"):
            runner.put(a)
        await started(strategy, "A", "B")
        assert runner.running == 2 and runner.queue.qsize() == 2  # C and D wait: none dropped
        assert strategy.starts() == ["A", "B"]
        strategy.release("B")  # the second finishes first: the next in line starts, not a later one
        await started(strategy, "C")
        assert strategy.events[-2:] == ["end B", "start C"]
        assert runner.running == 2 and runner.queue.qsize() == 1
        strategy.release("A")
        await started(strategy, "D")
        assert strategy.events[-2:] == ["end A", "start D"]
        strategy.release("C")
        strategy.release("D")
        await asyncio.wait_for(runner.queue.join(), WAIT)
    assert strategy.starts() == ["A", "B", "C", "D"]
    assert runner.handled == 4


async def test_one_at_a_time_with_max_concurrent_1(router: OrderRouter) -> None:
    """max_concurrent=1 is the old behaviour: each announcement starts after the previous ended."""
    strategy = Scripted(block=False)
    runner = runner_for(strategy, router, max_concurrent=1)
    async with running(runner):
        for a in announcements("A", "B", "C"):
            runner.put(a)
        await asyncio.wait_for(runner.queue.join(), WAIT)
    assert strategy.events == ["start A", "end A", "start B", "end B", "start C", "end C"]


async def test_an_exception_does_not_affect_the_announcement_in_flight(router: OrderRouter) -> None:
    """One announcement's handler raises while another is in flight: the failure is logged and
    counted (errors, bridge_strategy_errors_total); the other runs on and ends normally."""
    strategy = Scripted(fail=frozenset({"BAD"}))
    runner = runner_for(strategy, router)
    with counted_errors("scripted") as delta:
        async with running(runner):
            runner.put(announcement("OK", title="listing OK"))
            await started(strategy, "OK")
            runner.put(announcement("BAD", title="listing BAD"))
            runner.put(announcement("NEXT", title="listing NEXT"))
            await started(strategy, "BAD", "NEXT")
            strategy.release("NEXT")
            assert "end BAD" in strategy.events and "end OK" not in strategy.events
            strategy.release("OK")
            await asyncio.wait_for(runner.queue.join(), WAIT)
    assert delta == [1.0]
    assert runner.errors == 1 and runner.handled == 3
    assert strategy.events.index("end OK") > strategy.events.index("end BAD")
    assert "cancelled OK" not in strategy.events


async def test_join_and_idle_mean_everything_handed_over_is_handled(router: OrderRouter) -> None:
    """`idle` is cleared as soon as an announcement is handed over (even before `run` starts) and set
    again only when nothing is queued or running; `queue.join()` returns only once every task ended."""
    strategy = Scripted()
    runner = runner_for(strategy, router, max_concurrent=2)
    assert runner.idle.is_set()
    a, b, c = announcements("A", "B", "C")
    runner.put(a)
    assert not runner.idle.is_set() and runner.queue.qsize() == 1 and runner.running == 0
    async with running(runner):
        await started(strategy, "A")
        runner.put(b)
        runner.put(c)
        await started(strategy, "B")
        joined = asyncio.create_task(runner.queue.join())
        idle = asyncio.create_task(runner.idle.wait())
        strategy.release("A")
        await started(strategy, "C")  # A's task has ended: its slot went to C
        assert runner.handled == 1 and not runner.idle.is_set()
        strategy.release("B")
        strategy.release("C")
        await asyncio.wait_for(joined, WAIT)
        assert all(f"end {t}" in strategy.events for t in "ABC")
        assert runner.running == 0 and runner.handled == 3 and in_flight() == []
        await asyncio.wait_for(idle, WAIT)
        assert runner.idle.is_set()
        runner.put(announcement("D", title="listing D"))  # busy again
        assert not runner.idle.is_set()
        await started(strategy, "D")
        strategy.release("D")
        await asyncio.wait_for(runner.idle.wait(), WAIT)


async def test_shutdown_cancels_blocked_handlers(router: OrderRouter) -> None:
    """Cancelling the runner (daemon shutdown, end of replay) cancels every announcement in flight
    and waits for them; what was still queued never starts; no task is left pending."""
    strategy = Scripted()
    runner = runner_for(strategy, router, max_concurrent=2)
    task = asyncio.create_task(runner.run(), name="strategy:scripted")
    for a in announcements("A", "B", "C"):
        runner.put(a)
    await started(strategy, "A", "B")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight() == []
    assert sorted(e for e in strategy.events if e.startswith("cancelled")) == ["cancelled A", "cancelled B"]
    assert strategy.starts() == ["A", "B"]  # C was never started
    assert runner.running == 0 and runner.handled == 2 and runner.errors == 0
    assert runner.queue.qsize() == 1


def test_max_concurrent_must_be_positive(router: OrderRouter) -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        runner_for(Scripted(), router, max_concurrent=0)
    assert runner_for(Scripted(), router).max_concurrent == DEFAULT_MAX_CONCURRENT == 8


def test_max_concurrent_in_the_config() -> None:
    """`strategies[].max_concurrent`: default 8 (the runner's), a positive integer or a config error."""
    text = "feed: {api_key: k}\nstrategies:\n  - {name: a, module: strategies.log_only%s}\n"
    assert config.loads(text % "").strategies[0].max_concurrent == DEFAULT_MAX_CONCURRENT
    assert config.loads(text % ", max_concurrent: 2").strategies[0].max_concurrent == 2
    for bad, problem in (("0", "must be positive, got 0"), ("two", "expected an integer")):
        with pytest.raises(ConfigError, match=f"strategies\\[0\\].max_concurrent: {problem}"):
            config.loads(text % f", max_concurrent: {bad}", "config.yaml")


# ----- end to end: the real order router against the fake exchange -----


class Buyer(Strategy):
    """Buys each announced ticker for 20 USDT (a market order: no price lookup on the way)."""

    def __init__(self) -> None:
        super().__init__("buyer", None)
        self.outcomes: dict[str, OrderOutcome] = {}
        self.done: dict[str, asyncio.Event] = {}

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        symbol = f"{announcement.tickers[0]}/USDT"
        done = self.done.setdefault(symbol, asyncio.Event())
        self.outcomes[symbol] = await ctx.buy("binance", symbol, cost=20, max_slippage=None)
        done.set()


async def test_second_announcement_orders_while_the_first_order_hangs(tmp_path: Path) -> None:
    """Through the real OrderRouter, ccxt and FakeBinance: the first announcement's order hangs (the
    exchange never answers); the second announcement's order is placed within milliseconds, long
    before the first could time out."""
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]) as fake:
        cfg = ExchangeConfig(
            api_key=Secret(fake.api_key), secret=Secret(fake.secret), ccxt=fake.ccxt_config()
        )
        exchange = Exchange("binance", cfg, dry_run=False)
        await exchange.start(check_keys=False)
        journal = Journal.open(tmp_path, dry_run=False)
        try:
            gate = TradingGate()
            gate.resume("starting")
            gate.resume("disconnected")
            exchanges = {"binance": exchange}
            router = OrderRouter(
                gate=gate,
                risk=RiskLimits(TradingConfig(dry_run=False), journal),
                journal=journal,
                exchanges=exchanges,
                dry_run=False,
            )
            strategy = Buyer()
            ctx = Context(strategy="buyer", router=router, exchanges=exchanges, dry_run=False)
            runner = StrategyRunner(strategy, ctx)
            fake.fail_next_order("timeout_after")  # created, then no answer until the fake stops
            hung, second = announcements("ABC", "DEF")
            async with running(runner):
                runner.put(hung)
                await asyncio.wait_for(fake.wait_for_orders(1), WAIT)  # the first order is out, hanging
                began = time.perf_counter()
                runner.put(second)
                done = strategy.done.setdefault("DEF/USDT", asyncio.Event())
                await asyncio.wait_for(done.wait(), WAIT)
                elapsed = time.perf_counter() - began
                assert strategy.outcomes["DEF/USDT"].status == "placed", strategy.outcomes
                assert "ABC/USDT" not in strategy.outcomes  # still hanging
                assert runner.running == 1
            # Leaving `running` cancelled the hung order's task, as shutdown does.
            assert runner.running == 0 and "ABC/USDT" not in strategy.outcomes
            assert [o.params["symbol"] for o in fake.orders] == ["ABCUSDT", "DEFUSDT"]
            assert elapsed < 0.25, f"the second order took {elapsed * 1000:.0f} ms"
        finally:
            await exchange.close()
            journal.close()
