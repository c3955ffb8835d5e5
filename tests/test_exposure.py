"""Exposure and loss limits, and positions checked against the venue's balances: max_open_cost refuses
an entry past the open cost, daily_loss_limit halts entries (not exits) until resumed, a position sold
outside bridge is closed `external`. Real ccxt against the fake Binance."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.config import TradingConfig
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.exits import HOLDINGS_GRACE_S, ExitManager
from bridge.trading.exposure import Exposure
from bridge.trading.model import ExitPlan
from bridge.trading.risk import RiskLimits
from tests.factories import announcement
from tests.test_orders import Rig, make_rig


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 1.0), ("GHI", "USDT", 1.0)]) as f:
        yield f


LATER = [0]  # nanoseconds added to the exit manager's clock (the holdings check waits out a grace)


async def rig_with(fake: FakeBinance, tmp_path: Path, **limits: object) -> tuple[Rig, Exposure, ExitManager]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    cfg = TradingConfig(dry_run=False, **limits)  # type: ignore[arg-type]
    exposure = Exposure(cfg, rig.journal, rig.gate)
    rig.router._risk = RiskLimits(cfg, rig.journal, exposure=exposure)
    rig.router.prices.max_age = 0.0
    exits = ExitManager(
        journal=rig.journal,
        router=rig.router,
        exchanges={"binance": rig.exchange},
        prices=rig.router.prices,
        exposure=exposure,
        clock_ns=lambda: time.time_ns() + LATER[0],
    )
    LATER[0] = 0
    return rig, exposure, exits


STOP = ExitPlan(stop_loss=0.2)


async def buy(rig: Rig, ticker: str, plan: ExitPlan | None = STOP) -> str:
    outcome = await rig.router.submit(
        strategy="s",
        announcement=announcement(ticker),
        exchange="binance",
        symbol=f"{ticker}/USDT",
        side="buy",
        cost=40,
        exit=plan,
    )
    return outcome.status if outcome.ok else outcome.reason or outcome.status


async def test_max_open_cost_counts_open_and_in_flight_entries(fake: FakeBinance, tmp_path: Path) -> None:
    """With max_open_cost 100 USDT, two 40 USDT entries open; a third is refused
    (`over_max_open_cost`), before and after the exit manager re-reads the journal; once one
    position is sold, a new entry fits again."""
    rig, exposure, exits = await rig_with(fake, tmp_path, max_open_cost={"USDT": 100})
    try:
        assert await buy(rig, "ABC") == "placed"
        assert await buy(rig, "DEF") == "placed"
        assert await buy(rig, "GHI") == "over_max_open_cost"
        await exits.check()
        assert exposure.open_cost("USDT") == pytest.approx(80.0, rel=0.01)
        fake.set_price("ABC/USDT", 1.5)  # ABC's stop-loss sells it
        await exits.check()
        await exits.check()  # re-reads: ABC is closed
        assert exposure.open_cost("USDT") == pytest.approx(40.0, rel=0.01)
        assert await buy(rig, "GHI") == "placed"
    finally:
        await rig.exchange.close()
        rig.journal.close()


async def test_daily_loss_limit_halts_entries_not_exits(fake: FakeBinance, tmp_path: Path) -> None:
    """A stop-loss realises ~10 USDT of loss with daily_loss_limit 5: new entries halt (`loss_limit`),
    exits still go; a manual resume lets entries through again for the rest of the day."""
    rig, exposure, exits = await rig_with(fake, tmp_path, daily_loss_limit={"USDT": 5})
    try:
        assert await buy(rig, "ABC") == "placed"
        assert await buy(rig, "DEF", ExitPlan(take_profit=0.5)) == "placed"
        fake.set_price("ABC/USDT", 1.5)
        await exits.check()  # sells ABC at a loss
        await exits.check()  # the next pass sees the realised loss
        assert exposure.realised["USDT"] < -5
        assert "loss_limit" in rig.gate.reasons
        assert await buy(rig, "GHI") == "trading_halted:loss_limit"
        assert rig.gate.exit_blockers("binance") == frozenset()
        fake.set_price("DEF/USDT", 1.6)
        [sold] = await exits.check()
        assert sold.status == "placed"  # the take-profit exit went out while entries are halted
        assert exposure.resume() is True
        await exits.check()
        assert "loss_limit" not in rig.gate.reasons  # not halted again today after a resume
        assert await buy(rig, "GHI") == "placed"
    finally:
        await rig.exchange.close()
        rig.journal.close()


async def test_position_sold_outside_bridge_is_closed_external(fake: FakeBinance, tmp_path: Path) -> None:
    """The account no longer holds the coin (sold by hand): the reconciliation closes the position
    `external` and no exit is ever sent for it; a position whose coin is there stays open."""
    rig, _, exits = await rig_with(fake, tmp_path)
    try:
        gone = await buy(rig, "ABC")
        kept = await buy(rig, "DEF")
        assert gone == kept == "placed"
        fake.balances["DEF"] = 40.0  # ABC is not on the account any more
        assert await exits.reconcile_holdings() == []  # just bought: the balance may lag, not yet
        LATER[0] = int((HOLDINGS_GRACE_S + 1) * 1e9)
        [closed] = await exits.reconcile_holdings()
        positions = {p.symbol: p for p in rig.journal.positions()}
        assert positions["ABC/USDT"].state == "closed" and positions["ABC/USDT"].close_reason == "external"
        assert closed == positions["ABC/USDT"].client_order_id
        assert positions["DEF/USDT"].state == "open"
        fake.set_price("ABC/USDT", 1.0)
        assert await exits.check() == []
        assert [o for o in fake.orders if o.params["side"] == "SELL"] == []
    finally:
        await rig.exchange.close()
        rig.journal.close()
