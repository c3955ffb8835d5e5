"""Gate spot through the whole daemon: feed emulator announcement -> listing_buy -> a price-capped IOC
buy at FakeGate with real ccxt, and exactly once across a restart (the same announcement never orders
twice); a resting stop after the entry, cancelled before the daemon's own sell. Reuses the daemon helpers
of tests/test_daemon.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_gate import FakeGate
from tests.test_daemon import KEY, start
from tests.venues.daemon_config import venue_daemon_config


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeGate]]:
    async with (
        FakeGate(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        yield emu, fake


async def test_listing_buy_on_gate_end_to_end(servers: tuple[FeedEmulator, FakeGate], tmp_path: Path) -> None:
    """An Upbit listing of ABC becomes one limit IOC buy of ABC_USDT on Gate, capped at the best ask +
    5 %, for at most 20 USDT, with a "t-" client id of 28 characters; it fills."""
    emu, fake = servers
    r = await start(venue_daemon_config(emu, fake, tmp_path, name="gate"))
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await r.settle(1)
    finally:
        await r.stop()
    assert len(fake.orders) == 1
    body = fake.orders[0].params
    assert (body["currency_pair"], body["side"], body["type"], body["time_in_force"]) == (
        "ABC_USDT",
        "buy",
        "limit",
        "ioc",
    )
    assert float(body["price"]) <= 2.002 * 1.05 and float(body["price"]) * float(body["amount"]) <= 20
    assert body["text"].startswith("t-") and len(body["text"]) <= 28
    order = fake.order_by_text(body["text"])
    assert order is not None and order.qty == pytest.approx(float(body["amount"]))


async def test_duplicate_across_restart_orders_once_on_gate(
    servers: tuple[FeedEmulator, FakeGate], tmp_path: Path
) -> None:
    """After a restart on the same state_dir, the same announcement redelivered is a duplicate: Gate
    gets no second order."""
    emu, fake = servers
    cfg = venue_daemon_config(emu, fake, tmp_path, name="gate")
    r = await start(cfg)
    await emu.announce(title="Binance Will List ABC", ticker="ABC")
    await r.settle(1)
    await r.stop()
    r2 = await start(cfg)
    try:
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r2.settle(1)
        assert r2.daemon.dispatcher is not None and r2.daemon.dispatcher.duplicates == 1
    finally:
        await r2.stop()
    assert len(fake.orders) == 1


async def test_spot_entry_rests_a_stop_that_is_cancelled_before_the_close(
    servers: tuple[FeedEmulator, FakeGate], tmp_path: Path
) -> None:
    """`stop_loss: 0.1, stop_on_exchange: true`: after the entry fills, its stop-loss rests on Gate as a
    spot price order (a market sell of what was bought, triggered at or below 90 % of the entry price);
    a close request then cancels that price order first and sells everything bought."""
    emu, fake = servers
    r = await start(
        venue_daemon_config(
            emu, fake, tmp_path, name="gate", params=", stop_loss: 0.1, stop_on_exchange: true"
        )
    )
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        journal, exits = r.daemon.journal, r.daemon.exits
        assert journal is not None and exits is not None

        def stop_rests() -> bool:  # the price order's answer is in the journal, not just at Gate
            stop_ids = [p.stop_client_order_id for p in journal.open_positions()]
            records = [journal.get(cid) for cid in stop_ids if cid is not None]
            return any(rec is not None and rec.state == "placed" for rec in records)

        await asyncio.wait_for(r.until(stop_rests), 10)
        (position,) = journal.open_positions()
        (stop,) = fake.open_price_orders("ABC/USDT")
        assert stop.order["side"] == "sell" and float(stop.order["amount"]) == pytest.approx(position.filled)
        assert stop.trigger == pytest.approx((position.average or 0) * 0.9, rel=1e-3)
        assert position.stop_client_order_id is not None
        ok, _ = exits.request_close(position.symbol, "gate")
        assert ok
        await exits.check()
        closed = journal.position(position.client_order_id)
    finally:
        await r.stop()
    assert stop.status == "cancelled" and fake.open_price_orders("ABC/USDT") == []
    entry, exit_ = fake.orders[0].params, fake.orders[-1].params
    assert (entry["side"], exit_["side"], exit_["currency_pair"]) == ("buy", "sell", "ABC_USDT")
    assert float(exit_["amount"]) == pytest.approx(float(entry["amount"]))
    assert closed is not None and closed.state == "closed" and closed.remaining == pytest.approx(0.0)
