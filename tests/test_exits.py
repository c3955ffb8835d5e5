"""Exits: take-profit, stop-loss and time exits sell a position once, survive a restart, and pass
while trading is halted only for feed reasons. Real ccxt against the fake Binance."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bridge import config
from bridge.replay import replay
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.exits import ExitManager, exit_reason
from bridge.trading.model import ExitPlan, Position
from tests.factories import announcement
from tests.test_orders import Rig, make_rig

NOW = 1_800_000_000_000_000_000


def position(plan: ExitPlan, average: float = 2.0, opened_ns: int = NOW) -> Position:
    return Position("bx1", "s", "binance", "ABC/USDT", 10.0, average, opened_ns, plan)


@pytest.mark.parametrize(
    ("plan", "price", "elapsed_s", "reason"),
    [
        (ExitPlan(take_profit=0.5), 3.0, 0, "take_profit"),
        (ExitPlan(take_profit=0.5), 2.99, 0, None),
        (ExitPlan(stop_loss=0.2), 1.6, 0, "stop_loss"),
        (ExitPlan(stop_loss=0.2), 1.61, 0, None),
        (ExitPlan(after=60), 2.0, 60, "time"),
        (ExitPlan(after=60), 2.0, 59.9, None),
        (ExitPlan(take_profit=0.5, after=60), None, 61, "time"),
        (ExitPlan(take_profit=0.5, stop_loss=0.2), None, 1000, None),
    ],
)
def test_exit_reason(plan: ExitPlan, price: float | None, elapsed_s: float, reason: str | None) -> None:
    """Which exit a position has reached, from its entry price, the current price and its age."""
    assert exit_reason(position(plan), price, NOW + int(elapsed_s * 1e9)) == reason


def test_bad_exit_plan_is_refused() -> None:
    """Negative or nonsensical exit settings are refused when the plan is built (config time)."""
    with pytest.raises(ValueError, match="stop_loss"):
        ExitPlan(stop_loss=1.5)
    with pytest.raises(ValueError, match="take_profit must be positive"):
        ExitPlan(take_profit=-0.1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0)]) as f:
        yield f


@pytest.fixture
async def live(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0  # every check reads the fake's price as it is now
    yield rig
    await rig.exchange.close()
    rig.journal.close()


async def buy_with(rig: Rig, plan: ExitPlan) -> str:
    outcome = await rig.router.submit(
        strategy="s",
        announcement=announcement("ABC"),
        exchange="binance",
        symbol="ABC/USDT",
        side="buy",
        cost=20,
        exit=plan,
    )
    assert outcome.status == "placed" and outcome.client_order_id is not None
    return outcome.client_order_id


def sells(fake: FakeBinance) -> list[dict[str, str]]:
    return [o.params for o in fake.orders if o.params["side"] == "SELL"]


async def test_take_profit_sells_once(live: Rig, fake: FakeBinance) -> None:
    """Price up 50 %: the whole filled amount is sold once; later checks send nothing more."""
    entry = await buy_with(live, ExitPlan(take_profit=0.5))
    exits = ExitManager(
        journal=live.journal,
        router=live.router,
        exchanges={"binance": live.exchange},
        prices=live.router.prices,
    )
    assert await exits.check() == []  # not there yet
    fake.set_price("ABC/USDT", 3.01)  # the best bid (0.1 % spread) is now over +50 %
    [outcome] = await exits.check()
    assert outcome.status == "placed" and outcome.side == "sell"
    [sell] = sells(fake)
    assert float(sell["quantity"]) == pytest.approx(10.0)
    assert await exits.check() == []
    assert len(sells(fake)) == 1
    record = live.journal.get(outcome.client_order_id or "")
    assert record is not None and record.intent.exit_of == entry


async def test_stop_loss(live: Rig, fake: FakeBinance) -> None:
    """Price down 20 %: the position is sold."""
    await buy_with(live, ExitPlan(stop_loss=0.2))
    fake.set_price("ABC/USDT", 1.59)
    exits = ExitManager(
        journal=live.journal,
        router=live.router,
        exchanges={"binance": live.exchange},
        prices=live.router.prices,
    )
    [outcome] = await exits.check()
    assert outcome.status == "placed" and len(sells(fake)) == 1


async def test_time_exit_survives_restart(fake: FakeBinance, tmp_path: Path) -> None:
    """A time exit set before a restart fires after it: the position lives in the journal."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    rig.router.prices.max_age = 0.0  # every check reads the fake's price as it is now
    await buy_with(rig, ExitPlan(after=30))
    await rig.exchange.close()
    rig.journal.close()

    rig2 = await make_rig(fake, tmp_path, dry_run=False)
    rig2.router.prices.max_age = 0.0
    try:
        later = time.time_ns() + 31 * 10**9
        exits = ExitManager(
            journal=rig2.journal,
            router=rig2.router,
            exchanges={"binance": rig2.exchange},
            prices=rig2.router.prices,
            clock_ns=lambda: later,
        )
        [outcome] = await exits.check()
        assert outcome.status == "placed"
    finally:
        await rig2.exchange.close()
        rig2.journal.close()
    assert len(sells(fake)) == 1


@pytest.mark.parametrize(
    ("halt", "sent"),
    [("feed_stale", True), ("disconnected", True), ("shutting_down", False), ("credentials_rejected", False)],
)
async def test_exits_pass_feed_halts_only(live: Rig, fake: FakeBinance, halt: str, sent: bool) -> None:
    """An exit reduces risk and needs no feed: it goes out while trading is halted for feed reasons,
    but not while the daemon is stopping or a key was rejected."""
    await buy_with(live, ExitPlan(take_profit=0.1))
    live.gate.halt(halt)  # type: ignore[arg-type]
    fake.set_price("ABC/USDT", 2.5)
    exits = ExitManager(
        journal=live.journal,
        router=live.router,
        exchanges={"binance": live.exchange},
        prices=live.router.prices,
    )
    outcomes = await exits.check()
    assert [o.status for o in outcomes] == (["placed"] if sent else [])
    assert len(sells(fake)) == (1 if sent else 0)


async def test_replay_runs_exits_on_the_file_clock(tmp_path: Path) -> None:
    """In replay, exits follow the stream's prices and clock: a take-profit fires at the price line
    that crosses it, and the report shows the exit; the output is the same run after run."""
    t = 1_767_225_600_000_000_000
    lines = [
        {"markets": {"binance": {"ABC/USDT": 2.0, "DEF/USDT": 1.0}}},
        {"t": t, "msg": _ann("ABC", t)},
        {"t": t + 1_000_000_000, "msg": _ann("DEF", t + 1_000_000_000)},
        {"t": t + 5_000_000_000, "price": {"exchange": "binance", "symbol": "ABC/USDT", "price": 3.2}},
        {"t": t + 400_000_000_000, "msg": {"type": "heartbeat"}},
    ]
    stream = tmp_path / "s.jsonl"
    stream.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    cfg = config.loads(
        "feed: {api_key: x}\nexchanges: {binance: {}}\nstrategies:\n"
        "  - {name: lb, module: strategies.listing_buy,"
        " params: {cost: 20, publishers: [binance], take_profit: 0.5, exit_after: 300}}\n"
    )
    report = await replay(stream, cfg)
    exits = [(r.outcome.symbol, r.exit, r.t_ns - t) for r in report.rows if r.exit]
    assert exits == [("ABC/USDT", "take_profit", 5_000_000_000), ("DEF/USDT", "time", 400_000_000_000)]
    assert "(exit: take_profit)" in report.render()
    assert report.render() == (await replay(stream, cfg)).render()


def _ann(ticker: str, detected_ns: int) -> dict[str, object]:
    return {
        "type": "announcement",
        "title": f"Binance Will List {ticker}",
        "ticker": ticker,
        "publisher": "binance",
        "listingType": "spot_listing",
        "detectedTimestampUs": detected_ns // 1000,
    }
