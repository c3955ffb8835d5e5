"""Price-capped entries end to end: real ccxt code and the real order router against FakeBinance on
127.0.0.1, through the strategy context as a plugin places orders."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bridge import load_config_text, run_replay, telemetry
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.claims import SymbolClaims
from bridge.trading.paper import PaperBroker
from bridge.trading.strategy import Context
from bridge.venues.types import OrderRequest, Quote
from tests.factories import announcement
from tests.test_orders import Rig, make_rig


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]) as f:
        yield f


async def rig_for(fake: FakeBinance, tmp_path: Path, *, dry_run: bool) -> Rig:
    return await make_rig(fake, tmp_path, dry_run=dry_run)


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await rig_for(fake, tmp_path, dry_run=False)
    yield rig
    await rig.exchange.close()
    rig.journal.close()


def ctx(rig: Rig, claims: SymbolClaims | None = None, **kw: object) -> Context:
    base = Context(
        strategy="s", router=rig.router, exchanges={"binance": rig.exchange}, dry_run=False, claims=claims
    )
    return base.bind(announcement("ABC", **kw))  # type: ignore[arg-type]


async def test_buy_is_a_limit_ioc_at_the_ask_plus_slippage(live: Rig) -> None:
    """ctx.buy sends LIMIT, timeInForce IOC, at no more than best ask x 1.05 on the tick, for no more
    than the cost; the journal keeps the cap."""
    outcome = await ctx(live).buy("binance", "ABC/USDT", cost=20)
    assert outcome.status == "placed", outcome
    [order] = live.fake.orders
    p = order.params
    assert p["type"] == "LIMIT" and p["timeInForce"] == "IOC"
    price, qty = float(p["price"]), float(p["quantity"])
    assert 2.001 < price <= 2.001 * 1.05 and price * qty <= 20
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.intent.limit_price == pytest.approx(price)


async def test_book_moved_past_the_cap_fills_nothing_and_is_expired(live: Rig) -> None:
    """The price jumps 20 % between the reference and the fill: nothing fills above the cap, the
    outcome is `expired` (journaled, counted), and no second order is sent."""
    expired_before = telemetry.value(
        "bridge_orders_total", exchange="binance", outcome="expired", dry_run="false"
    )
    live.fake.move_price_on_next_order("ABC/USDT", 2.4)
    outcome = await ctx(live).buy("binance", "ABC/USDT", cost=20)
    assert outcome.status == "expired" and outcome.reason == "nothing_filled_at_limit"
    assert len(live.fake.orders) == 1
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.state == "expired"
    assert (
        telemetry.value("bridge_orders_total", exchange="binance", outcome="expired", dry_run="false")
        == expired_before + 1
    )
    assert live.journal.open_positions() == []


async def test_partial_fill_is_the_position(live: Rig) -> None:
    """An IOC larger than the book fills what the book holds: that amount is the order's fill."""
    live.fake.add_market("GHI", "USDT", price=1.0, depth=4.0)
    outcome = await ctx(live).buy("binance", "GHI/USDT", cost=20)
    assert outcome.status == "placed" and outcome.result is not None
    assert outcome.result.filled == pytest.approx(4.0)
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.filled == pytest.approx(4.0)


async def test_market_order_when_slippage_is_none(live: Rig) -> None:
    """max_slippage=None keeps the uncapped market order (quoteOrderQty)."""
    outcome = await ctx(live).buy("binance", "ABC/USDT", cost=20, max_slippage=None)
    assert outcome.status == "placed"
    [order] = live.fake.orders
    assert order.params["type"] == "MARKET" and float(order.params["quoteOrderQty"]) == 20


async def test_paper_fill_honours_the_cap(fake: FakeBinance, tmp_path: Path) -> None:
    """Paper mode fills only at or under the cap: a capped paper buy fills at the ask; with the book
    moved past its limit, the same paper order expires with nothing filled."""
    rig = await rig_for(fake, tmp_path, dry_run=True)
    try:
        outcome = await ctx(rig).buy("binance", "ABC/USDT", cost=20)
        assert outcome.status == "paper" and outcome.result is not None
        assert outcome.result.average == pytest.approx(2.001) and (outcome.result.cost or 0) <= 20
        broker = PaperBroker(rig.router.prices)
        moved = Quote("ABC/USDT", 2.99, 3.01, 3.0, time.time_ns())
        rig.router.prices.put("binance", moved)
        req = OrderRequest("ABC/USDT", "buy", "bxpaper", amount=5.0, limit_price=2.1)
        result = await broker.fill(rig.exchange, req)
        assert result.status == "expired" and result.filled == 0
        assert fake.orders == []
    finally:
        await rig.exchange.close()
        rig.journal.close()


async def test_fresh_cache_costs_no_request_on_the_order_path(live: Rig) -> None:
    """With warm prices the order path sends exactly one request: the order itself."""
    await live.router.prices.refresh("binance")
    before = len(live.fake.queries)
    outcome = await ctx(live).buy("binance", "ABC/USDT", cost=20)
    assert outcome.status == "placed"
    sent = [q for q in live.fake.queries[before:]]
    assert [(m, path) for m, path, _ in sent] == [("POST", "/api/v3/order")]


async def test_no_price_means_skipped(live: Rig) -> None:
    """A symbol the venue gives no price for is skipped with a reason, never guessed."""
    live.fake.add_market("NEW", "USDT", price=1.0, status="BREAK")
    outcome = await ctx(live).buy("binance", "NEW/USDT", cost=20)
    assert outcome.status == "skipped"
    assert live.fake.orders == []


async def test_two_legs_on_one_symbol_both_go_and_a_repeated_leg_does_not(live: Rig) -> None:
    """Two legs of one symbol for one announcement are two orders; the same leg again is a duplicate."""
    c = ctx(live)
    first = await c.buy("binance", "ABC/USDT", cost=10, leg="a")
    second = await c.buy("binance", "ABC/USDT", cost=10, leg="b")
    again = await c.buy("binance", "ABC/USDT", cost=10, leg="a")
    assert (first.status, second.status) == ("placed", "placed")
    assert first.client_order_id != second.client_order_id
    assert again.status == "skipped" and again.reason == "duplicate"
    assert len(live.fake.orders) == 2


def test_symbol_claim_blocks_a_second_publisher_and_survives_restart() -> None:
    """A coin claimed for Upbit's notice is refused for Bithumb's a moment later; claims rebuilt from
    the journal's buys refuse it too; a released claim can be taken again."""
    now = [1_000 * 10**9]
    claims = SymbolClaims(clock_ns=lambda: now[0])
    assert claims.claim("s", "binance", "ABC/USDT", 86400)
    now[0] += 10**6  # a millisecond later, another publisher
    assert not claims.claim("s", "binance", "ABC/USDT", 86400)
    assert claims.claim("other", "binance", "ABC/USDT", 86400)  # per strategy
    restarted = SymbolClaims([("s", "binance", "ABC/USDT", 1_000 * 10**9)], clock_ns=lambda: now[0])
    assert not restarted.claim("s", "binance", "ABC/USDT", 86400)
    restarted.release("s", "binance", "ABC/USDT")
    assert restarted.claim("s", "binance", "ABC/USDT", 86400)
    now[0] += 86401 * 10**9
    assert claims.claim("s", "binance", "ABC/USDT", 86400)  # the window has passed


async def test_listing_buy_buys_a_coin_once_whoever_announces_it(tmp_path: Path) -> None:
    """Upbit announces ABC, Bithumb announces it a millisecond later, Upbit updates the title: through
    the real dispatcher and listing_buy (replay), one buy of ABC/USDT; the second and third are
    skipped, and a different coin in the same second is still bought."""
    t = 1_767_225_600_000_000_000

    def ann(ticker: str, publisher: str, title: str, dt_ms: int) -> dict[str, object]:
        return {
            "t": t + dt_ms * 1_000_000,
            "msg": {
                "type": "announcement",
                "title": title,
                "ticker": ticker,
                "publisher": publisher,
                "listingType": "spot_listing",
                "detectedTimestampUs": (t + dt_ms * 1_000_000) // 1000,
            },
        }

    lines = [
        {"markets": {"binance": {"ABC/USDT": 2.0, "DEF/USDT": 0.5}}},
        ann("ABC", "upbit", "[Upbit] ABC KRW listing", 0),
        ann("ABC", "bithumb", "[Bithumb] ABC 원화 마켓 추가", 1),
        ann("DEF", "bithumb", "[Bithumb] DEF listing", 2),
        ann("ABC", "upbit", "[Upbit] ABC KRW listing (updated)", 500),
    ]
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    cfg = load_config_text(
        "feed: {api_key: replay-placeholder}\n"
        "exchanges: {binance: {}}\n"
        "strategies:\n"
        "  - {name: lb, module: strategies.listing_buy,"
        " params: {cost: 10, publishers: [upbit, bithumb]}}\n"
    )
    report = await run_replay(stream, cfg)
    placed = [r.outcome.symbol for r in report.rows if r.outcome.ok]
    assert sorted(placed) == ["ABC/USDT", "DEF/USDT"]
    assert report.announcements == 4
