"""The order path against a local fake Binance (real ccxt, real HTTP): no SQLite commit on it in any
configuration (a daily cap set included), and the daemon's own time from frame received to order request
written observed once per order (bridge_order_internal_seconds)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import telemetry
from bridge.config import ExchangeConfig
from bridge.secrets import Secret
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading import journal as journal_module
from bridge.venues.exchange import Exchange
from bridge.venues.types import OrderRequest
from tests.factories import announcement
from tests.test_orders import make_rig

MARKETS = [("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5), ("BTC", "USDT", 60000.0)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=MARKETS) as f:
        yield f


def internal() -> tuple[float, float]:
    """(count, sum) of bridge_order_internal_seconds."""
    return (
        telemetry.value("bridge_order_internal_seconds_count"),
        telemetry.value("bridge_order_internal_seconds_sum"),
    )


async def test_orders_go_out_while_the_journal_is_locked_with_a_daily_cap(
    fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With daily_max_cost set, two orders in a row go out and are placed while another connection holds
    the journal's database locked: nothing on the order path (intent, risk and budget, result) touches
    SQLite. A commit on it would wait busy_timeout (2 s) and fail, halting trading (journal_unwritable),
    and the second order would be skipped. Once the lock is gone, one flush writes both orders' rows."""
    monkeypatch.setattr(journal_module, "FLUSH_DELAY_S", 3600.0)  # no timed flush during the test
    rig = await make_rig(fake, tmp_path, dry_run=False, daily_max_cost={"USDT": 1000.0})
    locker = sqlite3.connect(rig.journal.path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        outcomes = [
            await rig.router.submit(
                strategy="s",
                announcement=announcement(t),
                exchange="binance",
                symbol=f"{t}/USDT",
                side="buy",
                cost=20,
            )
            for t in ("ABC", "DEF")
        ]
        elapsed = time.perf_counter() - started
        assert [o.status for o in outcomes] == ["placed", "placed"], outcomes
        assert len(fake.orders) == 2
        assert rig.journal.health.ok and "journal_unwritable" not in rig.gate.reasons
        assert elapsed < 1.5  # well under one busy_timeout: nothing waited for the lock
        assert rig.router.book.risk.ledger.spent("USDT") == pytest.approx(40.0)
        locker.execute("ROLLBACK")
        rig.journal.flush()
        records = [rig.journal.get(o.client_order_id or "") for o in outcomes]
        assert [r.state if r else None for r in records] == ["placed", "placed"]
    finally:
        locker.close()
        await rig.exchange.close()
        rig.journal.close()


async def test_one_observation_per_order_on_the_fast_path(fake: FakeBinance, tmp_path: Path) -> None:
    """An order for an announcement through the router (Binance spot fast path) observes its internal
    time exactly once, at most the time from the frame's receipt to the fake exchange's receipt of the
    request, and above zero."""
    rig = await make_rig(fake, tmp_path, dry_run=False)
    try:
        assert rig.exchange.fast_orders
        a = announcement("ABC")
        count, total = internal()
        outcome = await rig.router.submit(
            strategy="s", announcement=a, exchange="binance", symbol="ABC/USDT", side="buy", cost=20
        )
        assert outcome.status == "placed"
        new_count, new_total = internal()
        assert new_count - count == 1
        upper = (fake.orders[0].received_mono_ns - a.received_mono_ns) / 1e9
        assert 0 < new_total - total <= upper
    finally:
        await rig.exchange.close()
        rig.journal.close()


async def test_one_observation_per_order_through_ccxt(fake: FakeBinance) -> None:
    """Through ccxt's own create_order (its limiter on: no fast path) an order with a frame time observes
    once, however many requests ccxt makes; an order without one (an exit) observes nothing."""
    cfg = ExchangeConfig(
        api_key=Secret(fake.api_key),
        secret=Secret(fake.secret),
        ccxt={**fake.ccxt_config(), "enableRateLimit": True, "timeout_on_exit": 0},
    )
    ex = Exchange("binance", cfg, dry_run=False)
    await ex.start(check_keys=False)
    try:
        assert not ex.fast_orders
        count, total = internal()
        frame = time.perf_counter_ns()
        await ex.create_order(OrderRequest("ABC/USDT", "buy", "viaccxt01", cost=20, received_mono_ns=frame))
        new_count, new_total = internal()
        assert new_count - count == 1
        assert 0 < new_total - total <= (fake.orders[-1].received_mono_ns - frame) / 1e9
        await ex.create_order(OrderRequest("ABC/USDT", "sell", "viaccxt02", amount=10.0))
        assert internal()[0] == new_count
    finally:
        await ex.close()
