"""`bridge report`: per strategy and venue, orders, fills, fees and realised profit from the journals,
paper and live apart, `--since` honoured; a table on a terminal, JSON otherwise (issue 13)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import orjson
import pytest

from bridge.ops import report
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
from tests.test_cli_positions import DAY_NS, run_cli, write_config


def trade(
    journal: Journal,
    cid: str,
    *,
    side: Literal["buy", "sell"] = "buy",
    filled: float,
    price: float,
    state: str = "paper",
    exit_of: str | None = None,
    strategy: str = "listing_buy",
    exchange: str = "binance",
    fee: tuple[float, str] | None = None,
) -> None:
    intent = OrderIntent(
        cid, "k1", strategy, exchange, "ABC/USDT", side, "USDT", None, filled or 1.0, state == "paper",
        exit_of=exit_of,
    )  # fmt: skip
    assert journal.reserve(intent)
    raw = {"fee": {"cost": fee[0], "currency": fee[1]}} if fee else None
    journal.record_result(cid, state, filled=filled, average=price, cost=filled * price, raw=raw)  # type: ignore[arg-type]


def test_report_counts_orders_fills_fees_and_realised_profit(tmp_path: Path) -> None:
    """A long bought 10 at 2 and sold 10 at 3 (+10), a short sold 5 at 4 and bought back 5 at 3 (+5), a
    rejected order: per strategy and venue, with the live journal's lines apart from the paper's."""
    state = tmp_path / "state"
    paper = Journal.open(state, dry_run=True)
    trade(paper, "e1", filled=10, price=2.0)
    trade(paper, "x1", side="sell", filled=10, price=3.0, exit_of="e1")
    trade(paper, "s1", side="sell", filled=5, price=4.0, strategy="delisting_short", exchange="bybit")
    trade(paper, "b1", filled=5, price=3.0, exit_of="s1", strategy="delisting_short", exchange="bybit")
    trade(paper, "r1", filled=0, price=2.0, state="rejected")
    paper.close()
    live = Journal.open(state, dry_run=False)
    trade(live, "L1", filled=1, price=2.0, state="placed", fee=(0.001, "ABC"))
    live.close()

    lines = report.build(state)
    by = {(x.mode, x.strategy, x.exchange): x for x in lines}
    long = by[("paper", "listing_buy", "binance")]
    assert (long.orders, long.fills, long.rejected) == (2, 2, 1)
    assert (long.bought, long.sold) == (20.0, 30.0) and long.realised == pytest.approx(10.0)
    short = by[("paper", "delisting_short", "bybit")]
    assert short.realised == pytest.approx(5.0) and (short.bought, short.sold) == (15.0, 20.0)
    real = by[("live", "listing_buy", "binance")]
    assert (real.orders, real.fills, real.fees, real.realised) == (1, 1, {"ABC": 0.001}, 0.0)

    table = report.render_table(lines)
    assert "PAPER realised USDT: +15" in table and "LIVE realised USDT: 0" in table
    assert "0.001 ABC" in table


def test_since_leaves_older_orders_out(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = time.time_ns() - 3 * DAY_NS
    journal = Journal.open(state, dry_run=True, clock_ns=lambda: old)
    trade(journal, "old1", filled=1, price=2.0)
    journal.close()
    journal = Journal.open(state, dry_run=True)
    trade(journal, "new1", filled=1, price=2.0)
    journal.close()
    day_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86_400))
    (line,) = report.build(state, since_ns=report.since_ns(day_ago))
    assert line.orders == 1


def test_cli_prints_json_without_a_terminal_and_refuses_a_bad_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    journal = Journal.open(tmp_path / "state", dry_run=True)
    trade(journal, "e1", filled=10, price=2.0)
    journal.close()
    code, out, _ = run_cli(["report", "-c", str(config)], capsys)  # captured stdout: not a terminal
    assert code == 0 and orjson.loads(out)[0]["bought"] == 20.0
    code, _, err = run_cli(["report", "-c", str(config), "--since", "yesterday"], capsys)
    assert code == 78 and "--since: 'yesterday' is not a date" in err


def test_no_journal_is_no_orders(tmp_path: Path) -> None:
    assert report.build(tmp_path / "nothing") == []
    assert report.render_table([]) == "No orders."
    assert not (tmp_path / "nothing").exists()  # a report creates nothing
