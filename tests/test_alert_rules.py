"""The rules that turn gate changes, welcomes and orders into alerts, against a real local webhook
endpoint (the notifier's delivery itself: test_notify)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bridge.config import AlertsConfig
from bridge.feed.codec import Welcome
from bridge.ops.notify import Notifier
from bridge.trading.gate import TradingGate
from tests.test_notify import (
    Endpoint,
    VirtualTime,
    endpoints,
    running,
    webhook,
)

__all__ = ["endpoints"]  # the fixture, used by name

# ---- daemon events -> alerts ------------------------------------------------------------------------


async def test_feed_down_once_after_threshold_then_recovery(
    endpoints: Callable[[], Awaitable[Endpoint]],
) -> None:
    """`feed_down` goes out once the gate has been halted for "disconnected" (then also "feed_stale")
    for feed_down_after; an outage that ended and restarted is timed from its new start; it is sent
    only once per outage, and a recovery note follows when the feed is back."""
    hook = await endpoints()
    vt = VirtualTime()
    notifier = Notifier(
        AlertsConfig(webhook=webhook(hook), feed_down_after=60), clock=vt.clock, sleep=vt.sleep
    )
    gate = TradingGate()
    notifier.attach(gate)
    gate.resume("starting")
    gate.resume("disconnected")
    async with running(notifier):
        gate.halt("disconnected")  # t=1000
        assert await vt.sleeping(1) == [60]
        await vt.advance(30)
        gate.resume("disconnected")  # back at t=1030: no alert
        await vt.advance(10)
        gate.halt("disconnected")  # a new outage from t=1040
        await vt.advance(20)
        assert await vt.sleeping(2) == [60, 40]  # woke at t=1060, the new outage is not due yet
        assert hook.received == []
        gate.halt("feed_stale")
        await vt.advance(40)
        (down,) = await hook.wait_received(1)
        await vt.advance(600)
        gate.resume("disconnected")
        gate.resume("feed_stale")
        notifier.notify("started", "sentinel")
        received = await hook.wait_received(3)
    assert down.body["event"] == "feed_down"
    assert down.body["fields"] == {
        "recovered": False,
        "down_s": 60,
        "reasons": ["disconnected", "feed_stale"],
    }
    assert [r.body["event"] for r in received] == ["feed_down", "feed_down", "started"]
    assert received[1].body["fields"] == {"recovered": True, "down_s": 660}
    assert vt.sleeps == [60, 40]  # no polling once the outage was reported


async def test_short_outage_sends_nothing(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """A reconnect shorter than feed_down_after halts and resumes trading without any alert."""
    hook = await endpoints()
    vt = VirtualTime()
    notifier = Notifier(
        AlertsConfig(webhook=webhook(hook), feed_down_after=60), clock=vt.clock, sleep=vt.sleep
    )
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    notifier.attach(gate)
    async with running(notifier):
        gate.halt("disconnected")
        await vt.sleeping(1)
        await vt.advance(30)
        gate.resume("disconnected")
        await vt.advance(100)
        notifier.notify("started", "sentinel")
        await hook.wait_received(1)
    assert hook.events() == ["started"]


async def test_no_feed_down_while_stopping(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """Once stopping() was called, the feed going down is expected and not reported."""
    hook = await endpoints()
    vt = VirtualTime()
    notifier = Notifier(
        AlertsConfig(webhook=webhook(hook), feed_down_after=1), clock=vt.clock, sleep=vt.sleep
    )
    gate = TradingGate()
    notifier.attach(gate)  # halted for "disconnected" from the start
    async with running(notifier):
        notifier.stopping()
        await vt.advance(100)
        await hook.wait_received(1)
    assert hook.events() == ["stopping"]


async def test_gate_changes_to_trading_alerts(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """trading_halted for a reason that needs a human (credentials_rejected, key_expired) and
    trading_resumed once armed again; feed blips, start-up and shutdown halts send neither."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    gate = TradingGate()
    notifier.attach(gate)
    async with running(notifier):
        gate.resume("starting")
        gate.resume("disconnected")  # first arming: `started` covers it
        gate.halt("disconnected")
        gate.resume("disconnected")
        gate.halt("credentials_rejected")
        gate.halt("disconnected")
        gate.resume("disconnected")
        gate.resume("credentials_rejected")
        gate.halt("shutting_down")
        notifier.notify("started", "sentinel")
        received = await hook.wait_received(3)
    assert [r.body["event"] for r in received] == ["trading_halted", "trading_resumed", "started"]
    assert received[0].body["fields"] == {
        "reason": "credentials_rejected",
        "reasons": ["credentials_rejected"],
    }
    assert received[0].body["text"] == "Trading halted: credentials_rejected"
    assert received[1].body["fields"] == {"reason": "credentials_rejected"}


async def test_key_expiring_from_welcome_at_most_daily(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """A welcome whose key expires within key_expiry_days sends key_expiring; another welcome the same
    day does not, one a day later does; a key with more time left, or no expiry, never does."""
    hook = await endpoints()
    vt = VirtualTime()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook), key_expiry_days=7), clock=vt.clock)
    async with running(notifier):
        notifier.on_welcome(Welcome("pro", None, 3 * 86400.0, {}))
        notifier.on_welcome(Welcome("pro", None, 3 * 86400.0 - 60, {}))
        await vt.advance(86400)
        notifier.on_welcome(Welcome("pro", None, 2 * 86400.0, {}))
        await vt.advance(86400)
        notifier.on_welcome(Welcome("pro", None, 30 * 86400.0, {}))
        notifier.on_welcome(Welcome("pro", None, None, {}))
        notifier.notify("started", "sentinel")
        received = await hook.wait_received(3)
    assert [r.body["event"] for r in received] == ["key_expiring", "key_expiring", "started"]
    assert received[0].body["fields"] == {"expires_in_days": 3.0, "tier": "pro"}
    assert received[1].body["fields"]["expires_in_days"] == 2.0


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("placed", "order_placed"),
        ("paper", "order_placed"),
        ("rejected", "order_rejected"),
        ("unknown", "order_rejected"),
        ("not_found", "order_rejected"),
        ("skipped", None),
    ],
)
async def test_order_outcomes(
    endpoints: Callable[[], Awaitable[Endpoint]], status: str, event: str | None
) -> None:
    """Each order outcome status maps to its alert (skipped orders are routine: none), with the status
    among the fields."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    async with running(notifier):
        notifier.on_order(status, exchange="binance", symbol="ABC/USDT", side="buy")
        notifier.notify("started", "sentinel")
        received = await hook.wait_received(1 if event is None else 2)
    assert [r.body["event"] for r in received] == [e for e in (event, "started") if e]
    if event is not None:
        assert received[0].body["fields"]["status"] == status
        assert "buy ABC/USDT on binance" in received[0].body["text"]


async def test_halt_alerts_follow_the_halt_table(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """trading_halted goes out for the reasons the halt table marks as alerting (loss_limit,
    journal_unwritable) and names the venue of a venue-scoped one; feed outages send none."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    gate = TradingGate()
    notifier.attach(gate)
    async with running(notifier):
        gate.resume("starting")
        gate.halt("feed_stale")
        gate.halt("credentials_rejected", venue="binance")
        gate.halt("loss_limit")
        gate.halt("journal_unwritable")
        received = await hook.wait_received(3)
    assert [r.body["event"] for r in received] == ["trading_halted"] * 3
    scoped = received[0].body
    assert scoped["text"] == "Trading halted on binance: credentials_rejected"
    assert scoped["fields"]["reason"] == "credentials_rejected" and scoped["fields"]["venue"] == "binance"
    assert "credentials_rejected:binance" in scoped["fields"]["reasons"]
    assert [r.body["fields"]["reason"] for r in received[1:]] == ["loss_limit", "journal_unwritable"]


async def test_exit_alerts(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """exit_failed, position_abandoned and exits_only are queued like the order alerts (never awaited
    by the caller) and carry the position's exchange, symbol, client ids and reason."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    async with running(notifier):
        notifier.exit_failed("binance", "ABC/USDT", "bxexit1", "insufficient_balance")
        notifier.position_abandoned("binance", "ABC/USDT", "bxentry1", "5 exits rejected")
        notifier.exits_only(
            reason="the feed closed the connection: key_expired", positions=["ABC/USDT on binance"]
        )
        received = await hook.wait_received(3)
    bodies = {r.body["event"]: r.body for r in received}
    assert list(bodies) == ["exit_failed", "position_abandoned", "exits_only"]
    assert bodies["exit_failed"]["fields"] == {
        "exchange": "binance",
        "symbol": "ABC/USDT",
        "client_order_id": "bxexit1",
        "reason": "insufficient_balance",
    }
    assert "ABC/USDT on binance" in bodies["exit_failed"]["text"]
    assert bodies["position_abandoned"]["fields"]["entry_client_order_id"] == "bxentry1"
    assert "by hand" in bodies["position_abandoned"]["text"]
    assert bodies["exits_only"]["fields"] == {
        "reason": "the feed closed the connection: key_expired",
        "open_positions": 1,
        "positions": ["ABC/USDT on binance"],
    }


async def test_no_feed_down_in_exits_only_mode(endpoints: Callable[[], Awaitable[Endpoint]]) -> None:
    """Once exits_only went out (the feed is gone for good), the outage it announced earns no
    feed_down later."""
    hook = await endpoints()
    vt = VirtualTime()
    notifier = Notifier(
        AlertsConfig(webhook=webhook(hook), feed_down_after=60), clock=vt.clock, sleep=vt.sleep
    )
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    notifier.attach(gate)
    async with running(notifier):
        gate.halt("disconnected")
        await vt.sleeping(1)
        notifier.exits_only(reason="key_expired", positions=["ABC/USDT on binance"])
        await vt.advance(100)
        notifier.notify("started", "sentinel")
        await hook.wait_received(2)
    assert hook.events() == ["exits_only", "started"]
