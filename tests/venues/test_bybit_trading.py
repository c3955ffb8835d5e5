"""Bybit through the whole daemon: feed emulator announcement -> listing_buy -> orders at FakeBybit with
real ccxt: a spot entry (price-capped IOC), its resting stop and its time exit; a perpetual entry with
leverage and its reduce-only exit; exactly once across a restart. Reuses tests/test_daemon.py's helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_bybit import FakeBybit
from tests.test_daemon import KEY, start
from tests.venues.daemon_config import venue_daemon_config


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FeedEmulator, FakeBybit]]:
    async with (
        FakeBybit(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)], track_balances=True) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        fake.margin_mode = "ISOLATED_MARGIN"
        yield emu, fake


async def test_spot_entry_resting_stop_and_time_exit(
    servers: tuple[FeedEmulator, FakeBybit], tmp_path: Path
) -> None:
    """An Upbit listing of ABC: one limit IOC buy of ABCUSDT (spot), capped at the best ask + 5 % for at
    most 20 USDT; its stop-loss rests on Bybit as a TP/SL sell (holding the coins); at the time exit the
    stop is cancelled first, then everything bought is sold."""
    emu, fake = servers
    params = ", stop_loss: 0.2, stop_on_exchange: true, exit_after: 1.2"  # a tick (1 s) between
    r = await start(venue_daemon_config(emu, fake, tmp_path, name="bybit", params=params, swap=True))
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await r.settle(1)
        await asyncio.wait_for(fake.wait_for_orders(3), 10)
    finally:
        await r.stop()
    entry, stop, exit_ = fake.order_bodies[:3]
    assert (entry["category"], entry["symbol"], entry["side"], entry["orderType"], entry["timeInForce"]) == (
        "spot",
        "ABCUSDT",
        "Buy",
        "Limit",
        "IOC",
    )
    assert float(entry["price"]) <= 2.002 * 1.05 and float(entry["price"]) * float(entry["qty"]) <= 20
    assert len(entry["orderLinkId"]) <= 36
    assert (stop["orderFilter"], stop["side"], float(stop["triggerPrice"])) == (
        "tpslOrder",
        "Sell",
        pytest.approx(1.6),
    )
    assert fake.count("POST", "/v5/order/cancel") >= 1
    assert exit_["side"] == "Sell" and float(exit_["qty"]) == pytest.approx(float(entry["qty"]))
    assert fake.balances.get("ABC", 0.0) == 0 and fake.wallet.locked.get("ABC", 0.0) == 0


async def test_duplicate_across_restart_orders_once_on_bybit(
    servers: tuple[FeedEmulator, FakeBybit], tmp_path: Path
) -> None:
    """After a restart on the same state_dir, the same announcement redelivered is a duplicate: Bybit
    gets no second order."""
    emu, fake = servers
    cfg = venue_daemon_config(emu, fake, tmp_path, name="bybit", swap=True)
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


async def test_perpetual_entry_with_leverage_and_reduce_only_exit(
    servers: tuple[FeedEmulator, FakeBybit], tmp_path: Path
) -> None:
    """`market: swap, leverage: 2`: the symbol's leverage is set on Bybit before its first order, the
    entry is a linear buy of about 2 x 20 USDT of ABC, and the time exit is a reduce-only sell of it."""
    emu, fake = servers
    r = await start(
        venue_daemon_config(
            emu,
            fake,
            tmp_path,
            name="bybit",
            params=", market: swap, leverage: 2, exit_after: 0.2",
            swap=True,
        )
    )
    try:
        await emu.announce(title="[Upbit] ABC KRW listing", ticker="ABC", publisher="upbit")
        await r.settle(1)
        await asyncio.wait_for(fake.wait_for_orders(2), 10)
    finally:
        await r.stop()
    entry, exit_ = fake.order_bodies[:2]
    assert fake.leverage["ABCUSDT"] == 2
    assert (entry["category"], entry["side"], entry.get("reduceOnly")) == ("linear", "Buy", None)
    assert float(entry["qty"]) * 2.0 == pytest.approx(40, rel=0.06)
    assert (exit_["category"], exit_["side"], exit_["reduceOnly"]) == ("linear", "Sell", True)
    assert float(exit_["qty"]) == pytest.approx(float(entry["qty"])) and fake.positions["ABCUSDT"][0] == 0
