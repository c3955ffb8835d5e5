"""A live journal that started empty looks each order up at the venue by its deterministic client id
before sending it, for the first max_event_age seconds after start: an order the lost journal sent is
found (and not sent again), a new one is sent, a failed look-up refuses to guess, and later
announcements, and journals that were not empty, pay nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.feed.codec import Announcement
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.fresh_start import FreshStartGuard
from bridge.trading.ids import client_order_id
from bridge.trading.journal import Journal
from tests.factories import announcement
from tests.test_orders import Rig, make_rig

LOOKUP = ("GET", "/api/v3/order")
POST = ("POST", "/api/v3/order")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 0.5)]) as server:
        yield server


async def rig_in(fake: FakeBinance, state: Path, guard: FreshStartGuard | None = None) -> Rig:
    return await make_rig(fake, state, dry_run=False, fresh_start=guard)


async def close(rig: Rig) -> None:
    await rig.exchange.close()
    rig.journal.close()


def cid_for(rig: Rig, a: Announcement, symbol: str) -> str:
    """The client id the router gives the order (deterministic: the same after a wipe)."""
    return rig.exchange.format_client_order_id(client_order_id(a.key, "s", "binance", symbol, "buy"))


async def buy(rig: Rig, a: Announcement, symbol: str) -> tuple[str, str | None]:
    outcome = await rig.router.submit(
        strategy="s", announcement=a, exchange="binance", symbol=symbol, side="buy", cost=20
    )
    return outcome.status, outcome.reason


async def test_an_order_sent_before_the_wipe_is_found_and_a_new_one_sent(
    fake: FakeBinance, tmp_path: Path
) -> None:
    """The first journal sent an order for announcement A, then was lost. The router of the new,
    empty journal looks A's order up by its client id, finds it and journals it as its own (the fill
    its exit will sell), without sending it again; announcement B's order is not there and is sent.
    Two order requests in all, one look-up each."""
    before = await rig_in(fake, tmp_path / "lost")
    a, b = announcement("ABC"), announcement("DEF")
    assert await buy(before, a, "ABC/USDT") == ("placed", None)
    await close(before)
    assert fake.count(*POST) == 1 and fake.count(*LOOKUP) == 0

    guard = FreshStartGuard(True, time.time_ns(), max_event_age=10.0)
    after = await rig_in(fake, tmp_path / "fresh", guard)
    try:
        assert after.journal.started_empty
        assert await buy(after, a, "ABC/USDT") == ("placed", "already_on_venue")
        row = after.journal.get(cid_for(after, a, "ABC/USDT"))
        assert row is not None and row.state == "placed" and (row.filled or 0) > 0
        assert await buy(after, b, "DEF/USDT") == ("placed", None)
        assert await buy(after, a, "ABC/USDT") == ("skipped", "duplicate")  # now in this journal
    finally:
        await close(after)
    assert fake.count(*POST) == 2
    assert fake.count(*LOOKUP) == 3  # A, B, and A's redelivery (still inside the window)


async def test_a_failed_lookup_refuses_to_guess(fake: FakeBinance, tmp_path: Path) -> None:
    """The venue fails the look-up (HTTP 500): the order is skipped (`prior_order_unknown`), nothing
    is sent and nothing journaled, so a redelivery inside the window is looked up again."""
    guard = FreshStartGuard(True, time.time_ns(), max_event_age=10.0)
    rig = await rig_in(fake, tmp_path, guard)
    try:
        fake.fail_next_lookup("server_error_before")
        a = announcement("ABC")
        assert await buy(rig, a, "ABC/USDT") == ("skipped", "prior_order_unknown")
        assert rig.journal.get(cid_for(rig, a, "ABC/USDT")) is None
        assert fake.count(*POST) == 0
        assert await buy(rig, a, "ABC/USDT") == ("placed", None)
    finally:
        await close(rig)
    assert fake.count(*POST) == 1


async def test_a_journal_that_was_not_empty_pays_nothing(fake: FakeBinance, tmp_path: Path) -> None:
    guard = FreshStartGuard(False, time.time_ns(), max_event_age=10.0)
    rig = await rig_in(fake, tmp_path, guard)
    try:
        assert await buy(rig, announcement("ABC"), "ABC/USDT") == ("placed", None)
    finally:
        await close(rig)
    assert fake.count(*LOOKUP) == 0


def test_only_the_first_seconds_of_an_empty_journal_pay() -> None:
    """Applies to what arrives within max_event_age of start, with an empty journal only; once the
    window is over it never applies again."""
    started = 1_000 * 10**9
    guard = FreshStartGuard(True, started, max_event_age=10.0, clock_ns=lambda: started)
    a = announcement("ABC")
    assert guard.applies(replace(a, received_ns=started + 9 * 10**9))
    assert not guard.applies(replace(a, received_ns=started + 11 * 10**9))
    assert not guard.applies(replace(a, received_ns=started))  # the window is over for good
    assert not FreshStartGuard(False, started, 10.0).applies(replace(a, received_ns=started))


def test_started_empty_only_for_a_new_writable_journal(tmp_path: Path) -> None:
    """`started_empty`: no announcement and no order at open, and this process writes the journal (a
    reader never sends anything)."""
    journal = Journal.open(tmp_path, dry_run=False)
    assert journal.started_empty
    journal.record_announcement(announcement("ABC"))
    reader = Journal(journal.path)
    assert not reader.started_empty
    reader.close()
    journal.close()
    again = Journal.open(tmp_path, dry_run=False)
    assert not again.started_empty
    again.close()
