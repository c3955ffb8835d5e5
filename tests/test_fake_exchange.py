"""FakeBinance on its own: the Binance behaviours the exchange tests, the demo and the benchmark rely on."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

from bridge.sim.fake_exchange import FakeBinance, run_fake_exchange


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def signed(fake: FakeBinance, params: dict[str, Any], *, secret: str | None = None) -> str:
    query = urlencode({**params, "timestamp": time.time_ns() // 1_000_000})
    signature = hmac.new((secret or fake.secret).encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={signature}"


async def call(
    http: aiohttp.ClientSession, method: str, url: str, *, key: str, body: str | None = None
) -> tuple[int, Any, Any]:
    headers = {"X-MBX-APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"}
    async with http.request(method, url, data=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


async def test_ccxt_config_routes_every_binance_api_here(fake: FakeBinance) -> None:
    """Every `urls.api` entry of ccxt's binance (and of its sandbox/demo tables) points at the fake,
    so no request can leak to the real exchange."""
    ex = ccxt_async.binance(fake.ccxt_config())
    try:
        for table in ("api", "test", "demo"):
            urls = ex.urls[table]
            assert set(ex.urls["api"]) <= set(urls)
            assert all(url.startswith(fake.url) for url in urls.values()), table
    finally:
        await ex.close()


async def test_exchange_info_filters_by_symbol_and_symbols(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """?symbol= and ?symbols=[...] return only those markets; an unknown symbol is -1121."""
    async with http.get(f"{fake.url}/api/v3/exchangeInfo") as response:
        assert len((await response.json())["symbols"]) == 4
    async with http.get(f"{fake.url}/api/v3/exchangeInfo", params={"symbol": "ETHBTC"}) as response:
        assert [s["symbol"] for s in (await response.json())["symbols"]] == ["ETHBTC"]
    query = {"symbols": '["BTCUSDT","BNBUSDT"]'}
    async with http.get(f"{fake.url}/api/v3/exchangeInfo", params=query) as response:
        assert [s["symbol"] for s in (await response.json())["symbols"]] == ["BTCUSDT", "BNBUSDT"]
    async with http.get(f"{fake.url}/api/v3/exchangeInfo", params={"symbol": "NOPEUSDT"}) as response:
        assert response.status == 400 and (await response.json())["code"] == -1121


async def test_signed_calls_check_key_and_signature(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
    """A wrong key is HTTP 401 -2015; a signature made with another secret is -1022; a good one passes."""
    url = f"{fake.url}/api/v3/account?"
    status, body, _ = await call(http, "GET", url + signed(fake, {}), key="wrong")
    assert (status, body["code"]) == (401, -2015)
    status, body, _ = await call(http, "GET", url + signed(fake, {}, secret="other"), key=fake.api_key)
    assert (status, body["code"]) == (400, -1022)
    status, body, _ = await call(http, "GET", url + signed(fake, {}), key=fake.api_key)
    assert status == 200 and body["canTrade"] is True


async def test_stale_timestamp_is_refused(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
    """A timestamp outside recvWindow of the fake's clock is -1021."""
    fake.clock_offset_ms = 60_000
    status, body, _ = await call(
        http, "GET", f"{fake.url}/api/v3/account?{signed(fake, {})}", key=fake.api_key
    )
    assert (status, body["code"]) == (400, -1021)


async def test_orders_fill_at_the_current_price_and_are_recorded(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """A market order fills instantly at the price set by set_price; the request is kept with its
    params and both receive timestamps; the order is found by client id and by order id."""
    fake.set_price("BNB/USDT", 500.0)
    before = time.perf_counter_ns()
    body = signed(
        fake,
        {
            "symbol": "BNBUSDT",
            "side": "BUY",
            "type": "MARKET",
            "quoteOrderQty": "100",
            "newClientOrderId": "c1",
        },
    )
    status, order, _ = await call(http, "POST", f"{fake.url}/api/v3/order", key=fake.api_key, body=body)
    assert status == 200 and order["status"] == "FILLED"
    assert (order["executedQty"], order["cummulativeQuoteQty"]) == ("0.20000000", "100.00000000")
    received = fake.orders[0]
    assert received.params["newClientOrderId"] == "c1" and received.received_mono_ns >= before
    assert abs(received.received_ns - time.time_ns()) < 5_000_000_000
    for lookup in ({"origClientOrderId": "c1"}, {"orderId": order["orderId"]}):
        query = signed(fake, {"symbol": "BNBUSDT", **lookup})
        status, found, _ = await call(http, "GET", f"{fake.url}/api/v3/order?{query}", key=fake.api_key)
        assert status == 200 and found["orderId"] == order["orderId"]


async def test_a_filled_client_id_can_be_reused(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
    """Like Binance, a repeated newClientOrderId is accepted once the first order filled: the client id
    is a lookup key, not an idempotency guarantee. The lookup then finds the newest order."""
    ids = []
    for _ in range(2):
        body = signed(
            fake,
            {
                "symbol": "ETHUSDT",
                "side": "SELL",
                "type": "MARKET",
                "quantity": "1",
                "newClientOrderId": "same",
            },
        )
        status, order, _ = await call(http, "POST", f"{fake.url}/api/v3/order", key=fake.api_key, body=body)
        assert status == 200
        ids.append(order["orderId"])
    query = signed(fake, {"symbol": "ETHUSDT", "origClientOrderId": "same"})
    _, found, _ = await call(http, "GET", f"{fake.url}/api/v3/order?{query}", key=fake.api_key)
    assert len(set(ids)) == 2 and found["orderId"] == ids[-1]


async def test_rate_limit_fault_carries_retry_after(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
    """rate_limited answers HTTP 429 with a Retry-After header and creates nothing."""
    fake.fail_next_order("rate_limited")
    body = signed(fake, {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    status, _, headers = await call(http, "POST", f"{fake.url}/api/v3/order", key=fake.api_key, body=body)
    assert status == 429 and headers["Retry-After"] == str(fake.retry_after_s)
    assert fake.executed == []


async def test_hung_order_is_released_by_stop(http: aiohttp.ClientSession) -> None:
    """timeout_after creates the order and holds the answer until stop(), which then returns promptly."""
    fake = FakeBinance()
    await fake.start()
    fake.fail_next_order("timeout_after")
    body = signed(fake, {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    pending = asyncio.create_task(call(http, "POST", f"{fake.url}/api/v3/order", key=fake.api_key, body=body))
    await asyncio.wait_for(fake.wait_for_orders(1), timeout=5)
    assert len(fake.executed) == 1 and not pending.done()  # created, answer held back
    await asyncio.wait_for(fake.stop(), timeout=5)
    status, _, _ = await pending
    assert status == 200


async def test_unimplemented_paths_are_404_and_logged(fake: FakeBinance, http: aiohttp.ClientSession) -> None:
    """Anything the fake does not implement answers 404 and shows in `requests`."""
    async with http.get(f"{fake.url}/sapi/v1/capital/config/getall") as response:
        assert response.status == 404
    assert fake.requests == [("GET", "/sapi/v1/capital/config/getall")]


async def test_run_fake_exchange_serves_until_stopped(http: aiohttp.ClientSession) -> None:
    """The CLI entry point serves on the given host until its stop event is set."""
    stop = asyncio.Event()
    ready: asyncio.Queue[FakeBinance] = asyncio.Queue()
    server = asyncio.create_task(run_fake_exchange("127.0.0.1", 0, stop, on_ready=ready.put_nowait))
    fake = await asyncio.wait_for(ready.get(), timeout=5)
    async with http.get(f"{fake.url}/api/v3/ping") as response:
        assert response.status == 200
    stop.set()
    await asyncio.wait_for(server, timeout=5)


# ----- limit orders, depth, price moves, book ticker -----


async def post_order(fake: FakeBinance, http: aiohttp.ClientSession, **params: Any) -> tuple[int, Any]:
    """One signed POST /api/v3/order with `params`; (HTTP status, body)."""
    status, body, _ = await call(
        http, "POST", f"{fake.url}/api/v3/order", key=fake.api_key, body=signed(fake, params)
    )
    return status, body


def ioc(symbol: str, side: str, quantity: str, price: str, **extra: str) -> dict[str, str]:
    return {
        "symbol": symbol,
        "side": side,
        "type": "LIMIT",
        "timeInForce": "IOC",
        "quantity": quantity,
        "price": price,
        **extra,
    }


async def test_limit_ioc_fills_at_the_current_price_or_expires(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """A LIMIT IOC buy at or above the price fills whole at the price (not at its limit), FILLED; one
    below it fills nothing: EXPIRED, executedQty 0, no fills, expiryReason as Binance gives it. A sell
    mirrors it. Both are kept for the order lookup."""
    status, filled = await post_order(
        fake, http, **ioc("ETHUSDT", "BUY", "0.5", "3100", newClientOrderId="l1")
    )
    assert status == 200 and filled["status"] == "FILLED" and filled["type"] == "LIMIT"
    assert (filled["timeInForce"], filled["price"]) == ("IOC", "3100.00000000")
    assert (filled["executedQty"], filled["cummulativeQuoteQty"]) == ("0.50000000", "1500.00000000")
    assert filled["fills"][0]["price"] == "3000.00000000" and "expiryReason" not in filled
    status, missed = await post_order(fake, http, **ioc("ETHUSDT", "BUY", "0.5", "2999.99"))
    assert status == 200 and missed["status"] == "EXPIRED" and missed["fills"] == []
    assert (missed["origQty"], missed["executedQty"]) == ("0.50000000", "0.00000000")
    assert missed["expiryReason"] == "UNFILLED_IOC_QUANTITY_EXPIRED"
    _, sold = await post_order(fake, http, **ioc("ETHUSDT", "SELL", "0.5", "3000"))
    _, unsold = await post_order(fake, http, **ioc("ETHUSDT", "SELL", "0.5", "3000.01"))
    assert (sold["status"], unsold["status"], unsold["executedQty"]) == ("FILLED", "EXPIRED", "0.00000000")
    assert [o["status"] for o in fake.executed] == ["FILLED", "EXPIRED", "FILLED", "EXPIRED"]


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        (ioc("TCKUSDT", "BUY", "10", "1.005"), -1013, "Filter failure: PRICE_FILTER"),
        (ioc("TCKUSDT", "BUY", "10.0005", "1.01"), -1013, "Filter failure: LOT_SIZE"),
        (ioc("TCKUSDT", "BUY", "0.0005", "1.01"), -1013, "Filter failure: LOT_SIZE"),
        (ioc("TCKUSDT", "BUY", "4", "1.01"), -1013, "Filter failure: NOTIONAL"),
        (ioc("TCKUSDT", "BUY", "10", "1.010000001"), -1111, "Parameter 'price' has too much precision."),
        (ioc("TCKUSDT", "BUY", "10", "1.01", timeInForce=""), -1102, "Mandatory parameter 'timeInForce'"),
        (ioc("TCKUSDT", "BUY", "10", "1.01", timeInForce="NOW"), -1115, "Invalid timeInForce."),
        (ioc("TCKUSDT", "BUY", "10", ""), -1102, "Mandatory parameter 'price'"),
        (ioc("TCKUSDT", "BUY", "10", "1.01", quoteOrderQty="10"), -1106, "Parameter 'quoteOrderQty' sent"),
    ],
)
async def test_limit_orders_are_checked_as_binance_checks_them(
    fake: FakeBinance, http: aiohttp.ClientSession, params: dict[str, str], code: int, msg: str
) -> None:
    """A price off the tick, a quantity off the step or below it, a notional below the minimum, too many
    decimals, a missing or unknown timeInForce, a missing price or a quoteOrderQty is refused with
    Binance's code and message, and nothing is created: a rounding bug shows up as a rejection."""
    fake.add_market("TCK", "USDT", price=1.0, tick_size=0.01, step_size=0.001)
    status, body = await post_order(fake, http, **params)
    assert status == 400 and body["code"] == code and body["msg"].startswith(msg)
    assert fake.executed == []


async def test_exchange_info_shows_each_listings_tick_and_step(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """add_market's tick_size and step_size are the listing's PRICE_FILTER tickSize and LOT_SIZE
    stepSize (and minQty); other listings keep 1e-8."""
    fake.add_market("TCK", "USDT", price=1.0, tick_size=0.01, step_size=0.001)
    async with http.get(f"{fake.url}/api/v3/exchangeInfo") as response:
        symbols = {s["symbol"]: s for s in (await response.json())["symbols"]}
    filters = {f["filterType"]: f for f in symbols["TCKUSDT"]["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert (filters["LOT_SIZE"]["stepSize"], filters["LOT_SIZE"]["minQty"]) == ("0.00100000", "0.00100000")
    assert symbols["BTCUSDT"]["filters"][0]["tickSize"] == "0.00000001"


async def test_depth_caps_an_ioc_and_leaves_market_orders_whole(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """With a depth, an IOC for more fills the depth and expires the rest (EXPIRED with executedQty =
    depth, as Binance reports a partly filled IOC); FOK fills all or nothing; market orders still fill
    whole, as before depths existed."""
    fake.add_market("THN", "USDT", price=2.0, depth=3.0)
    _, partial = await post_order(fake, http, **ioc("THNUSDT", "BUY", "10", "2.5"))
    assert (partial["status"], partial["origQty"], partial["executedQty"]) == (
        "EXPIRED",
        "10.00000000",
        "3.00000000",
    )
    assert partial["cummulativeQuoteQty"] == "6.00000000" and partial["fills"][0]["qty"] == "3.00000000"
    _, fok = await post_order(fake, http, **ioc("THNUSDT", "BUY", "10", "2.5", timeInForce="FOK"))
    assert (fok["status"], fok["executedQty"], fok["expiryReason"]) == (
        "EXPIRED",
        "0.00000000",
        "UNFILLED_FOK_ORDER_EXPIRED",
    )
    _, market = await post_order(fake, http, symbol="THNUSDT", side="BUY", type="MARKET", quantity="10")
    assert (market["status"], market["executedQty"]) == ("FILLED", "10.00000000")


async def test_price_moves_when_the_next_order_for_its_symbol_arrives(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """move_price_on_next_order changes nothing until an order for that symbol arrives (another
    symbol's order leaves it pending), then the order meets the new price, and later ones too."""
    fake.move_price_on_next_order("ETH/USDT", 3200.0)
    async with http.get(f"{fake.url}/api/v3/ticker/price", params={"symbol": "ETHUSDT"}) as response:
        assert (await response.json())["price"] == "3000.00000000"
    _, other = await post_order(fake, http, symbol="BNBUSDT", side="BUY", type="MARKET", quantity="1")
    assert other["fills"][0]["price"] == "600.00000000"
    _, capped = await post_order(fake, http, **ioc("ETHUSDT", "BUY", "1", "3100"))
    assert capped["status"] == "EXPIRED" and capped["executedQty"] == "0.00000000"
    _, market = await post_order(fake, http, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1")
    assert market["fills"][0]["price"] == "3200.00000000"


async def test_book_ticker_for_one_or_all_symbols_needs_no_key(
    fake: FakeBinance, http: aiohttp.ClientSession
) -> None:
    """GET ticker/bookTicker is public: without a symbol every listing, with one that listing alone,
    bid and ask `spread` apart around the price on its tick; zeros while a listing is not trading;
    an unknown symbol is -1121."""
    fake.add_market("TCK", "USDT", price=1.0, tick_size=0.01)
    fake.add_market("PRE", "USDT", price=1.0, status="BREAK")
    url = f"{fake.url}/api/v3/ticker/bookTicker"
    async with http.get(url) as response:
        every = {e["symbol"]: e for e in await response.json()}
    assert set(every) == {"BTCUSDT", "ETHUSDT", "BNBUSDT", "ETHBTC", "TCKUSDT", "PREUSDT"}
    assert (every["BTCUSDT"]["bidPrice"], every["BTCUSDT"]["askPrice"]) == (
        "59970.00000000",
        "60030.00000000",
    )
    assert (every["TCKUSDT"]["bidPrice"], every["TCKUSDT"]["askPrice"]) == ("0.99000000", "1.01000000")
    assert every["PREUSDT"]["bidPrice"] == every["PREUSDT"]["askPrice"] == "0.00000000"
    fake.spread = 0.01
    async with http.get(url, params={"symbol": "BNBUSDT"}) as response:
        one = await response.json()
    assert (one["symbol"], one["bidPrice"], one["askPrice"]) == ("BNBUSDT", "597.00000000", "603.00000000")
    async with http.get(url, params={"symbol": "NOPEUSDT"}) as response:
        assert response.status == 400 and (await response.json())["code"] == -1121
