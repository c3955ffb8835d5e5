"""Resting stops on OKX (conditional algo orders) through real ccxt code against FakeOkx: spot stop-loss
sells, reduce-only swap stops on both sides, followed by client id before and after they trigger, and
cancelled by client id."""

from __future__ import annotations

import pytest

from bridge.errors import OrderRejected
from bridge.sim.fake_okx import FakeOkx
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.venues.test_okx import ALGO, exchange, fake, sent

__all__ = ["exchange", "fake"]  # fixtures, used by name


async def test_spot_stop_loss_rests_then_triggers_and_is_followed_by_client_id(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """A spot stop-loss sell is one POST trade/order-algo (conditional, slTriggerPx, slOrdPx -1, our id as
    algoClOrdId); it rests (open, nothing filled) until the price falls to it, then the lookup by client
    id returns the fill of the order it placed."""
    assert exchange.supports_resting_stops("BTC/USDT")
    placed = await exchange.place_stop("BTC/USDT", amount=0.002, stop_price=57_000.0, client_order_id="stop1")
    assert placed.status == "open" and fake.requests == [ALGO]
    algo = sent(fake)[0]
    assert (algo["ordType"], algo["side"], algo["sz"], algo["slTriggerPx"], algo["slOrdPx"]) == (
        "conditional",
        "sell",
        "0.002",
        "57000",
        "-1",
    )
    assert algo["algoClOrdId"] == "stop1" and "reduceOnly" not in algo
    resting = await exchange.fetch_order_by_client_id("BTC/USDT", "stop1")
    assert resting is not None and resting.status == "open" and resting.filled == 0.0
    fake.set_price("BTC/USDT", 56_500.0)
    filled = await exchange.fetch_order_by_client_id("BTC/USDT", "stop1")
    assert filled is not None and filled.status == "closed"
    assert filled.filled == pytest.approx(0.002) and filled.average == pytest.approx(56_500.0)
    assert filled.client_order_id == "stop1"


async def test_swap_stops_are_reduce_only_on_both_sides(exchange: Exchange, fake: FakeOkx) -> None:
    """A long's stop sells below the price, a short's buys above it; both reduce-only with the symbol's
    margin mode. The short's stop triggers on a rise and closes the position."""
    await exchange.prepare_contract("ETH/USDT:USDT", leverage=2, margin_mode="isolated")
    await exchange.create_order(OrderRequest("ETH/USDT:USDT", "sell", "short1", amount=0.5))
    assert fake.positions["ETH-USDT-SWAP"] == -5
    await exchange.place_stop(
        "ETH/USDT:USDT", amount=0.5, stop_price=3_300.0, client_order_id="sstop1", side="buy"
    )
    stop = sent(fake)[-1]
    assert (stop["side"], stop["sz"], stop["reduceOnly"], stop["tdMode"], stop["slTriggerPx"]) == (
        "buy",
        "5",
        "true",
        "isolated",
        "3300",
    )
    fake.set_price("ETH/USDT:USDT", 3_350.0)
    found = await exchange.fetch_order_by_client_id("ETH/USDT:USDT", "sstop1")
    assert found is not None and found.status == "closed" and found.filled == pytest.approx(0.5)
    assert fake.positions["ETH-USDT-SWAP"] == 0


async def test_a_stop_that_would_trigger_at_once_is_refused(exchange: Exchange, fake: FakeOkx) -> None:
    """A sell stop at or above the last price: OKX 51280, a rejection."""
    with pytest.raises(OrderRejected) as info:
        await exchange.place_stop("BTC/USDT", amount=0.002, stop_price=61_000.0, client_order_id="stop2")
    assert info.value.code == "51280"


async def test_cancel_by_client_id_returns_the_cancelled_stop_and_then_none(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """Cancel sends POST trade/cancel-algos by algoClOrdId and reads the final state (canceled, nothing
    filled); a second cancel finds no live stop and returns the order as the lookup finds it."""
    await exchange.place_stop("BTC/USDT", amount=0.002, stop_price=57_000.0, client_order_id="stop3")
    cancelled = await exchange.cancel_order_by_client_id("BTC/USDT", "stop3")
    assert cancelled is not None and cancelled.status == "canceled" and cancelled.filled == 0.0
    assert fake.count("POST", "/api/v5/trade/cancel-algos") == 1
    assert fake.open_orders("BTC/USDT") == []
    again = await exchange.cancel_order_by_client_id("BTC/USDT", "stop3")
    assert again is not None and again.status == "canceled"
    assert await exchange.cancel_order_by_client_id("BTC/USDT", "never3") is None
