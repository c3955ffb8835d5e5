"""Resting stops, cancels by client id, reduce-only and rejection kinds in bridge.venues, against FakeBinance
over 127.0.0.1: real ccxt code, real HTTP, real signatures, with the fake keeping the account's balances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from bridge.config import ExchangeConfig
from bridge.errors import (
    ExchangeAuthError,
    ExchangeError,
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

# The listing the stops protect: a tick of 0.01 and a lot of 0.001, the account holding 100 of it.
TICK, LOT, HELD = 0.01, 0.001, 100.0
ORDER = ("POST", "/api/v3/order")
LOOKUP = ("GET", "/api/v3/order")
CANCEL = ("DELETE", "/api/v3/order")


def config(fake: FakeBinance, **ccxt: Any) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(ccxt.pop("secret", fake.secret)),
        ccxt={**fake.ccxt_config(), "timeout_on_exit": 0, **ccxt},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(track_balances=True) as server:
        server.add_market("RND", "USDT", price=3.0, tick_size=TICK, step_size=LOT)
        server.balances["RND"] = HELD
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


# ----- placing a stop -----


async def test_stop_loss_goes_on_the_wire_rounded_and_rests(exchange: Exchange, fake: FakeBinance) -> None:
    """place_stop sends one POST with type STOP_LOSS, side SELL, the stop price rounded down to the tick,
    the quantity truncated to the lot and our client id; no price, timeInForce or reduceOnly. It rests:
    status "open", nothing filled, its coins locked."""
    assert exchange.supports_resting_stops("RND/USDT")
    result = await exchange.place_stop(
        "RND/USDT", amount=2.34567, stop_price=2.8789, client_order_id="stop01"
    )
    [wire] = sent(fake)
    assert wire["type"] == "STOP_LOSS" and wire["side"] == "SELL" and wire["symbol"] == "RNDUSDT"
    assert (wire["stopPrice"], wire["quantity"], wire["newClientOrderId"]) == ("2.87", "2.345", "stop01")
    assert not {"price", "timeInForce", "reduceOnly", "quoteOrderQty"} & wire.keys()
    assert (result.status, result.filled, result.side, result.client_order_id) == (
        "open",
        0.0,
        "sell",
        "stop01",
    )
    assert result.raw["triggerPrice"] == 2.87 and result.order_id is not None
    [resting] = fake.open_orders("RND/USDT")
    assert (resting.client_order_id, resting.order_type, resting.status) == ("stop01", "STOP_LOSS", "NEW")
    assert fake.wallet.locked["RND"] == 2.345 and fake.balances["RND"] == HELD - 2.345


async def test_stop_loss_limit_carries_its_price_and_gtc(exchange: Exchange, fake: FakeBinance) -> None:
    """With a limit price it is STOP_LOSS_LIMIT, timeInForce GTC, the limit price rounded down to the
    tick as well."""
    result = await exchange.place_stop(
        "RND/USDT", amount=2, stop_price=2.8, limit_price=2.7551, client_order_id="stoplim01"
    )
    [wire] = sent(fake)
    assert (wire["type"], wire["timeInForce"], wire["price"], wire["stopPrice"]) == (
        "STOP_LOSS_LIMIT",
        "GTC",
        "2.75",
        "2.8",
    )
    assert result.status == "open"


async def test_resting_stop_is_found_by_client_id_before_and_after_it_fills(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """fetch_order_by_client_id finds a resting stop as "open" with nothing filled; once the price
    trades at its stop it fills whole at that price: "closed", filled = amount, with the average, the
    coins sold and the quote received."""
    await exchange.place_stop("RND/USDT", amount=4, stop_price=2.8, client_order_id="stop02")
    resting = await exchange.fetch_order_by_client_id("RND/USDT", "stop02")
    assert resting is not None and (resting.status, resting.filled) == ("open", 0.0)
    usdt = fake.balances["USDT"]
    fake.set_price("RND/USDT", 2.79)
    done = await exchange.fetch_order_by_client_id("RND/USDT", "stop02")
    assert done is not None
    assert (done.status, done.filled, done.average, done.cost) == ("closed", 4.0, 2.79, 11.16)
    assert fake.open_orders("RND/USDT") == []
    assert fake.wallet.locked["RND"] == 0 and fake.balances["RND"] == HELD - 4
    assert fake.balances["USDT"] == pytest.approx(usdt + 11.16)


async def test_triggered_stop_limit_waits_for_its_limit(exchange: Exchange, fake: FakeBinance) -> None:
    """A stop-limit whose stop triggered while the price is under its limit stays open; it fills once
    the price is back at or above the limit."""
    await exchange.place_stop(
        "RND/USDT", amount=3, stop_price=2.8, limit_price=2.7, client_order_id="stoplim02"
    )
    fake.set_price("RND/USDT", 2.6)
    waiting = await exchange.fetch_order_by_client_id("RND/USDT", "stoplim02")
    assert waiting is not None and (waiting.status, waiting.filled) == ("open", 0.0)
    assert waiting.raw["info"]["isWorking"] is True
    fake.set_price("RND/USDT", 2.72)
    done = await exchange.fetch_order_by_client_id("RND/USDT", "stoplim02")
    assert done is not None and (done.status, done.filled, done.average) == ("closed", 3.0, 2.72)


async def test_a_resting_stop_holds_the_coins_against_a_second_sell(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """As on Binance, a resting stop locks the coins it sells: a market sell of the same coins is
    refused -2010, OrderRejected kind insufficient_balance; once the stop is cancelled, it goes."""
    await exchange.place_stop("RND/USDT", amount=HELD, stop_price=2.8, client_order_id="stop03")
    with pytest.raises(OrderRejected) as caught:
        await exchange.create_order(OrderRequest("RND/USDT", "sell", "exit01", amount=50))
    assert (caught.value.kind, caught.value.code) == ("insufficient_balance", "-2010")
    await exchange.cancel_order_by_client_id("RND/USDT", "stop03")
    sold = await exchange.create_order(OrderRequest("RND/USDT", "sell", "exit02", amount=50))
    assert (sold.status, sold.filled) == ("closed", 50.0)


async def test_locked_coins_are_not_free_and_a_resting_client_id_is_taken(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """The account shows a resting stop's coins as locked, so fetch_free_balances leaves them out; a
    second order under the client id of an open one is refused -2010 "Duplicate order sent."."""
    await exchange.place_stop("RND/USDT", amount=30, stop_price=2.8, client_order_id="stop09")
    assert (await exchange.fetch_free_balances())["RND"] == HELD - 30
    with pytest.raises(OrderRejected) as caught:
        await exchange.place_stop("RND/USDT", amount=1, stop_price=2.5, client_order_id="stop09")
    assert (caught.value.code, caught.value.kind) == ("-2010", "other")
    assert "Duplicate order sent." in str(caught.value)


async def test_without_tracked_balances_orders_never_check_them() -> None:
    """FakeBinance's default keeps the old behaviour: a sell of coins the account does not hold fills,
    and a resting stop locks nothing, though it rests and triggers all the same."""
    async with FakeBinance() as fake:
        ex = Exchange("binance", config(fake), dry_run=False)
        await ex.start(check_keys=False)
        try:
            sold = await ex.create_order(OrderRequest("ETH/USDT", "sell", "nocoins01", amount=1))
            await ex.place_stop("ETH/USDT", amount=1, stop_price=2900, client_order_id="stop10")
            fake.set_price("ETH/USDT", 2900)
            found = await ex.fetch_order_by_client_id("ETH/USDT", "stop10")
        finally:
            await ex.close()
    assert sold.filled == 1.0 and fake.balances == {"USDT": 100000.0} and fake.wallet.locked == {}
    assert found is not None and (found.status, found.filled) == ("closed", 1.0)


@pytest.mark.parametrize(
    ("kwargs", "code", "kind"),
    [
        ({"amount": 1.5, "stop_price": 2.8}, "-1013", "too_small"),  # notional 4.2 < 5
        ({"amount": 2, "stop_price": 3.0}, "-2010", "other"),  # would trigger immediately
        ({"amount": HELD + 1, "stop_price": 2.8}, "-2010", "insufficient_balance"),
    ],
)
async def test_refused_stops_are_rejections_with_their_kind(
    exchange: Exchange, fake: FakeBinance, kwargs: dict[str, float], code: str, kind: str
) -> None:
    """The venue's refusals of a stop are OrderRejected with its code and kind: below the notional
    filter, a stop at or above the last price, more coins than are free. Nothing rests."""
    with pytest.raises(OrderRejected) as caught:
        await exchange.place_stop("RND/USDT", client_order_id="badstop01", **kwargs)
    assert (caught.value.code, caught.value.kind) == (code, kind)
    assert fake.open_orders("RND/USDT") == [] and fake.wallet.locked.get("RND", 0.0) == 0


async def test_a_stop_below_the_lot_is_refused_without_a_request(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """An amount that truncates to nothing on the lot is OrderRejected kind too_small before any request,
    a stop price below the tick kind other; a size that is not a positive number is a ValueError (a
    caller's bug); a symbol not loaded is UnknownSymbol, and does not support resting stops."""
    with pytest.raises(OrderRejected) as caught:
        await exchange.place_stop("RND/USDT", amount=0.0004, stop_price=2.8, client_order_id="dust01")
    assert caught.value.kind == "too_small"
    with pytest.raises(OrderRejected) as below_tick:
        await exchange.place_stop("RND/USDT", amount=2, stop_price=0.004, client_order_id="tick01")
    assert below_tick.value.kind == "other"
    with pytest.raises(ValueError):
        await exchange.place_stop("RND/USDT", amount=float("nan"), stop_price=2.8, client_order_id="nan01")
    with pytest.raises(UnknownSymbol):
        await exchange.place_stop("NEW/USDT", amount=1, stop_price=2.8, client_order_id="new01")
    assert fake.requests == []
    assert not exchange.supports_resting_stops("NEW/USDT")


async def test_resting_stops_need_binance_spot_with_stop_loss(fake: FakeBinance, exchange: Exchange) -> None:
    """supports_resting_stops is False for a market whose order types lack STOP_LOSS and in a dry run."""
    info = exchange.ccxt.markets["ETH/BTC"]["info"]
    info["orderTypes"] = [t for t in info["orderTypes"] if t != "STOP_LOSS"]
    assert exchange.supports_resting_stops("BTC/USDT") and not exchange.supports_resting_stops("ETH/BTC")
    paper = Exchange("binance", config(fake), dry_run=True)
    await paper.start(check_keys=False)
    try:
        assert not paper.supports_resting_stops("BTC/USDT")
        assert await paper.cancel_order_by_client_id("BTC/USDT", "stop01") is None
    finally:
        await paper.close()


async def test_stops_and_cancels_are_charged_to_the_request_budget(fake: FakeBinance) -> None:
    """place_stop and cancel_order_by_client_id go through bridge's request budget like any order, each
    at ccxt's cost for its endpoint (on a clock that does not move, so nothing refills)."""
    now = [1000.0]
    ex = Exchange("binance", config(fake), dry_run=False, clock=lambda: now[0])
    await ex.start(check_keys=False)
    try:
        assert ex.budget is not None
        api = ex.ccxt.api["private"]
        before = ex.budget.available
        await ex.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="paid01")
        placed = ex.budget.available
        await ex.cancel_order_by_client_id("RND/USDT", "paid01")
        cancelled = ex.budget.available
    finally:
        await ex.close()
    assert before - placed == pytest.approx(api["post"]["order"]["cost"])
    assert placed - cancelled == pytest.approx(api["delete"]["order"]["cost"])


# ----- faults -----


@pytest.mark.parametrize(
    ("kind", "error", "rests"),
    [
        ("rate_limited", RateLimited, False),
        ("server_error_before", OrderStatusUnknown, False),
        ("server_error_after", OrderStatusUnknown, True),
    ],
)
async def test_place_stop_faults_raise_like_create_order(
    exchange: Exchange, fake: FakeBinance, kind: FaultKind, error: type[ExchangeError], rests: bool
) -> None:
    """A 429 is RateLimited with Retry-After as retry_after; a 5xx is OrderStatusUnknown, whether or not
    the stop was created, which the lookup by client id then tells. One request each, never resent."""
    fake.fail_next_order(kind)
    with pytest.raises(error) as caught:
        await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="fault01")
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == fake.retry_after_s
    assert len(fake.orders) == 1
    found = await exchange.fetch_order_by_client_id("RND/USDT", "fault01")
    assert (found is not None and found.status == "open") is rests


async def test_refused_timestamp_on_a_stop_resyncs_and_sends_once_more(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """-1021 proves the stop was not placed: the clock is re-measured and it is sent once more."""
    fake.fail_next_order("timestamp")
    result = await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="skew01")
    assert result.status == "open"
    assert fake.requests == [ORDER, ("GET", "/api/v3/time"), ORDER]


# ----- cancel by client id -----


async def test_cancel_returns_the_canceled_order_with_our_client_id(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """One DELETE by origClientOrderId; the result is Binance's answer as ccxt parses it, status
    "canceled" with what had filled, under our client id (not the cancel's own id, which Binance
    returns as clientOrderId). The coins are free again."""
    await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="stop04")
    fake.requests.clear()
    result = await exchange.cancel_order_by_client_id("RND/USDT", "stop04")
    assert result is not None
    assert (result.status, result.filled, result.client_order_id) == ("canceled", 0.0, "stop04")
    assert result.raw["info"]["origClientOrderId"] == "stop04"
    assert result.raw["info"]["clientOrderId"] != "stop04"
    assert fake.requests == [CANCEL]
    [(_, _, query)] = [q for q in fake.queries if q[0] == "DELETE"]
    assert query["origClientOrderId"] == "stop04" and query["symbol"] == "RNDUSDT"
    assert fake.open_orders("RND/USDT") == [] and fake.balances["RND"] == HELD
    found = await exchange.fetch_order_by_client_id("RND/USDT", "stop04")
    assert found is not None and found.status == "canceled"


async def test_cancel_of_a_stop_that_filled_returns_the_fill(exchange: Exchange, fake: FakeBinance) -> None:
    """The race: the stop filled before the cancel arrived. Binance answers -2011 "Unknown order sent.";
    the order is then looked up by client id and returned as it ended: "closed", filled = amount."""
    await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="stop05")
    fake.set_price("RND/USDT", 2.75)
    fake.requests.clear()
    result = await exchange.cancel_order_by_client_id("RND/USDT", "stop05")
    assert result is not None
    assert (result.status, result.filled, result.average, result.client_order_id) == (
        "closed",
        2.0,
        2.75,
        "stop05",
    )
    assert fake.requests == [CANCEL, LOOKUP]


async def test_cancel_twice_returns_the_cancelled_order_again(exchange: Exchange, fake: FakeBinance) -> None:
    """A second cancel of the same order (say, after a lost answer) meets -2011 and returns the order
    as cancelled the first time."""
    await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="stop06")
    await exchange.cancel_order_by_client_id("RND/USDT", "stop06")
    again = await exchange.cancel_order_by_client_id("RND/USDT", "stop06")
    assert again is not None and (again.status, again.filled) == ("canceled", 0.0)


async def test_cancel_of_an_unknown_client_id_is_none(exchange: Exchange, fake: FakeBinance) -> None:
    """No order with that client id at all: -2011 on the cancel, -2013 on the lookup, None."""
    assert await exchange.cancel_order_by_client_id("RND/USDT", "neverplaced") is None
    assert fake.requests == [CANCEL, LOOKUP]


@pytest.mark.parametrize(
    ("kind", "error", "cancelled"),
    [
        ("rate_limited", RateLimited, False),
        ("server_error_before", OrderStatusUnknown, False),
        ("server_error_after", OrderStatusUnknown, True),
    ],
)
async def test_cancel_faults(
    exchange: Exchange, fake: FakeBinance, kind: FaultKind, error: type[ExchangeError], cancelled: bool
) -> None:
    """A 429 on the cancel is RateLimited with retry_after; a 5xx is OrderStatusUnknown (the cancel
    may or may not have happened), never a None or a guess. The lookup then tells."""
    await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="stop07")
    fake.fail_next_cancel(kind)
    with pytest.raises(error) as caught:
        await exchange.cancel_order_by_client_id("RND/USDT", "stop07")
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == fake.retry_after_s
    found = await exchange.fetch_order_by_client_id("RND/USDT", "stop07")
    assert found is not None and found.status == ("canceled" if cancelled else "open")


async def test_cancel_with_a_bad_signature_is_refused(fake: FakeBinance, exchange: Exchange) -> None:
    """The fake checks a cancel's signature as Binance does: a wrong secret is ExchangeAuthError, and
    the stop still rests."""
    await exchange.place_stop("RND/USDT", amount=2, stop_price=2.8, client_order_id="stop08")
    forger = Exchange("binance", config(fake, secret="not-the-secret"), dry_run=False)
    await forger.start(check_keys=False)
    try:
        with pytest.raises(ExchangeAuthError) as caught:
            await forger.cancel_order_by_client_id("RND/USDT", "stop08")
    finally:
        await forger.close()
    assert caught.value.code == "-1022"
    assert [o.client_order_id for o in fake.open_orders("RND/USDT")] == ["stop08"]


# ----- reduce-only -----


@pytest.mark.parametrize("ccxt_limiter", [False, True])
async def test_reduce_only_never_reaches_a_spot_order(fake: FakeBinance, ccxt_limiter: bool) -> None:
    """Spot has no reduce-only flag: a reduce_only sell goes out without it, by the fast path and by
    ccxt's create_order alike, and fills."""
    ex = Exchange("binance", config(fake, enableRateLimit=ccxt_limiter), dry_run=False)
    await ex.start(check_keys=False)
    try:
        assert ex.fast_orders is not ccxt_limiter
        result = await ex.create_order(
            OrderRequest("RND/USDT", "sell", "reduce01", amount=2, limit_price=2.99, reduce_only=True)
        )
    finally:
        await ex.close()
    [wire] = sent(fake)
    assert "reduceOnly" not in wire and result.filled == 2.0


async def test_reduce_only_goes_to_ccxt_on_a_contract_market(exchange: Exchange) -> None:
    """On a contract market (swap, future) ccxt's create_order gets `reduceOnly: True` with the client
    id; without reduce_only it does not."""
    ex = exchange.ccxt
    ex.markets["PERP/USDT:USDT"] = {**ex.markets["RND/USDT"], "type": "swap", "spot": False, "contract": True}
    calls: list[dict[str, Any]] = []

    async def recorded(symbol: str, type: str, side: str, amount: float, price: Any, params: Any) -> Any:
        calls.append(dict(params))
        return {"id": "1", "clientOrderId": params["clientOrderId"], "status": "closed", "filled": amount}

    ex.create_order = recorded
    for cid, flag in (("perp01", True), ("perp02", False)):
        await exchange.create_order(OrderRequest("PERP/USDT:USDT", "sell", cid, amount=1, reduce_only=flag))
    assert calls == [{"clientOrderId": "perp01", "reduceOnly": True}, {"clientOrderId": "perp02"}]


# ----- rejection kinds -----


async def test_real_refusals_carry_their_kind(exchange: Exchange, fake: FakeBinance) -> None:
    """On real create_orders: an order below the notional filter is too_small (-1013), a sell of more
    coins than held insufficient_balance (-2010), an order on a market not TRADING market_closed."""
    cases = [
        (OrderRequest("RND/USDT", "buy", "tiny01", cost=1), "too_small", "-1013"),
        (OrderRequest("RND/USDT", "sell", "over01", amount=HELD + 1), "insufficient_balance", "-2010"),
    ]
    for req, kind, code in cases:
        with pytest.raises(OrderRejected) as caught:
            await exchange.create_order(req)
        assert (caught.value.kind, caught.value.code) == (kind, code), req
    fake.add_market("RND", "USDT", price=3.0, tick_size=TICK, step_size=LOT, status="BREAK")
    with pytest.raises(OrderRejected) as closed:
        await exchange.create_order(OrderRequest("RND/USDT", "sell", "closed01", amount=2))
    assert closed.value.kind == "market_closed"


KINDS = [
    # (ccxt exception, the failed response's body or None, kind)
    (ccxt_async.InsufficientFunds('binance {"code":-2010,"msg":"Account has insufficient balance for requested action."}'), None, "insufficient_balance"),
    (ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Account has insufficient balance for requested action."}'), None, "insufficient_balance"),
    (ccxt_async.BadRequest('binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}'), None, "too_small"),
    (ccxt_async.BadRequest('binance {"code":-1013,"msg":"Filter failure: MIN_NOTIONAL"}'), None, "too_small"),
    (ccxt_async.InvalidOrder('binance order amount should be evenly divisible by lot size {"code":-1013,"msg":"Filter failure: LOT_SIZE"}'), None, "too_small"),
    (ccxt_async.InvalidOrder("binance order amount should be evenly divisible by lot size"), '{"code":-1013,"msg":"Filter failure: MARKET_LOT_SIZE"}', "too_small"),
    (ccxt_async.InvalidOrder('binance order cost = amount * price is zero or less {"code":-2010,"msg":"Price * QTY is zero or less."}'), None, "too_small"),
    (ccxt_async.InvalidOrder("binance amount of RND/USDT must be greater than minimum amount precision of 0.001"), None, "too_small"),
    (ccxt_async.MarketClosed('binance {"code":-1013,"msg":"Market is closed."}'), None, "market_closed"),
    (ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Market is closed."}'), None, "market_closed"),
    (ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Trading halted for this symbol."}'), None, "market_closed"),
    (ccxt_async.BadSymbol('binance {"code":-1121,"msg":"Invalid symbol."}'), None, "unknown_symbol"),
    (ccxt_async.BadRequest('binance {"code":-1121,"msg":"Invalid symbol."}'), None, "unknown_symbol"),
    (ccxt_async.BadSymbol("binance does not have market symbol X/Y"), None, "unknown_symbol"),
    (ccxt_async.InvalidOrder('binance {"code":-1013,"msg":"Filter failure: PRICE_FILTER"}'), None, "other"),
    (ccxt_async.OrderImmediatelyFillable('binance {"code":-2010,"msg":"Order would trigger immediately."}'), None, "other"),
    (ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'), None, "other"),
    (ccxt_async.PermissionDenied('binance {"code":-2010,"msg":"This symbol is not permitted for this account."}'), None, "other"),
    (ccxt_async.InvalidNonce('binance {"code":-1021,"msg":"Timestamp ahead"}'), None, "other"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "body", "kind"), KINDS)
def test_rejection_kind_table(exc: BaseException, body: str | None, kind: str) -> None:
    """Each refusal maps to one kind: by ccxt's class where it is specific, else by Binance's code and
    message (-2010 and -1013 cover many refusals), from ccxt's text or the failed response's body."""
    translated = translate_error(exc, exchange="binance", during="order", body=body)
    assert isinstance(translated, OrderRejected)
    assert translated.kind == kind


def test_rejections_made_elsewhere_are_other() -> None:
    """An OrderRejected raised without a kind (a dry run, a refused resync) is kind "other"."""
    assert OrderRejected("binance: dry run", code="dry_run").kind == "other"
