"""OKX spot and USDT perpetual through bridge's Exchange adapter, real ccxt 4.5.90 against FakeOkx:
entries (price-capped IOC limit, market by cost), exits (reduce-only on swap), fills and fees read
back, unknown outcomes settled by client id, leverage and margin mode, the hedge-mode refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.config import ExchangeConfig
from bridge.errors import ConfigError, OrderRejected, OrderStatusUnknown
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FaultKind
from bridge.sim.fake_okx import FakeOkx
from bridge.venues.dialects.okx import OkxDialect
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.test_exchange import FrozenClock

__all__ = ["exchange", "fake", "okx_config", "sent"]  # fixtures and helpers the other test_okx* use

ORDER = ("POST", "/api/v5/trade/batch-orders")
LOOKUP = ("GET", "/api/v5/trade/order")
ALGO = ("POST", "/api/v5/trade/order-algo")
SET_LEVERAGE = ("POST", "/api/v5/account/set-leverage")


def okx_config(
    fake: FakeOkx, *, key: str | None = None, passphrase: str | None = None, **ccxt: Any
) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(key or fake.api_key),
        secret=Secret(fake.secret),
        password=Secret(passphrase or fake.passphrase),
        market_types=("spot", "swap"),
        ccxt={**fake.ccxt_config(), **ccxt},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeOkx]:
    async with FakeOkx() as server:
        yield server


@pytest.fixture
async def exchange(fake: FakeOkx) -> AsyncIterator[Exchange]:
    ex = Exchange("okx", okx_config(fake), dry_run=False, keep_warm_s=0)
    await ex.start(check_keys=False)  # the key check's account/config (cost 4) would spend the burst
    fake.requests.clear()
    yield ex
    await ex.close()


def sent(fake: FakeOkx) -> list[dict[str, str]]:
    """The orders that reached the fake, as their JSON objects with text values."""
    return fake.sent_orders()


async def test_start_loads_spot_and_swap_and_checks_key_and_position_mode(fake: FakeOkx) -> None:
    """start(check_keys) loads both market types, proves the key with GET account/balance and reads the
    position mode (GET account/config) without ever switching it."""
    ex = Exchange("okx", okx_config(fake), dry_run=False, clock=FrozenClock(), keep_warm_s=0)
    await ex.start(check_keys=True)
    try:
        assert ex.market("BTC/USDT") is not None and ex.market("BTC/USDT:USDT") is not None
        assert fake.count("GET", "/api/v5/account/balance") == 1
        assert fake.count("GET", "/api/v5/account/config") == 1
        assert fake.count("POST", "/api/v5/account/set-position-mode") == 0
        assert ex.format_client_order_id("A" * 40 + "B" * 24) == "A" * 8 + "B" * 24  # 32, the tail
    finally:
        await ex.close()


async def test_hedge_mode_is_refused_with_a_clear_error_and_never_switched(fake: FakeOkx) -> None:
    """An account in long_short_mode is a ConfigError naming the account and what to do; bridge sends
    no set-position-mode."""
    fake.position_mode = "long_short_mode"
    ex = Exchange("okx", okx_config(fake), dry_run=False, clock=FrozenClock(), keep_warm_s=0)
    with pytest.raises(ConfigError, match=r"exchanges\.okx: .*hedge"):
        await ex.start(check_keys=True)
    assert fake.count("POST", "/api/v5/account/set-position-mode") == 0


async def test_spot_entry_price_capped_ioc_reads_its_fill_back(exchange: Exchange, fake: FakeOkx) -> None:
    """A limit IOC entry goes out as ordType ioc, tdMode cash, our clOrdId, the capped px; OKX answers
    ids only, so the fill (amount, average, fee) is read back by client id in one more request."""
    amount, price = exchange.limit_terms("ETH/USDT", "buy", cap_price=3100.0, cost=300.0) or (0.0, 0.0)
    result = await exchange.create_order(
        OrderRequest("ETH/USDT", "buy", "entry1", amount=amount, limit_price=price)
    )
    assert fake.requests == [ORDER, LOOKUP]
    order = sent(fake)[0]
    assert (order["instId"], order["ordType"], order["side"], order["tdMode"]) == (
        "ETH-USDT",
        "ioc",
        "buy",
        "cash",
    )
    assert order["clOrdId"] == "entry1" and float(order["px"]) == 3100.0 and "reduceOnly" not in order
    assert result.status == "closed" and result.client_order_id == "entry1"
    assert result.filled == pytest.approx(amount) and result.average == pytest.approx(3000.0)
    assert result.raw["fee"]["currency"] == "ETH" and result.raw["fee"]["cost"] == pytest.approx(
        amount * 0.001, rel=1e-4
    )


async def test_spot_ioc_above_the_market_fills_nothing_and_says_canceled(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """An IOC whose cap is below the price fills nothing: OKX's state canceled, filled 0."""
    result = await exchange.create_order(
        OrderRequest("ETH/USDT", "buy", "entry2", amount=0.01, limit_price=2900.0)
    )
    assert result.status == "canceled" and result.filled == 0.0


async def test_spot_market_buy_by_cost_and_exit_by_amount(exchange: Exchange, fake: FakeOkx) -> None:
    """A buy by cost is a market order with tgtCcy quote_ccy and sz the cost; the exit sells the amount
    at market (base_ccy). Spot exits never carry reduceOnly (OKX refuses it on a cash account)."""
    bought = await exchange.create_order(OrderRequest("BTC/USDT", "buy", "buy1", cost=120.0))
    sold = await exchange.create_order(
        OrderRequest("BTC/USDT", "sell", "sell1", amount=bought.filled or 0.0, reduce_only=True)
    )
    buy, sell = sent(fake)
    assert (buy["ordType"], buy["tgtCcy"], buy["sz"]) == ("market", "quote_ccy", "120")
    assert (sell["ordType"], sell["side"], sell["sz"]) == ("market", "sell", "0.002")
    assert "reduceOnly" not in sell
    assert bought.filled == pytest.approx(0.002) and bought.cost == pytest.approx(120.0)
    assert sold.status == "closed" and sold.filled == pytest.approx(0.002)


async def test_swap_entry_and_reduce_only_exit_with_leverage_and_isolated_margin(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """prepare_contract sets isolated margin and leverage in one set-leverage call; the entry carries
    tdMode isolated, the exit reduceOnly; 0.03 BTC is 3 contracts of 0.01 BTC on the wire (sz), the
    net position goes 3 contracts and back to 0, and the results count BTC."""
    await exchange.prepare_contract("BTC/USDT:USDT", leverage=3, margin_mode="isolated")
    assert fake.leverage["BTC-USDT-SWAP"] == ("isolated", "3") and fake.count(*SET_LEVERAGE) == 1
    entry = await exchange.create_order(OrderRequest("BTC/USDT:USDT", "buy", "long1", amount=0.03))
    assert fake.positions["BTC-USDT-SWAP"] == 3
    exit_ = await exchange.create_order(
        OrderRequest("BTC/USDT:USDT", "sell", "long1x", amount=0.03, reduce_only=True)
    )
    opened, closed = sent(fake)
    assert (opened["tdMode"], opened["sz"], opened.get("reduceOnly")) == ("isolated", "3", None)
    assert (closed["tdMode"], closed["reduceOnly"]) == ("isolated", "true")
    assert fake.positions["BTC-USDT-SWAP"] == 0
    assert entry.filled == pytest.approx(0.03) and exit_.filled == pytest.approx(0.03)  # in BTC
    assert entry.raw["info"]["lever"] == "3"


async def test_a_reduce_only_exit_without_a_position_is_a_rejection(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """OKX 51169 (no position to reduce), which ccxt maps to no class, is a definite refusal: never
    "status unknown", never a reverse position."""
    with pytest.raises(OrderRejected) as info:
        await exchange.create_order(
            OrderRequest("ETH/USDT:USDT", "sell", "nopos1", amount=0.1, reduce_only=True)
        )
    assert info.value.code == "51169"
    assert fake.positions.get("ETH-USDT-SWAP", 0) == 0


@pytest.mark.parametrize("fault", ["server_error_after", "timeout_after", "empty_after"])
async def test_unknown_outcomes_are_settled_by_client_id(fault: FaultKind, fake: FakeOkx) -> None:
    """The order was created but its answer was lost (a 500, no answer in time, a `{}` that ccxt's okx
    reads as an error without a code): OrderStatusUnknown,
    never a retry; the lookup by clOrdId finds it filled, on spot and on swap."""
    ex = Exchange("okx", okx_config(fake, timeout=300), dry_run=False, keep_warm_s=0)
    await ex.start(check_keys=False)
    try:
        for symbol, cid, size in (("BTC/USDT", "lost1", 0.001), ("BTC/USDT:USDT", "lost2", 0.01)):
            fake.fail_next_order(fault)
            with pytest.raises(OrderStatusUnknown):
                await ex.create_order(OrderRequest(symbol, "buy", cid, amount=size))
            found = await ex.fetch_order_by_client_id(symbol, cid)
            assert found is not None and found.status == "closed" and found.filled == pytest.approx(size)
    finally:
        await ex.close()
    assert fake.count(*ORDER) == 2


@pytest.mark.parametrize("fault", ["garbled_after", "not_json_after"])
async def test_an_unreadable_answer_is_settled_at_once_by_the_readback(
    fault: FaultKind, exchange: Exchange, fake: FakeOkx
) -> None:
    """A 200 whose body is cut short or not JSON has no status: the read-back by clOrdId that
    every OKX order makes finds the fill, so the order resolves without an unknown outcome."""
    fake.fail_next_order(fault)
    result = await exchange.create_order(OrderRequest("BTC/USDT", "buy", "garbled1", amount=0.001))
    assert result.status == "closed" and result.filled == pytest.approx(0.001)
    assert fake.requests == [ORDER, LOOKUP]


async def test_a_lost_readback_leaves_the_outcome_unknown_then_the_lookup_settles_it(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """The order was placed (sCode 0) but reading its fill failed: OrderStatusUnknown, not a refusal;
    a later lookup finds the fill."""
    fake.fail_next_lookup("server_error_before")
    with pytest.raises(OrderStatusUnknown):
        await exchange.create_order(OrderRequest("ETH/USDT", "buy", "readback1", amount=0.01))
    found = await exchange.fetch_order_by_client_id("ETH/USDT", "readback1")
    assert found is not None and found.filled == pytest.approx(0.01)


async def test_lookup_of_an_id_never_sent_is_none(exchange: Exchange, fake: FakeOkx) -> None:
    """51603 for the regular order and for the algo order: None, i.e. never placed."""
    assert await exchange.fetch_order_by_client_id("BTC/USDT", "never1") is None
    assert fake.count("GET", "/api/v5/trade/order") == 1
    assert fake.count("GET", "/api/v5/trade/order-algo") == 1


def test_request_budget_lets_a_burst_out_at_once_within_the_2s_window() -> None:
    """Budget from ccxt's rateLimit (110 ms per unit) over OKX's 2 s window: 27 single orders (cost
    1/3) at once, and never more than the window's 18.2 units in any 2 s."""
    budget = OkxDialect("okx").budget(110.0)
    assert budget.burst / (1 / 3) == pytest.approx(27.27, rel=1e-3)
    assert budget.burst + budget.rate * 2.0 == pytest.approx(2000 / 110)
