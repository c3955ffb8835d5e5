"""An adversarial review of the exit engine (money safety): each test pins a behaviour a position must
have to end in filled exits, sold once; a failing one is an open finding of the review. Real ccxt
against the fake Binance; clocks are injected, nothing sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.exits import MAX_EXIT_FAILURES
from bridge.trading.model import ExitPlan, TakeProfitTier
from bridge.trading.orders import LOOKUP_DELAYS
from bridge.venues.types import OrderRequest, OrderResult
from tests.factories import announcement
from tests.test_exits_until_flat import Alerts, Clock, buy_with, manager, position, sells
from tests.test_orders import Rig, make_rig


def executed_sells(fake: FakeBinance) -> float:
    """Base currency the fake actually sold (every executed SELL's executedQty)."""
    return sum(float(o["executedQty"]) for o in fake.executed if o["side"] == "SELL")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)], track_balances=True) as f:
        yield f


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0  # every check reads the fake's price as it is now
    yield rig
    await rig.exchange.close()
    rig.journal.close()


TIERS = (TakeProfitTier(0.2, 0.5), TakeProfitTier(0.5, 1.0))


async def test_a_tier_remainder_under_the_minimum_does_not_close_the_half_still_held(
    live: Rig, fake: FakeBinance
) -> None:
    """Tier 1 (+20 %: sell half) meets a thin book: its IOC sells 4 of the 5. What is left of the tier
    (1 ABC, ~2.4 USDT) is under the venue's minimum notional: that ends the tier, never the position.
    The 5 ABC the plan keeps for tier 2 stay watched, and the stop-loss sells them when the price falls."""
    fake.add_market("ABC", "USDT", price=2.0, depth=4.0)  # a limit order fills at most 4 ABC
    entry = await buy_with(live, ExitPlan(tiers=TIERS, stop_loss=0.2))
    clock = Clock()
    exits = manager(live, clock=clock)
    fake.set_price("ABC/USDT", 2.5)
    [tier] = await exits.check()
    assert tier.status == "placed" and position(live, entry).remaining == pytest.approx(6.0)
    clock.mono += 1
    await exits.check()  # the tier's last 1 ABC: under the minimum
    held = position(live, entry)
    assert held.state == "open", (held.state, held.close_reason, held.remaining)
    fake.set_price("ABC/USDT", 1.5)  # under the stop-loss (1.6)
    clock.mono += 1
    await exits.check()
    assert position(live, entry).state == "closed"
    assert executed_sells(fake) == pytest.approx(10.0)  # everything the entry bought was sold


async def test_a_market_closed_for_a_while_does_not_abandon_the_position_in_seconds(
    live: Rig, fake: FakeBinance
) -> None:
    """The stop-loss is reached, the price is known (a quote within the cache's max age), and the venue
    refuses the sell with "Market is closed." (a trading halt, maintenance): a refusal that passes.
    Ticking once a second for MAX_EXIT_FAILURES seconds must not abandon the position for good; once
    the market trades again the stop-loss sells it."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    live.router.prices.max_age = 60.0  # the last quote stays usable while the venue halts
    clock = Clock()
    alerts = Alerts()
    exits = manager(live, alerts, clock)
    fake.set_price("ABC/USDT", 1.5)  # under the stop-loss (1.6)
    assert await live.router.prices.quote("binance", "ABC/USDT") is not None  # the last quote, cached
    fake.add_market("ABC", "USDT", price=1.5, status="BREAK")  # then the venue halts the market
    for _ in range(MAX_EXIT_FAILURES):
        await exits.check()
        clock.mono += 1.0  # the daemon's tick
    assert alerts.failed, "the halted market was never tried: the test did not reach the venue"
    assert position(live, entry).state == "open", alerts.abandoned
    fake.add_market("ABC", "USDT", price=1.5)  # trading again
    live.router.prices.max_age = 0.0
    clock.mono += 600
    await exits.check()
    assert position(live, entry).state == "closed"
    assert executed_sells(fake) == pytest.approx(10.0)


async def test_a_market_lookup_that_fails_once_does_not_abandon_the_position(
    fake: FakeBinance, tmp_path: Path
) -> None:
    """An operator closes a position (`bridge close`) while its market is missing from the cached map
    (a full reload answered without the new listing) and the one targeted refresh is not allowed just
    now (announced symbols not listed yet spent the refresh budget). That is not "the venue does not
    list it": the position must not be abandoned on that first miss, and sells once the market is
    known again."""
    frozen = 5000.0
    rig = await make_rig(fake, tmp_path, dry_run=False, clock=lambda: frozen)
    rig.router.prices.max_age = 0.0
    try:
        entry = await buy_with(rig, ExitPlan(stop_loss=0.2))
        markets = rig.exchange.ccxt.markets
        rig.exchange.ccxt.markets = {s: m for s, m in markets.items() if s != "ABC/USDT"}
        for n in range(5):  # announced symbols not listed yet: each spends a targeted refresh
            assert await rig.exchange.find_market(f"ZZ{n}/USDT") is None
        clock = Clock()
        alerts = Alerts()
        exits = manager(rig, alerts, clock)
        assert exits.request_close("ABC/USDT")[0]
        await exits.check()
        assert alerts.failed, "no sell was tried: the test did not reach the market lookup"
        assert position(rig, entry).state == "open", alerts.abandoned
        rig.exchange.ccxt.markets = markets  # the next reload has it again
        clock.mono += 600
        await exits.check()
        assert position(rig, entry).state == "closed"
        assert executed_sells(fake) == pytest.approx(10.0)
    finally:
        await rig.exchange.close()
        rig.journal.close()


async def test_a_sub_lot_remainder_after_the_last_take_profit_closes_the_position(tmp_path: Path) -> None:
    """A lot of 0.01 ABC: 20 USDT at 3.0 buys 6.66666667 ABC, the take-profit can sell 6.66 of it. The
    0.00666667 ABC left can never be sold (under the lot and the minimum notional): the position is
    flat and must close, even once the price has fallen back under the take-profit (else it stays open
    for ever, counted, watched, and the exits-only daemon never sees `flat`)."""
    async with FakeBinance(markets=[], track_balances=True) as fake:
        fake.add_market("ABC", "USDT", price=3.0, step_size=0.01)
        rig = await make_rig(fake, tmp_path, dry_run=False)
        rig.router.prices.max_age = 0.0
        try:
            entry = await buy_with(rig, ExitPlan(take_profit=0.5))
            assert position(rig, entry).filled == pytest.approx(6.66666667)
            clock = Clock()
            exits = manager(rig, clock=clock)
            fake.set_price("ABC/USDT", 4.6)
            [sold] = await exits.check()
            assert sold.status == "placed"
            fake.set_price("ABC/USDT", 3.0)
            clock.mono += 1
            await exits.check()
            done = position(rig, entry)
            assert done.state == "closed", (done.state, done.remaining)
            assert await exits.check() == [] and exits.flat.is_set()
        finally:
            await rig.exchange.close()
            rig.journal.close()


async def test_an_exit_answered_before_its_fill_is_known_is_not_sent_again(
    live: Rig, fake: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue acknowledges the stop-loss's market sell without saying what it filled (status open,
    filled unknown: the router fetches the fill of such an entry, see OrderRouter._completed). The
    sell did execute: the next tick must learn its fill by client id, not count it as a rejection
    (alert) and sell the position a second time."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    real = live.exchange.create_order

    async def acknowledged_only(req: OrderRequest) -> OrderResult:
        result = await real(req)
        return dataclasses.replace(result, status="open", filled=None, cost=None, average=None)

    monkeypatch.setattr(live.exchange, "create_order", acknowledged_only)
    fake.balances["ABC"] = 30.0  # the account holds more ABC than this position (other positions)
    clock = Clock()
    alerts = Alerts()
    exits = manager(live, alerts, clock)
    fake.set_price("ABC/USDT", 1.5)
    await exits.check()
    clock.mono += 1
    await exits.check()
    clock.mono += 1
    await exits.check()
    assert len(sells(fake)) == 1, [s["newClientOrderId"] for s in sells(fake)]
    assert alerts.failed == []
    assert position(live, entry).state == "closed"


async def test_a_resting_stop_is_not_placed_while_the_venue_is_halted(live: Rig, fake: FakeBinance) -> None:
    """A 429/418 halted every order to the venue until its Retry-After (`venue_backoff:binance`): the
    exit sells wait, and so must the resting stop (another order there extends an IP ban, and the
    journal_unwritable and credentials_rejected halts mean the same: nothing may be sent)."""
    entry = await buy_with(live, ExitPlan(take_profit=0.5, stop_loss=0.2, stop_on_exchange=True))
    live.gate.halt("venue_backoff", venue="binance")  # what VenueBackoff.hit does on a 429
    assert live.gate.exit_blockers("binance")
    exits = manager(live, clock=Clock())
    await exits.check()
    assert [o.params["type"] for o in fake.orders if o.params["side"] == "SELL"] == []
    assert position(live, entry).stop_client_order_id is None
    live.router.backoff.lift("binance")
    await exits.check()
    [stop] = fake.open_orders("ABC/USDT")
    assert stop.client_order_id == position(live, entry).stop_client_order_id


async def test_the_background_lookup_of_an_entry_never_undoes_the_fill_the_exits_found(
    live: Rig, fake: FakeBinance
) -> None:
    """An entry's answer never came: the router looks it up in the background, the exit manager too
    (30 s later). The exit manager's look-up finds the fill first and the position opens; the router's
    own look-ups then all fail (a flaky venue). Its final "unresolved" must not overwrite the fill it
    never saw: the position stays open with its 10 ABC, watched by its stop-loss."""
    release = asyncio.Event()

    async def gated_sleep(delay: float) -> None:
        await release.wait()

    live.router._sleep = gated_sleep  # the router's look-up delays end when the test says
    fake.fail_next_order("server_error_after")  # the buy executes, its answer is a 500
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
        exit=ExitPlan(stop_loss=0.2),
    )
    assert outcome.status == "unknown"
    entry = outcome.client_order_id or ""
    clock = Clock()
    exits = manager(live, clock=clock)
    await exits.check()  # first seen: the router's look-ups go first
    clock.mono += 31
    await exits.check()  # the exit manager's own look-up finds the fill
    assert position(live, entry).state == "open" and position(live, entry).filled == pytest.approx(10.0)
    fake.fail_next_lookup("server_error_before", count=len(LOOKUP_DELAYS))
    release.set()
    await live.router.settled()
    found = position(live, entry)
    assert (found.state, found.filled) == ("open", pytest.approx(10.0))
