"""The clock watch: an offset past half of trading.max_clock_offset is a warning and an alert, past
all of it the `clock_offset` halt, lifted once back within; measured at start, then every interval."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from bridge.trading.clock import ClockWatch, classify, worst_offset
from bridge.trading.gate import TradingGate


class FakeExchange:
    """An exchange's clock as ClockWatch sees it: the offset it measured, and a re-measurement that
    takes `next_offset_ms` (or fails, when `fail` is set)."""

    def __init__(self, offset_ms: int | None) -> None:
        self.time_offset_ms = offset_ms
        self.next_offset_ms = offset_ms
        self.fail = False
        self.refreshes = 0

    async def sync_clock(self) -> None:
        self.refreshes += 1
        if self.fail:
            raise ConnectionError("venue unreachable")
        self.time_offset_ms = self.next_offset_ms


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, text: str, **fields: Any) -> None:
        self.sent.append((text, fields))


def watch(exchanges: dict[str, FakeExchange], **kwargs: Any) -> tuple[ClockWatch, TradingGate, Alerts]:
    gate, alerts = TradingGate(), Alerts()
    return ClockWatch(exchanges, gate, max_offset_s=1.0, alert=alerts, **kwargs), gate, alerts


def test_classify_at_half_and_full_limit() -> None:
    """Up to half the limit is ok, past half a warning, past the limit a halt; either sign."""
    assert classify(500, 1.0) == "ok" and classify(-500, 1.0) == "ok"
    assert classify(501, 1.0) == "warning" and classify(-999, 1.0) == "warning"
    assert classify(1000, 1.0) == "warning" and classify(-1001, 1.0) == "halted"


def test_worst_offset_ignores_unmeasured_exchanges() -> None:
    """The furthest clock (by absolute offset) decides; an exchange that measured nothing is left out."""
    assert worst_offset({"a": FakeExchange(120), "b": FakeExchange(-700), "c": FakeExchange(None)}) == (
        "b",
        -700,
    )
    assert worst_offset({"c": FakeExchange(None)}) is None


def test_warning_then_halt_then_resume() -> None:
    """600 ms off (limit 1 s): `clock.offset` warning and one alert, trading goes on; 1500 ms: the
    `clock_offset` halt and another alert; back to 50 ms: the halt is lifted, no alert."""
    binance = FakeExchange(600)
    w, gate, alerts = watch({"binance": binance})
    with structlog.testing.capture_logs() as logs:
        assert w.check() == "warning"
    [line] = [e for e in logs if e["event"] == "clock.offset"]
    assert line["log_level"] == "warning" and line["offset_ms"] == 600 and line["exchange"] == "binance"
    assert "clock_offset" not in gate.reasons and len(alerts.sent) == 1
    assert w.check() == "warning" and len(alerts.sent) == 1  # the same state again: no new alert

    binance.time_offset_ms = 1500
    assert w.check() == "halted"
    assert "clock_offset" in gate.reasons and len(alerts.sent) == 2
    assert "trading halted" in alerts.sent[1][0] and alerts.sent[1][1]["offset_ms"] == 1500

    binance.time_offset_ms = 50
    assert w.check() == "ok"
    assert "clock_offset" not in gate.reasons and len(alerts.sent) == 2


def test_nothing_measured_keeps_the_last_verdict() -> None:
    """An exchange that cannot tell its time (no fetchTime) neither halts nor lifts a halt."""
    ex = FakeExchange(-2000)
    w, gate, _ = watch({"x": ex})
    assert w.check() == "halted"
    ex.time_offset_ms = None
    assert w.check() == "halted" and "clock_offset" in gate.reasons


def test_a_failing_alert_hook_does_not_stop_the_halt() -> None:
    """The alert hook raising is logged; the halt is in force all the same."""
    gate = TradingGate()

    def broken(text: str, **fields: Any) -> None:
        raise RuntimeError("webhook down")

    w = ClockWatch({"x": FakeExchange(5000)}, gate, max_offset_s=1.0, alert=broken)
    with structlog.testing.capture_logs() as logs:
        assert w.check() == "halted"
    assert "clock_offset" in gate.reasons
    assert any(e["event"] == "clock.alert_failed" for e in logs)


async def test_run_checks_at_start_then_remeasures_every_interval() -> None:
    """run(): a check at once; each interval every exchange is re-measured (sync_clock) and
    checked again; a re-measurement that fails keeps the last offset; `stop` ends it."""
    asked: asyncio.Queue[float] = asyncio.Queue()
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:  # the interval passes when the test says so
        asked.put_nowait(seconds)
        await ticks.get()

    good, flaky = FakeExchange(100), FakeExchange(200)
    w, gate, alerts = watch({"good": good, "flaky": flaky}, interval_s=3600.0, sleep=sleep)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    assert await asked.get() == 3600.0  # checked at start, now waiting
    assert w.state == "ok" and good.refreshes == 0

    good.next_offset_ms = 1800
    flaky.fail = True
    with structlog.testing.capture_logs() as logs:
        ticks.put_nowait(None)
        await asked.get()  # re-measured, checked, waiting again
    assert good.refreshes == 1 and flaky.refreshes == 1
    assert w.state == "halted" and "clock_offset" in gate.reasons
    assert flaky.time_offset_ms == 200  # its last measurement stands
    assert [e["exchange"] for e in logs if e["event"] == "clock.remeasure_failed"] == ["flaky"]

    good.next_offset_ms = 10
    ticks.put_nowait(None)
    await asked.get()
    assert w.state == "ok" and "clock_offset" not in gate.reasons

    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert len(alerts.sent) == 1


async def test_run_without_remeasure_only_reads_offsets() -> None:
    """With `remeasure=False` (the market refresh already re-measures often) nothing is refreshed."""
    asked: asyncio.Queue[float] = asyncio.Queue()
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        asked.put_nowait(seconds)
        await ticks.get()

    ex = FakeExchange(0)
    w, gate, _ = watch({"x": ex}, remeasure=False, sleep=sleep)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asked.get()
    ex.time_offset_ms = -3000  # the market refresh measured it meanwhile
    ticks.put_nowait(None)
    await asked.get()
    assert ex.refreshes == 0 and "clock_offset" in gate.reasons
    stop.set()
    await asyncio.wait_for(task, 1.0)
