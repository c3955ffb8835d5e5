"""Exits until flat: a position stays watched until a filled exit covers it, through transient errors,
definitive rejections, partial fills and restarts. Real ccxt against the fake Binance."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.exit_rules import decide
from bridge.trading.exits import ABANDON_AFTER_S, ALERTED_FAILURES, MAX_EXIT_FAILURES, ExitManager
from bridge.trading.model import ExitPlan, Position, TakeProfitTier
from bridge.venues.types import OrderRequest, OrderResult
from tests.factories import announcement
from tests.test_orders import Rig, make_rig

NOW = 1_800_000_000_000_000_000


@dataclass
class Alerts:
    failed: list[tuple[str, str]] = field(default_factory=list)
    abandoned: list[tuple[str, str]] = field(default_factory=list)

    def exit_failed(self, exchange: str, symbol: str, client_order_id: str | None, reason: str) -> None:
        self.failed.append((symbol, reason))

    def position_abandoned(self, exchange: str, symbol: str, entry_client_order_id: str, reason: str) -> None:
        self.abandoned.append((symbol, reason))


@dataclass
class Clock:
    mono: float = 1000.0
    wall_ns: int = 0

    def monotonic(self) -> float:
        return self.mono

    def now_ns(self) -> int:
        return self.wall_ns or __import__("time").time_ns()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as f:
        yield f


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0  # every check reads the fake's price as it is now
    yield rig
    await rig.exchange.close()
    rig.journal.close()


def manager(rig: Rig, alerts: Alerts | None = None, clock: Clock | None = None) -> ExitManager:
    clock = clock or Clock()
    return ExitManager(
        journal=rig.journal,
        router=rig.router,
        exchanges={"binance": rig.exchange},
        prices=rig.router.prices,
        alerts=alerts,
        monotonic=clock.monotonic,
        clock_ns=clock.now_ns,
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


def sells(fake: FakeBinance) -> list[dict[str, str]]:
    return [o.params for o in fake.orders if o.params["side"] == "SELL"]


def position(rig: Rig, cid: str) -> Position:
    found = rig.journal.position(cid)
    assert found is not None
    return found


def test_decide_tiers_and_trailing() -> None:
    """The rules: a tier sells its fraction of what is held; the trailing stop measures from the high;
    the stop-loss comes first; a manual close sells everything at market."""
    plan = ExitPlan(
        tiers=(TakeProfitTier(0.2, 0.5), TakeProfitTier(0.5, 1.0)), trailing_stop=0.1, stop_loss=0.3
    )
    p = Position("e", "s", "binance", "ABC/USDT", 10.0, 2.0, NOW, plan)
    first = decide(p, 2.45, NOW)
    assert first is not None and (first.reason, first.amount, first.market, first.hold) == (
        "take_profit",
        5.0,
        False,
        5.0,
    )
    assert decide(p, 2.39, NOW) is None
    trailing = decide(
        Position("e", "s", "binance", "ABC/USDT", 10.0, 2.0, NOW, plan, high_water=3.0), 2.69, NOW
    )
    assert trailing is not None and (trailing.reason, trailing.market) == ("trailing_stop", True)
    stop = decide(p, 1.39, NOW)
    assert stop is not None and stop.reason == "stop_loss" and stop.amount == 10.0
    manual = decide(p, 2.0, NOW, manual=True)
    assert manual is not None and (manual.reason, manual.market) == ("manual", True)


async def test_stop_loss_survives_a_429_then_a_5xx_and_sells_once(live: Rig, fake: FakeBinance) -> None:
    """A stop-loss exit meets a 429 (backed off, Retry-After honoured) and then a 5xx the exchange never
    executed (looked up, not found): the third attempt sells. Each attempt has its own client id and
    exactly one sell executed."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    clock = Clock()
    exits = manager(live, clock=clock)
    fake.set_price("ABC/USDT", 1.5)
    fake.fail_next_order("rate_limited")
    assert [o.status for o in await exits.check()] == ["rejected"]
    assert position(live, entry).state == "open"
    assert "venue_backoff:binance" in live.gate.reasons  # the whole venue waits for its Retry-After
    assert await exits.check() == []  # backing off: nothing sent
    live.router.backoff.lift("binance")  # what its loop timer does when the Retry-After has passed
    clock.mono += 61  # past the position's own backoff
    fake.fail_next_order("server_error_before")
    assert [o.status for o in await exits.check()] == ["not_found"]
    clock.mono += 61
    [filled] = await exits.check()
    assert filled.status == "placed"
    ids = [s["newClientOrderId"] for s in sells(fake)]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(s["type"] == "MARKET" for s in sells(fake))
    done = position(live, entry)
    assert done.state == "closed" and done.remaining == 0
    assert await exits.check() == [] and len(sells(fake)) == 3


async def test_unknown_exit_is_looked_up_before_the_next_attempt(live: Rig, fake: FakeBinance) -> None:
    """An exit whose answer never came but which the exchange executed is found by its client id: the
    position closes and no second sell is sent."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    exits = manager(live)
    fake.set_price("ABC/USDT", 1.5)
    fake.fail_next_order("server_error_after")  # executed, then a 500
    [outcome] = await exits.check()
    assert outcome.status == "placed"
    assert len(sells(fake)) == 1 and position(live, entry).state == "closed"


async def test_definitive_rejection_alerts_and_retries_with_the_free_balance(
    live: Rig, fake: FakeBinance
) -> None:
    """Insufficient balance (fees took part of the coin): `exit_failed` is alerted and the next tick
    sells what the account holds; that closes the position."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    alerts = Alerts()
    exits = manager(live, alerts)
    fake.set_price("ABC/USDT", 1.5)
    fake.fail_next_order("insufficient_balance")
    await exits.check()
    assert alerts.failed == [("ABC/USDT", "insufficient_balance")]
    fake.balances["ABC"] = 9.5
    [outcome] = await exits.check()
    assert outcome.status == "placed"
    assert [float(s["quantity"]) for s in sells(fake)] == [10.0, 9.5]
    done = position(live, entry)
    assert done.state == "closed", done


async def test_what_can_never_fill_is_abandoned_after_bounded_tries(live: Rig, fake: FakeBinance) -> None:
    """An exit refused every time (min notional) is retried after a backoff, alerted each time, and
    abandoned after MAX_EXIT_FAILURES tries spread over ABANDON_AFTER_S; the position stays listed as
    abandoned and nothing more is sent."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    alerts = Alerts()
    clock = Clock()
    exits = manager(live, alerts, clock)
    fake.set_price("ABC/USDT", 1.5)
    fake.fail_next_order("min_notional", count=MAX_EXIT_FAILURES)
    await exits.check()
    assert await exits.check() == [] and len(sells(fake)) == 1  # backing off: nothing sent
    for _ in range(MAX_EXIT_FAILURES - 1):
        clock.mono += ABANDON_AFTER_S / (MAX_EXIT_FAILURES - 1)  # past each backoff (capped at 5 min)
        await exits.check()
    # the first ALERTED_FAILURES refusals are alerted, the rest of the streak (same reason) only logged
    assert len(alerts.failed) == min(ALERTED_FAILURES, MAX_EXIT_FAILURES)
    assert alerts.abandoned == [("ABC/USDT", "too_small")]
    assert position(live, entry).state == "abandoned"
    assert [p.client_order_id for p in live.journal.positions(("abandoned",))] == [entry]
    assert await exits.check() == [] and len(sells(fake)) == MAX_EXIT_FAILURES


async def test_trailing_stop_follows_the_high_and_fires(live: Rig, fake: FakeBinance) -> None:
    """The high water mark rises with the price (kept in the journal); a 10 % fall from it sells."""
    entry = await buy_with(live, ExitPlan(trailing_stop=0.1))
    exits = manager(live)
    fake.set_price("ABC/USDT", 3.0)
    assert await exits.check() == []
    assert position(live, entry).high_water == pytest.approx(3.0, rel=0.01)
    fake.set_price("ABC/USDT", 2.75)  # -8 % from the high: hold
    assert await exits.check() == []
    fake.set_price("ABC/USDT", 2.6)  # -13 %
    [outcome] = await exits.check()
    assert outcome.status == "placed" and sells(fake)[0]["type"] == "MARKET"
    assert position(live, entry).state == "closed"


async def test_tiered_take_profit_sells_the_right_fractions(live: Rig, fake: FakeBinance) -> None:
    """Tiers {+20 %: half} then {+50 %: the rest}: 5 of 10 at the first, 5 at the second, each a limit
    IOC under the bid; the position closes after the last tier."""
    entry = await buy_with(live, ExitPlan(tiers=(TakeProfitTier(0.2, 0.5), TakeProfitTier(0.5, 1.0))))
    exits = manager(live)
    fake.set_price("ABC/USDT", 2.5)
    [first] = await exits.check()
    assert first.status == "placed"
    assert position(live, entry).tiers_done == 1 and position(live, entry).remaining == pytest.approx(5.0)
    assert await exits.check() == []  # +25 %: the second tier is not reached
    fake.set_price("ABC/USDT", 3.1)
    [second] = await exits.check()
    assert second.status == "placed"
    assert [(s["type"], s["timeInForce"], float(s["quantity"])) for s in sells(fake)] == [
        ("LIMIT", "IOC", 5.0),
        ("LIMIT", "IOC", 5.0),
    ]
    assert position(live, entry).state == "closed"


async def test_time_exit_is_resent_until_filled(live: Rig, fake: FakeBinance) -> None:
    """A time exit's IOC that the book moved away from expires; the next tick re-prices and sells."""
    clock = Clock()
    entry = await buy_with(live, ExitPlan(after=60))
    clock.wall_ns = position(live, entry).opened_ns + 61 * 10**9
    exits = manager(live, clock=clock)
    fake.move_price_on_next_order("ABC/USDT", 1.0)  # the bid falls under the IOC's floor as it arrives
    [expired] = await exits.check()
    assert expired.status == "expired"
    [filled] = await exits.check()
    assert filled.status == "placed"
    assert len(sells(fake)) == 2 and position(live, entry).state == "closed"


async def test_manual_close_sells_at_market(live: Rig, fake: FakeBinance) -> None:
    """`bridge close` asks for one position to be sold now: at market, whatever its plan says."""
    entry = await buy_with(live, ExitPlan(after=3600))
    exits = manager(live)
    assert exits.request_close("XYZ/USDT")[0] is False
    ok, message = exits.request_close("ABC/USDT")
    assert ok, message
    [outcome] = await exits.check()
    assert outcome.status == "placed" and sells(fake)[0]["type"] == "MARKET"
    assert position(live, entry).state == "closed"


async def test_entry_with_unknown_fill_keeps_its_exit_plan(live: Rig, fake: FakeBinance) -> None:
    """An entry whose answer never came returns at once as `unknown` (looked up in the background);
    its position is pending (no exit sent) until the look-up finds the fill, then the exit plan runs."""
    live.exchange.ccxt.timeout = 300
    fake.fail_next_order("server_error_after")
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
        exit=ExitPlan(stop_loss=0.2),
    )
    assert outcome.status == "unknown" and outcome.reason == "looking_up"
    entry = outcome.client_order_id or ""
    assert position(live, entry).state == "pending"
    exits = manager(live)
    fake.set_price("ABC/USDT", 1.5)
    assert await exits.check() == [] and sells(fake) == []
    await live.router.settled()
    assert position(live, entry).state == "open"
    [sold] = await exits.check()
    assert sold.status == "placed" and position(live, entry).state == "closed"


async def test_progress_survives_a_restart(fake: FakeBinance, tmp_path: Path) -> None:
    """A tier sold before a restart is not sold again after it; the high water mark is kept."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0
    entry = await buy_with(rig, ExitPlan(tiers=(TakeProfitTier(0.2, 0.5), TakeProfitTier(0.5, 1.0))))
    fake.set_price("ABC/USDT", 2.5)
    await manager(rig).check()
    await rig.exchange.close()
    rig.journal.close()
    rig2 = await make_rig(fake, tmp_path, dry_run=False)
    rig2.router.prices.max_age = 0.0
    try:
        assert await manager(rig2).check() == []
        p = position(rig2, entry)
        assert p.tiers_done == 1 and p.remaining == pytest.approx(5.0) and p.high_water is not None
    finally:
        await rig2.exchange.close()
        rig2.journal.close()
    assert len(sells(fake)) == 1


async def test_exit_prices_come_in_one_batch_per_venue(tmp_path: Path) -> None:
    """With no fresh price in the cache, a pass over two positions costs one batch request for the
    venue, not one request per position."""
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 1.0)]) as two:
        rig = await make_rig(two, tmp_path, dry_run=False)
        try:
            for ticker in ("ABC", "DEF"):
                outcome = await rig.router.submit(
                    strategy="s",
                    announcement=announcement(ticker),
                    exchange="binance",
                    symbol=f"{ticker}/USDT",
                    side="buy",
                    cost=20,
                    exit=ExitPlan(stop_loss=0.2),
                )
                assert outcome.status == "placed"
            assert rig.router.prices.cached("binance", "ABC/USDT") is None  # an uncapped buy asks no price
            seen = len(two.queries)
            assert await manager(rig).check() == []
            price_calls = [q for q in two.queries[seen:] if "ticker" in q[1].lower()]
            assert len(price_calls) == 1 and "symbol" not in price_calls[0][2], price_calls
        finally:
            await rig.exchange.close()
            rig.journal.close()


async def test_a_rejected_key_on_another_venue_leaves_these_exits_running(
    live: Rig, fake: FakeBinance
) -> None:
    """`credentials_rejected` on another exchange halts that exchange only: this one's stop-loss
    still sells."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    live.gate.halt("credentials_rejected", venue="okx")
    fake.set_price("ABC/USDT", 1.5)
    [outcome] = await manager(live).check()
    assert outcome.status == "placed" and position(live, entry).state == "closed"
    live.gate.halt("credentials_rejected", venue="binance")
    assert live.gate.exit_blockers("binance") == {"credentials_rejected:binance"}


async def test_a_wait_for_a_halt_ends_when_the_halt_lifts(live: Rig, fake: FakeBinance) -> None:
    """A stop-loss refused by the gate (a 429's `venue_backoff`) waits; the moment the halt lifts, the
    next tick sells, whatever is left of the position's own backoff (nothing was sent meanwhile)."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    exits = manager(live)  # its clock never moves: only the lifted halt ends the wait
    fake.set_price("ABC/USDT", 1.5)
    live.gate.halt("venue_backoff", venue="binance")
    assert await exits.check() == [] and sells(fake) == []
    live.router.backoff.lift("binance")
    [sold] = await exits.check()
    assert sold.status == "placed" and position(live, entry).state == "closed"


async def test_an_exit_accepted_before_its_look_up_finds_it_is_waited_for(
    live: Rig, fake: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue accepts the stop-loss's sell without its fill, and the look-ups by client id miss it
    for a while (they lag the order): an accepted order is never taken for one that never executed, so
    nothing is sent again and nothing is alerted until a look-up finds its fill."""
    entry = await buy_with(live, ExitPlan(stop_loss=0.2))
    real_create, real_fetch = live.exchange.create_order, live.exchange.fetch_order_by_client_id
    misses = [3]

    async def acknowledged_only(req: OrderRequest) -> OrderResult:
        result = await real_create(req)
        return dataclasses.replace(result, status="open", filled=None, cost=None, average=None)

    async def lagging(symbol: str, client_order_id: str) -> OrderResult | None:
        if misses[0] > 0:
            misses[0] -= 1
            return None
        return await real_fetch(symbol, client_order_id)

    monkeypatch.setattr(live.exchange, "create_order", acknowledged_only)
    monkeypatch.setattr(live.exchange, "fetch_order_by_client_id", lagging)
    alerts = Alerts()
    clock = Clock()
    exits = manager(live, alerts, clock)
    fake.set_price("ABC/USDT", 1.5)
    for _ in range(3):
        await exits.check()
        assert position(live, entry).state == "open"
        clock.mono += 1
    await exits.check()
    assert len(sells(fake)) == 1 and alerts.failed == []
    assert position(live, entry).state == "closed"


async def test_a_paper_exit_without_a_price_waits_for_one(
    fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paper: a manual close while no price is known cannot be filled on paper. That is a transient
    "no price" (no alert, no unfilled exit row, never abandoned), and it sells once a price is back."""
    rig = await make_rig(fake, tmp_path, dry_run=True)
    try:
        outcome = await rig.router.submit(
            strategy="s",
            announcement=announcement("ABC"),
            exchange="binance",
            symbol="ABC/USDT",
            side="buy",
            cost=20,
            exit=ExitPlan(after=3600),
        )
        assert outcome.status == "paper" and outcome.client_order_id is not None
        entry = outcome.client_order_id
        alerts = Alerts()
        clock = Clock()
        exits = ExitManager(
            journal=rig.journal,
            router=rig.router,
            exchanges={"binance": rig.exchange},
            prices=rig.router.prices,
            alerts=alerts,
            monotonic=clock.monotonic,
        )
        prices = rig.router.prices

        async def no_price(*args: object, **kwargs: object) -> float | None:
            return None

        real_reference = prices.reference
        monkeypatch.setattr(prices, "reference", no_price)
        assert exits.request_close("ABC/USDT")[0]
        for _ in range(MAX_EXIT_FAILURES + 1):
            assert await exits.check() == []
            clock.mono += 60
        assert alerts.failed == [] and alerts.abandoned == []
        assert rig.journal.exit_orders(entry) == [] and position(rig, entry).state == "open"
        monkeypatch.setattr(prices, "reference", real_reference)
        [sold] = await exits.check()
        assert sold.status == "paper" and position(rig, entry).state == "closed"
    finally:
        await rig.exchange.close()
        rig.journal.close()
