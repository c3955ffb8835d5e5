"""bridge.venues.exchange against FakeBinance over 127.0.0.1: real ccxt code, real HTTP, real signatures."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.config import ExchangeConfig
from bridge.errors import (
    ConfigError,
    ExchangeAuthError,
    ExchangeUnavailable,
)
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.venues import exchange as exchange_module
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest

EXCHANGE_INFO = ("GET", "/api/v3/exchangeInfo")
TIME = ("GET", "/api/v3/time")
ACCOUNT = ("GET", "/api/v3/account")
ORDER = ("POST", "/api/v3/order")


class FrozenClock:
    """A monotonic clock that moves only when told: the refresh budget never refills by accident."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# No `enableRateLimit`: the production default, bridge's own limiter (nothing waits within budget).
FAST = {"timeout_on_exit": 0}


def config(
    fake: FakeBinance, *, key: str | None = None, secret: str | None = None, **ccxt: Any
) -> ExchangeConfig:
    return ExchangeConfig(
        api_key=Secret(key or fake.api_key),
        secret=Secret(secret or fake.secret),
        ccxt={**fake.ccxt_config(), **FAST, **ccxt},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance() as server:
        yield server


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def exchange(fake: FakeBinance, clock: FrozenClock) -> AsyncIterator[Exchange]:
    ex = Exchange("binance", config(fake), dry_run=False, clock=clock)
    await ex.start(check_keys=False)
    fake.requests.clear()
    yield ex
    await ex.close()


# ----- start / close -----


async def test_start_loads_markets_in_one_request_and_measures_the_clock(fake: FakeBinance) -> None:
    """start() without a key check makes exactly two requests, run concurrently: one exchangeInfo
    (no sapi/fapi/dapi, no currencies) and one /time; the measured offset is what signing uses."""
    fake.clock_offset_ms = -30_000  # the exchange's clock is 30 s behind ours
    ex = Exchange("binance", config(fake), dry_run=False)
    await ex.start(check_keys=False)
    try:
        assert sorted(fake.requests) == sorted([EXCHANGE_INFO, TIME])
        assert ex.time_offset_ms is not None and 29_000 < ex.time_offset_ms < 31_000
        assert ex.market("BTC/USDT") is not None
        # without the offset this timestamp would be 30 s in the future and refused (-1021)
        await ex.create_order(OrderRequest("BTC/USDT", "buy", "clockok1", cost=10))
        assert fake.count(*TIME) == 1
    finally:
        await ex.close()


async def test_start_with_key_check_adds_one_signed_call(fake: FakeBinance) -> None:
    """check_keys=True adds exactly one GET /api/v3/account (three requests in all)."""
    ex = Exchange("binance", config(fake), dry_run=False)
    await ex.start(check_keys=True)
    await ex.close()
    assert sorted(fake.requests) == sorted([EXCHANGE_INFO, TIME, ACCOUNT])


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [("wrong-key-123456", None, "-2015"), (None, "wrong-secret-123456", "-1022")],
)
async def test_rejected_key_raises_auth_error_without_the_key(
    fake: FakeBinance, key: str | None, secret: str | None, code: str
) -> None:
    """A wrong key (HTTP 401, -2015) or a wrong secret (-1022) fails start() with ExchangeAuthError
    carrying the code; no secret appears in the message, and the session is closed."""
    ex = Exchange("binance", config(fake, key=key, secret=secret), dry_run=False)
    with pytest.raises(ExchangeAuthError) as caught:
        await ex.start(check_keys=True)
    assert caught.value.code == code
    assert caught.value.exchange == "binance"
    for value in (key, secret, fake.api_key, fake.secret):
        assert value is None or value not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(RuntimeError):
        _ = ex.ccxt  # closed after the failed start


async def test_unknown_exchange_id_is_a_config_error(fake: FakeBinance) -> None:
    """An exchange id ccxt does not know fails start() with a ConfigError naming it."""
    with pytest.raises(ConfigError, match="binanse"):
        await Exchange("binanse", config(fake), dry_run=False).start(check_keys=False)


async def test_sandbox_switches_urls_before_loading_markets(fake: FakeBinance) -> None:
    """sandbox: true turns on ccxt's sandbox mode before markets load (the fake serves urls.test too)."""
    cfg = ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(fake.secret),
        sandbox=True,
        ccxt={**fake.ccxt_config(), **FAST},
    )
    ex = Exchange("binance", cfg, dry_run=False)
    await ex.start(check_keys=True)
    try:
        assert ex.ccxt.isSandboxModeEnabled
        assert ex.market("ETH/USDT") is not None
    finally:
        await ex.close()


async def test_sandbox_on_an_exchange_without_one_is_a_config_error() -> None:
    """An exchange without sandbox URLs fails start() with a ConfigError, before any request."""
    ex = Exchange("aster", ExchangeConfig(sandbox=True, ccxt=FAST), dry_run=True)
    with pytest.raises(ConfigError, match=r"aster\.sandbox"):
        await ex.start(check_keys=False)


async def test_close_releases_the_http_session(fake: FakeBinance) -> None:
    """close() closes ccxt's aiohttp session (no 'Unclosed client session' on collection) and is
    idempotent."""
    ex = Exchange("binance", config(fake), dry_run=False)
    await ex.start(check_keys=False)
    raw = ex.ccxt
    assert raw.session is not None
    await ex.close()
    await ex.close()
    assert raw.session is None
    del raw
    gc.collect()


# ----- markets -----


async def test_market_is_cached_without_io(exchange: Exchange, fake: FakeBinance) -> None:
    """market() answers from the cache and maps ccxt's dict to Market (min_cost from NOTIONAL)."""
    market = exchange.market("ETH/BTC")
    assert market is not None
    assert (market.symbol, market.id, market.base, market.quote, market.type) == (
        "ETH/BTC",
        "ETHBTC",
        "ETH",
        "BTC",
        "spot",
    )
    assert market.active and market.min_cost == 5.0
    assert exchange.market("NEW/USDT") is None
    assert fake.requests == []


async def test_find_market_merges_a_new_listing_with_one_request(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """A market listed after start is found by one targeted exchangeInfo?symbol= request, merged into
    the map (old markets kept), and then served from the cache."""
    fake.add_market("NEW", "USDT", price=0.5)
    found = await exchange.find_market("NEW/USDT")
    assert found is not None and found.id == "NEWUSDT"
    assert fake.requests == [EXCHANGE_INFO]
    assert exchange.market("BTC/USDT") is not None
    assert await exchange.find_market("NEW/USDT") == found
    assert fake.requests == [EXCHANGE_INFO]
    raw = exchange.ccxt  # the merge keeps ccxt's indexes whole, not just `markets`
    assert {"BTCUSDT", "NEWUSDT"} <= set(raw.markets_by_id) and {"BTC/USDT", "NEW/USDT"} <= set(raw.symbols)
    assert {"BTC", "NEW", "USDT"} <= set(raw.currencies)
    result = await exchange.create_order(OrderRequest("NEW/USDT", "buy", "newlisting1", cost=10))
    assert result.symbol == "NEW/USDT" and result.filled == 20.0


async def test_find_market_for_an_unlisted_symbol_is_none_and_bounded(
    exchange: Exchange, fake: FakeBinance, clock: FrozenClock
) -> None:
    """An unlisted symbol costs one request and returns None; asking again within the per-symbol
    interval costs nothing; concurrent callers share one request; a storm of distinct unknown
    symbols is capped by the refresh budget."""
    assert await exchange.find_market("NOPE/USDT") is None
    assert await exchange.find_market("NOPE/USDT") is None
    assert fake.count(*EXCHANGE_INFO) == 1

    clock.now += exchange_module.SYMBOL_REFRESH_MIN_INTERVAL_S
    results = await asyncio.gather(*(exchange.find_market("ALSO/USDT") for _ in range(20)))
    assert results == [None] * 20
    assert fake.count(*EXCHANGE_INFO) == 2

    storm = await asyncio.gather(*(exchange.find_market(f"JUNK{i}/USDT") for i in range(50)))
    assert storm == [None] * 50
    assert 0 < fake.count(*EXCHANGE_INFO) - 2 <= exchange_module.SYMBOL_REFRESH_BURST


async def test_targeted_refresh_leaves_no_rate_limit_debt(fake: FakeBinance) -> None:
    """With ccxt's limiter on (the production default), the targeted refresh is charged cost 0, so
    the order that follows a new listing does not wait 200 ms behind exchangeInfo's cost of 4."""
    ex = Exchange("binance", config(fake, enableRateLimit=True), dry_run=False)
    await ex.start(check_keys=False)
    assert ex.ccxt.enableRateLimit and ex.limiter == "ccxt"
    costs: list[float | None] = []
    throttle = ex.ccxt.throttle

    async def recording_throttle(cost: float | None = None) -> Any:
        costs.append(cost)
        return await throttle(cost)

    ex.ccxt.throttle = recording_throttle
    try:
        fake.add_market("NEW", "USDT", price=0.5)
        assert await ex.find_market("NEW/USDT") is not None
        await ex.create_order(OrderRequest("NEW/USDT", "buy", "afterrefresh1", cost=10))
    finally:
        await ex.close()
    assert costs == [0, 0.2]  # exchangeInfo?symbol=, then the order's own cost


async def test_orders_go_at_once_within_budget_at_ccxts_cost(exchange: Exchange, fake: FakeBinance) -> None:
    """With no `enableRateLimit` in the ccxt block, bridge's limiter is in charge: orders within
    budget go without waiting, each charged ccxt's cost for the endpoint (binance order: 0.2 units),
    and a reservation after the first order costs what that order cost."""
    budget = exchange.budget
    assert exchange.limiter == "bridge" and budget is not None
    before = budget.available  # the frozen clock never refills it
    for n in range(3):
        await exchange.create_order(OrderRequest("BTC/USDT", "buy", f"budget{n}", cost=10))
    assert budget.available == pytest.approx(before - 0.6)
    assert exchange.reserve_order() == 0.0
    assert budget.available == pytest.approx(before - 0.8)
    exchange.refund_order()
    assert budget.available == pytest.approx(before - 0.6)


async def test_prepaid_order_is_not_charged_twice(exchange: Exchange, fake: FakeBinance) -> None:
    """An order whose budget was reserved (OrderRequest(prepaid=True)) does not pay again in its
    request; a reservation above the real cost is given back."""
    budget = exchange.budget
    assert budget is not None
    before = budget.available
    assert exchange.reserve_order() == 0.0
    await exchange.create_order(OrderRequest("BTC/USDT", "buy", "prepaid1", cost=10, prepaid=True))
    assert budget.available == pytest.approx(before - 0.2)
    assert len(fake.orders) == 1


async def test_over_budget_request_waits_its_turn(fake: FakeBinance) -> None:
    """In debt, a reservation returns the wait until its cost has refilled: the budget is kept, not
    switched off."""
    ex = Exchange("binance", config(fake), dry_run=False, clock=FrozenClock())
    await ex.start(check_keys=False)
    try:
        budget = ex.budget
        assert budget is not None
        budget.reserve(budget.available + 19.0)  # one second of binance's budget in debt
        assert ex.reserve_order() == pytest.approx(1.0 + 0.2 / 19, rel=0.01)  # an order costs 0.2
    finally:
        await ex.close()


@pytest.mark.parametrize(("setting", "limiter"), [(True, "ccxt"), (False, "off")])
async def test_enable_rate_limit_in_the_ccxt_block_selects_ccxts_limiter_or_none(
    fake: FakeBinance, caplog: pytest.LogCaptureFixture, setting: bool, limiter: str
) -> None:
    """`enableRateLimit: true` hands throttling back to ccxt (its default behaviour, for comparison);
    `false` turns throttling off. Both are logged as warnings: one is slow, the other unsafe."""
    caplog.set_level("WARNING")
    ex = Exchange("binance", config(fake, enableRateLimit=setting), dry_run=False)
    await ex.start(check_keys=False)
    try:
        assert ex.limiter == limiter and ex.budget is None and ex.reserve_order() == 0.0
        assert ex.ccxt.enableRateLimit is setting
    finally:
        await ex.close()
    warned = {r.msg.get("event") for r in caplog.records if isinstance(r.msg, dict)}
    assert ("exchange.rate_limit_off" in warned) is (not setting)
    assert ("exchange.ccxt_rate_limiter" in warned) is setting


async def test_keep_warm_pings_with_several_connections(fake: FakeBinance) -> None:
    """Every keep_warm_s the exchange sends KEEP_WARM_CONNECTIONS concurrent cheap requests (GET
    /time), so pooled connections never reach aiohttp's keep-alive expiry; close() stops it."""
    ex = Exchange("binance", config(fake), dry_run=False, keep_warm_s=0.001)
    await ex.start(check_keys=False)
    try:
        wanted = 1 + 2 * exchange_module.KEEP_WARM_CONNECTIONS  # start-up's /time, then two rounds
        await asyncio.wait_for(fake.wait_for_requests(*TIME, wanted), 5)
    finally:
        await ex.close()
    after_close = fake.count(*TIME)
    await asyncio.sleep(0)
    assert fake.count(*TIME) == after_close
    assert set(fake.requests) == {EXCHANGE_INFO, TIME}


@pytest.mark.parametrize(
    ("side", "size"),
    [
        ("buy", {"cost": 10.123456789}),
        ("sell", {"cost": 10}),
        ("buy", {"amount": 2.00123456789}),
        ("sell", {"amount": 2}),
    ],
)
async def test_fast_path_sends_what_ccxt_would(fake: FakeBinance, side: str, size: dict[str, float]) -> None:
    """Binance spot market orders skip ccxt's per-order work, but the exchange receives exactly the
    parameters ccxt's own create_order sends for the same order (same precision, response type,
    recvWindow), correctly signed; only the timestamp and signature differ."""
    fake.add_market("PREC", "USDT", price=3.0)
    fast = Exchange("binance", config(fake), dry_run=False)
    plain = Exchange("binance", config(fake, enableRateLimit=True), dry_run=False)  # all of ccxt's path
    await asyncio.gather(fast.start(check_keys=False), plain.start(check_keys=False))
    try:
        assert fast.fast_orders and not plain.fast_orders
        results = []
        for ex in (fast, plain, fast):  # the second fast order comes from the cached request
            req = OrderRequest("PREC/USDT", side, "samecid1", **size)  # type: ignore[arg-type]
            results.append(await ex.create_order(req))
    finally:
        await asyncio.gather(fast.close(), plain.close())
    sent = [{k: v for k, v in o.params.items() if k not in ("timestamp", "signature")} for o in fake.orders]
    assert sent[0] == sent[1] == sent[2]
    assert sent[0]["symbol"] == "PRECUSDT" and sent[0]["newClientOrderId"] == "samecid1"
    assert results[0].filled == results[1].filled and results[0].status == results[1].status == "closed"
    assert results[0].raw.keys() == results[1].raw.keys()


async def test_fast_path_turns_itself_off_when_ccxt_would_send_more(
    fake: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    """An option that changes ccxt's order request (here a default selfTradePrevention) makes the
    start-up comparison fail: the fast path is off (logged) and orders carry ccxt's extra field."""
    caplog.set_level("WARNING")
    options = {"options": {"createOrder": {"selfTradePrevention": "expire_taker"}}}
    ex = Exchange("binance", config(fake, **options), dry_run=False)
    await ex.start(check_keys=False)
    try:
        assert not ex.fast_orders
        await ex.create_order(OrderRequest("BTC/USDT", "buy", "stp1", cost=10))
    finally:
        await ex.close()
    assert fake.orders[-1].params["selfTradePreventionMode"] == "EXPIRE_TAKER"
    warned = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert any(e.get("event") == "exchange.fast_path_off" for e in warned)


async def test_fast_path_only_for_hmac_keys_on_binance_itself(fake: FakeBinance) -> None:
    """An RSA/Ed25519 key (ccxt signs those) and binance's subclasses (other URLs) keep ccxt's path."""
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----"
    ed = Exchange("binance", config(fake, secret=pem), dry_run=False)
    us = Exchange("binanceus", config(fake), dry_run=False)
    await asyncio.gather(ed.start(check_keys=False), us.start(check_keys=False))
    try:
        assert not ed.fast_orders and not us.fast_orders
    finally:
        await asyncio.gather(ed.close(), us.close())


async def test_refresh_markets_picks_up_new_listings(exchange: Exchange, fake: FakeBinance) -> None:
    """refresh_markets() reloads the full map with one exchangeInfo and re-measures the clock."""
    fake.add_market("LATE", "USDT", price=2.0)
    await exchange.refresh_markets()
    assert exchange.market("LATE/USDT") is not None
    assert sorted(fake.requests) == sorted([EXCHANGE_INFO, TIME])


async def test_run_market_refresh_survives_failures_and_stops_on_event(
    fake: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    """The background loop refreshes every markets_refresh seconds, logs a failed refresh and goes
    on, and returns once `stop` is set."""
    cfg = ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(fake.secret),
        markets_refresh=0.001,
        ccxt={**fake.ccxt_config(), **FAST},
    )
    ex = Exchange("binance", cfg, dry_run=False)
    await ex.start(check_keys=False)
    stop = asyncio.Event()
    calls = 0

    async def flaky_refresh() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ExchangeUnavailable("boom", exchange="binance")
        if calls == 3:
            stop.set()

    ex.refresh_markets = flaky_refresh  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(ex.run_market_refresh(stop), timeout=5)
    finally:
        await ex.close()
    assert calls == 3
    # caplog, not structlog's capture_logs: the latter misses loggers cached before conftest reconfigured
    events = [r.msg.get("event") for r in caplog.records if isinstance(r.msg, dict)]
    assert events.count("exchange.markets_refresh_failed") == 1


async def test_sync_clock_remeasures_the_offset_without_reloading_markets(
    exchange: Exchange, fake: FakeBinance
) -> None:
    """The hourly clock check: one time request, no market reload."""
    markets, times = fake.count(*EXCHANGE_INFO), fake.count(*TIME)
    fake.clock_offset_ms = 4000
    await exchange.sync_clock()
    assert fake.count(*TIME) == times + 1 and fake.count(*EXCHANGE_INFO) == markets
    assert exchange.time_offset_ms is not None and abs(exchange.time_offset_ms + 4000) < 1000
