"""The order path with real ccxt code against a local fake Binance: gate, risk, journal, exactly once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge import telemetry
from bridge.config import ExchangeConfig, TradingConfig
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.fresh_start import FreshStartGuard
from bridge.trading.gate import TradingGate
from bridge.trading.ids import client_order_id
from bridge.trading.journal import Journal
from bridge.trading.orders import LOOKUP_DELAYS, OrderRouter
from bridge.trading.risk import RiskLimits
from bridge.venues.exchange import Exchange
from tests.factories import announcement


@dataclass
class Rig:
    fake: FakeBinance
    exchange: Exchange
    router: OrderRouter
    journal: Journal
    gate: TradingGate
    sleeps: list[float]


async def make_rig(
    fake: FakeBinance,
    state: Path,
    *,
    dry_run: bool,
    clock: Callable[[], float] = time.monotonic,
    fresh_start: FreshStartGuard | None = None,
    **trading: object,
) -> Rig:
    cfg = ExchangeConfig(api_key=Secret(fake.api_key), secret=Secret(fake.secret), ccxt=fake.ccxt_config())
    exchange = Exchange("binance", cfg, dry_run=dry_run, clock=clock)
    await exchange.start(check_keys=not dry_run)
    journal = Journal.open(state, dry_run=dry_run)
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    sleeps: list[float] = []

    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)

    router = OrderRouter(
        gate=gate,
        risk=RiskLimits(TradingConfig(dry_run=dry_run, **trading), journal),  # type: ignore[arg-type]
        journal=journal,
        exchanges={"binance": exchange},
        dry_run=dry_run,
        sleep=record_sleep,
        fresh_start=fresh_start,
    )
    return Rig(fake, exchange, router, journal, gate, sleeps)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(
        markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("BTC", "USDT", 60000.0)]
    ) as f:
        yield f


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    yield rig
    await rig.exchange.close()
    rig.journal.close()


def order_posts(fake: FakeBinance) -> int:
    return fake.count("POST", "/api/v3/order")


async def test_live_buy_sends_quote_cost_and_client_id(live: Rig) -> None:
    """A buy with a quote cost reaches the exchange as one market order with quoteOrderQty and the
    deterministic client order id, and the journal records intent and result."""
    a = announcement("ABC")
    outcome = await live.router.submit(
        strategy="s", announcement=a, exchange="binance", symbol="ABC/USDT", side="buy", cost=20
    )
    assert outcome.status == "placed", outcome
    [order] = live.fake.orders
    assert order.params["symbol"] == "ABCUSDT"
    assert order.params["side"] == "BUY" and order.params["type"] == "MARKET"
    assert float(order.params["quoteOrderQty"]) == 20
    expected_cid = client_order_id(a.key, "s", "binance", "ABC/USDT", "buy")
    assert order.params["newClientOrderId"] == expected_cid == outcome.client_order_id
    record = live.journal.get(expected_cid)
    assert record is not None and record.state == "placed" and record.order_id is not None


async def test_same_announcement_twice_orders_once(live: Rig) -> None:
    """Submitting the same announcement/strategy/symbol again is skipped as a duplicate."""
    a = announcement("ABC")
    kw = {"strategy": "s", "exchange": "binance", "symbol": "ABC/USDT", "side": "buy", "cost": 20.0}
    first = await live.router.submit(announcement=a, **kw)  # type: ignore[arg-type]
    again = await live.router.submit(announcement=announcement("ABC"), **kw)  # type: ignore[arg-type]
    assert first.status == "placed"
    assert again.status == "skipped" and again.reason == "duplicate"
    assert order_posts(live.fake) == 1


async def test_dry_run_sends_nothing(fake: FakeBinance, tmp_path: Path) -> None:
    """In paper mode no order request reaches the exchange; the paper fill uses the public price."""
    rig = await make_rig(fake, tmp_path, dry_run=True)
    try:
        outcome = await rig.router.submit(
            strategy="s",
            announcement=announcement("ABC"),
            exchange="binance",
            symbol="ABC/USDT",
            side="buy",
            cost=20,
        )
        assert outcome.status == "paper"
        assert outcome.result is not None and outcome.result.average == pytest.approx(
            2.001
        )  # the fake's best ask (0.1 % spread)
        assert outcome.result.filled == pytest.approx(20 / 2.001)
        assert order_posts(fake) == 0
        record = rig.journal.get(outcome.client_order_id or "")
        assert record is not None and record.state == "paper" and record.intent.dry_run
    finally:
        await rig.exchange.close()
        rig.journal.close()


@pytest.mark.parametrize(
    ("setup", "kwargs", "reason"),
    [
        ("halt", {}, "trading_halted:feed_stale"),
        (None, {"cost": 100.01}, "over_max_order_cost"),
        (None, {"announcement_age_s": 11}, "event_too_old"),
        (None, {"symbol": "NOPE/USDT"}, "unknown_symbol"),
        (None, {"exchange": "kraken"}, "exchange_not_configured"),
        (None, {"cost": None}, "need_exactly_one_of_cost_or_amount"),
    ],
)
async def test_refusals_send_nothing(
    live: Rig, setup: str | None, kwargs: dict[str, object], reason: str
) -> None:
    """Halted gate, over-cost, stale event, unknown symbol and malformed requests never reach the
    exchange; each is skipped with its reason."""
    if setup == "halt":
        live.gate.halt("feed_stale")
    age = kwargs.pop("announcement_age_s", 0)
    import time

    a = (
        announcement("ABC", detected_us=time.time_ns() // 1000 - int(age) * 1_000_000)
        if age
        else announcement("ABC")
    )
    args: dict[str, object] = {"exchange": "binance", "symbol": "ABC/USDT", "cost": 20.0, **kwargs}
    outcome = await live.router.submit(strategy="s", announcement=a, side="buy", **args)  # type: ignore[arg-type]
    assert outcome.status == "skipped"
    assert outcome.reason == reason
    assert order_posts(live.fake) == 0


async def test_new_listing_found_by_one_targeted_refresh(live: Rig) -> None:
    """A symbol listed after start is found by one targeted market refresh, then ordered."""
    live.fake.add_market("NEW", "USDT", price=1.0)
    before = live.fake.count("GET", "/api/v3/exchangeInfo")
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("NEW"),
        exchange="binance",
        symbol="NEW/USDT",
        side="buy",
        cost=10,
    )
    assert outcome.status == "placed"
    assert live.fake.count("GET", "/api/v3/exchangeInfo") == before + 1
    assert live.exchange.market("ABC/USDT") is not None  # the old markets survived the refresh


@pytest.mark.parametrize(("fault", "code"), [("insufficient_balance", "-2010"), ("min_notional", "-1013")])
async def test_rejection_logged_and_not_retried(live: Rig, fault: str, code: str) -> None:
    """An exchange rejection is recorded with the exchange's code and never retried."""
    live.fake.fail_next_order(fault)  # type: ignore[arg-type]
    before = telemetry.value("bridge_orders_total", exchange="binance", outcome="rejected", dry_run="false")
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
    )
    assert outcome.status == "rejected"
    assert order_posts(live.fake) == 1
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.state == "rejected" and record.error_code == code
    after = telemetry.value("bridge_orders_total", exchange="binance", outcome="rejected", dry_run="false")
    assert after == before + 1


@pytest.mark.parametrize("fault", ["timeout_after", "server_error_after"])
async def test_unknown_outcome_is_looked_up_not_resent(live: Rig, fault: str) -> None:
    """A timeout or 5xx after the exchange executed the order: `submit` returns at once with `unknown`
    (looking_up), and the background look-up by client id settles it: exactly one order request, the
    journal ends `placed`, the outcome listener hears of it."""
    heard: list[str] = []
    live.router._on_outcome = lambda o: heard.append(o.status)
    live.exchange.ccxt.timeout = 500  # ms: the fake hangs on "timeout_after"
    live.fake.fail_next_order(fault)  # type: ignore[arg-type]
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
    )
    assert (outcome.status, outcome.reason) == ("unknown", "looking_up"), outcome
    await live.router.settled()
    assert heard == ["unknown", "placed"]
    assert order_posts(live.fake) == 1
    assert live.fake.count("GET", "/api/v3/order") >= 1
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.state == "placed"


async def test_unknown_outcome_never_executed_is_not_resent(live: Rig) -> None:
    """A 5xx for an order the exchange never created: every look-up says "no such order", the order
    is recorded not_found for a human, and nothing is resent."""
    live.fake.fail_next_order("server_error_before")
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
    )
    assert outcome.status == "unknown"
    await live.router.settled()
    assert order_posts(live.fake) == 1
    assert live.fake.count("GET", "/api/v3/order") == len(LOOKUP_DELAYS)
    assert live.sleeps == list(LOOKUP_DELAYS)
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.state == "not_found"


async def test_multi_ticker_orders_each_symbol(live: Rig) -> None:
    """One announcement with several tickers yields one order per symbol, each with its own id."""
    import asyncio

    a = announcement("ABC,DEF")
    outcomes = await asyncio.gather(
        *(
            live.router.submit(
                strategy="s", announcement=a, exchange="binance", symbol=s, side="buy", cost=10
            )
            for s in ("ABC/USDT", "DEF/USDT")
        )
    )
    assert [o.status for o in outcomes] == ["placed", "placed"]
    assert sorted(o.params["symbol"] for o in live.fake.orders) == ["ABCUSDT", "DEFUSDT"]
    assert len({o.client_order_id for o in outcomes}) == 2


def drain_budget(rig: Rig, seconds: float) -> None:
    """Leave the exchange's request budget `seconds` in debt (the next order must wait about that)."""
    budget = rig.exchange.budget
    assert budget is not None
    budget.reserve(budget.available + seconds * budget.budget.rate)


@pytest.fixture
async def frozen(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    """A live rig whose exchange clock never moves: the request budget never refills by itself."""
    rig = await make_rig(fake, tmp_path, dry_run=False, clock=lambda: 1000.0)
    yield rig
    await rig.exchange.close()
    rig.journal.close()


async def test_order_over_budget_waits_before_the_last_gate_check(frozen: Rig) -> None:
    """Over the exchange's request budget the order waits for its turn before the gate check, the
    intent and the request, so a halt during the wait stops it; the request itself never waits."""
    live = frozen
    drain_budget(live, 0.5)

    async def halting_sleep(delay: float) -> None:
        live.sleeps.append(delay)
        live.gate.halt("feed_stale")

    live.router._sleep = halting_sleep
    a = announcement("ABC")
    outcome = await live.router.submit(
        strategy="s", announcement=a, exchange="binance", symbol="ABC/USDT", side="buy", cost=20
    )
    assert outcome.status == "skipped" and outcome.reason == "trading_halted:feed_stale"
    assert live.sleeps == [pytest.approx(0.5 + 0.2 / 19)]  # the debt, then its own cost (0.2 units)
    assert order_posts(live.fake) == 0
    assert live.journal.get(outcome.client_order_id or "") is None


async def test_order_over_budget_is_sent_after_its_wait(frozen: Rig) -> None:
    """An order that had to wait for the budget is sent once its turn comes, without paying again."""
    live = frozen
    drain_budget(live, 0.5)
    budget = live.exchange.budget
    assert budget is not None
    debt = budget.available
    outcome = await live.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
    )
    assert outcome.status == "placed"
    assert len(live.sleeps) == 1 and order_posts(live.fake) == 1
    assert budget.available == pytest.approx(debt - 0.2)  # reserved once, not charged again


async def test_order_that_would_wait_past_max_event_age_is_skipped(frozen: Rig) -> None:
    """When the budget would let the order go only after the announcement is too old to trade, it is
    skipped at once as rate_limited, nothing waits, and its reservation is given back."""
    drain_budget(frozen, 30)
    budget = frozen.exchange.budget
    assert budget is not None
    debt = budget.available
    outcome = await frozen.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
    )
    assert outcome.status == "skipped" and outcome.reason == "rate_limited"
    assert frozen.sleeps == [] and order_posts(frozen.fake) == 0
    assert budget.available == debt


def test_held_amount_subtracts_fees_paid_in_the_bought_coin() -> None:
    """A position is what the buy left on the account: fees charged in the base coin come off (so an
    exit can sell it all); fees in other coins do not."""
    from bridge.trading.outcomes import held_amount
    from bridge.venues.types import OrderResult

    def result(filled: float | None, fees: list[dict[str, object]]) -> OrderResult:
        return OrderResult(
            "binance", "ABC/USDT", "buy", "bx", "1", "closed", filled, 20.0, 2.0, {"fees": fees}
        )

    assert held_amount(result(10.0, [{"currency": "ABC", "cost": 0.01}]), "ABC/USDT") == pytest.approx(9.99)
    assert held_amount(result(10.0, [{"currency": "BNB", "cost": 0.001}]), "ABC/USDT") == 10.0
    assert held_amount(result(None, []), "ABC/USDT") is None


async def test_paper_mode_hands_ccxt_no_credentials(fake: FakeBinance, tmp_path: Path) -> None:
    """In paper mode the ccxt object carries no keys, so even a strategy using ctx.exchange() directly
    cannot place a real order."""
    rig = await make_rig(fake, tmp_path, dry_run=True)
    try:
        assert not rig.exchange.ccxt.apiKey and not rig.exchange.ccxt.secret
    finally:
        await rig.exchange.close()
        rig.journal.close()
