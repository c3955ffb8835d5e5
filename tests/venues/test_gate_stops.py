"""Resting stops on Gate (price-triggered orders) through bridge's Exchange adapter, real ccxt 4.5.90
against FakeGate: a spot stop-loss sell and a short's reduce-only buy stop on the USDT perpetual rest,
trigger on the price and are read back by client id with their fill; cancels by client id (twice, and an
unknown id); a stop placed before a restart found and cancelled by a new instance; a stop that would
trigger at once refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.errors import OrderRejected
from bridge.sim.fake_gate import FakeGate
from bridge.venues.dialects.gate import STOP_EXPIRATION_S, STOP_TAGS, stop_expiration
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.venues.test_gate import ULID, gate_config

SWAP = "BTC/USDT:USDT"
SPOT_PRICE_ORDERS = "/api/v4/spot/price_orders"
FUTURES_PRICE_ORDERS = "/api/v4/futures/usdt/price_orders"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGate]:
    async with FakeGate() as server:
        yield server


async def started(fake: FakeGate) -> Exchange:
    ex = Exchange("gate", gate_config(fake, swap=True), dry_run=False)
    await ex.start(check_keys=True)
    return ex


@pytest.fixture
async def exchange(fake: FakeGate) -> AsyncIterator[Exchange]:
    ex = await started(fake)
    fake.requests.clear()
    yield ex
    await ex.close()


def cid(exchange: Exchange, tail: str) -> str:
    return exchange.format_client_order_id(ULID[: -len(tail)] + tail)


async def test_spot_stop_rests_triggers_on_a_fall_and_its_fill_is_read_back(
    exchange: Exchange, fake: FakeGate
) -> None:
    """A spot stop-loss sell is one POST /spot/price_orders (trigger "<=" at the stop, a market sell put of
    the amount, the expiration tag of its client id); it rests (open, nothing filled) until the price
    falls to it, then the lookup by client id returns the spot order it placed, filled at that price."""
    stop_id = cid(exchange, "S1")
    assert exchange.supports_resting_stops("BTC/USDT")
    placed = await exchange.place_stop("BTC/USDT", amount=0.002, stop_price=57_000.0, client_order_id=stop_id)
    assert placed.status == "open" and placed.client_order_id == stop_id
    assert fake.requests == [("POST", SPOT_PRICE_ORDERS)]
    body = fake.orders[-1].params
    assert (body["market"], body["trigger.rule"], body["trigger.price"]) == ("BTC_USDT", "<=", "57000")
    assert (body["put.type"], body["put.side"], body["put.amount"], body["put.account"]) == (
        "market",
        "sell",
        "0.002",
        "normal",
    )
    assert body["trigger.expiration"] == str(stop_expiration(stop_id))
    assert STOP_EXPIRATION_S - STOP_TAGS < stop_expiration(stop_id) <= STOP_EXPIRATION_S
    (resting_order,) = fake.open_price_orders("BTC/USDT")
    assert resting_order.order["text"] == "api"  # Gate keeps no client id on a spot price order
    resting = await exchange.fetch_order_by_client_id("BTC/USDT", stop_id)
    assert resting is not None and (resting.status, resting.filled) == ("open", 0.0)
    fake.set_price("BTC/USDT", 56_500.0)
    assert fake.open_price_orders("BTC/USDT") == [] and resting_order.status == "finish"
    filled = await exchange.fetch_order_by_client_id("BTC/USDT", stop_id)
    assert filled is not None and filled.status == "closed" and filled.side == "sell"
    assert filled.filled == pytest.approx(0.002) and filled.average == pytest.approx(56_500.0)
    assert filled.client_order_id == stop_id and filled.order_id == str(resting_order.fired_id)


async def test_a_shorts_buy_stop_triggers_on_a_rise_and_closes_the_position(
    exchange: Exchange, fake: FakeGate
) -> None:
    """A short's stop on the perpetual is a reduce-only buy price order (rule 1: price >= trigger, a
    market order: price 0, tif ioc, our client id as initial.text); it triggers when the price rises to
    it, the order it places closes the short, and the lookup by client id returns that fill."""
    await exchange.create_order(OrderRequest(SWAP, "sell", cid(exchange, "E2"), amount=3))
    assert fake.positions["BTC_USDT"] == -3
    stop_id = cid(exchange, "S2")
    assert exchange.supports_resting_stops(SWAP)
    placed = await exchange.place_stop(
        SWAP, amount=3, stop_price=63_000.0, client_order_id=stop_id, side="buy"
    )
    assert placed.status == "open"
    body = fake.orders[-1].params
    assert (body["initial.contract"], body["initial.size"], body["initial.price"]) == ("BTC_USDT", "3", "0")
    assert (body["initial.reduce_only"], body["initial.tif"], body["initial.text"]) == (
        "True",
        "ioc",
        stop_id,
    )
    assert (body["trigger.rule"], body["trigger.price"]) == ("1", "63000")
    resting = await exchange.fetch_order_by_client_id(SWAP, stop_id)
    assert resting is not None and (resting.status, resting.filled, resting.side) == ("open", 0.0, "buy")
    fake.set_price("BTC/USDT", 62_000.0)  # a fall leaves a short's stop resting
    assert len(fake.open_price_orders(SWAP)) == 1
    fake.set_price("BTC/USDT", 63_500.0)
    assert fake.positions["BTC_USDT"] == 0
    filled = await exchange.fetch_order_by_client_id(SWAP, stop_id)
    assert filled is not None and filled.status == "closed" and filled.side == "buy"
    assert filled.filled == pytest.approx(3) and filled.average == pytest.approx(63_500.0)


async def test_cancel_by_client_id_then_again_reads_the_final_state(
    exchange: Exchange, fake: FakeGate
) -> None:
    """Cancel sends DELETE /spot/price_orders/{Gate id} and returns the stop cancelled with nothing
    filled; a second cancel finds no open stop (404) and returns the stop's final state from the lookup;
    an id nothing was placed under is None."""
    stop_id = cid(exchange, "S3")
    placed = await exchange.place_stop("BTC/USDT", amount=0.002, stop_price=57_000.0, client_order_id=stop_id)
    first = await exchange.cancel_order_by_client_id("BTC/USDT", stop_id)
    assert first is not None and (first.status, first.filled) == ("canceled", 0.0)
    assert ("DELETE", f"{SPOT_PRICE_ORDERS}/{placed.order_id}") in fake.requests
    assert fake.open_price_orders("BTC/USDT") == []
    second = await exchange.cancel_order_by_client_id("BTC/USDT", stop_id)
    assert second is not None and (second.status, second.filled, second.client_order_id) == (
        "canceled",
        0.0,
        stop_id,
    )
    assert await exchange.cancel_order_by_client_id("BTC/USDT", cid(exchange, "NONE")) is None
    assert await exchange.fetch_order_by_client_id("BTC/USDT", cid(exchange, "NONE")) is None


async def test_stops_placed_before_a_restart_are_found_and_cancelled(fake: FakeGate) -> None:
    """A new Exchange (a restart: the client id -> Gate id map is gone) finds the spot stop by its
    expiration tag among the market's price orders, and the futures stop by its echoed text, beside
    another stop of the same market; both are cancelled by their Gate id."""
    first = await started(fake)
    try:
        await first.create_order(OrderRequest(SWAP, "buy", cid(first, "E4"), amount=2))
        spot_id, other_id, swap_id = cid(first, "S4"), cid(first, "S5"), cid(first, "S6")
        await first.place_stop("BTC/USDT", amount=0.002, stop_price=57_000.0, client_order_id=spot_id)
        await first.place_stop("BTC/USDT", amount=0.003, stop_price=58_000.0, client_order_id=other_id)
        await first.place_stop(SWAP, amount=2, stop_price=55_000.0, client_order_id=swap_id)
    finally:
        await first.close()
    second = await started(fake)
    try:
        spot = await second.fetch_order_by_client_id("BTC/USDT", spot_id)
        assert spot is not None and (spot.status, spot.filled) == ("open", 0.0)
        assert spot.raw["info"]["put"]["amount"] == "0.002"  # this stop, not the other one
        swap = await second.fetch_order_by_client_id(SWAP, swap_id)
        assert swap is not None and swap.status == "open" and swap.side == "sell"
        for symbol, stop_id in (("BTC/USDT", spot_id), (SWAP, swap_id)):
            cancelled = await second.cancel_order_by_client_id(symbol, stop_id)
            assert cancelled is not None and (cancelled.status, cancelled.filled) == ("canceled", 0.0)
    finally:
        await second.close()
    (left,) = fake.open_price_orders("BTC/USDT")
    assert left.order["amount"] == "0.003" and fake.open_price_orders(SWAP) == []


async def test_a_stop_that_would_trigger_at_once_is_refused(exchange: Exchange, fake: FakeGate) -> None:
    """A sell stop at or above the last price (spot and futures), a buy stop at or below it: Gate's
    AUTO_TRIGGER_PRICE_LESS_LAST / _GREATE_LAST, a rejection; nothing rests."""
    with pytest.raises(OrderRejected) as spot:
        await exchange.place_stop(
            "BTC/USDT", amount=0.002, stop_price=61_000.0, client_order_id=cid(exchange, "R1")
        )
    assert spot.value.code == "AUTO_TRIGGER_PRICE_LESS_LAST"
    with pytest.raises(OrderRejected) as short:
        await exchange.place_stop(
            SWAP, amount=1, stop_price=59_000.0, client_order_id=cid(exchange, "R2"), side="buy"
        )
    assert short.value.code == "AUTO_TRIGGER_PRICE_GREATE_LAST"
    assert fake.open_price_orders("BTC/USDT") == []
