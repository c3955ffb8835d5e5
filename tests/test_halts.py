"""The halt table and the gate that applies it: what each reason stops, venue-scoped halts that stop
one exchange only, the README's table being the code's, and the daemon stopping (exit 77) only once
every configured venue's key has been rejected."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import get_args

import pytest
from structlog.testing import capture_logs

from bridge import config as config_mod
from bridge.daemon import Daemon
from bridge.errors import CredentialsRejected, ExitCode, TradingHalted
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance
from bridge.trading.gate import HaltReason, TradingGate
from bridge.trading.halts import HALT_RULES, RULES, Scope, markdown_table, rule_for, split_key, unhealthy
from tests.test_daemon import KEY, STRATEGIES, Running

README = Path(__file__).resolve().parent.parent / "README.md"
WAIT = 10.0  # safety bound only


def armed_gate() -> TradingGate:
    gate = TradingGate()
    gate.resume("starting")
    gate.resume("disconnected")
    return gate


# ---- the table ------------------------------------------------------------------------------------


def test_every_reason_has_one_row() -> None:
    """Each HaltReason has exactly one row and each row a HaltReason; scopes come from Scope, which
    keeps "link" for redundant feed links; meanings are one line that fits a Markdown table cell."""
    reasons = [r.reason for r in HALT_RULES]
    assert sorted(reasons) == sorted(get_args(HaltReason)) and len(set(reasons)) == len(reasons)
    assert "link" in get_args(Scope)
    for r in HALT_RULES:
        assert r.scope in get_args(Scope)
        assert r.meaning and "\n" not in r.meaning and "|" not in r.meaning


def test_what_each_reason_stops() -> None:
    """Exits go on while the feed is down, stale or its key is dead (selling needs no feed); a rejected
    exchange key stops entries and exits on its venue; an unwritable journal stops everything; the
    daily loss limit stops entries only and is not a 503."""
    stops = {r.reason: (r.scope, r.blocks_entries, r.blocks_exits) for r in HALT_RULES}
    for feed in ("disconnected", "feed_stale", "key_expired"):
        assert stops[feed] == ("link", True, False)
    assert stops["credentials_rejected"] == ("venue", True, True)
    assert stops["journal_unwritable"] == ("all", True, True)
    assert stops["loss_limit"] == ("all", True, False)
    assert stops["starting"][1:] == stops["shutting_down"][1:] == (True, True)
    assert not RULES["loss_limit"].unhealthy and RULES["loss_limit"].alerts
    assert RULES["key_expired"].alerts and not RULES["disconnected"].alerts


def test_keys_and_unknown_reasons() -> None:
    """A scoped key splits into reason and venue; a reason the table lacks counts as the strictest
    (blocks entries and exits, 503), never as harmless."""
    assert split_key("credentials_rejected:binance") == ("credentials_rejected", "binance")
    assert split_key("key_expired") == ("key_expired", None)
    assert rule_for("credentials_rejected:binance") is RULES["credentials_rejected"]
    odd = rule_for("no_such_reason")
    assert odd.blocks_entries and odd.blocks_exits and odd.unhealthy
    assert unhealthy(["loss_limit"]) is False and unhealthy(["loss_limit", "feed_stale"]) is True


def test_readme_table_is_the_code_table() -> None:
    """The README's "Halt reasons" table has the same rows, in the same order, as bridge.trading.halts
    (python -m bridge.trading.halts prints it)."""
    text = README.read_text()
    section = text[text.index("### Halt reasons") :]
    readme = [_cells(line) for line in _first_table(section)]
    code = [_cells(line) for line in markdown_table().splitlines()]
    assert readme == code


def _first_table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def _cells(line: str) -> list[str]:
    return [re.sub(r"\s+", " ", c.strip()) for c in line.strip().strip("|").split("|")]


# ---- the gate -------------------------------------------------------------------------------------


def test_venue_halt_stops_that_venue_only() -> None:
    """binance's rejected key blocks entries and exits on binance, and nothing on okx; it is listed as
    "credentials_rejected:binance", so the gate is no longer armed as a whole."""
    gate = armed_gate()
    gate.halt("credentials_rejected", venue="binance")
    assert gate.reasons == {"credentials_rejected:binance"} and not gate.armed
    assert gate.entry_blockers("binance") == gate.exit_blockers("binance") == {"credentials_rejected:binance"}
    assert gate.entry_blockers("okx") == gate.exit_blockers("okx") == frozenset()
    assert not gate.entries_armed("binance") and gate.entries_armed("okx")
    assert not gate.exits_armed("binance") and gate.exits_armed("okx")
    assert gate.halted_on("credentials_rejected", "binance")
    assert not gate.halted_on("credentials_rejected", "okx")


def test_global_reasons_by_the_table() -> None:
    """A dead feed key blocks entries everywhere and exits nowhere; an unwritable journal blocks both
    everywhere; a venue-scoped reason set without a venue (the old call) stops every venue."""
    gate = armed_gate()
    gate.halt("key_expired")
    assert gate.entry_blockers("okx") == {"key_expired"} and gate.exit_blockers("okx") == frozenset()
    gate.halt("journal_unwritable")
    assert gate.exit_blockers("binance") == {"journal_unwritable"}
    gate.resume("journal_unwritable")
    gate.halt("credentials_rejected")
    assert gate.exit_blockers("okx") == {"credentials_rejected"}
    assert gate.halted_on("credentials_rejected", "okx")


def test_check_raises_with_the_entry_blockers() -> None:
    """check(exchange) raises TradingHalted naming what blocks an entry there and passes on a venue
    nothing blocks; check() with no exchange raises with every reason, as before."""
    gate = armed_gate()
    gate.check()
    gate.halt("credentials_rejected", venue="binance")
    gate.check("okx")
    with pytest.raises(TradingHalted) as err:
        gate.check("binance")
    assert err.value.reasons == {"credentials_rejected:binance"}
    with pytest.raises(TradingHalted) as err:
        gate.check()
    assert err.value.reasons == {"credentials_rejected:binance"}


def test_resume_is_per_venue_and_listeners_get_the_key() -> None:
    """Resuming one venue leaves the other halted; listeners are told the scoped key that changed; a
    venue given for a global reason halts it globally (stricter, never ignored) and is logged."""
    gate = armed_gate()
    seen: list[tuple[bool, str]] = []
    gate.subscribe(lambda armed, _reasons, key: seen.append((armed, key)))
    gate.halt("credentials_rejected", venue="binance")
    gate.halt("credentials_rejected", venue="okx")
    gate.halt("credentials_rejected", venue="okx")  # already set: no change, no call
    gate.resume("credentials_rejected", venue="binance")
    assert gate.reasons == {"credentials_rejected:okx"}
    gate.resume("credentials_rejected", venue="okx")
    assert seen == [
        (False, "credentials_rejected:binance"),
        (False, "credentials_rejected:okx"),
        (False, "credentials_rejected:binance"),
        (True, "credentials_rejected:okx"),
    ]
    with capture_logs() as logs:
        gate.halt("key_expired", venue="binance")
    assert gate.reasons == {"key_expired"}
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["trading.halt_scope_ignored"]


# ---- the daemon -------------------------------------------------------------------------------------


def two_venue_config(emu: FeedEmulator, fake: FakeBinance, state: Path) -> config_mod.Config:
    """Paper trading on two venues (binance and binanceus, both served by the fake), listing_buy on
    binance."""
    ccxt = json.dumps(fake.ccxt_config())
    text = f"""
feed: {{url: {emu.url}, api_key: {KEY}, cex: [binance], reconnect: {{min_delay: 0.01, max_delay: 0.05}}}}
exchanges:
  binance: {{ccxt: {ccxt}}}
  binanceus: {{ccxt: {ccxt}}}
trading: {{dry_run: true, max_event_age: 10, max_order_cost: 100}}
state_dir: {state}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [binance]}}
"""
    return config_mod.loads(text, source="test.yaml")


async def test_daemon_stops_only_once_every_venue_key_is_rejected(tmp_path: Path) -> None:
    """One venue's rejected key of two halts that venue only: the daemon keeps running and still buys
    on the other, and /health lists "credentials_rejected:binanceus"; once the other venue's key is
    rejected too, the daemon stops with CredentialsRejected (exit 77, "every venue's key")."""
    async with (
        FakeBinance(markets=[("ABC", "USDT", 2.0)]) as fake,
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as emu,
    ):
        r = Running(Daemon(two_venue_config(emu, fake, tmp_path)))
        await r.armed()
        r.daemon.gate.halt("credentials_rejected", venue="binanceus")
        assert not r.task.done()
        await emu.announce(title="Binance Will List ABC", ticker="ABC", publisher="binance")
        await r.settle(1)
        assert r.daemon.journal is not None
        [order] = r.daemon.journal.orders()
        assert order.state == "paper" and order.intent.exchange == "binance"
        snapshot = r.daemon.snapshot()
        assert snapshot["trading"]["halt_reasons"] == ["credentials_rejected:binanceus"]
        assert snapshot["healthy"] is False and snapshot["mode"] == "normal"
        r.daemon.gate.halt("credentials_rejected", venue="binance")
        with pytest.raises(CredentialsRejected, match="every venue's key was rejected") as err:
            await asyncio.wait_for(r.task, WAIT)
    assert err.value.exit_code == ExitCode.CREDENTIALS
