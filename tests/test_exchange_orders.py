"""bridge.venues.exchange orders, error translation and recorded HTTP, against FakeBinance over 127.0.0.1:
real ccxt code, real HTTP, real signatures (start-up, markets and the request budget: test_exchange)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from aioresponses import aioresponses

from bridge.config import ExchangeConfig
from bridge.errors import (
    ExchangeAuthError,
    ExchangeError,
    ExchangeUnavailable,
    OrderRejected,
    OrderStatusUnknown,
    RateLimited,
    UnknownSymbol,
)
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance, FaultKind
from bridge.venues.errors import translate_error
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.test_exchange import (
    EXCHANGE_INFO,
    FAST,
    ORDER,
    TIME,
    clock,
    config,
    exchange,
    fake,
)

__all__ = ["clock", "exchange", "fake"]  # fixtures, used by name

# ----- orders -----


async def test_buy_with_cost_sends_quote_order_qty_and_client_id(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """A buy by cost is one POST with quoteOrderQty and newClientOrderId, no quantity; the result
    carries the fill."""
    result = await exchange.create_order(OrderRequest("BTC/USDT", "buy", "buycost01", cost=120))
    assert fake.requests == [ORDER]
    params = fake.orders[0].params
    assert (params["type"], params["side"], params["quoteOrderQty"]) == ("MARKET", "BUY", "120")
    assert params["newClientOrderId"] == "buycost01" and "quantity" not in params
    assert result.status == "closed" and result.client_order_id == "buycost01"
    assert result.order_id is not None and result.cost == 120.0
    assert result.filled == pytest.approx(0.002) and result.average == pytest.approx(60_000, rel=1e-6)


async def test_sell_with_amount_sends_quantity(exchange: Exchange, fake: FakeBinance) -> None:
    """A sell by amount sends quantity and no quoteOrderQty."""
    result = await exchange.create_order(OrderRequest("ETH/USDT", "sell", "sellamt01", amount=0.5))
    params = fake.orders[0].params
    assert (params["side"], params["quantity"], params["newClientOrderId"]) == ("SELL", "0.5", "sellamt01")
    assert "quoteOrderQty" not in params
    assert result.side == "sell" and result.cost == 1500.0


async def test_order_for_an_unloaded_symbol_is_refused_locally(exchange: Exchange, fake: FakeBinance) -> None:
    """create_order never refreshes markets: an unknown symbol is UnknownSymbol with no request."""
    with pytest.raises(UnknownSymbol):
        await exchange.create_order(OrderRequest("NEW/USDT", "buy", "unknown01", cost=10))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("insufficient_balance", OrderRejected, "-2010"),
        ("min_notional", OrderRejected, "-1013"),
        ("rate_limited", RateLimited, "-1003"),
    ],
)
async def test_refusals_are_final_and_not_retried(
    exchange: Exchange, fake: FakeBinance, kind: FaultKind, error: type[ExchangeError], code: str
) -> None:
    """A refused order raises the matching error with the exchange's code; exactly one order request
    reached the server and nothing was created. 429 carries Retry-After as retry_after."""
    fake.fail_next_order(kind)
    with pytest.raises(error) as caught:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", f"{kind[:8]}01", cost=50))
    assert caught.value.code == code and caught.value.exchange == "binance"
    assert len(fake.orders) == 1 and fake.executed == []
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == fake.retry_after_s


async def test_a_real_min_notional_failure_is_a_rejection(exchange: Exchange, fake: FakeBinance) -> None:
    """An order below the market's min notional is OrderRejected -1013 (ccxt does not check it)."""
    with pytest.raises(OrderRejected) as caught:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", "tiny01", cost=1))
    assert caught.value.code == "-1013"
    assert "NOTIONAL" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "created"),
    [("server_error_before", False), ("server_error_after", True), ("timeout_after", True)],
)
async def test_unknown_outcomes_are_settled_by_client_id(
    fake: FakeBinance, kind: FaultKind, created: bool
) -> None:
    """5xx and timeouts raise OrderStatusUnknown after exactly one order request; looking the client id
    up then finds the order when it was created and returns None when it was not."""
    ex = Exchange("binance", config(fake, timeout=300), dry_run=False)  # the hang costs one timeout
    await ex.start(check_keys=False)
    try:
        fake.fail_next_order(kind)
        with pytest.raises(OrderStatusUnknown):
            await ex.create_order(OrderRequest("BTC/USDT", "buy", "unknown01", cost=50))
        assert len(fake.orders) == 1
        found = await ex.fetch_order_by_client_id("BTC/USDT", "unknown01")
    finally:
        await ex.close()
    if created:
        assert found is not None and found.status == "closed" and found.client_order_id == "unknown01"
        assert found.cost == 50.0
    else:
        assert found is None


async def test_refused_timestamp_resyncs_and_retries_exactly_once(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """-1021 proves the order did not execute: the clock is re-measured and the order sent once more,
    with the same client id."""
    fake.fail_next_order("timestamp")
    result = await exchange.create_order(OrderRequest("BTC/USDT", "buy", "skew01", cost=50))
    assert result.status == "closed"
    assert fake.requests == [ORDER, TIME, ORDER]
    assert [o.params["newClientOrderId"] for o in fake.orders] == ["skew01", "skew01"]


async def test_a_second_refused_timestamp_is_a_rejection(exchange: Exchange, fake: FakeBinance) -> None:
    """If the retry is refused too, the order is OrderRejected -1021 after exactly two sends."""
    fake.fail_next_order("timestamp", count=2)
    with pytest.raises(OrderRejected) as caught:
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", "skew02", cost=50))
    assert caught.value.code == "-1021"
    assert len(fake.orders) == 2 and fake.executed == []


async def test_real_clock_drift_is_corrected_by_the_resync(exchange: Exchange, fake: FakeBinance) -> None:
    """When the exchange's clock drifts 20 s behind after start, the first order is refused as -1021,
    the resync measures the new offset and the retry is accepted."""
    fake.clock_offset_ms = -20_000
    result = await exchange.create_order(OrderRequest("ETH/USDT", "buy", "drift01", cost=30))
    assert result.status == "closed"
    assert exchange.time_offset_ms is not None and exchange.time_offset_ms > 19_000
    assert len(fake.orders) == 2


async def test_fetch_order_by_client_id_for_an_unknown_id_is_none(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """Binance's -2013 'Order does not exist.' means None, not an error."""
    assert await exchange.fetch_order_by_client_id("BTC/USDT", "neverplaced") is None
    assert fake.requests == [("GET", "/api/v3/order")]


async def test_fetch_order_by_client_id_failure_is_an_exchange_error(fake: FakeBinance) -> None:
    """When the lookup itself cannot reach the exchange it raises ExchangeUnavailable, never None."""
    ex = Exchange("binance", config(fake), dry_run=False)
    await ex.start(check_keys=False)
    await fake.stop()
    try:
        with pytest.raises(ExchangeUnavailable):
            await ex.fetch_order_by_client_id("BTC/USDT", "whatever")
    finally:
        await ex.close()


async def test_fetch_price(exchange: Exchange, fake: FakeBinance) -> None:
    """fetch_price returns the last price and follows set_price; an unknown symbol gives None."""
    assert await exchange.fetch_price("ETH/USDT") == 3000.0
    fake.set_price("ETH/USDT", 3100.5)
    assert await exchange.fetch_price("ETH/USDT") == 3100.5
    assert await exchange.fetch_price("NOPE/USDT") is None


async def test_dry_run_never_sends(fake: FakeBinance) -> None:
    """With dry_run the exchange layer refuses to send any order (paper fills happen in bridge.trading.paper),
    while markets and prices are still read."""
    ex = Exchange("binance", config(fake), dry_run=True)
    await ex.start(check_keys=False)
    try:
        with pytest.raises(OrderRejected, match="dry run"):
            await ex.create_order(OrderRequest("BTC/USDT", "buy", "paper01", cost=600))
        assert await ex.fetch_order_by_client_id("BTC/USDT", "paper01") is None
        assert await ex.fetch_price("BTC/USDT") == 60000.0
    finally:
        await ex.close()
    assert fake.orders == []


def test_format_client_order_id_per_exchange() -> None:
    """Ids are adapted to each exchange's rule: binance as is, gate with its t- prefix, okx within 32."""
    base = "01HZXCVBNMASDFGHJKLQWERTYU"
    cfg = ExchangeConfig()
    assert Exchange("binance", cfg, dry_run=True).format_client_order_id(base) == base
    assert Exchange("gate", cfg, dry_run=True).format_client_order_id(base) == "t-" + base
    long_id = base + "0123456789"
    assert Exchange("okx", cfg, dry_run=True).format_client_order_id(long_id) == long_id[-32:]
    with pytest.raises(ValueError, match="letters or digits"):
        Exchange("binance", cfg, dry_run=True).format_client_order_id("bad id!")


def test_order_request_needs_exactly_one_size() -> None:
    """OrderRequest refuses both or neither of cost/amount, and non-positive sizes."""
    for kwargs in ({}, {"cost": 1.0, "amount": 1.0}, {"cost": 0.0}, {"amount": float("nan")}):
        with pytest.raises(ValueError):
            OrderRequest("BTC/USDT", "buy", "x1", **kwargs)


# ----- error translation -----

SECRET_IN_MESSAGE = "s3cr3t-value-that-leaked"
Secret(SECRET_IN_MESSAGE)  # registers it with the scrubber, as the config loader does

TRANSLATIONS = [
    # (ccxt exception, during, expected class, expected code)
    (
        ccxt_async.InsufficientFunds('binance {"code":-2010,"msg":"Account has insufficient balance"}'),
        "order",
        OrderRejected,
        "-2010",
    ),
    (
        ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'),
        "order",
        OrderRejected,
        "-2010",
    ),
    (
        ccxt_async.BadRequest('binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}'),
        "order",
        OrderRejected,
        "-1013",
    ),
    (ccxt_async.BadSymbol('binance {"code":-1121,"msg":"Invalid symbol."}'), "order", OrderRejected, "-1121"),
    (ccxt_async.BadSymbol("binance does not have market symbol X/Y"), "read", UnknownSymbol, None),
    (
        ccxt_async.MarketClosed('binance {"code":-1013,"msg":"Market is closed."}'),
        "order",
        OrderRejected,
        "-1013",
    ),
    (
        ccxt_async.NotSupported("binance createMarketBuyOrderWithCost() is not supported"),
        "order",
        OrderRejected,
        None,
    ),
    (
        ccxt_async.AuthenticationError('binance {"code":-2015,"msg":"Invalid API-key"}'),
        "order",
        ExchangeAuthError,
        "-2015",
    ),
    (ccxt_async.PermissionDenied("binance no permission"), "read", ExchangeAuthError, None),
    (
        ccxt_async.PermissionDenied(
            'binance {"code":-2010,"msg":"This symbol is not permitted for this account."}'
        ),
        "order",
        OrderRejected,
        "-2010",
    ),
    (
        ccxt_async.InvalidNonce('binance {"code":-1021,"msg":"Timestamp ahead"}'),
        "order",
        OrderRejected,
        "-1021",
    ),
    (
        ccxt_async.InvalidNonce('binance {"code":-1021,"msg":"Timestamp ahead"}'),
        "read",
        ExchangeUnavailable,
        "-1021",
    ),
    (
        ccxt_async.RequestTimeout("binance POST http://h/api/v3/order?signature=abc"),
        "order",
        OrderStatusUnknown,
        None,
    ),
    (ccxt_async.RequestTimeout("binance GET http://h/api/v3/time"), "read", ExchangeUnavailable, None),
    (
        ccxt_async.ExchangeNotAvailable("binance POST http://h 502 Bad Gateway"),
        "order",
        OrderStatusUnknown,
        None,
    ),
    (ccxt_async.OnMaintenance("binance System is under maintenance."), "order", OrderStatusUnknown, None),
    (
        ccxt_async.OperationFailed('binance {"code":-1001,"msg":"Internal error"}'),
        "order",
        OrderStatusUnknown,
        "-1001",
    ),
    (ccxt_async.NetworkError("binance connection reset"), "order", OrderStatusUnknown, None),
    (ccxt_async.BadResponse("binance returned garbage"), "order", OrderStatusUnknown, None),
    (
        ccxt_async.ExchangeError('binance {"code":-9999,"msg":"unheard of"}'),
        "order",
        OrderStatusUnknown,
        "-9999",
    ),
    (
        ccxt_async.ExchangeError('binance {"code":-9999,"msg":"unheard of"}'),
        "read",
        ExchangeUnavailable,
        "-9999",
    ),
    (ccxt_async.InvalidOrder("binance amount must be greater than minimum"), "read", ExchangeError, None),
    (ccxt_async.DDoSProtection("binance 418 I'm a teapot"), "order", RateLimited, None),
    (
        ccxt_async.RateLimitExceeded('binance 429 {"code":-1003,"msg":"Too many requests"}'),
        "read",
        RateLimited,
        "-1003",
    ),
    (KeyError("fills"), "order", OrderStatusUnknown, None),
    (TimeoutError(), "read", ExchangeUnavailable, None),
]


@pytest.mark.parametrize(("exc", "during", "expected", "code"), TRANSLATIONS)
def test_translate_error_table(
    exc: BaseException, during: Any, expected: type[ExchangeError], code: str | None
) -> None:
    """Each ccxt exception class maps to exactly one project error per phase, keeping the exchange's
    code: definite refusals are OrderRejected, anything that may have executed is OrderStatusUnknown."""
    translated = translate_error(exc, exchange="binance", during=during)
    assert type(translated) is expected
    assert translated.code == code and translated.exchange == "binance"
    assert not isinstance(translated, ccxt_async.BaseError)


def test_translated_messages_drop_queries_and_secrets() -> None:
    """Messages never carry URL query strings (signatures) or registered secrets."""
    exc = ccxt_async.RequestTimeout(
        f"binance POST http://h/api/v3/order?timestamp=1&signature=deadbeef key={SECRET_IN_MESSAGE}"
    )
    message = str(translate_error(exc, exchange="binance", during="order"))
    assert "deadbeef" not in message and SECRET_IN_MESSAGE not in message
    assert "http://h/api/v3/order" in message


def in_30_seconds() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0.5", 0.5), (in_30_seconds, 30.0), ("soon", None), (None, None)],
)
def test_rate_limited_reads_retry_after(header: Any, expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP date becomes retry_after; anything else is None."""
    value = header() if callable(header) else header
    headers = {} if value is None else {"retry-after": value}
    error = translate_error(
        ccxt_async.DDoSProtection("429"), exchange="binance", during="order", headers=headers
    )
    assert isinstance(error, RateLimited)
    if expected is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(expected, abs=2)


# ----- recorded HTTP -----


async def test_recorded_http_for_binance_alongside_a_local_server(fake: FakeBinance) -> None:
    """aioresponses (the -ng fork) serves recorded responses to ccxt for api.binance.com while
    passthrough lets requests to the local fake through in the same block."""
    with aioresponses(passthrough=["http://127.0.0.1"]) as recorded:
        recorded.get("https://api.binance.com/api/v3/exchangeInfo", payload=fake.exchange_info())
        recorded.get("https://api.binance.com/api/v3/time", payload={"serverTime": 1_700_000_000_000})
        recorded.get(
            "https://api.binance.com/api/v3/ticker/24hr?symbol=ETHBTC",
            payload={"symbol": "ETHBTC", "lastPrice": "0.05123"},
        )
        live = Exchange("binance", ExchangeConfig(ccxt=FAST), dry_run=True)
        local = Exchange("binance", config(fake), dry_run=True)
        await asyncio.gather(live.start(check_keys=False), local.start(check_keys=False))
        try:
            assert live.market("BNB/USDT") is not None
            assert await live.fetch_price("ETH/BTC") == 0.05123
            assert await local.fetch_price("ETH/BTC") == 0.05
        finally:
            await asyncio.gather(live.close(), local.close())
    assert fake.count(*EXCHANGE_INFO) == 1
