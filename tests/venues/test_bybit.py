"""Bybit spot through bridge.venues.exchange against FakeBybit on 127.0.0.1: real ccxt code, real HTTP,
real v5 signatures. The set-up here (`fake`, `exchange`, `bybit_config`) is shared by the other
test_bybit*.py files (perpetuals, errors, the daemon)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from bridge.config import ExchangeConfig
from bridge.errors import OrderStatusUnknown
from bridge.secrets import Secret
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_bybit_orders import OrderTerms
from bridge.sim.fake_venue import FaultKind
from bridge.venues.dialect import Dialect
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest

CREATE = ("POST", "/v5/order/create")
CANCEL = ("POST", "/v5/order/cancel")
REALTIME = ("GET", "/v5/order/realtime")
HISTORY = ("GET", "/v5/order/history")
SPOT_ID_RE = r"[A-Za-z0-9_-]{1,36}"


def bybit_config(fake: FakeBybit, *, secret: str | None = None, **ccxt: Any) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(secret or fake.secret),
        market_types=("spot", "swap"),
        ccxt={**fake.ccxt_config(), **ccxt},
    )


async def started(fake: FakeBybit, **ccxt: Any) -> Exchange:
    ex = Exchange("bybit", bybit_config(fake, **ccxt), dry_run=False, keep_warm_s=0)
    await ex.start(check_keys=True)
    fake.requests.clear()
    return ex


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(markets=[("BTC", "USDT", 60_000.0), ("ABC", "USDT", 2.0)]) as server:
        server.add_market("ABC", "USDT", price=2.0, tick_size=0.0001, step_size=0.01)
        yield server


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Exchange]:
    ex = await started(fake)
    yield ex
    await ex.close()


def requests(fake: FakeBybit) -> list[tuple[str, str]]:
    return [r for r in fake.requests if r[1] != "/v5/market/time"]


# ----- what ccxt builds is what the fake expects -----


async def test_create_order_request_matches_what_the_fake_received_field_by_field(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """For each order bridge sends on Bybit (spot limit IOC, market buy by cost, market sell by amount,
    a resting stop), ccxt's create_order_request is exactly the JSON body that reached the fake, and
    the fake's own reading of it (OrderTerms.read) accepts every field."""
    ex = exchange.ccxt
    limit = exchange.limit_terms("ABC/USDT", "buy", cap_price=2.1, cost=20)
    assert limit is not None
    cases: list[tuple[OrderRequest, tuple[Any, ...]]] = [
        (
            OrderRequest("ABC/USDT", "buy", "c1", amount=limit[0], limit_price=limit[1]),
            ("limit", "buy", limit[0], limit[1], {"clientOrderId": "c1", "timeInForce": "IOC"}),
        ),
        (
            OrderRequest("ABC/USDT", "buy", "c2", cost=20),
            ("market", "buy", -1, None, {"cost": 20, "clientOrderId": "c2"}),
        ),
        (
            OrderRequest("ABC/USDT", "sell", "c3", amount=5),
            ("market", "sell", 5, None, {"clientOrderId": "c3"}),
        ),
    ]
    for req, _ in cases:
        await exchange.create_order(req)
    await exchange.place_stop("ABC/USDT", amount=4, stop_price=1.5, client_order_id="c4")
    cases_args = [args for _, args in cases] + [
        ("market", "sell", 4, None, {"clientOrderId": "c4", "stopLossPrice": 1.5})
    ]
    assert len(fake.order_bodies) == len(cases_args)
    for body, args in zip(fake.order_bodies, cases_args, strict=True):
        built = ex.create_order_request("ABC/USDT", *args[:4], dict(args[4]), True)
        assert orjson_text(built) == orjson_text(body)
        assert OrderTerms.read(body).order_link_id == args[4]["clientOrderId"]
    assert [b.get("orderFilter") for b in fake.order_bodies] == [None, None, None, "tpslOrder"]
    assert fake.order_bodies[0]["timeInForce"] == "IOC" and fake.order_bodies[2]["marketUnit"] == "baseCoin"


def orjson_text(value: Any) -> dict[str, str]:
    """A request as field -> text, the way both sides compare it (ccxt sends JSON)."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


async def test_client_id_is_orderlinkid_of_at_most_36_characters(exchange: Exchange, fake: FakeBybit) -> None:
    """A 64-character base id keeps its 36-character tail, which Bybit's orderLinkId accepts."""
    cid = exchange.format_client_order_id("A" * 28 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ0123")
    assert len(cid) == 36 and cid.endswith("0123456789ABCDEFGHJKMNPQRSTVWXYZ0123")
    await exchange.create_order(OrderRequest("ABC/USDT", "buy", cid, cost=20))
    assert fake.order_bodies[0]["orderLinkId"] == cid


# ----- entries and exits -----


async def test_price_capped_ioc_entry_reads_its_fill_back(exchange: Exchange, fake: FakeBybit) -> None:
    """Bybit answers a create with ids only: the adapter's result comes from the read-back by client
    id (one create, one realtime query, nothing else): filled, average and status closed."""
    amount, price = exchange.limit_terms("ABC/USDT", "buy", cap_price=2.1, cost=20) or (0.0, 0.0)
    result = await exchange.create_order(
        OrderRequest("ABC/USDT", "buy", "e1", amount=amount, limit_price=price)
    )
    assert (result.status, result.filled, result.average) == ("closed", amount, pytest.approx(2.0))
    assert result.order_id is not None and result.client_order_id == "e1"
    assert requests(fake) == [CREATE, REALTIME]


async def test_ioc_capped_below_the_market_fills_nothing_and_says_canceled(
    exchange: Exchange, fake: FakeBybit
) -> None:
    result = await exchange.create_order(OrderRequest("ABC/USDT", "buy", "e2", amount=5, limit_price=1.9))
    assert (result.status, result.filled) == ("canceled", 0.0)


async def test_partial_ioc_fill_is_closed_with_what_filled(exchange: Exchange, fake: FakeBybit) -> None:
    """Spot IOC partly filled: Bybit's PartiallyFilledCanceled, which ccxt reads as closed."""
    fake.add_market("ABC", "USDT", price=2.0, tick_size=0.0001, step_size=0.01, depth=3)
    result = await exchange.create_order(OrderRequest("ABC/USDT", "buy", "e3", amount=5, limit_price=2.1))
    assert (result.status, result.filled) == ("closed", 3.0)


async def test_market_buy_by_cost_then_exit_by_amount(fake: FakeBybit) -> None:
    """Entry spends a quote cost (qty in USDT), the exit sells what was bought (qty in ABC, marketUnit
    baseCoin); balances move as on Bybit and the fee is read back."""
    fake.track_balances, fake.fee_rate = True, 0.001
    exchange = await started(fake)
    try:
        entry = await exchange.create_order(OrderRequest("ABC/USDT", "buy", "b1", cost=20))
        assert (entry.status, entry.filled, entry.cost) == ("closed", 10.0, 20.0)
        assert entry.raw["fee"] == {"cost": 0.01, "currency": "ABC"}
        exit_ = await exchange.create_order(OrderRequest("ABC/USDT", "sell", "s1", amount=9.99))
        assert (exit_.status, exit_.filled) == ("closed", 9.99)
    finally:
        await exchange.close()
    assert fake.balances["ABC"] == 0 and fake.balances["USDT"] == pytest.approx(100_000 - 20 + 19.98 * 0.999)


# ----- resting stops and cancels -----


async def test_resting_stop_rests_then_fills_when_the_price_falls(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """A spot stop-loss sell is a TP/SL order (orderFilter tpslOrder): open while it rests, then filled
    whole at the price that crossed it, as a lookup by client id shows."""
    assert exchange.supports_resting_stops("ABC/USDT")
    stop = await exchange.place_stop("ABC/USDT", amount=4, stop_price=1.8, client_order_id="st1")
    assert stop.status == "open" and len(fake.open_orders("ABC/USDT")) == 1
    fake.set_price("ABC/USDT", 1.7)
    found = await exchange.fetch_order_by_client_id("ABC/USDT", "st1")
    assert found is not None and (found.status, found.filled, found.average) == ("closed", 4.0, 1.7)


async def test_cancel_by_client_id_of_a_resting_stop_an_ended_order_and_an_unknown_one(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """A resting stop is cancelled (tried as tpslOrder first, Bybit looks among one kind only); an order
    that already ended comes back as the lookup finds it; an id never sent is None."""
    await exchange.place_stop("ABC/USDT", amount=4, stop_price=1.8, client_order_id="st2")
    cancelled = await exchange.cancel_order_by_client_id("ABC/USDT", "st2")
    assert cancelled is not None and (cancelled.status, cancelled.filled) == ("canceled", 0.0)
    assert fake.open_orders("ABC/USDT") == []
    await exchange.create_order(OrderRequest("ABC/USDT", "buy", "m1", cost=20))
    ended = await exchange.cancel_order_by_client_id("ABC/USDT", "m1")
    assert ended is not None and (ended.status, ended.filled) == ("closed", 10.0)
    assert await exchange.cancel_order_by_client_id("ABC/USDT", "never") is None


# ----- lookups and unknown outcomes -----


@pytest.mark.parametrize("fault", ["server_error_after", "timeout_after"])
async def test_unknown_outcomes_are_settled_by_client_id(fault: FaultKind, fake: FakeBybit) -> None:
    """The order was created, then the answer was a 10016 or never came: OrderStatusUnknown, and the
    lookup by client id finds it filled (never "not found", which would read as never sent)."""
    exchange = await started(fake, timeout=300)
    try:
        fake.fail_next_order(fault)
        with pytest.raises(OrderStatusUnknown):
            await exchange.create_order(OrderRequest("ABC/USDT", "buy", "u1", cost=20))
        found = await exchange.fetch_order_by_client_id("ABC/USDT", "u1")
    finally:
        await exchange.close()
    assert found is not None and (found.status, found.filled) == ("closed", 10.0)


async def test_lookup_falls_back_to_history_after_a_bybit_release(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """After a Bybit release the realtime query no longer lists closed orders: the lookup finds the
    order in the order history instead."""
    await exchange.create_order(OrderRequest("ABC/USDT", "buy", "h1", cost=20))
    fake.restart_service()
    fake.requests.clear()
    found = await exchange.fetch_order_by_client_id("ABC/USDT", "h1")
    assert found is not None and (found.status, found.filled) == ("closed", 10.0)
    assert requests(fake) == [REALTIME, HISTORY]


async def test_lookup_windows_an_unfilled_cancel_older_than_a_day_is_not_visible(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """Bybit keeps a fully cancelled order that filled nothing in its history for 24 h only, a filled one
    for 2 years: past a day "None" means "nothing filled", not "never sent"."""
    await exchange.create_order(OrderRequest("ABC/USDT", "buy", "w1", amount=5, limit_price=1.9))
    await exchange.create_order(OrderRequest("ABC/USDT", "buy", "w2", cost=20))
    fake.restart_service()
    fake.age_orders(25 * 3_600_000)
    assert await exchange.fetch_order_by_client_id("ABC/USDT", "w1") is None
    found = await exchange.fetch_order_by_client_id("ABC/USDT", "w2")
    assert found is not None and found.filled == 10.0


async def test_lookup_of_an_id_never_sent_is_none(exchange: Exchange, fake: FakeBybit) -> None:
    assert await exchange.fetch_order_by_client_id("ABC/USDT", "nothing") is None


async def test_ccxts_own_fetch_order_by_client_id_cannot_find_an_order_that_exists(
    exchange: Exchange, fake: FakeBybit
) -> None:
    """Why Bybit needs its own lookup (ccxt 4.5.90): fetch_order(None, symbol, {clientOrderId}) on a
    unified account sends orderId=None and an untranslated clientOrderId, so the generic dialect's
    lookup answers None, "never sent", for an order that filled."""
    await exchange.create_order(OrderRequest("ABC/USDT", "buy", "x1", cost=20))
    ex = exchange.ccxt
    with pytest.raises(ccxt_async.ArgumentsRequired):
        await ex.fetch_order(None, "ABC/USDT", {"clientOrderId": "x1"})
    with pytest.raises(ccxt_async.OrderNotFound):
        await ex.fetch_order(None, "ABC/USDT", {"clientOrderId": "x1", "acknowledged": True})
    assert fake.queries[-1][2]["orderId"] == "None" and "orderLinkId" not in fake.queries[-1][2]
    ex.options["fetchOrder"] = {"acknowledged": True}
    assert await Dialect("bybit").fetch_by_client_id(ex, "ABC/USDT", "x1") is None


# ----- start-up and budget -----


async def test_key_check_caches_the_unified_account_so_orders_send_nothing_more(fake: FakeBybit) -> None:
    """The key check (query-api and account info) leaves ccxt's unified-account flags set: the first
    order sends its create and read-back only, not ccxt's two account queries."""
    exchange = Exchange("bybit", bybit_config(fake), dry_run=False, keep_warm_s=0)
    await exchange.start(check_keys=True)
    try:
        assert ("GET", "/v5/user/query-api") in fake.requests
        assert exchange.ccxt.options["enableUnifiedAccount"] is True
        fake.requests.clear()
        await exchange.create_order(OrderRequest("ABC/USDT", "buy", "k1", cost=20))
        assert requests(fake) == [CREATE, REALTIME]
    finally:
        await exchange.close()


async def test_a_read_only_key_is_refused_at_start(fake: FakeBybit) -> None:
    from bridge.errors import ExchangeAuthError

    fake.read_only_key = True
    exchange = Exchange("bybit", bybit_config(fake), dry_run=False, keep_warm_s=0)
    with pytest.raises(ExchangeAuthError, match="read-only"):
        await exchange.start(check_keys=True)


async def test_first_orders_after_idle_go_out_at_once_within_the_budget(fake: FakeBybit) -> None:
    """Bybit's budget (5 s IP window, 20 % of it at once: 50 ccxt units) lets the first orders after an
    idle spell out at once, each with its read-back (create 2.5 + realtime 5 units): four of them leave
    the bucket in credit, so none waited; a burst beyond it puts later requests in line."""
    now = [1000.0]
    exchange = Exchange("bybit", bybit_config(fake), dry_run=False, keep_warm_s=0, clock=lambda: now[0])
    await exchange.start(check_keys=True)
    try:
        bucket = exchange.budget
        assert bucket is not None and (bucket.budget.burst, bucket.budget.rate) == (50.0, 40.0)
        now[0] += 60  # idle: the start-up's requests are long paid for
        for i in range(4):
            await exchange.create_order(OrderRequest("ABC/USDT", "buy", f"i{i}", cost=20))
        assert bucket.available == pytest.approx(50 - 4 * 7.5)
        for i in range(3):
            await exchange.create_order(OrderRequest("ABC/USDT", "buy", f"j{i}", cost=20))
        assert bucket.available < 0  # the clock stood still: the next request waits for the refill
    finally:
        await exchange.close()
