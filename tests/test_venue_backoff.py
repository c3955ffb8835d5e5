"""A venue that says "slow down" (429 with Retry-After, 418 with Binance's ban time) gets nothing, entry
or exit, until then; a timer lifts the pause; other venues are untouched. Real ccxt against the fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.errors import RateLimited
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.backoff import DEFAULT_PAUSE_S, MAX_PAUSE_S, VenueBackoff, pause_for
from bridge.trading.gate import TradingGate
from tests.factories import announcement
from tests.test_orders import Rig, make_rig


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 1.0)]) as fake:
        rig = await make_rig(fake, tmp_path, dry_run=False)
        yield rig
        await rig.exchange.close()
        rig.journal.close()


async def buy(rig: Rig, ticker: str) -> str:
    outcome = await rig.router.submit(
        strategy="s",
        announcement=announcement(ticker),
        exchange="binance",
        symbol=f"{ticker}/USDT",
        side="buy",
        cost=20,
    )
    return outcome.reason or outcome.status


async def test_a_429_pauses_the_venue_until_its_retry_after(live: Rig) -> None:
    """After a 429 with Retry-After, the next order to the venue is not sent (`venue_backoff`); when the
    Retry-After has passed the loop timer lifts the halt by itself and orders go again."""
    live.fake.retry_after_s = 0.2  # type: ignore[assignment]
    lifted = asyncio.Event()
    live.gate.subscribe(
        lambda armed, reasons, key: (
            lifted.set() if key == "venue_backoff:binance" and key not in reasons else None
        )
    )
    live.fake.fail_next_order("rate_limited")
    assert await buy(live, "ABC") != "placed"
    assert "venue_backoff:binance" in live.gate.reasons
    posts = live.fake.count("POST", "/api/v3/order")
    assert await buy(live, "DEF") == "trading_halted:venue_backoff:binance"
    assert live.fake.count("POST", "/api/v3/order") == posts
    await asyncio.wait_for(lifted.wait(), 5)
    assert await buy(live, "DEF") == "placed"


def test_pause_reads_retry_after_then_ban_time_and_is_bounded() -> None:
    """Retry-After first; else Binance's "banned until <ms>"; else the default; never past the cap."""
    now = 1_700_000_000.0
    assert pause_for(RateLimited("x", retry_after=7.0), now_wall_s=now) == 7.0
    banned = RateLimited("binance: DDoSProtection: Way too many requests; IP banned until 1700000030000.")
    assert pause_for(banned, now_wall_s=now) == pytest.approx(30.0)
    assert pause_for(RateLimited("429"), now_wall_s=now) == DEFAULT_PAUSE_S
    assert pause_for(RateLimited("x", retry_after=1e9), now_wall_s=now) == MAX_PAUSE_S


def test_later_deadline_wins_and_other_venues_go_on() -> None:
    """Two refusals keep the later deadline (an earlier timer does not lift it); another venue's
    entries and exits are not blocked."""
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    now = [100.0]
    backoff = VenueBackoff(gate, monotonic=lambda: now[0])
    backoff.hit("binance", RateLimited("x", retry_after=5.0))
    first = backoff.paused_until("binance")
    backoff.hit("binance", RateLimited("x", retry_after=20.0))
    backoff.hit("binance", RateLimited("x", retry_after=1.0))  # shorter: ignored
    assert backoff.paused_until("binance") == 120.0
    backoff.lift("binance", first)  # the first timer fires: stale, nothing lifted
    assert gate.exit_blockers("binance") == {"venue_backoff:binance"}
    assert gate.entry_blockers("okx") == frozenset() and gate.exit_blockers("okx") == frozenset()
    backoff.lift("binance", 120.0)
    assert gate.armed
