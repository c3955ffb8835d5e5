"""Gate spot through bridge's Exchange adapter, real ccxt 4.5.90 against FakeGate over 127.0.0.1 (real
HTTP, real Gate signatures): the client id format, the order request ccxt builds against what the fake
expects, the price-capped IOC entry and the exit, unknown outcomes settled by client id (also past
Gate's text lookup window), cancels, the error table, the request budget and a targeted market
refresh. The perpetual (swap) market: test_gate_swap.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.config import ExchangeConfig
from bridge.errors import ExchangeAuthError, OrderRejected, OrderStatusUnknown, RateLimited
from bridge.secrets import Secret
from bridge.sim.fake_gate import FakeGate
from bridge.sim.fake_venue import FaultKind
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest

FAST = {"timeout_on_exit": 0}
ORDER = ("POST", "/api/v4/spot/orders")
ULID = "01JQ7ZK3M9X4T8V2B6N5R1C0DE"  # 26 characters, as bridge's deterministic ids are


class FrozenClock:
    """A monotonic clock that moves only when told: the request budget never refills by accident."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate_config(fake: FakeGate, *, key: str | None = None, swap: bool = False, **ccxt: Any) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(key or fake.api_key),
        secret=Secret(fake.secret),
        market_types=("spot", "swap") if swap else ("spot",),
        ccxt={**fake.ccxt_config(), **FAST, **ccxt},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGate]:
    async with FakeGate() as server:
        yield server


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def exchange(fake: FakeGate, clock: FrozenClock) -> AsyncIterator[Exchange]:
    ex = Exchange("gate", gate_config(fake), dry_run=False, clock=clock)
    await ex.start(check_keys=True)
    fake.requests.clear()
    yield ex
    await ex.close()


def cid(exchange: Exchange, tail: str) -> str:
    return exchange.format_client_order_id(ULID[: -len(tail)] + tail)


# ----- client id and the request on the wire -----


async def test_client_id_is_t_dash_and_28_characters_that_ccxt_and_gate_accept(
    exchange: Exchange, fake: FakeGate
) -> None:
    """A 26-character base id becomes "t-" + 26 (28 in all: ccxt 4.5.90 refuses more, counting the
    prefix), and it reaches Gate unchanged as `text`."""
    client_id = exchange.format_client_order_id(ULID)
    assert client_id == "t-" + ULID and len(client_id) == 28
    assert exchange.format_client_order_id("A" * 40) == "t-" + "A" * 26
    await exchange.create_order(OrderRequest("BTC/USDT", "buy", client_id, cost=50))
    assert fake.orders[0].params["text"] == client_id


async def test_create_order_request_matches_what_the_fake_received_field_by_field(
    exchange: Exchange, fake: FakeGate
) -> None:
    """The JSON body ccxt builds for a spot limit IOC buy (create_order_request, no I/O) is exactly what
    reached FakeGate, field by field, with Gate's names: currency_pair, type, account, side, amount,
    price, time_in_force ioc, text."""
    client_id = cid(exchange, "W1")
    amount, price = exchange.limit_terms("BTC/USDT", "buy", cap_price=60_100.0, amount=0.001) or (0, 0)
    await exchange.create_order(OrderRequest("BTC/USDT", "buy", client_id, amount=amount, limit_price=price))
    built = exchange.ccxt.create_order_request(
        "BTC/USDT", "limit", "buy", amount, price, {"clientOrderId": client_id, "timeInForce": "IOC"}
    )
    received = fake.orders[0].params
    assert {k: str(v) for k, v in built.items()} == received
    assert received == {
        "currency_pair": "BTC_USDT",
        "type": "limit",
        "account": "spot",
        "side": "buy",
        "amount": "0.001",
        "price": "60100",
        "time_in_force": "ioc",
        "text": client_id,
    }


# ----- entry and exit -----


async def test_price_capped_ioc_entry_fills_at_the_price_and_a_cap_below_fills_nothing(
    exchange: Exchange, fake: FakeGate
) -> None:
    """A limit IOC buy capped above the price fills whole (status closed, average the price); capped
    below it, Gate finishes it as "ioc" with nothing filled (ccxt: canceled, filled 0)."""
    amount, price = exchange.limit_terms("ETH/USDT", "buy", cap_price=3_030.0, cost=300.0) or (0, 0)
    filled = await exchange.create_order(
        OrderRequest("ETH/USDT", "buy", cid(exchange, "E1"), amount=amount, limit_price=price)
    )
    assert filled.status == "closed" and filled.filled == pytest.approx(amount)
    assert filled.average == pytest.approx(3_000.0) and filled.cost == pytest.approx(amount * 3_000.0)
    missed = await exchange.create_order(
        OrderRequest("ETH/USDT", "buy", cid(exchange, "E2"), amount=0.1, limit_price=2_900.0)
    )
    assert missed.status == "canceled" and missed.filled == 0.0
    assert fake.count(*ORDER) == 2


async def test_partial_ioc_fills_what_the_book_holds(exchange: Exchange, fake: FakeGate) -> None:
    """With 0.5 ETH on the book, a 1 ETH IOC fills 0.5 and the rest expires (ccxt: canceled, filled 0.5)."""
    fake.add_market("ETH", "USDT", price=3_000.0, depth=0.5)
    result = await exchange.create_order(
        OrderRequest("ETH/USDT", "buy", cid(exchange, "P1"), amount=1.0, limit_price=3_010.0)
    )
    assert result.status == "canceled" and result.filled == pytest.approx(0.5)


async def test_market_buy_by_cost_and_exit_by_amount(exchange: Exchange, fake: FakeGate) -> None:
    """A buy by cost sends the quote amount (Gate's market buy amount) with time_in_force ioc; the exit
    sells the amount bought at market; both fill whole."""
    bought = await exchange.create_order(OrderRequest("BTC/USDT", "buy", cid(exchange, "B1"), cost=120))
    body = fake.orders[0].params
    assert (body["type"], body["side"], body["amount"], body["time_in_force"]) == (
        "market",
        "buy",
        "120",
        "ioc",
    )
    assert bought.status == "closed" and bought.cost == 120.0 and bought.filled == pytest.approx(0.002)
    sold = await exchange.create_order(OrderRequest("BTC/USDT", "sell", cid(exchange, "S1"), amount=0.002))
    assert fake.orders[1].params["amount"] == "0.002" and sold.status == "closed"
    assert sold.cost == pytest.approx(120.0) and sold.side == "sell"


# ----- unknown outcomes, lookups, cancels -----


@pytest.mark.parametrize(
    ("kind", "created"),
    [("server_error_before", False), ("server_error_after", True), ("timeout_after", True)],
)
async def test_unknown_outcomes_are_settled_by_client_id(
    fake: FakeGate, kind: FaultKind, created: bool
) -> None:
    """A 5xx or a timeout is OrderStatusUnknown after exactly one order request; the lookup by client
    id then finds the order when Gate created it and answers None when it did not."""
    ex = Exchange("gate", gate_config(fake, timeout=300), dry_run=False)
    await ex.start(check_keys=False)
    try:
        client_id = ex.format_client_order_id(ULID)
        fake.fail_next_order(kind)
        with pytest.raises(OrderStatusUnknown):
            await ex.create_order(OrderRequest("BTC/USDT", "buy", client_id, cost=50))
        assert len(fake.orders) == 1
        found = await ex.fetch_order_by_client_id("BTC/USDT", client_id)
    finally:
        await ex.close()
    if created:
        assert found is not None and found.status == "closed" and found.client_order_id == client_id
        assert found.cost == 50.0
    else:
        assert found is None


async def test_past_gates_text_window_the_order_is_found_in_the_history(
    exchange: Exchange, fake: FakeGate
) -> None:
    """An hour after a spot order ended Gate no longer finds it by its text (ORDER_NOT_FOUND): the
    lookup then searches the pair's finished orders and still finds it, so "not found" is not "never
    sent"; an id that was never sent is None after that search."""
    client_id = cid(exchange, "H1")
    await exchange.create_order(OrderRequest("BTC/USDT", "buy", client_id, cost=50))
    fake.age_finished_orders(3_601)
    found = await exchange.fetch_order_by_client_id("BTC/USDT", client_id)
    assert found is not None and found.status == "closed" and found.filled == pytest.approx(50 / 60_000)
    assert fake.count("GET", f"/api/v4/spot/orders/{client_id}") == 1
    assert fake.count("GET", "/api/v4/spot/orders") == 1  # the history, once
    assert await exchange.fetch_order_by_client_id("BTC/USDT", cid(exchange, "N0")) is None


async def test_cancel_by_client_id_of_an_ended_order_returns_it_and_of_an_unknown_one_none(
    exchange: Exchange, fake: FakeGate
) -> None:
    """Gate cancels by text only while open: an order that already filled answers ORDER_NOT_FOUND on
    the cancel, and the adapter then returns it as the lookup finds it; an id never sent is None."""
    client_id = cid(exchange, "C1")
    await exchange.create_order(OrderRequest("BTC/USDT", "buy", client_id, cost=50))
    result = await exchange.cancel_order_by_client_id("BTC/USDT", client_id)
    assert result is not None and result.status == "closed" and result.client_order_id == client_id
    assert fake.count("DELETE", f"/api/v4/spot/orders/{client_id}") == 1
    assert await exchange.cancel_order_by_client_id("BTC/USDT", cid(exchange, "C2")) is None


# ----- the error table -----


@pytest.mark.parametrize(
    ("kind", "error", "code", "rejection"),
    [
        ("insufficient_balance", OrderRejected, "BALANCE_NOT_ENOUGH", "insufficient_balance"),
        ("min_notional", OrderRejected, "INVALID_PARAM_VALUE", "too_small"),
        ("rate_limited", RateLimited, "TOO_MANY_REQUESTS", None),
    ],
)
async def test_gate_refusals_translate_and_are_not_retried(
    exchange: Exchange,
    fake: FakeGate,
    kind: FaultKind,
    error: type[Exception],
    code: str,
    rejection: str | None,
) -> None:
    """Gate's labels become bridge's errors with the label as the code, after exactly one request."""
    fake.fail_next_order(kind)
    with pytest.raises(error) as caught:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", cid(exchange, "R1"), cost=50))
    assert getattr(caught.value, "code", None) == code
    if rejection is not None:
        assert getattr(caught.value, "kind", None) == rejection
    if isinstance(caught.value, RateLimited):  # no Retry-After: the reset moment says how long
        assert caught.value.retry_after == pytest.approx(fake.retry_after_s, abs=1.0)
    assert fake.count(*ORDER) == 1


async def test_a_real_balance_shortfall_and_a_real_small_order_carry_their_kind(fake: FakeGate) -> None:
    """Not injected: with tracked balances a buy beyond the USDT held is BALANCE_NOT_ENOUGH, and an order
    below Gate's 3 USDT minimum is INVALID_PARAM_VALUE "too small"."""
    fake.track_balances = True
    fake.balances["USDT"] = 20.0
    ex = Exchange("gate", gate_config(fake), dry_run=False)
    await ex.start(check_keys=False)
    try:
        with pytest.raises(OrderRejected) as short:
            await ex.create_order(OrderRequest("BTC/USDT", "buy", ex.format_client_order_id("A1"), cost=50))
        with pytest.raises(OrderRejected) as small:
            await ex.create_order(OrderRequest("BTC/USDT", "buy", ex.format_client_order_id("A2"), cost=1))
    finally:
        await ex.close()
    assert short.value.kind == "insufficient_balance" and small.value.kind == "too_small"


async def test_a_symbol_gate_no_longer_lists_is_an_unknown_symbol_rejection(
    exchange: Exchange, fake: FakeGate
) -> None:
    """A pair loaded at start but gone on Gate: INVALID_CURRENCY_PAIR, an OrderRejected of kind
    unknown_symbol (ccxt BadSymbol), one request."""
    fake.delist("ETH/USDT")
    with pytest.raises(OrderRejected) as caught:
        await exchange.create_order(OrderRequest("ETH/USDT", "buy", cid(exchange, "U1"), cost=50))
    assert caught.value.code == "INVALID_CURRENCY_PAIR" and caught.value.kind == "unknown_symbol"


async def test_refused_timestamp_resyncs_the_clock_and_retries_exactly_once(
    exchange: Exchange, fake: FakeGate
) -> None:
    """REQUEST_EXPIRED (ccxt's AuthenticationError, which would halt the venue as a dead key) is taken
    as a clock problem: the clock is re-measured and the order sent once more, which succeeds."""
    fake.clock_offset_ms = 120_000  # Gate's clock is 2 minutes ahead: every signed request is refused
    result = await exchange.create_order(OrderRequest("BTC/USDT", "buy", cid(exchange, "T1"), cost=50))
    assert result.status == "closed"
    assert fake.count(*ORDER) == 2 and fake.count("GET", "/api/v4/spot/time") == 1


async def test_a_second_refused_timestamp_is_a_rejection_not_an_auth_error(
    exchange: Exchange, fake: FakeGate
) -> None:
    """Refused twice (the resync did not help): OrderRejected REQUEST_EXPIRED, never ExchangeAuthError."""
    fake.fail_next_order("timestamp", count=2)
    with pytest.raises(OrderRejected) as caught:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", cid(exchange, "T2"), cost=50))
    assert caught.value.code == "REQUEST_EXPIRED"
    assert fake.count(*ORDER) == 2


@pytest.mark.parametrize("bad", ["key", "secret"])
async def test_a_wrong_key_or_secret_is_an_auth_error_at_start(fake: FakeGate, bad: str) -> None:
    """The key check (one signed GET /spot/accounts) fails with INVALID_KEY or INVALID_SIGNATURE:
    ExchangeAuthError, the venue's credentials are rejected."""
    cfg = gate_config(fake, key="wrong-key") if bad == "key" else gate_config(fake)
    if bad == "secret":
        cfg = ExchangeConfig(api_key=cfg.api_key, secret=Secret("wrong-secret"), ccxt=cfg.ccxt)
    ex = Exchange("gate", cfg, dry_run=False)
    with pytest.raises(ExchangeAuthError) as caught:
        await ex.start(check_keys=True)
    assert caught.value.code == ("INVALID_KEY" if bad == "key" else "INVALID_SIGNATURE")


# ----- budget and markets -----


async def test_budget_lets_ten_orders_out_at_once_then_waits(
    exchange: Exchange, fake: FakeGate, clock: FrozenClock
) -> None:
    """Gate's budget: ccxt's 20 units/s over a 10 s window, 4 units at once. An order costs ccxt's 0.4:
    after idle, ten orders go out without waiting (Gate's 10 per pair per second), the eleventh waits."""
    bucket = exchange.budget
    assert bucket is not None and bucket.budget.burst == pytest.approx(4.0)
    assert bucket.budget.rate == pytest.approx(19.6)
    clock.now += 10.0  # idle: the bucket is full again
    await exchange.create_order(OrderRequest("BTC/USDT", "buy", cid(exchange, "K0"), cost=50))
    assert bucket.available == pytest.approx(3.6)  # the order's own cost, learned from ccxt
    delays = [exchange.reserve_order() for _ in range(9)]
    assert max(delays) < 1e-9
    assert exchange.reserve_order() == pytest.approx(0.4 / 19.6)


async def test_an_announced_symbol_not_loaded_yet_is_found_by_a_targeted_refresh(
    exchange: Exchange, fake: FakeGate
) -> None:
    """A pair listed after start is not in the cached markets; find_market refreshes once and finds
    it, and an order for it then goes through."""
    assert exchange.market("NEW/USDT") is None
    fake.add_market("NEW", "USDT", price=2.0, step_size=0.01, tick_size=0.0001)
    market = await exchange.find_market("NEW/USDT")
    assert market is not None and market.type == "spot" and market.min_cost == 3.0
    result = await exchange.create_order(OrderRequest("NEW/USDT", "buy", cid(exchange, "N1"), cost=10))
    assert result.status == "closed" and fake.orders[-1].params["currency_pair"] == "NEW_USDT"
