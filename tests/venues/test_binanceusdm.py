"""Binance USDⓈ-M perpetuals through the `binance` account's adapter, real ccxt 4.5.90 against
FakeBinanceFutures: the swap markets load beside spot, hedge mode is refused at start, margin mode and
leverage are set per symbol, entries and reduce-only exits, a reduce-only STOP_MARKET resting on the algo
service (placed, found, triggered, cancelled), an unknown outcome settled by client id, and the error
table. The daemon-level path (router, journal, restart) is in tests/venues/test_binanceusdm_trading.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from bridge.config import ExchangeConfig
from bridge.errors import (
    ConfigError,
    ExchangeAuthError,
    ExchangeError,
    OrderRejected,
    OrderStatusUnknown,
    RateLimited,
)
from bridge.secrets import Secret
from bridge.sim.fake_binance_futures import FakeBinanceFutures
from bridge.sim.fake_venue import hmac_sha256_hex
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest

SWAP = "ABC/USDT:USDT"
FAST = {"timeout_on_exit": 0}


def usdm_errors() -> dict[str, Any]:
    """ccxt picks binance's USDⓈ-M error table by the request's host (https://fapi.binance.com/...), which
    a loopback fake cannot match: without this, -2019/-2022/-4164 would read as unmapped errors (an
    unknown outcome). ccxt's own linear table, merged over its exact one, maps them as on the real host."""
    return {"exceptions": {"exact": dict(ccxt_async.binance().exceptions["linear"]["exact"])}}


def usdm_config(fake: FakeBinanceFutures, *, key: str | None = None) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(key or fake.api_key),
        secret=Secret(fake.secret),
        market_types=("spot", "swap"),
        ccxt={**fake.ccxt_config(), **FAST, **usdm_errors()},
    )


def account(fake: FakeBinanceFutures, *, key: str | None = None) -> Exchange:
    return Exchange("binance", usdm_config(fake, key=key), dry_run=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceFutures]:
    async with FakeBinanceFutures(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)]) as f:
        yield f


@pytest.fixture
async def exchange(fake: FakeBinanceFutures) -> AsyncIterator[Exchange]:
    ex = account(fake)
    await ex.start(check_keys=True)
    yield ex
    await ex.close()


def sent(fake: FakeBinanceFutures) -> list[dict[str, str]]:
    return [o.params for o in fake.orders]


async def test_swap_markets_load_beside_spot_and_the_position_mode_is_read(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """market_types [spot, swap] loads both exchangeInfo endpoints (ccxt's "linear" for binance); the
    perpetual is its own market; the one-way mode is read once, never written."""
    spot, swap = exchange.market("ABC/USDT"), exchange.market(SWAP)
    assert spot is not None and spot.type == "spot"
    assert swap is not None and swap.type == "swap" and swap.raw["linear"] is True
    assert fake.count("GET", "/fapi/v1/exchangeInfo") == 1
    assert fake.count("GET", "/fapi/v1/positionSide/dual") == 1
    assert fake.count("POST", "/fapi/v1/positionSide/dual") == 0


async def test_hedge_mode_is_refused_at_start_and_never_switched(fake: FakeBinanceFutures) -> None:
    """An account in hedge (two-way) mode is a config error naming the exchange; bridge never sends the
    request that would switch it."""
    fake.perps.dual_side = True
    ex = account(fake)
    with pytest.raises(ConfigError, match=r"exchanges\.binance: .*hedge"):
        await ex.start(check_keys=True)
    assert fake.perps.dual_side is True
    assert fake.count("POST", "/fapi/v1/positionSide/dual") == 0


async def test_margin_mode_and_leverage_are_set_and_no_change_is_no_error(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """isolated margin and the leverage reach the venue; setting them again (Binance -4046 "No need to
    change margin type.", which ccxt raises) is not an error."""
    await exchange.prepare_contract(SWAP, leverage=3, margin_mode="isolated")
    await exchange.prepare_contract(SWAP, leverage=3, margin_mode="isolated")
    setting = fake.perps.settings["ABCUSDT"]
    assert (setting.leverage, setting.margin_type) == (3, "ISOLATED")
    assert fake.count("POST", "/fapi/v1/marginType") == 2


async def test_fractional_leverage_is_refused_before_any_request(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """Binance takes whole leverage only: 2.5 is refused, not rounded down behind the trader's back."""
    with pytest.raises(ExchangeError, match="whole number"):
        await exchange.prepare_contract(SWAP, leverage=2.5, margin_mode="isolated")
    assert fake.count("POST", "/fapi/v1/leverage") == fake.count("POST", "/fapi/v1/marginType") == 0


async def test_short_entry_then_reduce_only_exit_cannot_open_a_reverse_position(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """A market sell opens a short (no reduceOnly); the buy back is reduce-only: asking more than the
    short closes it and goes no further; another reduce-only buy is refused (-2022), never a long."""
    entry = await exchange.create_order(OrderRequest(SWAP, "sell", "entry1", amount=5))
    assert (entry.status, entry.filled, entry.average) == ("closed", 5.0, 2.0)
    assert "reduceOnly" not in sent(fake)[-1]
    assert fake.position_amount(SWAP) == -5.0
    fake.set_perp_price(SWAP, 1.8)
    exit_ = await exchange.create_order(OrderRequest(SWAP, "buy", "exit1", amount=8, reduce_only=True))
    assert sent(fake)[-1]["reduceOnly"] == "true"
    assert exit_.filled == 5.0 and fake.position_amount(SWAP) == 0.0
    assert fake.perps.wallet == pytest.approx(10_000 + 5 * 0.2)
    with pytest.raises(OrderRejected) as refused:
        await exchange.create_order(OrderRequest(SWAP, "buy", "exit2", amount=1, reduce_only=True))
    assert refused.value.code == "-2022"
    assert fake.position_amount(SWAP) == 0.0


async def test_limit_ioc_entry_fills_within_its_cap_or_expires(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """LIMIT with timeInForce IOC on the perpetual: a cap under the price fills nothing (expired)."""
    capped = await exchange.create_order(OrderRequest(SWAP, "buy", "ioc1", amount=5, limit_price=1.9))
    assert capped.status == "expired" and capped.filled == 0.0
    assert sent(fake)[-1]["timeInForce"] == "IOC"
    filled = await exchange.create_order(OrderRequest(SWAP, "buy", "ioc2", amount=5, limit_price=2.1))
    assert filled.status == "closed" and filled.filled == 5.0 and fake.position_amount(SWAP) == 5.0


async def test_resting_stop_of_a_short_rests_triggers_and_is_read_back(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """The stop of a short is a reduce-only STOP_MARKET buy on the algo service under our client id; it
    rests (open) until the price rises to it, then the look-up reads the fill of the order it became."""
    await exchange.create_order(OrderRequest(SWAP, "sell", "entry1", amount=5))
    assert exchange.supports_resting_stops(SWAP)
    rest = await exchange.place_stop(SWAP, amount=5, stop_price=2.2, client_order_id="stop1", side="buy")
    assert rest.status == "open"
    request = fake.algo_requests[-1]
    assert (request["type"], request["side"], request["reduceOnly"], request["clientAlgoId"]) == (
        "STOP_MARKET",
        "BUY",
        "true",
        "stop1",
    )
    resting = await exchange.fetch_order_by_client_id(SWAP, "stop1")
    assert resting is not None and resting.status == "open" and not resting.filled
    fake.set_perp_price(SWAP, 2.25)
    done = await exchange.fetch_order_by_client_id(SWAP, "stop1")
    assert done is not None and (done.status, done.filled, done.average) == ("closed", 5.0, 2.25)
    assert done.client_order_id == "stop1" and fake.position_amount(SWAP) == 0.0


async def test_a_stop_placed_before_a_restart_is_found_by_its_client_id(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """A new process does not know the id is a stop: the matching engine says "no such order", the algo
    service finds it."""
    await exchange.create_order(OrderRequest(SWAP, "buy", "entry1", amount=5))
    await exchange.place_stop(SWAP, amount=5, stop_price=1.8, client_order_id="stop1")
    fresh = account(fake)
    await fresh.start(check_keys=False)
    try:
        found = await fresh.fetch_order_by_client_id(SWAP, "stop1")
        assert found is not None and found.status == "open"
        assert await fresh.fetch_order_by_client_id(SWAP, "never-sent") is None
    finally:
        await fresh.close()


async def test_cancelling_a_stop_takes_it_off_and_a_second_cancel_reads_it_back(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    await exchange.create_order(OrderRequest(SWAP, "buy", "entry1", amount=5))
    await exchange.place_stop(SWAP, amount=5, stop_price=1.8, client_order_id="stop1")
    cancelled = await exchange.cancel_order_by_client_id(SWAP, "stop1")
    assert cancelled is not None and cancelled.status == "canceled" and cancelled.filled == 0.0
    assert fake.open_algo_orders(SWAP) == []
    again = await exchange.cancel_order_by_client_id(SWAP, "stop1")  # -2011: looked up instead
    assert again is not None and again.status == "canceled"
    fake.set_perp_price(SWAP, 1.5)  # a cancelled stop never fires
    assert fake.position_amount(SWAP) == 5.0


async def test_a_stop_that_would_trigger_at_once_is_refused(exchange: Exchange) -> None:
    await exchange.create_order(OrderRequest(SWAP, "sell", "entry1", amount=5))
    with pytest.raises(OrderRejected) as refused:
        await exchange.place_stop(SWAP, amount=5, stop_price=1.9, client_order_id="stop1", side="buy")
    assert refused.value.code == "-2021"


async def test_an_unknown_outcome_is_settled_by_client_id(
    exchange: Exchange, fake: FakeBinanceFutures
) -> None:
    """The order was created, then the venue answered 500: OrderStatusUnknown, and the look-up by client
    id (origClientOrderId on /fapi/v1/order) finds it with its fill."""
    fake.fail_next_order("server_error_after")
    with pytest.raises(OrderStatusUnknown):
        await exchange.create_order(OrderRequest(SWAP, "sell", "entry1", amount=5))
    found = await exchange.fetch_order_by_client_id(SWAP, "entry1")
    assert found is not None and (found.status, found.filled) == ("closed", 5.0)
    lookups = [q for m, path, q in fake.queries if (m, path) == ("GET", "/fapi/v1/order")]
    assert [q["origClientOrderId"] for q in lookups] == ["entry1"]


@pytest.mark.parametrize(
    ("setup", "error", "fragment"),
    [
        ("rate_limited", RateLimited, "-1003"),
        ("margin", OrderRejected, "insufficient_balance"),
        ("min_notional", OrderRejected, "-4164"),
        ("reduce_only", OrderRejected, "-2022"),
    ],
)
async def test_error_table(
    exchange: Exchange, fake: FakeBinanceFutures, setup: str, error: type[Exception], fragment: str
) -> None:
    """Each venue refusal becomes the project's error: 429 a RateLimited with its Retry-After; margin
    short (-2019) an insufficient_balance rejection; under the minimum notional (-4164) and a reduce-only
    that would open (-2022) rejections with the venue's code. Nothing is retried."""
    amount = 5.0
    if setup == "rate_limited":
        fake.fail_next_order("rate_limited")
    elif setup == "margin":
        fake.perps.wallet = 0.1  # 10 USDT at the default 20x needs 0.5
    elif setup == "min_notional":
        amount = 1.0
    req = OrderRequest(SWAP, "buy", "e1", amount=amount, reduce_only=setup == "reduce_only")
    with pytest.raises(error) as caught:
        await exchange.create_order(req)
    exc = caught.value
    described = f"{exc} {getattr(exc, 'code', '')} {getattr(exc, 'kind', '')}"
    assert fragment in described
    if setup == "rate_limited":
        assert isinstance(exc, RateLimited) and exc.retry_after == 2
    assert len(fake.orders) == 1 and fake.position_amount(SWAP) == 0.0


async def test_a_refused_timestamp_is_resent_once(exchange: Exchange, fake: FakeBinanceFutures) -> None:
    """-1021 proves the order was not executed: the clock is re-measured and it goes once more."""
    fake.fail_next_order("timestamp")
    result = await exchange.create_order(OrderRequest(SWAP, "sell", "entry1", amount=5))
    assert result.filled == 5.0 and len(fake.orders) == 2 and fake.position_amount(SWAP) == -5.0


async def test_unknown_symbol_is_never_sent(exchange: Exchange, fake: FakeBinanceFutures) -> None:
    with pytest.raises(Exception, match="not a loaded market"):
        await exchange.create_order(OrderRequest("XYZ/USDT:USDT", "buy", "e1", amount=5))
    assert fake.orders == []


async def test_a_rejected_key_is_an_auth_error(fake: FakeBinanceFutures) -> None:
    ex = account(fake, key="wrong-key-123456")
    with pytest.raises(ExchangeAuthError) as caught:
        await ex.start(check_keys=True)
    assert "wrong-key-123456" not in str(caught.value)


async def test_the_fake_checks_signatures_on_fapi(fake: FakeBinanceFutures) -> None:
    """A futures request signed with another secret is refused as Binance refuses it (-1022), and nothing
    is created: the fake proves ccxt's signing of /fapi requests, not just their shape."""
    query = f"symbol=ABCUSDT&side=SELL&type=MARKET&quantity=5&timestamp={time.time_ns() // 1_000_000}"
    headers = {"X-MBX-APIKEY": fake.api_key}
    async with aiohttp.ClientSession() as session:
        bad = f"{fake.url}/fapi/v1/order?{query}&signature={hmac_sha256_hex('other-secret', query)}"
        async with session.post(bad, headers=headers) as response:
            assert response.status == 400 and (await response.json())["code"] == -1022
        good = f"{fake.url}/fapi/v1/order?{query}&signature={hmac_sha256_hex(fake.secret, query)}"
        async with session.post(good, headers=headers) as response:
            assert response.status == 200 and (await response.json())["status"] == "FILLED"
    assert fake.position_amount(SWAP) == -5.0
