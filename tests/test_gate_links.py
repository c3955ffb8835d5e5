"""The trading gate with several feed links: a link that is down is named in the reasons
(`feed_stale:kr`) but stops trading only when the links left do not satisfy `feed.arm_when`; the single
unnamed link halts the whole feed, as always; a link going down is alerted (`feed_link_down`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bridge.config import AlertsConfig
from bridge.errors import TradingHalted
from bridge.ops.notify import Notifier
from bridge.trading.gate import LinkStatus, TradingGate
from tests.test_notify import Endpoint, endpoints, running, webhook

__all__ = ["endpoints"]  # the fixture


def two_links(arm_when: str = "any") -> TradingGate:
    gate = TradingGate()
    gate.configure_links(["main", "kr"], arm_when)  # type: ignore[arg-type]
    gate.resume("starting")
    return gate


def test_links_start_disconnected_and_one_link_up_arms_trading() -> None:
    gate = two_links()
    assert gate.reasons == {"disconnected:main", "disconnected:kr"}
    assert not gate.armed and gate.entry_blockers("binance") == {"disconnected:main", "disconnected:kr"}
    LinkStatus(gate, "main").resume("disconnected")
    assert gate.armed and gate.entry_blockers("binance") == frozenset()
    assert gate.reasons == {"disconnected:kr"}  # still named, for /health and the status line
    assert gate.in_force == frozenset()
    assert gate.link_healthy("main") and not gate.link_healthy("kr")
    assert gate.covering_links == {"main"}
    gate.check("binance")  # nothing raised


def test_every_link_down_halts_entries_but_not_exits() -> None:
    gate = two_links()
    main, kr = LinkStatus(gate, "main"), LinkStatus(gate, "kr")
    main.resume("disconnected")
    kr.resume("disconnected")
    assert gate.armed
    kr.halt("key_expired")
    assert gate.armed  # main still up
    main.halt("feed_stale")
    assert not gate.armed
    assert gate.entry_blockers("binance") == {"key_expired:kr", "feed_stale:main"}
    assert gate.exit_blockers("binance") == frozenset()
    with pytest.raises(TradingHalted):
        gate.check("binance")
    main.resume("feed_stale")
    assert gate.armed


def test_arm_when_all_halts_when_one_link_is_down() -> None:
    gate = two_links("all")
    LinkStatus(gate, "main").resume("disconnected")
    assert not gate.armed and gate.entry_blockers("okx") == {"disconnected:kr"}
    LinkStatus(gate, "kr").resume("disconnected")
    assert gate.armed


def test_the_single_link_halts_the_feed_as_always() -> None:
    gate = TradingGate()
    single = LinkStatus(gate, None)
    gate.resume("starting")
    single.resume("disconnected")
    assert gate.armed and gate.link_healthy(None)
    single.halt("feed_stale")
    assert gate.reasons == {"feed_stale"} and not gate.armed and not gate.link_healthy(None)


def test_a_link_the_gate_does_not_know_halts_everything() -> None:
    """Halting more than asked is safe; ignoring a halt is not."""
    gate = two_links()
    gate.resume("disconnected", link="main")
    gate.halt("feed_stale", link="nope")
    assert "feed_stale" in gate.reasons and not gate.armed


async def test_a_link_going_down_is_alerted_without_a_trading_halt(
    endpoints: Callable[[], Awaitable[Endpoint]],
) -> None:
    """kr's key dies while main is up: one `feed_link_down` alert naming kr and the links still up,
    no `trading_halted`; then main's key dies too: its `feed_link_down`, and `trading_halted`."""
    hook = await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook)))
    gate = two_links()
    notifier.attach(gate)
    gate.resume("disconnected", link="main")
    gate.resume("disconnected", link="kr")
    async with running(notifier):
        gate.halt("key_expired", link="kr")
        (alert,) = await hook.wait_received(1)
        gate.halt("key_expired", link="main")
        received = await hook.wait_received(3)
    assert alert.body["event"] == "feed_link_down"
    assert alert.body["text"] == "Feed link kr down: key_expired; trading goes on over main"
    assert alert.body["fields"]["links_up"] == ["main"]
    assert [r.body["event"] for r in received] == ["feed_link_down", "feed_link_down", "trading_halted"]
    assert received[2].body["text"] == "Trading halted: no feed link left up (key_expired on main)"
