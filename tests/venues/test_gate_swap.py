"""Gate USDT perpetual futures through bridge's Exchange adapter, real ccxt 4.5.90 against FakeGate: the
swap markets load beside spot, hedge (dual) mode is refused at start and never switched, leverage and
margin mode set per symbol in one request, entries and reduce-only exits (signed sizes on the wire), an
unknown outcome settled by client id (also past Gate's 60 s text window), and the error table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.errors import ConfigError, OrderRejected, OrderStatusUnknown, RateLimited
from bridge.sim.fake_gate import FakeGate
from bridge.sim.fake_venue import FaultKind
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.venues.test_gate import ULID, gate_config

SWAP = "BTC/USDT:USDT"
FUTURES_ORDER = ("POST", "/api/v4/futures/usdt/orders")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGate]:
    async with FakeGate() as server:
        yield server


@pytest.fixture
async def exchange(fake: FakeGate) -> AsyncIterator[Exchange]:
    ex = Exchange("gate", gate_config(fake, swap=True), dry_run=False)
    await ex.start(check_keys=True)
    fake.requests.clear()
    yield ex
    await ex.close()


def cid(exchange: Exchange, tail: str) -> str:
    return exchange.format_client_order_id(ULID[: -len(tail)] + tail)


async def test_swap_markets_load_beside_spot_and_the_position_mode_is_read_once(fake: FakeGate) -> None:
    """market_types [spot, swap]: the USDT perpetual is its own linear market; the account's position
    mode is read (GET futures/usdt/accounts) and never written."""
    ex = Exchange("gate", gate_config(fake, swap=True), dry_run=False)
    await ex.start(check_keys=True)
    try:
        spot, swap = ex.market("BTC/USDT"), ex.market(SWAP)
        assert spot is not None and spot.type == "spot"
        assert swap is not None and swap.type == "swap" and swap.raw["linear"] is True
        assert swap.id == "BTC_USDT" and swap.raw["contractSize"] == 1.0
    finally:
        await ex.close()
    assert fake.count("GET", "/api/v4/futures/usdt/accounts") == 1
    assert not any(method == "POST" and "dual" in path for method, path in fake.requests)


async def test_hedge_mode_is_refused_at_start_with_a_clear_error(fake: FakeGate) -> None:
    """An account in dual (hedge) mode: start fails with a ConfigError naming the account and what to
    do; bridge never switches the mode itself."""
    fake.dual_mode = True
    ex = Exchange("gate", gate_config(fake, swap=True), dry_run=False)
    with pytest.raises(ConfigError, match=r"exchanges\.gate: .*hedge .*never switches it"):
        await ex.start(check_keys=True)
    assert fake.dual_mode is True
    assert not any(method == "POST" and "dual" in path for method, path in fake.requests)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("isolated", {"leverage": "3", "cross_leverage_limit": "0"}),
        ("cross", {"leverage": "0", "cross_leverage_limit": "3"}),
    ],
)
async def test_leverage_and_margin_mode_are_one_request_per_symbol(
    exchange: Exchange, fake: FakeGate, mode: str, expected: dict[str, str]
) -> None:
    """prepare_contract sets both with Gate's one endpoint: leverage N is isolated, leverage 0 with
    cross_leverage_limit N is cross."""
    await exchange.prepare_contract(SWAP, leverage=3, margin_mode=mode)  # type: ignore[arg-type]
    assert fake.leverage["BTC_USDT"] == expected
    assert fake.requests == [("POST", "/api/v4/futures/usdt/positions/BTC_USDT/leverage")]


async def test_entry_then_reduce_only_exit_with_signed_sizes(exchange: Exchange, fake: FakeGate) -> None:
    """A market buy of 3 contracts goes out as size 3, price 0, tif ioc; the reduce-only market sell
    as size -3 with reduce_only true; the position goes 0 -> 3 -> 0."""
    entry = await exchange.create_order(OrderRequest(SWAP, "buy", cid(exchange, "L1"), amount=3))
    assert fake.positions["BTC_USDT"] == 3.0
    exit_ = await exchange.create_order(
        OrderRequest(SWAP, "sell", cid(exchange, "X1"), amount=3, reduce_only=True)
    )
    first, second = (o.params for o in fake.orders)
    assert (first["contract"], first["size"], first["price"], first["tif"]) == ("BTC_USDT", "3", "0", "ioc")
    assert "reduce_only" not in first and first["text"] == entry.client_order_id
    assert (second["size"], second["reduce_only"]) == ("-3", "True")
    assert entry.status == "closed" and entry.filled == 3.0 and entry.average == pytest.approx(60_000)
    assert exit_.status == "closed" and exit_.side == "sell" and fake.positions["BTC_USDT"] == 0.0


async def test_a_reduce_only_exit_never_opens_a_short(exchange: Exchange, fake: FakeGate) -> None:
    """With no position, a reduce-only sell fills nothing (Gate finishes it as reduce_only): the exit
    can never open a reverse position."""
    result = await exchange.create_order(
        OrderRequest(SWAP, "sell", cid(exchange, "X2"), amount=2, reduce_only=True)
    )
    assert result.filled == 0.0 and fake.positions.get("BTC_USDT", 0.0) == 0.0


async def test_price_capped_ioc_entry_on_the_perpetual(exchange: Exchange, fake: FakeGate) -> None:
    """A limit IOC buy capped above the price fills (tif ioc, the price on the contract's tick); capped
    below it fills nothing."""
    amount, price = exchange.limit_terms(SWAP, "buy", cap_price=60_100.0, amount=2) or (0, 0)
    hit = await exchange.create_order(
        OrderRequest(SWAP, "buy", cid(exchange, "I1"), amount=amount, limit_price=price)
    )
    miss = await exchange.create_order(
        OrderRequest(SWAP, "buy", cid(exchange, "I2"), amount=1, limit_price=59_000)
    )
    assert fake.orders[0].params["tif"] == "ioc" and fake.orders[0].params["price"] == "60100"
    assert hit.status == "closed" and hit.filled == 2.0
    assert miss.filled == 0.0 and miss.status == "canceled"


@pytest.mark.parametrize("kind", ["server_error_after", "timeout_after", "server_error_before"])
async def test_unknown_outcome_on_the_perpetual_is_settled_by_client_id_even_past_60_s(
    fake: FakeGate, kind: FaultKind
) -> None:
    """OrderStatusUnknown after one request; a minute later Gate no longer finds it by text, the
    finished-orders search does; never created: None."""
    ex = Exchange("gate", gate_config(fake, swap=True, timeout=300), dry_run=False)
    await ex.start(check_keys=False)
    try:
        client_id = ex.format_client_order_id(ULID)
        fake.fail_next_order(kind)
        with pytest.raises(OrderStatusUnknown):
            await ex.create_order(OrderRequest(SWAP, "buy", client_id, amount=2))
        fake.age_finished_orders(61)
        found = await ex.fetch_order_by_client_id(SWAP, client_id)
    finally:
        await ex.close()
    if kind == "server_error_before":
        assert found is None
    else:
        assert found is not None and found.status == "closed" and found.filled == 2.0
        assert fake.count("GET", "/api/v4/futures/usdt/orders") == 1


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("insufficient_balance", OrderRejected, "INSUFFICIENT_AVAILABLE"),
        ("rate_limited", RateLimited, "TOO_MANY_REQUESTS"),
    ],
)
async def test_perpetual_refusals_translate(
    exchange: Exchange, fake: FakeGate, kind: FaultKind, error: type[Exception], code: str
) -> None:
    """Futures answer a shortfall with their own label (INSUFFICIENT_AVAILABLE: insufficient_balance)."""
    fake.fail_next_order(kind)
    with pytest.raises(error) as caught:
        await exchange.create_order(OrderRequest(SWAP, "buy", cid(exchange, "F1"), amount=1))
    assert getattr(caught.value, "code", None) == code
    if error is OrderRejected:
        assert getattr(caught.value, "kind", None) == "insufficient_balance"


async def test_a_contract_gate_no_longer_lists_is_an_unknown_symbol(
    exchange: Exchange, fake: FakeGate
) -> None:
    """CONTRACT_NOT_FOUND: OrderRejected of kind unknown_symbol."""
    fake.spot_only.add("BTCUSDT")
    with pytest.raises(OrderRejected) as caught:
        await exchange.create_order(OrderRequest(SWAP, "buy", cid(exchange, "G1"), amount=1))
    assert caught.value.code == "CONTRACT_NOT_FOUND" and caught.value.kind == "unknown_symbol"


async def test_refused_timestamp_on_the_perpetual_resyncs_and_retries_once(
    exchange: Exchange, fake: FakeGate
) -> None:
    """REQUEST_EXPIRED once: the clock is re-measured and the order sent once more."""
    fake.fail_next_order("timestamp")
    result = await exchange.create_order(OrderRequest(SWAP, "buy", cid(exchange, "T1"), amount=1))
    assert result.status == "closed" and fake.count(*FUTURES_ORDER) == 2
