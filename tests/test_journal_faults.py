"""A journal that cannot be written halts trading (entries and exits) with a clear reason, sends nothing
it did not record, keeps what it could not write, logs once a minute, and resumes by itself when the
journal works again."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.gate import TradingGate
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
from tests.factories import announcement
from tests.test_orders import Rig, make_rig


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeBinance(markets=[("ABC", "USDT", 2.0), ("DEF", "USDT", 1.0)]) as fake:
        rig = await make_rig(fake, tmp_path, dry_run=False)
        gate = rig.gate

        def writable(ok: bool, error: str | None) -> None:
            if ok:
                gate.resume("journal_unwritable")
            else:
                gate.halt("journal_unwritable")

        rig.journal.health.listener = writable  # as bridge.system.assemble wires it
        yield rig
        await rig.exchange.close()
        rig.journal.close()


def read_only(journal: Journal, on: bool) -> None:
    """The SQLite file refuses writes (as a file made read-only or a full disk would)."""
    journal._db.execute(f"PRAGMA query_only = {int(on)}")


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


async def test_read_only_journal_halts_then_resumes(live: Rig) -> None:
    """The journal turns read-only: the next write fails, trading halts (`journal_unwritable`, entries
    refused, no request sent); the order already sent keeps its result in memory. Writable again: the
    kept result is written, the halt clears by itself and orders go out again."""
    assert await buy(live, "ABC") == "placed"
    read_only(live.journal, True)
    assert live.journal.orders() is not None  # a read tries the pending writes first
    live.journal.record_result("bxnosuchorder", "placed")  # a write: fails, is kept
    assert "journal_unwritable" in live.gate.reasons
    sent = live.fake.count("POST", "/api/v3/order")
    assert await buy(live, "DEF") == "trading_halted:journal_unwritable"
    assert live.fake.count("POST", "/api/v3/order") == sent
    assert live.gate.exit_blockers("binance") >= {"journal_unwritable"}
    read_only(live.journal, False)
    live.journal.orders()  # the next write that works
    assert "journal_unwritable" not in live.gate.reasons
    assert await buy(live, "DEF") == "placed"


async def test_full_disk_for_the_intent_log_sends_nothing(live: Rig) -> None:
    """The intent log cannot be appended to (ENOSPC): the order is refused before any request, with
    the halt reason, and the journal is left consistent."""
    log_fd = live.journal._intent_log._fd  # type: ignore[union-attr]
    assert log_fd is not None
    full = os.open("/dev/full", os.O_WRONLY)
    saved = os.dup(log_fd)
    os.dup2(full, log_fd)
    try:
        assert await buy(live, "ABC") == "trading_halted:journal_unwritable"
    finally:
        os.dup2(saved, log_fd)
        os.close(saved)
        os.close(full)
    assert live.fake.count("POST", "/api/v3/order") == 0
    assert live.journal.orders() == []


def test_failures_are_logged_once_a_minute(tmp_path: Path) -> None:
    """Twenty failed writes in a row make one log line (with the count of the ones not logged at the
    next line), not twenty."""
    journal = Journal.open(tmp_path, dry_run=True)
    try:
        read_only(journal, True)
        with structlog.testing.capture_logs() as logs:
            for n in range(20):
                journal.reserve(
                    OrderIntent(f"bx{n}", None, "s", "binance", "ABC/USDT", "buy", "USDT", 5.0, None, True)
                )
        assert [e["event"] for e in logs].count("journal.flush_failed") == 1
        assert not journal.health.ok
        read_only(journal, False)
        journal.orders()
        assert journal.health.ok and len(journal.orders()) == 20
    finally:
        journal.close()


def test_gate_reason_blocks_entries_and_exits() -> None:
    """`journal_unwritable` stops entries and exits alike (nothing unrecorded may be sent)."""
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    gate.halt("journal_unwritable")
    assert gate.entry_blockers("binance") == gate.exit_blockers("binance") == {"journal_unwritable"}
