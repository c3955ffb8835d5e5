"""OKX's error table through real ccxt code against FakeOkx (rate limit, insufficient balance, unknown
symbol, timestamp, authentication, minimum size), the create-order request field by field as ccxt
4.5.90 builds it and the fake reads it, and a targeted market refresh for a symbol listed after start."""

from __future__ import annotations

import pytest

from bridge.errors import ExchangeAuthError, OrderRejected, RateLimited
from bridge.sim.fake_okx import FakeOkx
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.venues.test_okx import ORDER, exchange, fake, okx_config, sent

__all__ = ["exchange", "fake"]  # fixtures, used by name


async def test_rate_limit_is_rate_limited_with_okx_code(exchange: Exchange, fake: FakeOkx) -> None:
    """HTTP 429 with code 50011: RateLimited (the order was not placed), carrying Retry-After."""
    fake.fail_next_order("rate_limited")
    with pytest.raises(RateLimited) as info:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", "rl1", cost=50.0))
    assert info.value.code == "50011" and info.value.retry_after == 2.0
    assert fake.count(*ORDER) == 1


@pytest.mark.parametrize(
    ("fault", "code", "kind"),
    [("insufficient_balance", "51008", "insufficient_balance"), ("min_notional", "51020", "too_small")],
)
async def test_order_level_refusals_carry_okx_scode_and_kind(
    fault: str, code: str, kind: str, exchange: Exchange, fake: FakeOkx
) -> None:
    """OKX refuses an order in the batch shape ({"code": "1", "data": [{"sCode": ...}]}): a rejection
    with OKX's own code (sCode, not the envelope's "1") and its kind; never retried."""
    fake.fail_next_order(fault)  # type: ignore[arg-type]
    with pytest.raises(OrderRejected) as info:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", "ref1", cost=50.0))
    assert (info.value.code, info.value.kind) == (code, kind)
    assert fake.count(*ORDER) == 1


async def test_unknown_symbol_on_the_wire_is_a_rejection(exchange: Exchange, fake: FakeOkx) -> None:
    """A market delisted since markets loaded: sCode 51001 (ccxt BadSymbol), kind unknown_symbol."""
    fake.delist("ETH/USDT")
    with pytest.raises(OrderRejected) as info:
        await exchange.create_order(OrderRequest("ETH/USDT", "buy", "gone1", amount=0.01))
    assert (info.value.code, info.value.kind) == ("51001", "unknown_symbol")


async def test_refused_timestamp_resyncs_and_sends_once_more(exchange: Exchange, fake: FakeOkx) -> None:
    """50102 "Timestamp request expired" (ccxt InvalidNonce) proves the order was not placed: the
    clock is re-measured and the order sent exactly once more; twice is a rejection."""
    fake.clock_offset_ms = 45_000  # the venue's clock is 45 s ahead: outside OKX's 30 s
    result = await exchange.create_order(OrderRequest("BTC/USDT", "buy", "skew1", cost=60.0))
    assert result.status == "closed" and fake.count(*ORDER) == 2
    assert fake.count("GET", "/api/v5/public/time") == 1
    fake.fail_next_order("timestamp", count=2)
    with pytest.raises(OrderRejected):
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", "skew2", cost=60.0))
    assert fake.count(*ORDER) == 4


@pytest.mark.parametrize("field", ["key", "passphrase"])
async def test_a_wrong_key_or_passphrase_is_an_auth_error_at_start(field: str, fake: FakeOkx) -> None:
    """50111 (key) and 50105 (passphrase), HTTP 401: ExchangeAuthError from the key check."""
    cfg = okx_config(fake, **{field: "wrong-" + field})  # type: ignore[arg-type]
    ex = Exchange("okx", cfg, dry_run=False, keep_warm_s=0)
    with pytest.raises(ExchangeAuthError) as info:
        await ex.start(check_keys=True)
    assert info.value.code == ("50111" if field == "key" else "50105")


async def test_a_bad_signature_on_an_order_is_an_auth_error(exchange: Exchange, fake: FakeOkx) -> None:
    """The venue's secret no longer matches (50113 Invalid Sign): ExchangeAuthError, nothing placed."""
    fake.secret = "rotated-secret"
    with pytest.raises(ExchangeAuthError) as info:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", "sig1", cost=60.0))
    assert info.value.code == "50113" and fake.executed == []


async def test_create_order_requests_are_what_the_fake_reads_field_by_field(
    exchange: Exchange, fake: FakeOkx
) -> None:
    """Each order kind bridge sends, as ccxt builds it, holds exactly the fields FakeOkx reads (and OKX
    documents): no broker tag, our clOrdId, tdMode per market, tgtCcy on spot only, a swap's size in
    contracts (0.2 ETH is 2 contracts of 0.1 ETH)."""
    await exchange.prepare_contract("ETH/USDT:USDT", leverage=2, margin_mode="isolated")
    await exchange.create_order(OrderRequest("ETH/USDT", "buy", "f1", amount=0.01, limit_price=3010.0))
    await exchange.create_order(OrderRequest("ETH/USDT", "buy", "f2", cost=30.0))
    await exchange.create_order(OrderRequest("ETH/USDT", "sell", "f3", amount=0.01))
    await exchange.create_order(OrderRequest("ETH/USDT:USDT", "buy", "f4", amount=0.2))
    await exchange.create_order(OrderRequest("ETH/USDT:USDT", "sell", "f5", amount=0.2, reduce_only=True))
    spot = {"instId": "ETH-USDT", "tdMode": "cash"}
    swap = {"instId": "ETH-USDT-SWAP", "tdMode": "isolated"}
    assert sent(fake) == [
        {
            **spot,
            "side": "buy",
            "ordType": "ioc",
            "sz": "0.01",
            "px": "3010",
            "tgtCcy": "base_ccy",
            "clOrdId": "f1",
        },
        {**spot, "side": "buy", "ordType": "market", "sz": "30", "tgtCcy": "quote_ccy", "clOrdId": "f2"},
        {**spot, "side": "sell", "ordType": "market", "sz": "0.01", "tgtCcy": "base_ccy", "clOrdId": "f3"},
        {**swap, "side": "buy", "ordType": "market", "sz": "2", "clOrdId": "f4"},
        {**swap, "side": "sell", "ordType": "market", "sz": "2", "clOrdId": "f5", "reduceOnly": "true"},
    ]


async def test_targeted_refresh_finds_a_symbol_listed_after_start(exchange: Exchange, fake: FakeOkx) -> None:
    """An announced symbol not loaded yet: one bounded refresh (OKX's instruments, per loaded market
    type) finds it, keeps the markets known before, and the order goes through."""
    assert exchange.market("NEW/USDT") is None
    fake.add_market("NEW", "USDT", price=2.0)
    found = await exchange.find_market("NEW/USDT")
    assert found is not None and found.id == "NEW-USDT"
    assert fake.count("GET", "/api/v5/public/instruments") == 2  # SPOT and SWAP
    assert exchange.market("BTC/USDT:USDT") is not None
    result = await exchange.create_order(OrderRequest("NEW/USDT", "buy", "new1", cost=20.0))
    assert result.filled == pytest.approx(10.0)
