"""The perpetuals core in bridge.trading: a short's exit rules mirror a long's, the contract set-up runs
once per symbol however many orders race for it (and is retried after a failure), a strategy can set it
up from on_start off the order path, listing_buy goes long a perpetual with `market: swap`, and the risk
limits count the notional, a short included, per quote currency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.config import TradingConfig
from bridge.schema import build
from bridge.sim.fake_binance_futures import FakeBinanceFutures
from bridge.trading.contracts import Leverage
from bridge.trading.exit_rules import decide, exit_side, high_water, stop_price
from bridge.trading.exposure import Exposure
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import ExitPlan, Position
from bridge.trading.risk import RiskLimits
from bridge.trading.strategy import Context
from strategies.listing_buy import ListingBuy, ListingBuyParams
from tests.factories import announcement
from tests.venues.test_binanceusdm_trading import Rig, exits, make_rig

SWAP = "ABC/USDT:USDT"


def short_position(plan: ExitPlan, *, low: float | None = None) -> Position:
    return Position("e1", "s", "binance", SWAP, 10.0, 2.0, 0, plan, quote="USDT", high_water=low, side="sell")


def test_a_shorts_stop_is_above_and_its_take_profit_below_the_entry() -> None:
    plan = ExitPlan(take_profit=0.2, stop_loss=0.1)
    p = short_position(plan)
    assert exit_side(p) == "buy"
    assert stop_price(p) == pytest.approx(2.2)
    assert decide(p, 2.1, 0) is None
    stop = decide(p, 2.2, 0)
    assert stop is not None and (stop.reason, stop.market, stop.amount) == ("stop_loss", True, 10.0)
    assert decide(p, 1.7, 0) is None
    tp = decide(p, 1.6, 0)
    assert tp is not None and (tp.reason, tp.market) == ("take_profit", False)


def test_a_shorts_trailing_stop_follows_the_lowest_price() -> None:
    """The water mark of a short is its low: from a low of 1.5, a 10 % trail buys back at 1.65."""
    p = short_position(ExitPlan(trailing_stop=0.1), low=1.5)
    assert high_water(p, 1.6) == 1.5 and high_water(p, 1.4) == 1.4
    assert decide(p, 1.64, 0) is None
    trail = decide(p, 1.651, 0)
    assert trail is not None and trail.reason == "trailing_stop"


def test_a_longs_rules_are_unchanged() -> None:
    p = Position("e1", "s", "binance", SWAP, 10.0, 2.0, 0, ExitPlan(take_profit=0.2, stop_loss=0.1))
    assert exit_side(p) == "sell" and stop_price(p) == pytest.approx(1.8)
    assert decide(p, 1.8, 0) is not None and decide(p, 2.39, 0) is None and decide(p, 2.4, 0) is not None


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)]) as f:
        yield f


@pytest.fixture
async def rig(fake: FakeBinanceFutures, tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(fake, tmp_path)
    yield r
    await r.close()


def context(rig: Rig) -> Context:
    return Context(strategy="s", router=rig.router, exchanges={"binance": rig.exchange}, dry_run=False)


async def test_racing_orders_share_one_set_up(rig: Rig, fake: FakeBinanceFutures) -> None:
    """Three announcements' orders for one symbol at once: one marginType and one leverage request."""
    ctx = context(rig)
    news = [announcement("ABC", title=f"t{i}") for i in range(3)]
    outcomes = await asyncio.gather(
        *(ctx.bind(a).buy("binance", SWAP, cost=10, leverage=2, max_slippage=None) for a in news)
    )
    assert [o.status for o in outcomes] == ["placed"] * 3
    assert fake.count("POST", "/fapi/v1/marginType") == 1 and fake.count("POST", "/fapi/v1/leverage") == 1


async def test_a_failed_set_up_skips_the_order_and_is_tried_again(rig: Rig, fake: FakeBinanceFutures) -> None:
    """A position opened by hand in cross margin: Binance refuses isolated (-4048 "Margin type cannot be
    changed if there exists position."): the order is skipped, never sent under margin terms nobody set;
    once that position is gone the next order sets the symbol up and goes."""
    fake.perps.position("ABCUSDT").amount = 1.0
    ctx = context(rig).bind(announcement("ABC"))
    first = await ctx.buy("binance", SWAP, cost=10, leverage=2, max_slippage=None)
    assert first.status == "skipped" and (first.reason or "").startswith("contract_setup_failed")
    assert fake.orders == [] and fake.count("POST", "/fapi/v1/leverage") == 0
    fake.perps.position("ABCUSDT").amount = 0.0
    second = (
        await context(rig)
        .bind(announcement("ABC", title="again"))
        .buy("binance", SWAP, cost=10, leverage=2, max_slippage=None)
    )
    assert second.status == "placed" and fake.count("POST", "/fapi/v1/marginType") == 2


async def test_set_up_from_on_start_keeps_it_off_the_order_path(rig: Rig, fake: FakeBinanceFutures) -> None:
    ctx = context(rig)
    with capture_logs() as logs:
        assert await ctx.prepare_contract("binance", SWAP, leverage=3)
        before = fake.count("POST", "/fapi/v1/leverage")
        outcome = await ctx.bind(announcement("ABC")).buy(
            "binance", SWAP, cost=10, leverage=3, max_slippage=None
        )
    assert outcome.status == "placed" and fake.count("POST", "/fapi/v1/leverage") == before == 1
    setups = [e for e in logs if e["event"] == "order.contract_setup"]
    assert [e["on_order_path"] for e in setups] == [False]
    assert not await ctx.prepare_contract("binance", "ABC/USDT")  # spot: nothing to set up


async def test_leverage_or_a_short_on_spot_is_skipped(rig: Rig, fake: FakeBinanceFutures) -> None:
    ctx = context(rig).bind(announcement("ABC"))
    lev = await ctx.buy("binance", "ABC/USDT", cost=10, leverage=2)
    opened = await ctx.sell("binance", "ABC/USDT", cost=10, open=True)
    bad = await ctx.buy("binance", SWAP, cost=10, leverage=500)
    assert [(o.status, o.reason) for o in (lev, opened)] == [("skipped", "needs_a_contract_market")] * 2
    assert bad.status == "skipped" and (bad.reason or "").startswith("bad_order_argument")
    assert fake.orders == []


async def test_listing_buy_goes_long_the_perpetual_and_exits_reduce_only(
    rig: Rig, fake: FakeBinanceFutures
) -> None:
    """market: swap, leverage 2: ABC/USDT:USDT is bought (40 USDT notional for 20 of margin, capped IOC);
    its stop-loss sells reduce-only."""
    params = build(ListingBuyParams, {"market": "swap", "leverage": 2, "stop_loss": 0.1})
    strategy = ListingBuy("listing_buy", params)
    news = announcement("ABC")
    await strategy.on_announcement(news, context(rig).bind(news))
    entry = fake.orders[-1].params
    assert (entry["symbol"], entry["side"], entry["type"]) == ("ABCUSDT", "BUY", "LIMIT")
    assert float(entry["quantity"]) * float(entry["price"]) <= 40.0 + 1e-9
    assert fake.position_amount(SWAP) > 0 and fake.perps.settings["ABCUSDT"].leverage == 2
    fake.set_perp_price(SWAP, 1.7)
    await exits(rig).check()
    assert fake.orders[-1].params["reduceOnly"] == "true" and fake.position_amount(SWAP) == 0.0


def test_listing_buy_refuses_leverage_on_spot() -> None:
    with pytest.raises(Exception, match="only with market: swap"):
        build(ListingBuyParams, {"leverage": 3})


def test_risk_counts_a_shorts_notional_against_the_open_cost_per_quote(tmp_path: Path) -> None:
    """max_open_cost 100 USDT: a short of 60 notional counts like a buy; a second one of 60 is refused;
    a KRW order is checked against its own quote's limit."""
    cfg = TradingConfig(
        max_order_cost={"USDT": 100, "KRW": 100_000}, max_open_cost={"USDT": 100, "KRW": 100_000}
    )
    journal = Journal.open(tmp_path, dry_run=False)
    try:
        gate = TradingGate()
        risk = RiskLimits(cfg, journal, exposure=Exposure(cfg, journal, gate))
        a = announcement("ABC", listing_type="spot_delisting")
        kwargs = {"strategy": "s", "announcement": a, "symbol": SWAP, "side": "sell", "exchange": "binance"}
        notional = Leverage(3).notional(20)
        assert risk.check(quote="USDT", cost=notional, opens=True, **kwargs) is None  # type: ignore[arg-type]
        risk.reserve("c1", "binance", "USDT", notional, opens_position=True)
        refused = risk.check(quote="USDT", cost=notional, opens=True, **kwargs)  # type: ignore[arg-type]
        assert refused == "over_max_open_cost"
        assert risk.check(quote="KRW", cost=notional, opens=True, **kwargs) is None  # type: ignore[arg-type]
        # a closing (reduce-only) sell is no new exposure
        assert risk.check(quote="USDT", cost=notional, **kwargs) is None  # type: ignore[arg-type]
    finally:
        journal.close()
