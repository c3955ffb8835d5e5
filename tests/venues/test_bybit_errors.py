"""Bybit's error table through bridge.venues.exchange, spot and perpetual, against FakeBybit with real
ccxt code: each refusal Bybit answers (its retCode in its v5 envelope) becomes the project's error of
the right kind, never retried blindly; and an announced symbol not loaded yet is found by a targeted
market refresh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.errors import (
    ExchangeAuthError,
    OrderRejected,
    OrderStatusUnknown,
    RateLimited,
    RejectionKind,
)
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_venue import FaultKind
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.venues.test_bybit import CREATE, bybit_config, started

PERP = "BTC/USDT:USDT"


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(markets=[("BTC", "USDT", 60_000.0), ("ABC", "USDT", 2.0)]) as server:
        yield server


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Exchange]:
    ex = await started(fake)
    yield ex
    await ex.close()


SPOT_BUY = OrderRequest("ABC/USDT", "buy", "o1", cost=20)
PERP_BUY = OrderRequest(PERP, "buy", "o1", amount=0.01)


@pytest.mark.parametrize("req", [SPOT_BUY, PERP_BUY], ids=["spot", "linear"])
@pytest.mark.parametrize(
    ("fault", "error", "code", "kind"),
    [
        ("rate_limited", RateLimited, "10006", None),
        ("insufficient_balance", OrderRejected, None, "insufficient_balance"),
        ("min_notional", OrderRejected, None, "too_small"),
        ("server_error_before", OrderStatusUnknown, None, None),
    ],
)
async def test_refusals_translate_with_their_kind_and_are_not_retried(
    exchange: Exchange,
    fake: FakeBybit,
    req: OrderRequest,
    fault: FaultKind,
    error: type[Exception],
    code: str | None,
    kind: RejectionKind | None,
) -> None:
    """10006 Too many visits -> RateLimited; 170131 / 110007 -> insufficient_balance; 170140 / 110094
    -> too_small; a gateway's 502 page -> status unknown. One create request each."""
    fake.fail_next_order(fault)
    with pytest.raises(error) as info:
        await exchange.create_order(req)
    if code is not None:
        assert getattr(info.value, "code", None) == code
    if kind is not None:
        assert isinstance(info.value, OrderRejected) and info.value.kind == kind
    if isinstance(info.value, RateLimited):  # HTTP 200, no Retry-After: the reset moment says how long
        assert info.value.retry_after == pytest.approx(fake.retry_after_s, abs=0.5)
    assert fake.count(*CREATE) == 1


async def test_a_real_shortfall_and_a_real_small_order_carry_their_kind(fake: FakeBybit) -> None:
    """Not injected: spot without the USDT (170131), a perpetual without the margin (110007), and orders
    below Bybit's 5 USDT minimum on both (170140, 110094)."""
    fake.track_balances = True
    fake.balances["USDT"] = 10.0
    exchange = await started(fake)
    try:
        cases = [
            (OrderRequest("ABC/USDT", "buy", "a1", cost=20), "insufficient_balance", "170131"),
            (OrderRequest(PERP, "buy", "a2", amount=0.01), "insufficient_balance", "110007"),
            (OrderRequest("ABC/USDT", "buy", "a3", cost=1), "too_small", "170140"),
            (OrderRequest(PERP, "buy", "a4", amount=0.00001), "too_small", "110094"),
        ]
        for req, kind, code in cases:
            with pytest.raises(OrderRejected) as info:
                await exchange.create_order(req)
            assert (info.value.kind, info.value.code) == (kind, code)
    finally:
        await exchange.close()


@pytest.mark.parametrize(("symbol", "code"), [("ABC/USDT", "170121"), (PERP, "10001")])
async def test_a_symbol_bybit_no_longer_lists_is_an_unknown_symbol_rejection(
    exchange: Exchange, fake: FakeBybit, symbol: str, code: str
) -> None:
    """Loaded at start, delisted since: spot's 170121 Invalid symbol and linear's 10001 "symbol invalid"
    (ccxt: InvalidOrder, BadRequest) are unknown_symbol rejections."""
    fake.delist(symbol)
    with pytest.raises(OrderRejected) as info:
        await exchange.create_order(OrderRequest(symbol, "buy", "d1", amount=0.01 if ":" in symbol else 10))
    assert (info.value.kind, info.value.code) == ("unknown_symbol", code)


async def test_refused_timestamp_resyncs_the_clock_and_retries_exactly_once(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """10002 (request expired, recv_window) proves the order was not executed: the clock is re-measured
    and the order sent once more; a second 10002 is a rejection, not an auth error."""
    fake.fail_next_order("timestamp")
    result = await exchange.create_order(OrderRequest("ABC/USDT", "buy", "t1", cost=20))
    assert result.status == "closed" and fake.count(*CREATE) == 2
    fake.fail_next_order("timestamp", 2)
    with pytest.raises(OrderRejected):
        await exchange.create_order(OrderRequest("ABC/USDT", "buy", "t2", cost=20))
    assert fake.count(*CREATE) == 4


async def test_real_clock_drift_beyond_the_recv_window_is_refused_then_corrected(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """The fake's clock moves 10 s ahead: the first request is refused (10002), the resync measures the
    offset and the retry is accepted."""
    fake.clock_offset_ms = 10_000
    result = await exchange.create_order(OrderRequest("ABC/USDT", "buy", "t3", cost=20))
    assert result.status == "closed" and fake.count(*CREATE) == 2


@pytest.mark.parametrize("bad", ["key", "secret"])
async def test_a_wrong_key_or_secret_is_an_auth_error_at_start(fake: FakeBybit, bad: str) -> None:
    """10003 API key is invalid / 10004 error sign: ExchangeAuthError from the key check."""
    cfg = bybit_config(fake, secret="wrong" if bad == "secret" else None)
    if bad == "key":
        fake.api_key = "another-key"
    exchange = Exchange("bybit", cfg, dry_run=False, keep_warm_s=0)
    with pytest.raises(ExchangeAuthError) as info:
        await exchange.start(check_keys=True)
    assert info.value.code == ("10003" if bad == "key" else "10004")


@pytest.mark.parametrize(
    ("symbol", "list_it"),
    [
        ("NEW/USDT", lambda f: f.add_market("NEW", "USDT", price=1.0)),
        ("NEW/USDT:USDT", lambda f: f.add_perp("NEW", price=1.0)),
    ],
    ids=["spot", "linear"],
)
async def test_an_announced_symbol_not_loaded_yet_is_found_by_a_targeted_refresh(
    exchange: Exchange, fake: FakeBybit, symbol: str, list_it: object
) -> None:
    """Listed after start: find_market refreshes (Bybit has no one-symbol endpoint across categories, so
    one fetch of each loaded category's instruments) and the market can be traded at once."""
    assert exchange.market(symbol) is None
    assert callable(list_it)
    list_it(fake)
    market = await exchange.find_market(symbol)
    assert market is not None and market.symbol == symbol
    amount = 10 if ":" not in symbol else 10.0
    result = await exchange.create_order(OrderRequest(symbol, "buy", "n1", amount=amount))
    assert result.status == "closed"


async def test_a_symbol_bybit_does_not_list_is_none_after_the_refresh(
    exchange: Exchange, fake: FakeBybit
) -> None:
    assert await exchange.find_market("NOPE/USDT") is None
