"""OKX and Gate through the whole daemon (issue 12): feed emulator announcement -> listing_buy -> orders at
the venue's fake with real ccxt. A perpetual entry with leverage and its reduce-only exit (Gate with 0.1
base per contract, so sizes cross the contract conversion both ways), an OKX spot entry, and exactly once
across a restart. Binance and Bybit have theirs in test_binanceusdm_trading.py and test_bybit_trading.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_gate import FakeGate
from bridge.sim.fake_okx import FakeOkx
from tests.test_daemon import KEY, Running, start
from tests.venues.daemon_config import venue_daemon_config


@dataclass
class Venue:
    name: str
    fake: Any  # FakeOkx | FakeGate
    base: str
    price: float


def venue_fake(name: str) -> tuple[AbstractAsyncContextManager[Any], str, float]:
    if name == "okx":
        return (
            FakeOkx(markets=[("BTC", "USDT", 60_000.0)], swaps=[("BTC", 60_000.0, 0.0001)]),
            "BTC",
            60_000.0,
        )
    gate = FakeGate(markets=[("ABC", "USDT", 2.0)])
    gate.contract_size = 0.1  # Gate's quanto_multiplier: 0.1 ABC a contract
    return gate, "ABC", 2.0


@pytest.fixture(params=["okx", "gate"])
async def venue(request: pytest.FixtureRequest) -> AsyncIterator[Venue]:
    fake, base, price = venue_fake(request.param)
    async with fake as server:
        yield Venue(request.param, server, base, price)


@pytest.fixture
async def emu() -> AsyncIterator[FeedEmulator]:
    async with FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as server:
        yield server


def reduce_only(params: dict[str, Any]) -> bool:
    value = params.get("reduceOnly", params.get("reduce_only"))
    return str(value).lower() == "true"


async def test_a_perpetual_entry_with_leverage_then_a_reduce_only_exit(
    venue: Venue, emu: FeedEmulator, tmp_path: Path
) -> None:
    """`market: swap, leverage: 2`: 20 USDT of margin is a 40 USDT position on the perpetual, opened after
    the leverage is set; `bridge close` sells it back reduce-only and the journal says flat."""
    params = ", market: swap, leverage: 2, max_slippage: 0.05, exit_after: 3600"  # an exit plan: a position
    cfg = venue_daemon_config(emu, venue.fake, tmp_path, name=venue.name, params=params, swap=True)
    r = await start(cfg)
    try:
        await emu.announce(title=f"Binance Will List {venue.base}", ticker=venue.base)
        journal = r.daemon.journal
        assert journal is not None
        await asyncio.wait_for(r.until(lambda: any(p.state == "open" for p in journal.open_positions())), 10)
        assert len(venue.fake.orders) == 1
        (position,) = journal.open_positions()
        assert position.symbol == f"{venue.base}/USDT:USDT" and position.side == "buy"
        notional = position.filled * (position.average or 0)
        assert 40 * 0.9 <= notional <= 40.0 + 1e-9  # cost x leverage, capped and rounded to contracts
        assert r.daemon.exits is not None
        ok, _ = r.daemon.exits.request_close(position.symbol, venue.name)
        assert ok
        await r.daemon.exits.check()
        closed = journal.position(position.client_order_id)
    finally:
        await r.stop()
    entry, exit_ = venue.fake.orders[0].params, venue.fake.orders[-1].params
    assert not reduce_only(entry) and reduce_only(exit_)
    assert closed is not None and closed.state == "closed" and closed.remaining == pytest.approx(0.0)


async def test_okx_spot_entry_orders_once_across_a_restart(emu: FeedEmulator, tmp_path: Path) -> None:
    """A spot listing buy on OKX (price-capped IOC, its fill read back), and after a restart the same
    announcement redelivered orders nothing more."""
    fake_cm, base, _ = venue_fake("okx")
    async with fake_cm as fake:
        cfg = venue_daemon_config(emu, fake, tmp_path, name="okx", swap=True)
        r = await start(cfg)
        await emu.announce(title=f"Binance Will List {base}", ticker=base)
        await r.settle(1)
        await r.stop()
        r2 = await start(cfg)
        try:
            await emu.announce(title=f"Binance Will List {base}", ticker=base)
            await r2.settle(1)
            assert r2.daemon.dispatcher is not None and r2.daemon.dispatcher.duplicates == 1
        finally:
            await r2.stop()
        (order,) = fake.orders
        assert order.params["ordType"] == "ioc" and order.params["tdMode"] == "cash"
        assert len(order.params["clOrdId"]) <= 32


__all__ = ["Running"]
