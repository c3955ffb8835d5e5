"""Bybit USDT perpetuals (ccxt type swap, Bybit category linear) through bridge.venues.exchange against
FakeBybit: position mode, leverage and margin mode, entries and reduce-only exits, resting stops and
unknown outcomes, with real ccxt code and real v5 signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.errors import ConfigError, OrderRejected, OrderStatusUnknown
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_venue import FaultKind
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.venues.test_bybit import CREATE, REALTIME, bybit_config, requests, started

PERP = "BTC/USDT:USDT"
SET_LEVERAGE = ("POST", "/v5/position/set-leverage")
POSITIONS = ("GET", "/v5/position/list")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as server:
        server.margin_mode = "ISOLATED_MARGIN"
        yield server


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Exchange]:
    ex = await started(fake)
    yield ex
    await ex.close()


async def test_start_loads_spot_and_linear_markets_and_reads_the_position_mode(fake: FakeBybit) -> None:
    """market_types spot and swap load Bybit's spot and linear instruments (linear twice: trading and
    pre-launch, as ccxt asks); the position mode is read from the position list, never switched."""
    exchange = Exchange("bybit", bybit_config(fake), dry_run=False, keep_warm_s=0)
    await exchange.start(check_keys=True)
    try:
        market = exchange.market(PERP)
        assert market is not None and market.type == "swap" and exchange.market("BTC/USDT") is not None
    finally:
        await exchange.close()
    asked = [q[2] for q in fake.queries if q[1] == "/v5/market/instruments-info"]
    assert sorted((q["category"], q.get("status", "")) for q in asked) == [
        ("linear", ""),
        ("linear", "PreLaunch"),
        ("spot", ""),
    ]
    assert fake.count(*POSITIONS) == 2 and not any("switch" in path for _, path in fake.requests)


async def test_hedge_mode_is_refused_at_start_with_a_clear_error(fake: FakeBybit) -> None:
    fake.hedge_mode = True
    exchange = Exchange("bybit", bybit_config(fake), dry_run=False, keep_warm_s=0)
    with pytest.raises(
        ConfigError, match=r"exchanges\.bybit: the account is in hedge \(two-way\) position mode"
    ):
        await exchange.start(check_keys=True)


async def test_leverage_is_set_once_and_only_when_it_differs(exchange: Exchange, fake: FakeBybit) -> None:
    """prepare_contract reads the symbol's position (mode and leverage) and sets leverage only when it
    differs: a second call for the same leverage sends no set-leverage (which Bybit would answer 110043)."""
    await exchange.prepare_contract(PERP, leverage=3, margin_mode="isolated")
    await exchange.prepare_contract(PERP, leverage=3, margin_mode="isolated")
    assert fake.leverage["BTCUSDT"] == 3 and fake.count(*SET_LEVERAGE) == 1


async def test_an_account_wide_margin_mode_that_differs_is_refused_never_switched(fake: FakeBybit) -> None:
    """On a unified account the margin mode is the whole account's: isolated asked on a cross
    (REGULAR_MARGIN) account is a clear rejection, and no set-margin-mode request is ever sent; cross
    on it is fine."""
    fake.margin_mode = "REGULAR_MARGIN"
    exchange = await started(fake)
    try:
        with pytest.raises(OrderRejected, match="account-wide and bridge never switches it") as info:
            await exchange.prepare_contract(PERP, leverage=2, margin_mode="isolated")
        assert info.value.code == "margin_mode"
        await exchange.prepare_contract(PERP, leverage=2, margin_mode="cross")
    finally:
        await exchange.close()
    assert fake.margin_mode == "REGULAR_MARGIN" and fake.leverage["BTCUSDT"] == 2
    assert not any(path == "/v5/account/set-margin-mode" for _, path in fake.requests)


async def test_a_symbol_in_hedge_mode_is_refused_before_its_first_order(
    exchange: Exchange, fake: FakeBybit
) -> None:
    fake.hedge_mode = True  # switched on Bybit after bridge started
    with pytest.raises(OrderRejected, match="hedge") as info:
        await exchange.prepare_contract(PERP, leverage=2, margin_mode="isolated")
    assert info.value.code == "hedge_mode"


async def test_entry_then_reduce_only_exit(exchange: Exchange, fake: FakeBybit) -> None:
    """A market entry of 0.01 BTC opens a long with 3x margin; the reduce-only exit closes it (reduceOnly
    true reached Bybit) and the account keeps the profit."""
    await exchange.prepare_contract(PERP, leverage=3, margin_mode="isolated")
    entry = await exchange.create_order(OrderRequest(PERP, "buy", "p1", amount=0.01))
    assert (entry.status, entry.filled, entry.average) == ("closed", 0.01, 60_000.0)
    assert fake.positions["BTCUSDT"] == (0.01, 60_000.0)
    fake.set_price(PERP, 61_000)
    exit_ = await exchange.create_order(OrderRequest(PERP, "sell", "p2", amount=0.01, reduce_only=True))
    assert (exit_.status, exit_.filled) == ("closed", 0.01)
    assert fake.order_bodies[-1]["reduceOnly"] is True and fake.order_bodies[-1]["category"] == "linear"
    assert fake.positions["BTCUSDT"][0] == 0 and fake.balances["USDT"] == pytest.approx(100_010.0)


async def test_a_reduce_only_exit_never_opens_a_short(exchange: Exchange, fake: FakeBybit) -> None:
    """Without a long to reduce, Bybit refuses the reduce-only sell (110017): a rejection, no position."""
    with pytest.raises(OrderRejected):
        await exchange.create_order(OrderRequest(PERP, "sell", "r1", amount=0.01, reduce_only=True))
    assert fake.positions.get("BTCUSDT", (0.0, 0.0))[0] == 0


async def test_price_capped_ioc_entry_on_the_perpetual(exchange: Exchange, fake: FakeBybit) -> None:
    terms = exchange.limit_terms(PERP, "buy", cap_price=61_000, cost=1_000)
    assert terms is not None
    result = await exchange.create_order(
        OrderRequest(PERP, "buy", "i1", amount=terms[0], limit_price=terms[1])
    )
    assert (result.status, result.filled) == ("closed", terms[0])
    assert fake.order_bodies[-1]["timeInForce"] == "IOC" and requests(fake) == [CREATE, REALTIME]


async def test_a_short_with_a_resting_buy_stop_closed_when_the_price_rises(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """A short's stop is a reduce-only buy that triggers when the price rises to it (triggerDirection 1);
    it rests open, then fills and closes the short."""
    await exchange.create_order(OrderRequest(PERP, "sell", "sh1", amount=0.02))
    assert exchange.supports_resting_stops(PERP)
    stop = await exchange.place_stop(PERP, amount=0.02, stop_price=63_000, client_order_id="sh2", side="buy")
    assert stop.status == "open"
    assert (fake.order_bodies[-1]["triggerDirection"], fake.order_bodies[-1]["reduceOnly"]) == (1, True)
    fake.set_price(PERP, 63_500)
    found = await exchange.fetch_order_by_client_id(PERP, "sh2")
    assert found is not None and (found.status, found.filled) == ("closed", 0.02)
    assert fake.positions["BTCUSDT"][0] == 0


async def test_a_long_stop_is_cancelled_by_client_id(exchange: Exchange, fake: FakeBybit) -> None:
    await exchange.create_order(OrderRequest(PERP, "buy", "l1", amount=0.01))
    await exchange.place_stop(PERP, amount=0.01, stop_price=55_000, client_order_id="l2")
    cancelled = await exchange.cancel_order_by_client_id(PERP, "l2")
    assert cancelled is not None and cancelled.status == "canceled"
    assert fake.open_orders(PERP) == [] and fake.positions["BTCUSDT"][0] == 0.01


@pytest.mark.parametrize("fault", ["server_error_after", "timeout_after"])
async def test_unknown_outcome_on_the_perpetual_is_settled_by_client_id(
    fault: FaultKind, fake: FakeBybit
) -> None:
    exchange = await started(fake, timeout=300)
    try:
        fake.fail_next_order(fault)
        with pytest.raises(OrderStatusUnknown):
            await exchange.create_order(OrderRequest(PERP, "buy", "u1", amount=0.01))
        found = await exchange.fetch_order_by_client_id(PERP, "u1")
    finally:
        await exchange.close()
    assert found is not None and (found.status, found.filled) == ("closed", 0.01)
