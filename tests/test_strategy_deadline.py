"""trading.strategy_deadline: a handler still running past it is logged once, counted and named in the
health snapshot, /health and the status line, and is neither cancelled nor freed of its slot. Real
runners, contexts, routers and journals; tests wait on events set when the report is made (the
deadline is a few milliseconds and the handler blocks on an event until the test releases it)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import config, telemetry
from bridge.config import HealthConfig
from bridge.errors import ConfigError
from bridge.ops.health import HealthServer, build_snapshot, run_status_log
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading import dispatch
from bridge.trading.dispatch import DEFAULT_STRATEGY_DEADLINE, StrategyRunner
from bridge.trading.gate import TradingGate
from bridge.trading.orders import OrderRouter
from bridge.trading.strategy import Context
from tests.log_probe import probing
from tests.test_daemon import make_config, servers, start
from tests.test_dispatch import Scripted, announcements, router, running, started

__all__ = ["router", "servers"]  # fixtures, used here by name

WAIT = 5.0  # safety bound only
DEADLINE = 0.005  # the handlers below block until released: they always overrun it


def runner_with(strategy: Scripted, router: OrderRouter, **kwargs: Any) -> StrategyRunner:
    ctx = Context(strategy=strategy.name, router=router, exchanges={}, dry_run=True)
    return StrategyRunner(strategy, ctx, **kwargs)


def exceeded(strategy: str) -> float:
    return telemetry.value("bridge_strategy_deadline_exceeded_total", strategy=strategy)


def stuck_gauge(strategy: str) -> float:
    return telemetry.value("bridge_strategy_stuck_handlers", strategy=strategy)


async def test_overrun_is_reported_once_and_the_handler_keeps_running(router: OrderRouter) -> None:
    """A handler past the deadline: one `strategy.deadline_exceeded` warning (strategy, announcement,
    elapsed, deadline), one count, the stuck gauge at 1, `stuck` naming its announcement. It is not
    cancelled and keeps its slot (with max_concurrent 1 the next announcement waits); once it ends,
    `strategy.finished_late` says so, the gauge is back to 0 and the next one starts."""
    strategy = Scripted()
    runner = runner_with(strategy, router, max_concurrent=1, deadline=DEADLINE)
    first, second = announcements("ABC", "DEF")
    before = exceeded("scripted")
    with probing("strategy.deadline_exceeded", "strategy.finished_late") as probes:
        async with running(runner):
            runner.put(first)
            await started(strategy, "ABC")
            await asyncio.wait_for(probes["strategy.deadline_exceeded"].seen.wait(), WAIT)
            assert runner.stuck == (first.key,)
            assert exceeded("scripted") == before + 1 and stuck_gauge("scripted") == 1
            strategy.release("DEF")  # the next one would end at once: it only needs a slot
            runner.put(second)  # starts at once if a slot is free: none is
            assert runner.running == 1 and runner.queue.qsize() == 1
            assert "cancelled ABC" not in strategy.events
            strategy.release("ABC")
            await asyncio.wait_for(runner.queue.join(), WAIT)
            assert strategy.starts() == ["ABC", "DEF"]
            assert "cancelled ABC" not in strategy.events
    [report] = probes["strategy.deadline_exceeded"].events
    assert report["strategy"] == "scripted" and report["announcement"] == first.key
    assert report["deadline_s"] == DEADLINE and report["elapsed_s"] >= DEADLINE - 0.001
    assert report["level"] == "warning"
    [late] = probes["strategy.finished_late"].events
    assert late["announcement"] == first.key and late["cancelled"] is False
    assert late["elapsed_s"] >= report["elapsed_s"]
    assert runner.stuck == () and runner.deadline_exceeded == 1
    assert exceeded("scripted") == before + 1 and stuck_gauge("scripted") == 0


async def test_a_handler_within_the_deadline_is_not_reported(router: OrderRouter) -> None:
    """Handlers that end before the deadline (the default, 30 s, as in the config) leave no report."""
    strategy = Scripted(block=False)
    runner = runner_with(strategy, router)
    assert runner.deadline == DEFAULT_STRATEGY_DEADLINE == config.TradingConfig().strategy_deadline
    before = exceeded("scripted")
    with probing("strategy.deadline_exceeded") as probes:
        async with running(runner):
            for a in announcements("ABC", "DEF", "GHI"):
                runner.put(a)
            await asyncio.wait_for(runner.queue.join(), WAIT)
            assert runner.handled == 3 and runner.running == 0
    assert probes["strategy.deadline_exceeded"].events == []
    assert runner.stuck == () and runner.deadline_exceeded == 0 and exceeded("scripted") == before


async def test_shutdown_still_cancels_a_stuck_handler(router: OrderRouter) -> None:
    """Cancelling the runner (shutdown) cancels a stuck handler like any other and clears the report."""
    strategy = Scripted()
    runner = runner_with(strategy, router, deadline=DEADLINE)
    with probing("strategy.deadline_exceeded", "strategy.finished_late") as probes:
        async with running(runner):
            runner.put(announcements("ABC")[0])
            await asyncio.wait_for(probes["strategy.deadline_exceeded"].seen.wait(), WAIT)
    assert "cancelled ABC" in strategy.events
    [late] = probes["strategy.finished_late"].events
    assert late["cancelled"] is True
    assert runner.stuck == () and stuck_gauge("scripted") == 0


async def test_health_and_status_line_name_the_stuck_strategy(router: OrderRouter) -> None:
    """While a handler is past the deadline the snapshot lists the strategy in `stuck_strategies` and
    its announcement under the strategy's `stuck`; /health serves that (still 200: nothing is halted)
    and the `daemon.status` line carries it. Once the handler ends, the list is empty again."""
    strategy = Scripted()
    runner = runner_with(strategy, router, deadline=DEADLINE)
    idle = runner_with(Scripted(block=False), router)
    idle.strategy.name = "other"
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    started_at = time.monotonic()

    def snapshot() -> dict[str, Any]:
        return build_snapshot(gate=gate, supervisor=None, runners=[runner, idle], started_at=started_at)

    [ann] = announcements("ABC")
    server = HealthServer(HealthConfig(enabled=True, port=0), snapshot)
    await server.start()
    try:
        with probing("strategy.deadline_exceeded") as probes:
            async with running(runner):
                runner.put(ann)
                await asyncio.wait_for(probes["strategy.deadline_exceeded"].seen.wait(), WAIT)
                async with aiohttp.ClientSession() as session, session.get(server.url + "/health") as resp:
                    status, body = resp.status, await resp.json()
                status_lines = await status_log(snapshot)
                strategy.release("ABC")
                await asyncio.wait_for(runner.queue.join(), WAIT)
                after = snapshot()
    finally:
        await server.stop()
    assert status == 200 and body["healthy"] is True
    assert body["stuck_strategies"] == ["scripted"]
    assert body["strategies"]["scripted"] == {
        "handled": 0,
        "errors": 0,
        "queued": 0,
        "running": 1,
        "stuck": [ann.key],
    }
    assert body["strategies"]["other"]["stuck"] == []
    [line] = status_lines
    assert line["stuck_strategies"] == ["scripted"] and line["strategies"]["scripted"]["stuck"] == [ann.key]
    assert after["stuck_strategies"] == [] and after["strategies"]["scripted"]["stuck"] == []


async def status_log(snapshot: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """The `daemon.status` lines of one round of run_status_log (a fake sleep stops it after one)."""
    stop = asyncio.Event()
    calls = 0

    async def sleep(_: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            stop.set()

    with probing("daemon.status", logger="bridge.ops.health") as probes:
        await asyncio.wait_for(run_status_log(snapshot, 60, stop, sleep=sleep), WAIT)
    return probes["daemon.status"].events


@pytest.mark.parametrize("deadline", [0.0, -1.0, math.inf, math.nan])
async def test_a_deadline_must_be_a_positive_finite_number(router: OrderRouter, deadline: float) -> None:
    """The runner refuses a deadline that is not a positive, finite number of seconds, as the config
    does for `trading.strategy_deadline` (exit 78, naming the key)."""
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        runner_with(Scripted(), router, deadline=deadline)
    text = {0.0: "0", -1.0: "-1", math.inf: ".inf"}.get(deadline, ".nan")
    with pytest.raises(
        ConfigError, match=r"trading\.strategy_deadline: (must be positive|expected a finite)"
    ):
        config.loads(f"feed: {{api_key: k}}\ntrading: {{strategy_deadline: {text}}}\n", env={})


async def test_the_configured_deadline_reaches_every_runner(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """`trading.strategy_deadline` from the config is what the daemon's runners use."""
    emu, fake = servers
    cfg = make_config(emu, fake, tmp_path, dry_run=True)
    cfg = dataclasses.replace(cfg, trading=dataclasses.replace(cfg.trading, strategy_deadline=7.5))
    r = await start(cfg)
    try:
        assert [runner.deadline for runner in r.daemon.runners] == [7.5]
    finally:
        await r.stop()


async def test_a_hung_strategy_holds_at_most_max_waiting_then_drops_logged(
    router: OrderRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strategy whose handler hangs does not make the daemon hold every later announcement: past
    MAX_WAITING waiting, a new one is dropped with a `strategy.dropped` error naming it, and counted.
    Once the handler ends, what waited is handled in order."""
    monkeypatch.setattr(dispatch, "MAX_WAITING", 2)
    strategy = Scripted()
    runner = runner_with(strategy, router, max_concurrent=1)
    first, second, third, fourth = announcements("ABC", "DEF", "GHI", "JKL")
    before = telemetry.value("bridge_strategy_dropped_total", strategy="scripted")
    with probing("strategy.dropped") as probes:
        async with running(runner):
            runner.put(first)
            await started(strategy, "ABC")
            for a in (second, third, fourth):
                runner.put(a)
            assert runner.queue.qsize() == 2  # DEF and GHI wait; JKL was dropped
            for ticker in ("ABC", "DEF", "GHI"):
                strategy.release(ticker)
            await asyncio.wait_for(runner.queue.join(), WAIT)
    assert strategy.starts() == ["ABC", "DEF", "GHI"]
    [dropped] = probes["strategy.dropped"].events
    assert dropped["level"] == "error" and dropped["announcement"] == fourth.key
    assert dropped["reason"] == "queue_full" and dropped["waiting"] == 2 and dropped["running"] == 1
    assert telemetry.value("bridge_strategy_dropped_total", strategy="scripted") == before + 1
