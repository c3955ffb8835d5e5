"""Perpetuals on the order path and the exits, real ccxt against FakeBinanceFutures: margin mode and
leverage set once before a symbol's first order (and said how long it took), the notional counted by the
risk limits, a short opened with `opens` whose exits buy back reduce-only (a take-profit under the entry
after the resting stop is taken off, the stop above it filled on the venue), an exit that can never open
a reverse position, an unknown outcome settled by client id, and a restart that never orders twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.config import TradingConfig
from bridge.sim.fake_binance_futures import FakeBinanceFutures
from bridge.trading.contracts import Leverage
from bridge.trading.exits import ExitManager
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import Announcement, ExitPlan, OrderOutcome, Position
from bridge.trading.orders import OrderRouter
from bridge.trading.risk import RiskLimits
from bridge.venues.exchange import Exchange
from tests.factories import announcement
from tests.venues.test_binanceusdm import SWAP, usdm_config


@dataclass
class Rig:
    fake: FakeBinanceFutures
    exchange: Exchange
    router: OrderRouter
    journal: Journal

    async def close(self) -> None:
        await self.exchange.close()
        self.journal.close()


async def make_rig(fake: FakeBinanceFutures, state: Path, **trading: Any) -> Rig:
    exchange = Exchange("binance", usdm_config(fake), dry_run=False)
    await exchange.start(check_keys=True)
    journal = Journal.open(state, dry_run=False)
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")

    async def no_wait(delay: float) -> None:
        return None

    router = OrderRouter(
        gate=gate,
        risk=RiskLimits(TradingConfig(dry_run=False, **trading), journal),
        journal=journal,
        exchanges={"binance": exchange},
        dry_run=False,
        sleep=no_wait,
    )
    router.prices.max_age = 0.0  # every look at a price asks the fake: the tests move it
    return Rig(fake, exchange, router, journal)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exits(rig: Rig) -> ExitManager:
    return ExitManager(
        journal=rig.journal,
        router=rig.router,
        exchanges={"binance": rig.exchange},
        prices=rig.router.prices,
        monotonic=Clock(),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)]) as f:
        f.spread = 0.0  # bid = ask = 2.0: the sizes below are the arithmetic of cost, leverage and price
        yield f


@pytest.fixture
async def rig(fake: FakeBinanceFutures, tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(fake, tmp_path)
    yield r
    await r.close()


async def short(
    rig: Rig, plan: ExitPlan | None = None, *, a: Announcement | None = None, leverage: float = 2
) -> OrderOutcome:
    return await rig.router.submit(
        strategy="s",
        announcement=a or announcement("ABC", listing_type="delisting"),
        exchange="binance",
        symbol=SWAP,
        side="sell",
        cost=20,
        exit=plan,
        max_slippage=None,
        leverage=Leverage(leverage),
        opens=True,
    )


def position(rig: Rig, cid: str | None) -> Position:
    assert cid is not None
    found = rig.journal.position(cid)
    assert found is not None
    return found


def paths(fake: FakeBinanceFutures) -> list[str]:
    return [f"{method} {path}" for method, path in fake.requests if path.startswith("/fapi/v1/")]


async def test_leverage_and_margin_mode_are_set_once_before_the_first_order(
    rig: Rig, fake: FakeBinanceFutures
) -> None:
    """The first order on a symbol sets isolated margin and its leverage first, logging how long that
    took on the order path; the second order on it sends neither again."""
    with capture_logs() as logs:
        first = await short(rig, leverage=3)
    assert first.status == "placed"
    setting = fake.perps.settings["ABCUSDT"]
    assert (setting.leverage, setting.margin_type) == (3, "ISOLATED")
    sequence = [p for p in paths(fake) if p.startswith("POST")]
    assert sequence == ["POST /fapi/v1/marginType", "POST /fapi/v1/leverage", "POST /fapi/v1/order"]
    setup = [e for e in logs if e["event"] == "order.contract_setup"]
    assert len(setup) == 1 and setup[0]["on_order_path"] is True and setup[0]["elapsed_ms"] >= 0
    second = await short(rig, leverage=3, a=announcement("ABC", listing_type="delisting", title="again"))
    assert second.status == "placed"
    assert fake.count("POST", "/fapi/v1/leverage") == 1 and fake.count("POST", "/fapi/v1/marginType") == 1


async def test_cost_is_the_margin_and_the_notional_is_what_the_venue_gets(
    rig: Rig, fake: FakeBinanceFutures
) -> None:
    """20 USDT at 3x is a 60 USDT position: 30 ABC at 2.0, sent as an amount (contract market orders are
    sized by amount), not reduce-only since it opens."""
    outcome = await short(rig, leverage=3)
    assert outcome.result is not None and outcome.result.filled == 30.0
    params = fake.orders[-1].params
    assert (params["side"], params["type"], params["quantity"]) == ("SELL", "MARKET", "30")
    assert "reduceOnly" not in params
    assert fake.position_amount(SWAP) == -30.0


async def test_risk_limits_count_the_notional(fake: FakeBinanceFutures, tmp_path: Path) -> None:
    """max_order_cost 50: 20 USDT of margin at 3x (60 notional) is refused, at 2x (40) it passes."""
    rig = await make_rig(fake, tmp_path, max_order_cost={"USDT": 50.0})
    try:
        refused = await short(rig, leverage=3)
        assert (refused.status, refused.reason) == ("skipped", "over_max_order_cost")
        assert fake.orders == [] and fake.count("POST", "/fapi/v1/leverage") == 0
        allowed = await short(rig, leverage=2, a=announcement("ABC", listing_type="delisting", title="2x"))
        assert allowed.status == "placed"
    finally:
        await rig.close()


async def test_a_short_takes_profit_under_the_entry_buying_back_reduce_only(
    rig: Rig, fake: FakeBinanceFutures
) -> None:
    """A short with a stop on the exchange: the stop is a reduce-only BUY above the entry; when the price
    falls 20 % the stop is cancelled and the position bought back, reduce-only, at a cap above the ask.
    The realised profit is the entry's proceeds less the buy-back."""
    plan = ExitPlan(take_profit=0.2, stop_loss=0.1, stop_on_exchange=True)
    outcome = await short(rig, plan)
    p = position(rig, outcome.client_order_id)
    assert (p.side, p.filled, p.average) == ("sell", 20.0, 2.0)
    manager = exits(rig)
    await manager.check()  # rests the stop
    stop = fake.algo_requests[-1]
    assert (stop["side"], stop["type"], stop["reduceOnly"], stop["triggerPrice"]) == (
        "BUY",
        "STOP_MARKET",
        "true",
        "2.2",
    )
    fake.set_perp_price(SWAP, 1.6)
    await manager.check()
    assert fake.open_algo_orders(SWAP) == []
    buy_back = fake.orders[-1].params
    assert (buy_back["side"], buy_back["reduceOnly"], buy_back["type"]) == ("BUY", "true", "LIMIT")
    assert float(buy_back["price"]) > 1.6
    assert fake.position_amount(SWAP) == 0.0
    closed = position(rig, outcome.client_order_id)
    assert closed.state == "closed" and closed.remaining == 0
    assert rig.journal.realised_since(0)["USDT"] == pytest.approx(20 * (2.0 - 1.6))


async def test_the_stop_above_a_short_fills_on_the_venue_and_closes_it(
    rig: Rig, fake: FakeBinanceFutures
) -> None:
    """The price rises through the resting stop: the venue buys back; the next look-up records the fill
    and the position closes without the daemon sending an order of its own."""
    plan = ExitPlan(stop_loss=0.1, stop_on_exchange=True)
    outcome = await short(rig, plan)
    manager = exits(rig)
    await manager.check()
    orders_before = len(fake.orders)
    fake.set_perp_price(SWAP, 2.3)
    await manager.check()
    assert len(fake.orders) == orders_before  # the venue's own stop did it
    closed = position(rig, outcome.client_order_id)
    assert closed.state == "closed" and closed.sold == 20.0
    assert fake.position_amount(SWAP) == 0.0
    assert rig.journal.realised_since(0)["USDT"] == pytest.approx(-20 * 0.3)


async def test_an_exit_can_never_open_a_reverse_position(rig: Rig, fake: FakeBinanceFutures) -> None:
    """The venue holds less than the journal thinks (part was closed by hand): the reduce-only buy-back
    fills what is there and the account ends flat, never long."""
    outcome = await short(rig, ExitPlan(after=1))
    fake.perps.position("ABCUSDT").amount = -6.0
    manager = ExitManager(
        journal=rig.journal,
        router=rig.router,
        exchanges={"binance": rig.exchange},
        prices=rig.router.prices,
        monotonic=Clock(),
        clock_ns=lambda: position(rig, outcome.client_order_id).opened_ns + 2_000_000_000,
    )
    await manager.check()
    assert fake.orders[-1].params["reduceOnly"] == "true"
    assert fake.position_amount(SWAP) == 0.0


async def test_an_unknown_outcome_is_looked_up_by_client_id_never_resent(
    rig: Rig, fake: FakeBinanceFutures
) -> None:
    fake.fail_next_order("server_error_after")
    outcome = await short(rig, ExitPlan(stop_loss=0.1))
    assert outcome.status == "unknown"
    await rig.router.settled()
    assert len(fake.orders) == 1 and fake.position_amount(SWAP) == -20.0
    p = position(rig, outcome.client_order_id)
    assert (p.state, p.filled, p.side) == ("open", 20.0, "sell")


async def test_a_restart_never_orders_or_rests_a_stop_twice(fake: FakeBinanceFutures, tmp_path: Path) -> None:
    """The same announcement after a restart is a duplicate (the journal's intent), and the resting stop
    the first run placed is found, not placed again."""
    a = announcement("ABC", listing_type="delisting")
    plan = ExitPlan(stop_loss=0.1, stop_on_exchange=True)
    first = await make_rig(fake, tmp_path)
    try:
        assert (await short(first, plan, a=a)).status == "placed"
        await exits(first).check()
    finally:
        await first.close()
    second = await make_rig(fake, tmp_path)
    try:
        again = await short(second, plan, a=a)
        assert (again.status, again.reason) == ("skipped", "duplicate")
        await exits(second).check()
    finally:
        await second.close()
    assert len(fake.orders) == 1 and len(fake.algo_requests) == 1
    assert len(fake.open_algo_orders(SWAP)) == 1 and fake.position_amount(SWAP) == -20.0


async def test_a_short_or_leverage_on_spot_is_refused(rig: Rig, fake: FakeBinanceFutures) -> None:
    outcome = await rig.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="sell",
        cost=20,
        opens=True,
    )
    assert (outcome.status, outcome.reason) == ("skipped", "needs_a_contract_market")
    assert fake.orders == []


async def test_a_closing_sell_on_a_perpetual_is_reduce_only(rig: Rig, fake: FakeBinanceFutures) -> None:
    """ctx.sell without open on a perpetual with no long held is refused by the venue (-2022): it can
    never open a short by accident."""
    outcome = await rig.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol=SWAP,
        side="sell",
        amount=5,
        max_slippage=None,
    )
    assert outcome.status == "rejected"
    assert fake.orders[-1].params["reduceOnly"] == "true" and fake.position_amount(SWAP) == 0.0
