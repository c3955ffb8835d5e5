"""The day's spend in memory (bridge.trading.budget): what counts, when, and the same after a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest

from bridge.config import TradingConfig
from bridge.trading.budget import DAY_NS, SpendLedger, day_start_ns
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
from bridge.trading.risk import RiskLimits

NOON_NS = int(datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
MIN_NS = 60 * 1_000_000_000


class Clock:
    def __init__(self, now_ns: int = NOON_NS) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def test_day_start_is_midnight_utc() -> None:
    assert day_start_ns(NOON_NS) == int(datetime(2026, 5, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert day_start_ns(day_start_ns(NOON_NS)) == day_start_ns(NOON_NS)
    assert day_start_ns(day_start_ns(NOON_NS) - 1) == day_start_ns(NOON_NS) - DAY_NS


def test_ledger_counts_per_quote_and_per_exchange() -> None:
    """Spend is kept per quote currency and per (exchange, quote); an order is reserved once."""
    ledger = SpendLedger(clock_ns=Clock())
    ledger.reserve("a", "binance", "USDT", 40.0)
    ledger.reserve("a", "binance", "USDT", 40.0)  # the same order again: counted once
    ledger.reserve("b", "upbit", "USDT", 10.0)
    ledger.reserve("c", "upbit", "KRW", 150_000.0)
    assert ledger.spent("USDT") == 50.0
    assert ledger.spent("USDT", "binance") == 40.0
    assert ledger.spent("USDT", "upbit") == 10.0
    assert ledger.spent("KRW") == 150_000.0 and ledger.spent("KRW", "binance") == 0.0
    assert ledger.spent("BTC") == 0.0


def test_settle_replaces_or_releases() -> None:
    """The real cost replaces the estimate; an unknown outcome keeps the estimate; a failure releases
    it; an order the ledger never counted (an exit) is ignored."""
    ledger = SpendLedger(clock_ns=Clock())
    ledger.reserve("filled", "binance", "USDT", 45.0)
    ledger.reserve("unknown", "binance", "USDT", 20.0)
    ledger.reserve("rejected", "binance", "USDT", 30.0)
    ledger.settle("filled", 44.1, counts=True)
    ledger.settle("unknown", None, counts=True)
    ledger.settle("rejected", None, counts=False)
    ledger.settle("exit", 99.0, counts=True)
    assert ledger.counted() == {
        "filled": ("binance", "USDT", 44.1),
        "unknown": ("binance", "USDT", 20.0),
        "rejected": ("binance", "USDT", 0.0),
    }
    assert ledger.spent("USDT") == pytest.approx(64.1)


def test_ledger_rolls_over_at_midnight_utc() -> None:
    """At 00:00 UTC of the clock the day's spend starts again from zero."""
    clock = Clock(day_start_ns(NOON_NS) + DAY_NS - MIN_NS)  # 23:59
    ledger = SpendLedger(clock_ns=clock)
    ledger.reserve("late", "binance", "USDT", 90.0)
    assert ledger.spent("USDT") == 90.0
    clock.now_ns += MIN_NS - 1
    assert ledger.spent("USDT") == 90.0  # 23:59:59.999999999
    clock.now_ns += 1
    assert ledger.spent("USDT") == 0.0 and ledger.counted() == {}
    assert ledger.day_start_ns == day_start_ns(NOON_NS) + DAY_NS
    ledger.settle("late", 95.0, counts=True)  # yesterday's order: nothing to change today
    assert ledger.spent("USDT", "binance") == 0.0


Result = Literal["placed", "paper", "rejected", "expired", "unknown", "not_found", "sending"]


class Router:
    """What OrderRouter does with the journal and the risk limits for one order, without a venue."""

    def __init__(self, journal: Journal, risk: RiskLimits) -> None:
        self.journal, self.risk = journal, risk

    def order(
        self,
        cid: str,
        *,
        result: Result,
        exchange: str = "binance",
        quote: str = "USDT",
        side: Literal["buy", "sell"] = "buy",
        cost: float | None = None,
        amount: float | None = None,
        limit_price: float | None = None,
        estimate: float | None = None,
        real_cost: float | None = None,
        exit_of: str | None = None,
        keep_estimate: bool = True,
    ) -> None:
        if estimate is None and exit_of is None:
            estimate = cost if cost is not None else (amount or 0) * (limit_price or 0)
        intent = OrderIntent(
            cid, "k", "s", exchange, f"ABC/{quote}", side, quote, cost, amount, True,
            exit_of=exit_of, limit_price=limit_price, est_cost=estimate if keep_estimate else None,
        )  # fmt: skip
        assert self.journal.reserve(intent)
        if exit_of is None:  # exits are never reserved
            self.risk.reserve(cid, exchange, quote, estimate)
        if result in ("placed", "paper"):
            self.journal.record_result(cid, result, filled=1.0, cost=real_cost)
            self.risk.settle(cid, real_cost, counts=True)
        elif result == "expired":
            self.journal.record_result(cid, "expired", filled=0.0, cost=0.0)
            self.risk.settle(cid, 0.0, counts=False)
        elif result == "rejected":
            self.journal.record_result(cid, "rejected", error_code="-2010")
            self.risk.settle(cid, None, counts=False)
        elif result in ("unknown", "not_found"):
            self.journal.record_result(cid, result)  # keeps counting at its estimate


CFG = TradingConfig(max_order_cost={"USDT": 100, "KRW": 150_000}, daily_max_cost={"USDT": 500, "KRW": 1e6})


def test_ledger_rebuilt_from_the_journal_equals_the_one_before(tmp_path: Path) -> None:
    """After a restart the day's spend, order by order, per quote and per exchange, is what it was:
    in-flight, unknown and not-found orders at their estimate, filled ones at their real cost, failed
    ones and exits not at all, yesterday's orders not at all."""
    clock = Clock(day_start_ns(NOON_NS) - MIN_NS)  # yesterday, 23:59
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=clock)
    risk = RiskLimits(CFG, journal, clock_ns=clock)
    router = Router(journal, risk)
    router.order("yesterday", result="unknown", cost=80.0)
    clock.now_ns = NOON_NS
    router.order("cost-filled", result="paper", cost=20.0, real_cost=19.5)
    router.order("cost-no-real-cost", result="placed", cost=20.0)
    router.order("limit-in-flight", result="sending", amount=10.0, limit_price=4.5)
    router.order("limit-unknown", result="unknown", amount=2.0, limit_price=7.25, exchange="upbit")
    router.order("limit-not-found", result="not_found", amount=3.0, limit_price=1.5)
    router.order("limit-filled", result="placed", amount=5.0, limit_price=2.0, real_cost=9.6)
    router.order("rejected", result="rejected", cost=50.0)
    router.order("expired", result="expired", amount=4.0, limit_price=3.0)
    router.order("strategy-sell", result="placed", side="sell", amount=1.0, limit_price=30.0, real_cost=31.0)
    router.order("exit", result="placed", side="sell", amount=10.0, real_cost=50.0, exit_of="cost-filled")
    router.order("krw", result="sending", quote="KRW", exchange="upbit", cost=100_000.0)
    before = risk.ledger.counted()
    assert before["limit-in-flight"] == ("binance", "USDT", 45.0)
    assert before["rejected"][2] == before["expired"][2] == 0.0
    assert "exit" not in before and "yesterday" not in before
    spent = {(q, ex): risk.ledger.spent(q, ex) for q in ("USDT", "KRW") for ex in (None, "binance", "upbit")}
    journal.close()

    clock.now_ns += 5 * MIN_NS
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=clock)
    try:
        again = RiskLimits(CFG, journal, clock_ns=clock)
        assert again.ledger.counted() == before
        for (quote, exchange), amount in spent.items():
            assert again.ledger.spent(quote, exchange) == pytest.approx(amount, abs=1e-9)
        assert spent[("USDT", None)] == pytest.approx(19.5 + 20 + 45 + 14.5 + 4.5 + 9.6 + 31)
    finally:
        journal.close()


def test_unpriced_amount_order_counts_at_its_estimate_after_a_restart(tmp_path: Path) -> None:
    """An uncapped amount-sized order still unresolved at a restart counts at the estimate it was
    checked at (amount x the reference price then), which its intent row keeps; a row from a bridge
    before that column (no estimate) counts at its quote's max_order_cost, the most it may have cost."""
    clock = Clock()
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=clock)
    risk = RiskLimits(CFG, journal, clock_ns=clock)
    Router(journal, risk).order("market-amount", result="unknown", amount=10.0, estimate=42.0)
    Router(journal, risk).order("old-row", result="unknown", amount=1.0, estimate=7.0, keep_estimate=False)
    assert risk.ledger.spent("USDT") == 49.0
    journal.close()
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=clock)
    try:
        assert RiskLimits(CFG, journal, clock_ns=clock).ledger.spent("USDT") == 42.0 + 100.0
    finally:
        journal.close()


def test_daily_cap_holds_across_a_restart(tmp_path: Path) -> None:
    """What was committed before a restart still counts against the cap after it."""
    clock = Clock()
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=clock)
    router = Router(journal, RiskLimits(CFG, journal, clock_ns=clock))
    for i in range(5):
        router.order(f"o{i}", result="unknown", amount=10.0, limit_price=9.9)  # 99 each, unresolved
    journal.close()
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=clock)
    try:
        risk = RiskLimits(CFG, journal, clock_ns=clock)
        kw = {"strategy": "s", "announcement": None, "symbol": "ABC/USDT", "side": "buy", "quote": "USDT"}
        assert risk.check(**kw, cost=5.0, exchange="binance") is None  # type: ignore[arg-type]
        assert risk.check(**kw, cost=5.01, exchange="binance") == "over_daily_max_cost"  # type: ignore[arg-type]
    finally:
        journal.close()
