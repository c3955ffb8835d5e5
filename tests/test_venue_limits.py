"""Limit IOC orders and their terms in bridge.venues, against FakeBinance over 127.0.0.1: real ccxt code,
real HTTP, real signatures; the fake refuses a price off its tick or a quantity off its lot as Binance does."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE, decimal_to_precision

from bridge.config import ExchangeConfig
from bridge.secrets import Secret
from bridge.sim.fake_exchange import MIN_NOTIONAL, FakeBinance
from bridge.venues import fastpath, precision
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest

# The listing the rounding tests trade: a tick of 0.01 and a lot of 0.001, as many real markets have.
TICK, LOT = 0.01, 0.001


def config(fake: FakeBinance, **ccxt: Any) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(fake.secret),
        ccxt={**fake.ccxt_config(), "timeout_on_exit": 0, **ccxt},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance() as server:
        server.add_market("RND", "USDT", price=3.0, tick_size=TICK, step_size=LOT)
        yield server


@pytest.fixture
async def exchange(fake: FakeBinance) -> AsyncIterator[Exchange]:
    ex = Exchange("binance", config(fake), dry_run=False)
    await ex.start(check_keys=False)
    fake.requests.clear()
    yield ex
    await ex.close()


def sent(fake: FakeBinance) -> list[dict[str, str]]:
    """The order requests' parameters without the per-request timestamp and signature."""
    return [{k: v for k, v in o.params.items() if k not in ("timestamp", "signature")} for o in fake.orders]


# ----- on the wire -----


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_limit_ioc_goes_on_the_wire_the_same_by_both_paths(fake: FakeBinance, side: str) -> None:
    """A limit order is one POST with type LIMIT, timeInForce IOC, the price and the quantity, and no
    quoteOrderQty, whether the fast path sends it or ccxt's create_order (fast path off with ccxt's
    limiter): both requests carry exactly the same parameters, and both answers parse the same."""
    fast = Exchange("binance", config(fake), dry_run=False)
    plain = Exchange("binance", config(fake, enableRateLimit=True), dry_run=False)
    await asyncio.gather(fast.start(check_keys=False), plain.start(check_keys=False))

    async def not_ccxt(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the fast path must not call ccxt's create_order")

    fast.ccxt.create_order = not_ccxt
    try:
        assert fast.fast_orders and not plain.fast_orders
        results = []
        for ex in (fast, plain):
            req = OrderRequest(
                "RND/USDT", side, "limit01", amount=2.5, limit_price=3.01 if side == "buy" else 2.99
            )  # type: ignore[arg-type]
            results.append(await ex.create_order(req))
    finally:
        await asyncio.gather(fast.close(), plain.close())
    first, second = sent(fake)
    assert first == second
    assert (first["type"], first["timeInForce"], first["side"]) == ("LIMIT", "IOC", side.upper())
    assert (first["price"], first["quantity"]) == ("3.01" if side == "buy" else "2.99", "2.5")
    assert first["newClientOrderId"] == "limit01" and "quoteOrderQty" not in first
    for result in results:
        assert (result.status, result.filled, result.cost, result.average) == ("closed", 2.5, 7.5, 3.0)
        assert result.raw["type"] == "limit" and result.raw["timeInForce"] == "IOC"
    assert results[0].raw.keys() == results[1].raw.keys()


async def test_fast_path_matches_ccxt_for_limit_ioc_with_the_installed_ccxt(exchange: Exchange) -> None:
    """The start-up comparison with ccxt's create_order_request covers LIMIT IOC on both sides, and holds
    with the installed ccxt on markets of different ticks and lots; the limit request is exactly
    ccxt's, with price formatted by price_to_precision and quantity by amount_to_precision."""
    ex = exchange.ccxt
    fast = fastpath.BinanceSpotOrders(ex)
    for symbol in ("RND/USDT", "BTC/USDT", "ETH/BTC"):
        market = ex.markets[symbol]
        assert fast.handles(market, limit=True) and fast.matches_ccxt(market)
    request = fast.request(ex.markets["RND/USDT"], "buy", cost=None, amount=6.6449, price=3.0151)
    assert request == {
        "symbol": "RNDUSDT",
        "side": "BUY",
        "newOrderRespType": "FULL",
        "type": "LIMIT",
        "quantity": ex.amount_to_precision("RND/USDT", 6.6449),
        "price": ex.price_to_precision("RND/USDT", 3.0151),
        "timeInForce": "IOC",
    }
    assert (request["quantity"], request["price"]) == ("6.644", "3.02")


async def test_a_limit_only_difference_turns_the_fast_path_off(
    exchange: Exchange, caplog: pytest.LogCaptureFixture
) -> None:
    """Should ccxt ever build a LIMIT request the fast path does not (here one extra field, market
    requests unchanged), the start-up comparison fails and the fast path is off, logged."""
    caplog.set_level("WARNING")
    ex = exchange.ccxt
    build = ex.create_order_request

    def with_extra_limit_field(symbol: str, type: str, *args: Any) -> dict[str, Any]:
        request: dict[str, Any] = build(symbol, type, *args)
        return {**request, "selfTradePreventionMode": "EXPIRE_TAKER"} if type == "limit" else request

    ex.create_order_request = with_extra_limit_field
    assert fastpath.select(ex, "binance", ccxt_limiter=False) is None
    warned = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert any(e.get("event") == "exchange.fast_path_off" for e in warned)


# ----- fills: expired, partial -----


async def test_ioc_meeting_a_price_moved_past_the_cap_fills_nothing(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """The book moves above a buy's cap (below a sell's floor) between the reference price and the
    order: the IOC fills nothing and comes back as ccxt parses Binance's EXPIRED, filled 0, status
    "expired", passed through unchanged; the lookup by client id says the same."""
    terms = exchange.limit_terms("RND/USDT", "buy", cap_price=3.0 * 1.02, cost=20)
    assert terms == (6.535, 3.06)
    fake.move_price_on_next_order("RND/USDT", 3.2)
    result = await exchange.create_order(
        OrderRequest("RND/USDT", "buy", "moved01", amount=terms[0], limit_price=terms[1])
    )
    assert (result.status, result.filled, result.cost, result.average) == ("expired", 0.0, 0.0, None)
    assert fake.executed[-1]["status"] == "EXPIRED" and fake.executed[-1]["executedQty"] == "0.00000000"
    found = await exchange.fetch_order_by_client_id("RND/USDT", "moved01")
    assert found is not None and (found.status, found.filled) == ("expired", 0.0)

    fake.move_price_on_next_order("RND/USDT", 2.5)
    sell = await exchange.create_order(OrderRequest("RND/USDT", "sell", "moved02", amount=2, limit_price=3.1))
    assert (sell.status, sell.filled) == ("expired", 0.0)


async def test_ioc_larger_than_the_depth_fills_partially(exchange: Exchange, fake: FakeBinance) -> None:
    """An IOC for more than the book holds fills what is there at the current price and expires the
    rest: status "expired" with 0 < filled < amount, cost and average of the part that filled."""
    fake.add_market("RND", "USDT", price=3.0, tick_size=TICK, step_size=LOT, depth=4.0)
    result = await exchange.create_order(
        OrderRequest("RND/USDT", "buy", "thin01", amount=10, limit_price=3.05)
    )
    assert (result.status, result.filled, result.cost, result.average) == ("expired", 4.0, 12.0, 3.0)
    assert result.raw["amount"] == 10.0 and result.raw["remaining"] == 6.0
    assert fake.executed[-1]["expiryReason"] == "UNFILLED_IOC_QUANTITY_EXPIRED"


# ----- limit_terms -----


async def test_limit_terms_round_price_to_tick_and_size_to_lot(exchange: Exchange, fake: FakeBinance) -> None:
    """A buy's cap is rounded down to the tick and a sell's floor up; the size is `amount`, or `cost` /
    that price, truncated to the lot; a price already on the tick stays. The result is accepted by
    the venue as is, and no request is made to compute it."""
    assert exchange.limit_terms("RND/USDT", "buy", cap_price=3.0149, cost=20) == (6.644, 3.01)
    assert exchange.limit_terms("RND/USDT", "sell", cap_price=2.9851, amount=2.34567) == (2.345, 2.99)
    assert exchange.limit_terms("RND/USDT", "buy", cap_price=3.02, amount=2) == (2.0, 3.02)
    assert exchange.limit_terms("RND/USDT", "sell", cap_price=2.97, cost=30) == (10.101, 2.97)
    assert fake.requests == []
    amount, price = exchange.limit_terms("RND/USDT", "buy", cap_price=3.0149, cost=20) or (0, 0)
    result = await exchange.create_order(
        OrderRequest("RND/USDT", "buy", "terms01", amount=amount, limit_price=price)
    )
    assert (
        result.status == "closed" and result.filled == 6.644 and result.cost is not None and result.cost <= 20
    )


def test_limit_terms_never_pass_the_cap_nor_the_cost() -> None:
    """Over many caps and sizes: a buy's price is on the tick and never above its cap, a sell's never
    below its floor, the size is on the lot, and a buy by cost never spends more than the cost."""
    ex = SimpleNamespace(precisionMode=TICK_SIZE, decimal_to_precision=decimal_to_precision)  # as binance
    market = {"precision": {"price": TICK, "amount": LOT}, "limits": {}}
    rng = random.Random(7)
    for _ in range(2000):
        cap = round(rng.uniform(0.05, 50), rng.randint(1, 9))
        cost = round(rng.uniform(5, 500), rng.randint(0, 6))
        for side in ("buy", "sell"):
            terms = precision.limit_terms(ex, market, side, cap_price=cap, cost=cost)  # type: ignore[arg-type]
            if terms is None:
                continue
            amount, price = Decimal(str(terms[0])), Decimal(str(terms[1]))
            assert price % Decimal(str(TICK)) == 0 and amount % Decimal(str(LOT)) == 0
            assert (price <= Decimal(str(cap))) if side == "buy" else (price >= Decimal(str(cap)))
            assert price - Decimal(str(TICK)) < Decimal(str(cap)) < price + Decimal(str(TICK))
            assert amount * price <= Decimal(str(cost))
            assert (amount + Decimal(str(LOT))) * price > Decimal(str(cost))  # the largest lot that fits


async def test_limit_terms_below_the_market_minimums_are_none(exchange: Exchange) -> None:
    """None when the size is below the market's minimum cost (Binance's NOTIONAL) or truncates below
    its minimum amount, when the cap is below one tick, and for a market not loaded; a missing size is
    a programming error."""
    assert exchange.limit_terms("RND/USDT", "buy", cap_price=3.0, cost=MIN_NOTIONAL - 0.01) is None
    assert exchange.limit_terms("RND/USDT", "sell", cap_price=3.0, amount=1.6) is None  # 4.8 < 5
    assert exchange.limit_terms("RND/USDT", "buy", cap_price=3.0, amount=0.0009) is None  # below one lot
    assert exchange.limit_terms("RND/USDT", "buy", cap_price=0.009, cost=100) is None  # below one tick
    assert exchange.limit_terms("NOPE/USDT", "buy", cap_price=3.0, cost=100) is None
    assert exchange.limit_terms("RND/USDT", "buy", cap_price=3.0, cost=MIN_NOTIONAL + 0.01) is not None
    with pytest.raises(ValueError, match="positive cap and size"):
        exchange.limit_terms("RND/USDT", "buy", cap_price=3.0)
    with pytest.raises(ValueError, match="positive cap and size"):
        exchange.limit_terms("RND/USDT", "buy", cap_price=float("nan"), cost=10)


@pytest.mark.parametrize(
    ("mode", "digits", "side", "cap", "expected"),
    [
        (DECIMAL_PLACES, 2, "buy", 3.0149, 3.01),
        (DECIMAL_PLACES, 2, "sell", 3.0101, 3.02),
        (DECIMAL_PLACES, 2, "sell", 3.01, 3.01),
        (SIGNIFICANT_DIGITS, 3, "buy", 123.49, 123.0),
        (SIGNIFICANT_DIGITS, 3, "sell", 123.01, 124.0),
        (SIGNIFICANT_DIGITS, 3, "sell", 0.0099951, 0.01),
    ],
)
def test_limit_terms_in_other_precision_modes(
    mode: int, digits: int, side: str, cap: float, expected: float
) -> None:
    """Venues that count decimal places or significant digits instead of a tick get the same rule:
    down for a buy, up for a sell, unchanged when already on the grid."""
    ex = SimpleNamespace(precisionMode=mode, decimal_to_precision=decimal_to_precision)
    market = {"precision": {"price": digits, "amount": 4}, "limits": {}}
    terms = precision.limit_terms(ex, market, side, cap_price=cap, amount=1000)  # type: ignore[arg-type]
    assert terms is not None and terms[1] == expected


async def test_limit_terms_cost_stays_in_tens_of_microseconds(exchange: Exchange) -> None:
    """limit_terms runs on the order path without I/O: on average well under 0.1 ms a call (about
    10 µs measured), with a different cap each time so nothing is served from a cache."""
    calls = 2000
    began = time.perf_counter()
    for n in range(calls):
        exchange.limit_terms("RND/USDT", "buy" if n % 2 else "sell", cap_price=3.0 + n * 1e-5, cost=20)
    assert (time.perf_counter() - began) / calls < 100e-6
