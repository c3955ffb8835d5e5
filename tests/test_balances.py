"""Free balances for sizing: live from the venue (real ccxt against a local fake Binance), paper from the
config and the paper journal, replay from the config; listing_buy's balance_fraction sizing on them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from bridge import config
from bridge.config import ExchangeConfig, TradingConfig
from bridge.replay import replay
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.balances import Balances
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.orders import OrderRouter
from bridge.trading.risk import RiskLimits
from bridge.trading.strategy import Context
from bridge.venues.exchange import Exchange
from strategies.listing_buy import ListingBuy, ListingBuyParams
from tests.factories import announcement

ROOT = Path(__file__).resolve().parent.parent
REPLAY_CONFIG = ROOT / "examples/replay.yaml"


@dataclass
class Rig:
    fake: FakeBinance
    exchange: Exchange
    journal: Journal
    balances: Balances
    router: OrderRouter
    ctx: Context


async def make_rig(
    fake: FakeBinance, state: Path, *, dry_run: bool, paper: dict[str, float] | None = None
) -> Rig:
    cfg = ExchangeConfig(api_key=Secret(fake.api_key), secret=Secret(fake.secret), ccxt=fake.ccxt_config())
    exchange = Exchange("binance", cfg, dry_run=dry_run)
    await exchange.start(check_keys=False)
    exchanges = {"binance": exchange}
    journal = Journal.open(state, dry_run=dry_run)
    balances = Balances(exchanges, paper=paper, journal=journal if dry_run else None)
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    router = OrderRouter(
        gate=gate,
        risk=RiskLimits(TradingConfig(dry_run=dry_run), journal),
        journal=journal,
        exchanges=exchanges,
        dry_run=dry_run,
        on_outcome=balances.on_outcome,
    )
    ctx = Context(strategy="s", router=router, exchanges=exchanges, dry_run=dry_run, balances=balances)
    ctx = ctx.bind(announcement("ABC"))  # orders carry an announcement's key
    return Rig(fake, exchange, journal, balances, router, ctx)


async def close(rig: Rig) -> None:
    await rig.exchange.close()
    rig.journal.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]) as f:
        yield f


async def run_once(balances: Balances) -> None:
    """One pass of the refresh loop: its sleep stops it, so nothing waits."""
    stop = asyncio.Event()

    async def sleep(_: float) -> None:
        stop.set()

    await balances.run(stop, sleep=sleep)


async def test_live_balance_is_read_and_refreshed_after_a_fill(fake: FakeBinance, tmp_path: Path) -> None:
    """Live: nothing is known before the first refresh; the loop's first pass reads the venue's free
    balances (one signed account request); a fill starts one more refresh, which brings what the
    account holds after it."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    try:
        assert await rig.ctx.balance("binance", "USDT") is None
        await run_once(rig.balances)
        assert await rig.ctx.balance("binance", "USDT") == pytest.approx(100000.0)
        assert await rig.ctx.balance("binance", "XYZ") == 0.0
        assert await rig.ctx.balance("nowhere", "USDT") is None
        assert fake.count("GET", "/api/v3/account") == 1
        fake.balances.update({"USDT": 99980.0, "ABC": 10.0})  # what the account holds after the buy
        outcome = await rig.ctx.buy("binance", "ABC/USDT", cost=20, max_slippage=None)
        assert outcome.status == "placed", outcome
        await rig.balances.settled()
        assert fake.count("GET", "/api/v3/account") == 2
        assert await rig.ctx.balance("binance", "USDT") == pytest.approx(99980.0)
        assert await rig.ctx.balance("binance", "ABC") == pytest.approx(10.0)
    finally:
        await close(rig)


async def test_paper_balance_moves_with_fills_and_survives_a_restart(
    fake: FakeBinance, tmp_path: Path
) -> None:
    """Paper: the balance starts from the config, a paper buy spends its cost of the quote and adds what
    it filled of the base, and a restart (the journal reopened) finds the moved book, not the config's."""
    rig = await make_rig(fake, tmp_path, dry_run=True, paper={"USDT": 1000.0})
    try:
        assert await rig.ctx.balance("binance", "USDT") == 1000.0
        outcome = await rig.ctx.buy("binance", "ABC/USDT", cost=20, max_slippage=None)
        assert outcome.status == "paper" and outcome.result is not None, outcome
        spent, bought = outcome.result.cost, outcome.result.filled
        assert spent is not None and bought is not None and spent > 0
        assert await rig.ctx.balance("binance", "USDT") == pytest.approx(1000.0 - spent)
        assert await rig.ctx.balance("binance", "ABC") == pytest.approx(bought)
        assert fake.count("GET", "/api/v3/account") == 0  # paper never asks the venue
    finally:
        await close(rig)
    again = await make_rig(fake, tmp_path, dry_run=True, paper={"USDT": 1000.0})
    try:
        assert await again.ctx.balance("binance", "USDT") == pytest.approx(1000.0 - spent)
        assert await again.ctx.balance("binance", "ABC") == pytest.approx(bought)
    finally:
        await close(again)


def _stream(tmp_path: Path) -> Path:
    t = 1_600_000_000_000_000_000
    msg = {
        "type": "announcement",
        "title": "Binance Will List AAA",
        "ticker": "AAA",
        "publisher": "binance",
        "listingType": "spot_listing",
        "detectedTimestampUs": t // 1000,
    }
    lines = [{"markets": {"binance": {"AAA/USDT": 1.0}}}, {"t": t + 1_000_000_000, "msg": msg}]
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    return path


async def _replay_cost(tmp_path: Path, *, paper_balance: float, cost: float, fraction: float) -> float | None:
    cfg = config.load(REPLAY_CONFIG)
    params = {"exchange": "binance", "quote": "USDT", "cost": cost, "balance_fraction": fraction}
    strategy = dataclasses.replace(cfg.strategies[0], params=params)
    trading = dataclasses.replace(cfg.trading, paper_balance={"USDT": paper_balance})
    report = await replay(
        _stream(tmp_path), dataclasses.replace(cfg, strategies=(strategy,), trading=trading)
    )
    [row] = report.rows
    assert row.outcome.status == "paper", row.outcome
    return row.cost


async def test_replay_sizes_from_paper_balance(tmp_path: Path) -> None:
    """Replay with balance_fraction sizes the buy from `trading.paper_balance`: 1 % of 500 USDT is 5."""
    assert await _replay_cost(tmp_path, paper_balance=500.0, cost=100.0, fraction=0.01) == pytest.approx(5.0)


async def test_cost_and_balance_fraction_the_smaller_wins(tmp_path: Path) -> None:
    """With both `cost` and `balance_fraction`, the buy spends the smaller: the fraction of a small
    balance below the cost, the cost below the fraction of a large one."""
    assert await _replay_cost(tmp_path, paper_balance=1000.0, cost=20.0, fraction=0.01) == pytest.approx(10.0)
    assert await _replay_cost(tmp_path, paper_balance=10000.0, cost=20.0, fraction=0.01) == pytest.approx(
        20.0
    )


async def test_balance_unknown_skips_the_buy(fake: FakeBinance, tmp_path: Path) -> None:
    """Live before any balance is known, a balance_fraction buy is skipped with `balance_unknown`
    (logged as order.skipped): no order request, no journal row, and the symbol claim is given back."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    strategy = ListingBuy("lb", ListingBuyParams(balance_fraction=0.5))
    try:
        with capture_logs() as logs:
            ctx = Context(
                strategy="lb",
                router=rig.router,
                exchanges={"binance": rig.exchange},
                dry_run=False,
                balances=rig.balances,
            )
            a = announcement("ABC", publisher="binance")
            await strategy.on_announcement(a, ctx.bind(a))
        skipped = [e for e in logs if e["event"] == "order.skipped"]
        assert [(e["symbol"], e["reason"]) for e in skipped] == [("ABC/USDT", "balance_unknown")]
        assert fake.count("POST", "/api/v3/order") == 0 and rig.journal.orders() == []
        assert ctx.claim_symbol("binance", "ABC/USDT", 60)  # released: a later announcement may buy
    finally:
        await close(rig)


def test_balance_fraction_is_validated() -> None:
    """balance_fraction outside (0, 1] is refused when the params load (a config error)."""
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="balance_fraction"):
            ListingBuyParams(balance_fraction=bad)
    assert ListingBuyParams(balance_fraction=1.0).balance_fraction == 1.0


async def test_fills_in_a_row_share_their_balance_refreshes(fake: FakeBinance, tmp_path: Path) -> None:
    """Three fills reported together (three tickers of one announcement) share one account read, not
    one each (a read weighs 20 orders on Binance); fills during a read earn one more after it."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    try:
        outcome = await rig.ctx.buy("binance", "ABC/USDT", cost=20, max_slippage=None)
        assert outcome.status == "placed", outcome
        rig.balances.on_outcome(outcome)  # two more fills, reported before the first refresh ended
        rig.balances.on_outcome(outcome)
        fake.balances.update({"USDT": 99940.0})
        await rig.balances.settled()
        assert fake.count("GET", "/api/v3/account") == 1
        assert await rig.ctx.balance("binance", "USDT") == pytest.approx(99940.0)
    finally:
        await close(rig)
