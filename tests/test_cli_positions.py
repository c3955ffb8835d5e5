"""`bridge positions` and `bridge close` as an operator runs them: the CLI's main function (or
`python -m bridge` where the process boundary is the point) on a real journal in a tmp state_dir, and a
real ControlServer standing in for the running daemon."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge import cli
from bridge.ops.control import ControlServer, socket_path
from bridge.ops.positions_report import describe_plan, render_table
from bridge.trading import intentlog
from bridge.trading.journal import Journal
from bridge.trading.model import ExitPlan, OrderIntent, Position, TakeProfitTier

DAY_NS = 86_400 * 10**9
PLAN = ExitPlan(take_profit=0.5, stop_loss=0.2, after=3600)


def write_config(tmp_path: Path, *, dry_run: bool = True) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
feed: {{url: "ws://127.0.0.1:1", api_key: "${{FEED_KEY}}"}}
trading: {{dry_run: {str(dry_run).lower()}}}
state_dir: {tmp_path / "state"}
"""
    )
    return path


def open_position(state_dir: Path, *, opened_ns: int, dry_run: bool = True) -> Journal:
    """A journal (left open, as the daemon holds it) with one filled entry of 10 ABC at 2 USDT."""
    journal = Journal.open(state_dir, dry_run=dry_run, clock_ns=lambda: opened_ns)
    intent = OrderIntent(
        "bx1abc", "k1", "listing_buy", "binance", "ABC/USDT", "buy", "USDT", 20.0, None, dry_run, plan=PLAN
    )
    assert journal.reserve(intent)
    journal.record_result("bx1abc", "paper" if dry_run else "placed", filled=10.0, average=2.0, cost=20.0)
    return journal


@pytest.fixture
def two_days_ago() -> int:
    return time.time_ns() - 2 * DAY_NS


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_positions_table(tmp_path: Path, capsys: pytest.CaptureFixture[str], two_days_ago: int) -> None:
    """The table shows exchange, symbol, state, held of filled, entry price, opening time (UTC) with
    its age, and the exit plan in words."""
    cfg = write_config(tmp_path)
    open_position(tmp_path / "state", opened_ns=two_days_ago).close()
    code, out, err = run_cli(["positions", "-c", str(cfg)], capsys)
    assert (code, err) == (0, "")
    header, row = (re.split(r" {2,}", line) for line in out.splitlines())
    assert header == ["EXCHANGE", "SYMBOL", "STATE", "HELD", "ENTRY", "OPENED (UTC)", "EXIT PLAN"]
    opened = time.strftime("%Y-%m-%d %H:%M", time.gmtime(two_days_ago / 1e9))
    assert row == [
        "binance",
        "ABC/USDT",
        "open",
        "10 of 10",
        "2",
        f"{opened} (2d ago)",
        "tp +50% | sl -20% | time 1h (due)",
    ]


def test_positions_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], two_days_ago: int) -> None:
    """--json prints a list with every field of the position, its remaining amount and UTC opening
    time, for scripts."""
    cfg = write_config(tmp_path)
    open_position(tmp_path / "state", opened_ns=two_days_ago).close()
    code, out, _ = run_cli(["positions", "--json", "-c", str(cfg)], capsys)
    assert code == 0
    [p] = orjson.loads(out)
    assert (p["exchange"], p["symbol"], p["state"], p["strategy"]) == (
        "binance",
        "ABC/USDT",
        "open",
        "listing_buy",
    )
    assert (p["filled"], p["remaining"], p["average"]) == (10.0, 10.0, 2.0)
    assert p["client_order_id"] == "bx1abc" and p["opened_ns"] == two_days_ago
    assert p["opened"].endswith("Z") and p["opened"].startswith(
        time.strftime("%Y-%m-%dT", time.gmtime(two_days_ago / 1e9))
    )
    assert p["age_s"] >= 2 * 86_400
    assert {k: p["plan"][k] for k in ("take_profit", "stop_loss", "after")} == {
        "take_profit": 0.5,
        "stop_loss": 0.2,
        "after": 3600,
    }


@pytest.mark.parametrize("journal_exists", [True, False])
def test_no_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str], journal_exists: bool) -> None:
    """An empty journal, or none at all (a daemon never started), lists "No open positions." (and []
    with --json); a missing journal is not created."""
    cfg = write_config(tmp_path)
    if journal_exists:
        Journal.open(tmp_path / "state", dry_run=True).close()
    assert run_cli(["positions", "-c", str(cfg)], capsys) == (0, "No open positions.\n", "")
    assert run_cli(["positions", "--json", "-c", str(cfg)], capsys) == (0, "[]\n", "")
    assert (tmp_path / "state").exists() is journal_exists


def test_positions_reads_the_journal_of_the_configured_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], two_days_ago: int
) -> None:
    """trading.dry_run picks the journal as the daemon does: a live position shows with dry_run false,
    not in the paper journal."""
    open_position(tmp_path / "state", opened_ns=two_days_ago, dry_run=False).close()
    _, paper, _ = run_cli(["positions", "-c", str(write_config(tmp_path, dry_run=True))], capsys)
    _, live, _ = run_cli(["positions", "-c", str(write_config(tmp_path, dry_run=False))], capsys)
    assert paper == "No open positions.\n"
    assert "ABC/USDT" in live


def test_positions_never_takes_the_writer_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, two_days_ago: int
) -> None:
    """With no daemon running, `bridge positions` still reads without locking the journal (a daemon
    starting meanwhile would find its state_dir in use and exit 78), and leaves nothing behind that
    would make a later writer in this process read-only."""
    cfg = write_config(tmp_path)
    open_position(tmp_path / "state", opened_ns=two_days_ago).close()

    def no_lock(*_: Any) -> None:
        raise AssertionError("bridge positions took the journal's writer lock")

    with monkeypatch.context() as m:
        m.setattr(intentlog.fcntl, "flock", no_lock)
        code, out, _ = run_cli(["positions", "-c", str(cfg)], capsys)
    assert code == 0 and "ABC/USDT" in out
    writer = Journal.open(tmp_path / "state", dry_run=True)
    try:
        assert writer.writable
    finally:
        writer.close()


def test_positions_while_the_daemon_holds_the_journal(tmp_path: Path, two_days_ago: int) -> None:
    """`python -m bridge positions` in its own process reads a journal another process holds for
    writing, as the running daemon does, with nothing on stderr (no lock error)."""
    cfg = write_config(tmp_path)
    journal = open_position(tmp_path / "state", opened_ns=two_days_ago)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", "positions", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        journal.close()
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "ABC/USDT" in proc.stdout and "10 of 10" in proc.stdout


def test_exit_plan_in_words() -> None:
    """Every part of an exit plan reads as words with the position's progress: take-profit (one or in
    tiers, sold tiers marked), stop-loss and its resting stop, trailing stop and its high, time exit."""
    now = 1_800_000_000 * 10**9
    opened = now - 10 * 60 * 10**9
    plan = ExitPlan(take_profit=0.5, stop_loss=0.2, trailing_stop=0.1, after=3600, stop_on_exchange=True)
    p = Position(
        "bx1abc", "s", "binance", "ABC/USDT", 10.0, 2.0, opened, plan, high_water=1.234,
        stop_client_order_id="bx1stop",
    )  # fmt: skip
    assert describe_plan(p, now_ns=now) == (
        "tp +50% | sl -20% (resting stop bx1stop) | trail 10% (high 1.234) | time 1h (in 50m)"
    )
    tiers = ExitPlan(
        tiers=(TakeProfitTier(0.2, 0.5), TakeProfitTier(1.0, 1.0)), stop_loss=0.25, stop_on_exchange=True
    )
    p2 = Position("bx1def", "s", "okx", "DEF/USDT", 8.0, 1.0, opened, tiers, sold=4.0, tiers_done=1)
    assert describe_plan(p2, now_ns=now) == (
        "tp +20% sell 50% (done), +100% sell all | sl -25% (resting stop not placed yet)"
    )
    [_, row] = render_table([p2], now_ns=now).splitlines()
    assert "4 of 8" in row and "(10m ago)" in row
    pending = Position(
        "bx1ghi", "s", "binance", "GHI/USDT", 0.0, None, opened, ExitPlan(after=90), state="pending"
    )
    [_, row] = render_table([pending], now_ns=now).splitlines()
    assert "fill pending" in row and row.endswith("time 1m 30s (due)")


class FakeDaemon:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    async def close(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(req)
        return self.answer


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[FakeDaemon]:
    fake = FakeDaemon({"ok": True, "message": "closing ABC/USDT on binance: selling 10 ABC at market"})
    server = ControlServer(socket_path(tmp_path / "state", dry_run=True), {"close": fake.close})
    await server.start()
    yield fake
    await server.stop()


@pytest.mark.parametrize(("extra", "exchange"), [([], None), (["--exchange", "binance"], "binance")])
async def test_close_asks_the_running_daemon(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    daemon: FakeDaemon,
    extra: list[str],
    exchange: str | None,
) -> None:
    """`bridge close SYMBOL` sends the close to the daemon (exchange null unless given), prints its
    answer and exits 0."""
    cfg = write_config(tmp_path)
    code = await asyncio.to_thread(cli.main, ["close", "ABC/USDT", *extra, "-c", str(cfg)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (0, "closing ABC/USDT on binance: selling 10 ABC at market\n", "")
    assert daemon.requests == [{"cmd": "close", "symbol": "ABC/USDT", "exchange": exchange}]


async def test_close_prints_the_daemons_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], daemon: FakeDaemon
) -> None:
    """When the daemon refuses (no such position, ambiguous symbol), its error is the one line on
    stderr and the exit code is 1."""
    daemon.answer = {"ok": False, "error": "no open position in XYZ/USDT"}
    cfg = write_config(tmp_path)
    code = await asyncio.to_thread(cli.main, ["close", "XYZ/USDT", "-c", str(cfg)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (1, "", "bridge: no open position in XYZ/USDT\n")


def test_close_without_a_daemon_is_one_line(tmp_path: Path) -> None:
    """With no daemon running, `python -m bridge close` prints one clear line naming the socket, no
    traceback, and exits 1."""
    cfg = write_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "close", "ABC/USDT", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    sock = socket_path(tmp_path / "state", dry_run=True)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"bridge: no running bridge daemon answers on {sock} (is the service running?)\n"
