"""Stops that survive the daemon: with `stop_on_exchange` a STOP_LOSS rests on the exchange after the
entry fills, is found again after a restart (never placed twice), is cancelled before a take-profit
sells (the fake locks the coins it holds, as Binance does), and its race with the take-profit leaves
exactly one sell. Real ccxt against the fake Binance with balances tracked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.exit_orders import STOP_NOT_FOUND_LIMIT
from bridge.trading.exits import ExitManager
from bridge.trading.model import ExitPlan, Position, TakeProfitTier
from bridge.venues.types import OrderResult
from tests.factories import announcement
from tests.test_orders import Rig, make_rig


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)], track_balances=True) as f:
        yield f


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0
    yield rig
    await rig.exchange.close()
    rig.journal.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(rig: Rig, clock: Clock | None = None) -> ExitManager:
    return ExitManager(
        journal=rig.journal,
        router=rig.router,
        exchanges={"binance": rig.exchange},
        prices=rig.router.prices,
        monotonic=clock or Clock(),
    )


async def buy_with(rig: Rig, plan: ExitPlan) -> str:
    outcome = await rig.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
        exit=plan,
    )
    assert outcome.status == "placed" and outcome.client_order_id is not None
    return outcome.client_order_id


def position(rig: Rig, cid: str) -> Position:
    found = rig.journal.position(cid)
    assert found is not None
    return found


def sells(fake: FakeBinance) -> list[dict[str, str]]:
    return [o.params for o in fake.orders if o.params["side"] == "SELL"]


STOP_TP = ExitPlan(take_profit=0.5, stop_loss=0.2, stop_on_exchange=True)


async def test_stop_rests_and_is_not_placed_twice_after_a_restart(fake: FakeBinance, tmp_path: Path) -> None:
    """The first check after the entry places one STOP_LOSS at the stop-loss price for the whole
    position; a restarted daemon finds it by the journal (its client id) and places none again."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0
    entry = await buy_with(rig, STOP_TP)
    assert await manager(rig).check() == []
    [stop] = fake.open_orders("ABC/USDT")
    assert stop.order_type == "STOP_LOSS" and stop.stop_price == pytest.approx(1.6, rel=0.01)
    assert stop.orig_qty == pytest.approx(10.0)
    assert stop.client_order_id == position(rig, entry).stop_client_order_id
    await rig.exchange.close()
    rig.journal.close()
    rig2 = await make_rig(fake, tmp_path, dry_run=False)
    rig2.router.prices.max_age = 0.0
    try:
        exits = manager(rig2)
        await exits.check()
        await exits.check()
        assert len(fake.open_orders("ABC/USDT")) == 1
        assert len(sells(fake)) == 1
    finally:
        await rig2.exchange.close()
        rig2.journal.close()


async def test_take_profit_cancels_the_stop_first(live: Rig, fake: FakeBinance) -> None:
    """Take-profit reached: the resting stop is cancelled (it holds the coins), then the take-profit
    sells; nothing rests afterwards and the position is closed."""
    entry = await buy_with(live, STOP_TP)
    exits = manager(live)
    await exits.check()
    assert len(fake.open_orders("ABC/USDT")) == 1
    fake.set_price("ABC/USDT", 3.1)
    [sold] = await exits.check()
    assert sold.status == "placed"
    assert fake.open_orders("ABC/USDT") == []
    assert fake.count("DELETE", "/api/v3/order") == 1
    done = position(live, entry)
    assert done.state == "closed" and done.stop_client_order_id is None


async def test_stop_that_filled_meanwhile_wins_the_race(live: Rig, fake: FakeBinance) -> None:
    """The stop triggered on the exchange (the price dipped) just before the price jumped past the
    take-profit: the cancel finds it filled, that fill closes the position, no second sell is sent."""
    entry = await buy_with(live, STOP_TP)
    exits = manager(live)
    await exits.check()
    fake.set_price("ABC/USDT", 1.5)  # the stop triggers and fills on the exchange
    fake.set_price("ABC/USDT", 3.1)  # then the take-profit price, before the daemon looked
    assert await exits.check() == []
    [stop_sell] = sells(fake)
    assert stop_sell["type"] == "STOP_LOSS"
    done = position(live, entry)
    assert done.state == "closed" and done.remaining == 0


async def test_stop_is_resized_after_a_take_profit_tier(live: Rig, fake: FakeBinance) -> None:
    """A tier sells half: the stop for the whole amount is cancelled first, and a new one rests for
    the half still held."""
    plan = ExitPlan(
        tiers=(TakeProfitTier(0.2, 0.5), TakeProfitTier(0.5, 1.0)), stop_loss=0.2, stop_on_exchange=True
    )
    entry = await buy_with(live, plan)
    exits = manager(live)
    await exits.check()
    [first] = fake.open_orders("ABC/USDT")
    assert first.orig_qty == pytest.approx(10.0)
    fake.set_price("ABC/USDT", 2.5)
    [tier] = await exits.check()
    assert tier.status == "placed"
    assert fake.open_orders("ABC/USDT") == []
    await exits.check()
    [second] = fake.open_orders("ABC/USDT")
    assert second.orig_qty == pytest.approx(5.0)
    assert position(live, entry).stop_client_order_id == second.client_order_id


async def test_a_refused_stop_backs_off_then_rests(live: Rig, fake: FakeBinance) -> None:
    """The venue refuses the stop once: it is not re-sent on every tick (backoff from 5 s), and the
    next try after the backoff rests. A 5xx the exchange never executed is looked up, found absent,
    and tried again the same way; never two stops at once."""
    entry = await buy_with(live, STOP_TP)
    clock = Clock()
    exits = manager(live, clock)
    fake.fail_next_order("insufficient_balance")
    await exits.check()
    await exits.check()  # within the backoff: nothing sent
    stop_posts = [o for o in fake.orders if o.params.get("type") == "STOP_LOSS"]
    assert len(stop_posts) == 1 and fake.open_orders("ABC/USDT") == []
    assert position(live, entry).stop_client_order_id is None
    clock.now += 600
    fake.fail_next_order("server_error_before")
    await exits.check()
    assert fake.open_orders("ABC/USDT") == [] and position(live, entry).stop_client_order_id is None
    clock.now += 600
    await exits.check()
    [stop] = fake.open_orders("ABC/USDT")
    assert position(live, entry).stop_client_order_id == stop.client_order_id
    assert (
        len({o.params["newClientOrderId"] for o in fake.orders if o.params.get("type") == "STOP_LOSS"}) == 3
    )


async def test_a_halted_venue_keeps_the_stop_resting(live: Rig, fake: FakeBinance) -> None:
    """The take-profit is reached while the venue is halted for exits (a 429's `venue_backoff`): the
    sell could not go, so the stop is not cancelled either (that would leave the coins unprotected).
    Once the halt lifts, the stop is cancelled and the take-profit sells."""
    entry = await buy_with(live, STOP_TP)
    exits = manager(live)
    await exits.check()
    [stop] = fake.open_orders("ABC/USDT")
    live.gate.halt("venue_backoff", venue="binance")
    fake.set_price("ABC/USDT", 3.1)
    assert await exits.check() == []
    assert fake.open_orders("ABC/USDT") == [stop] and fake.count("DELETE", "/api/v3/order") == 0
    assert position(live, entry).stop_client_order_id == stop.client_order_id
    live.router.backoff.lift("binance")
    [sold] = await exits.check()
    assert sold.status == "placed" and fake.open_orders("ABC/USDT") == []
    assert position(live, entry).state == "closed"


async def test_a_stop_a_look_up_misses_is_kept_until_it_is_surely_gone(
    live: Rig, fake: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look-up of the resting stop answers "no such order" (it lags the order, or the venue hiccups):
    the stop is not forgotten on one answer (a second stop would be placed beside the one resting), only
    after STOP_NOT_FOUND_LIMIT such answers in a row."""
    entry = await buy_with(live, STOP_TP)
    exits = manager(live)
    await exits.check()
    [stop] = fake.open_orders("ABC/USDT")

    async def not_found(symbol: str, client_order_id: str) -> OrderResult | None:
        return None

    monkeypatch.setattr(live.exchange, "fetch_order_by_client_id", not_found)
    fake.set_price("ABC/USDT", 1.62)  # near the trigger (1.6): looked up on every tick
    for _ in range(STOP_NOT_FOUND_LIMIT - 1):
        await exits.check()
        assert position(live, entry).stop_client_order_id == stop.client_order_id
    assert len([o for o in fake.orders if o.params.get("type") == "STOP_LOSS"]) == 1
    await exits.check()
    assert position(live, entry).stop_client_order_id is None
