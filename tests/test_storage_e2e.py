"""The whole daemon against storage and clock faults: a state_dir deleted under a running daemon halts
trading and is written back, so after a restart a redelivered announcement does not trade twice; a
host clock off the venue's halts trading before the first announcement."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import structlog

from bridge.daemon import Daemon
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from tests.test_daemon import Running, make_config, servers, start

__all__ = ["servers"]  # the fixture, shared with test_daemon


async def test_a_state_dir_deleted_while_running_halts_and_nothing_trades_twice(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """`rm -rf state_dir` under a live daemon: the watch halts trading (journal_missing), the next
    announcement is not traded, the journal is back at its path, and after a restart the first
    announcement, redelivered, is a duplicate: one order in all."""
    emu, fake = servers
    state = tmp_path / "state"
    cfg = make_config(emu, fake, state, dry_run=False)
    r = await start(cfg)
    try:
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r.settle(1)
        assert len(fake.orders) == 1
        shutil.rmtree(state)
        watch = r.daemon.journal_watch
        assert watch is not None
        assert watch.check() is not None  # what the watch task does every few seconds
        assert "journal_missing" in r.daemon.gate.reasons
        assert (state / "journal-live.sqlite").exists()
        await emu.announce(title="Binance Will List DEF", ticker="DEF")
        await r.settle(2)
        assert len(fake.orders) == 1  # halted: not traded
    finally:
        await r.stop()

    again = await start(cfg)
    try:
        assert again.daemon.journal is not None and not again.daemon.journal.started_empty
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await again.settle(1)
        assert again.daemon.dispatcher is not None and again.daemon.dispatcher.duplicates == 1
    finally:
        await again.stop()
    assert len(fake.orders) == 1


async def test_a_clock_off_the_venues_halts_before_the_first_announcement(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """The venue's clock is 5 s off ours (limit 1 s): the daemon starts, measures it, halts
    (`clock_offset`) and does not trade what is announced."""
    emu, fake = servers
    fake.clock_offset_ms = 5000
    r = Running(Daemon(make_config(emu, fake, tmp_path, dry_run=False)))
    try:
        await asyncio.wait_for(r.until(lambda: r.daemon.dispatcher is not None), 10)
        assert "clock_offset" in r.daemon.gate.reasons
        assert r.daemon.clock is not None and r.daemon.clock.state == "halted"
        await emu.wait_connected(1)
        await emu.announce(title="Binance Will List ABC", ticker="ABC")
        await r.settle(1)
        assert fake.orders == []
    finally:
        await r.stop()


async def test_an_announcement_with_thousands_of_tickers_is_capped_and_the_next_one_trades(
    servers: tuple[FeedEmulator, FakeBinance], tmp_path: Path
) -> None:
    """5000 tickers with repeats, the real one first: ABC is bought once, the rest is refused in one
    line (no order, log or task storm), and the next clean announcement is traded as usual."""
    emu, fake = servers
    r = await start(make_config(emu, fake, tmp_path, dry_run=False))
    try:
        flood = ",".join(["ABC", *(f"X{i}" for i in range(5000)), "ABC", "abc"])
        with structlog.testing.capture_logs() as logs:
            await emu.announce(title="Binance Will List Many", ticker=flood)
            await emu.announce(title="Binance Will List DEF", ticker="DEF")
            await r.settle(2)
        assert sorted(o.params["symbol"] for o in fake.orders) == ["ABCUSDT", "DEFUSDT"]
        assert [e["refused"] for e in logs if e["event"] == "announcement.tickers_capped"] == [4981]
        assert len(logs) < 100
    finally:
        await r.stop()
