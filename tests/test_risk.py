"""Risk limits refuse (never clamp) orders that are too big, too late, over budget or not allowed."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config import USD_STABLECOINS, ExchangeConfig, TradingConfig
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
from bridge.trading.risk import RiskLimits
from tests.factories import announcement

NOON_NS = int(datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
HOUR_NS = 3600 * 1_000_000_000


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal.open(tmp_path, dry_run=True)
    yield j  # type: ignore[misc]
    j.close()


def check(risk: RiskLimits, **kw: object) -> str | None:
    args: dict[str, object] = {
        "strategy": "s",
        "announcement": announcement("ABC"),
        "symbol": "ABC/USDT",
        "side": "buy",
        "quote": "USDT",
        "cost": 20.0,
        "exchange": "binance",
    }
    args.update(kw)
    return risk.check(**args)  # type: ignore[arg-type]


def test_within_limits_passes(journal: Journal) -> None:
    """A fresh, small, allowed buy passes every limit."""
    assert check(RiskLimits(TradingConfig(), journal)) is None


def test_over_max_order_cost_refused_not_clamped(journal: Journal) -> None:
    """A buy above max_order_cost is refused."""
    risk = RiskLimits(TradingConfig(max_order_cost=50), journal)
    assert check(risk, cost=50.0) is None
    assert check(risk, cost=50.01) == "over_max_order_cost"


def test_event_age(journal: Journal) -> None:
    """Announcements detected longer ago than max_event_age are not traded; no timestamp, no trade."""
    now_ns = time.time_ns()
    risk = RiskLimits(TradingConfig(max_event_age=10), journal, clock_ns=lambda: now_ns)
    fresh = announcement("ABC", detected_us=now_ns // 1000 - 9_000_000)
    stale = announcement("ABC", detected_us=now_ns // 1000 - 11_000_000)
    assert check(risk, announcement=fresh) is None
    assert check(risk, announcement=stale) == "event_too_old"
    untimed = replace(fresh, detected_us=None, dispatch_us=None, publish_us=None)
    assert check(risk, announcement=untimed) == "event_age_unknown"


def test_daily_cap_counts_journal(journal: Journal) -> None:
    """daily_max_cost includes what the journal already committed today in that quote currency (read
    once, at start); a bare number names no limit for KRW, so a KRW order is refused, not guessed."""
    journal.reserve(OrderIntent("x", "k", "s", "binance", "X/USDT", "buy", "USDT", 40.0, None, True))
    risk = RiskLimits(TradingConfig(daily_max_cost=50), journal)
    assert check(risk, cost=10.0) is None
    assert check(risk, cost=10.01) == "over_daily_max_cost"
    assert check(risk, cost=45.0, quote="KRW", symbol="ABC/KRW") == "no_limit_for_quote:KRW"


def test_symbol_lists(journal: Journal) -> None:
    """deny_symbols always refuses; allow_symbols, when set, refuses everything else."""
    risk = RiskLimits(TradingConfig(allow_symbols=("ABC/USDT",), deny_symbols=("BAD/USDT",)), journal)
    assert check(risk) is None
    assert check(risk, symbol="DEF/USDT") == "symbol_not_allowed"
    assert check(risk, symbol="BAD/USDT") == "symbol_denied"


def test_max_orders_per_announcement(journal: Journal) -> None:
    """One strategy may place at most max_orders_per_announcement orders for one announcement."""
    risk = RiskLimits(TradingConfig(max_orders_per_announcement=2), journal)
    a = announcement("ABC,DEF,GHI")
    for _ in range(2):
        assert check(risk, announcement=a) is None
        risk.count("s", a)
    assert check(risk, announcement=a) == "too_many_orders_for_announcement"
    assert check(risk, announcement=a, strategy="other") is None


def test_caps_per_quote_currency(journal: Journal) -> None:
    """A mapping sets one limit per quote currency: 100 USDT and 150000 KRW are different amounts; a
    quote the mapping does not name is refused."""
    risk = RiskLimits(TradingConfig(max_order_cost={"USDT": 100, "KRW": 150_000}), journal)
    assert check(risk, cost=100.0) is None
    assert check(risk, cost=100.01) == "over_max_order_cost"
    assert check(risk, quote="KRW", symbol="ABC/KRW", cost=150_000.0) is None
    assert check(risk, quote="KRW", symbol="ABC/KRW", cost=150_001.0) == "over_max_order_cost"
    assert check(risk, quote="BTC", symbol="ABC/BTC", cost=0.001) == "no_limit_for_quote:BTC"
    assert check(risk, quote="usdt", symbol="ABC/usdt", cost=1.0) == "no_limit_for_quote:usdt"  # exact


def test_bare_number_applies_to_usd_stablecoins_only(journal: Journal) -> None:
    """A bare number is the limit of each USD stablecoin quote (each on its own), of nothing else."""
    risk = RiskLimits(TradingConfig(max_order_cost=100, daily_max_cost=150), journal)
    for quote in USD_STABLECOINS:
        assert check(risk, quote=quote, symbol=f"ABC/{quote}", cost=100.0) is None
        assert check(risk, quote=quote, symbol=f"ABC/{quote}", cost=100.01) == "over_max_order_cost"
    for quote in ("KRW", "EUR", "BTC", "TRY"):
        assert check(risk, quote=quote, symbol=f"ABC/{quote}", cost=1.0) == f"no_limit_for_quote:{quote}"
    risk.reserve("a", "binance", "USDT", 100.0)
    assert check(risk, cost=60.0) == "over_daily_max_cost"
    assert check(risk, quote="USDC", symbol="ABC/USDC", cost=100.0) is None  # its own budget


def test_daily_mapping_without_the_quote_refuses(journal: Journal) -> None:
    """A daily budget set as a mapping that does not name the order's quote refuses the order."""
    cfg = TradingConfig(max_order_cost={"USDT": 100, "KRW": 150_000}, daily_max_cost={"USDT": 500})
    risk = RiskLimits(cfg, journal)
    assert check(risk) is None
    assert check(risk, quote="KRW", symbol="ABC/KRW", cost=1000.0) == "no_daily_limit_for_quote:KRW"


def test_exchange_budget_on_top_of_the_trading_one(journal: Journal) -> None:
    """exchanges.NAME.daily_max_cost caps that exchange's day; trading.daily_max_cost still caps the
    sum over every exchange."""
    cfg = TradingConfig(max_order_cost={"USDT": 1000, "KRW": 1e6}, daily_max_cost={"USDT": 1000, "KRW": 1e7})
    exchanges = {"upbit": ExchangeConfig(daily_max_cost={"USDT": 50}), "binance": ExchangeConfig()}
    risk = RiskLimits(cfg, journal, exchanges=exchanges)
    risk.reserve("u1", "upbit", "USDT", 40.0)
    assert check(risk, exchange="upbit", cost=10.0) is None
    assert check(risk, exchange="upbit", cost=10.01) == "over_exchange_daily_max_cost"
    assert check(risk, exchange="binance", cost=500.0) is None  # no budget of its own
    kw = {"exchange": "upbit", "quote": "KRW", "symbol": "ABC/KRW", "cost": 1000.0}
    assert check(risk, **kw) == "no_exchange_daily_limit_for_quote:KRW"
    risk.reserve("b1", "binance", "USDT", 950.0)
    assert check(risk, exchange="binance", cost=10.0) is None
    assert check(risk, exchange="binance", cost=10.01) == "over_daily_max_cost"


def test_in_flight_orders_count_at_their_estimate(journal: Journal) -> None:
    """An order counts from its reservation at the estimate the router passes (an amount-sized order:
    amount x reference price), its real cost replaces the estimate, and `unknown` keeps it counting."""
    risk = RiskLimits(TradingConfig(daily_max_cost=100), journal)
    risk.reserve("amount-sized", "binance", "USDT", 45.0)  # 10 ABC at 4.5, result not known yet
    assert check(risk, cost=55.0) is None
    assert check(risk, cost=55.01) == "over_daily_max_cost"
    risk.settle("amount-sized", None, counts=True)  # unknown / not_found: it may exist
    assert check(risk, cost=55.01) == "over_daily_max_cost"
    risk.settle("amount-sized", 30.0, counts=True)  # it filled for 30
    assert check(risk, cost=70.0) is None
    assert check(risk, cost=70.01) == "over_daily_max_cost"


def test_rejected_and_expired_orders_stop_counting(journal: Journal) -> None:
    """A rejected order, or an IOC that expired with nothing filled, gives its budget back."""
    risk = RiskLimits(TradingConfig(daily_max_cost=100), journal)
    risk.reserve("rejected", "binance", "USDT", 60.0)
    risk.reserve("expired", "binance", "USDT", 40.0)
    assert check(risk, cost=1.0) == "over_daily_max_cost"
    risk.settle("rejected", None, counts=False)
    risk.settle("expired", 0.0, counts=False)
    assert check(risk, cost=100.0) is None
    risk.settle("never-reserved", 10.0, counts=True)  # an exit: not counted, ignored
    assert risk.ledger.spent("USDT") == 0.0


def test_strategy_sells_are_capped_exits_are_not(journal: Journal) -> None:
    """A sell a strategy places is under max_order_cost (and needs a known cost); an exit passes every
    limit: it reduces risk."""
    risk = RiskLimits(TradingConfig(max_order_cost=100, deny_symbols=("ABC/USDT",)), journal)
    sell = {"side": "sell", "symbol": "DEF/USDT"}
    assert check(risk, **sell, cost=100.0) is None
    assert check(risk, **sell, cost=150.0) == "over_max_order_cost"
    assert check(risk, **sell, cost=None) == "cost_unknown"
    assert check(risk, **sell, quote="KRW", cost=1.0) == "no_limit_for_quote:KRW"
    exit_kw = {"side": "sell", "announcement": None, "is_exit": True}
    assert check(risk, **exit_kw, cost=1e9) is None
    assert check(risk, **exit_kw, cost=None, quote="KRW", symbol="ABC/USDT") is None


def test_daily_budget_rolls_over_at_midnight_utc(tmp_path: Path) -> None:
    """The day's spend is forgotten at 00:00 UTC of the injected clock; yesterday's late results change
    nothing today."""
    now = [NOON_NS + 11 * HOUR_NS + 59 * 60 * 1_000_000_000]  # 23:59 UTC
    journal = Journal.open(tmp_path, dry_run=True, clock_ns=lambda: now[0])
    try:
        risk = RiskLimits(TradingConfig(daily_max_cost=100), journal, clock_ns=lambda: now[0])
        risk.reserve("late", "binance", "USDT", 90.0)
        assert check(risk, announcement=None) == "over_daily_max_cost"
        now[0] += 60 * 1_000_000_000  # 00:00 UTC
        assert check(risk, announcement=None, cost=100.0) is None
        risk.settle("late", 95.0, counts=True)
        assert risk.ledger.spent("USDT") == 0.0
    finally:
        journal.close()


class _NoQueries:
    """Stands in for the journal's SQLite connection and records every use."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.used: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.used.append(name)
        return getattr(self.db, name)


def test_check_reserve_and_settle_never_touch_sqlite(journal: Journal) -> None:
    """The day's spend is read from the journal once, at start; the order path then reads memory only."""
    journal.reserve(OrderIntent("x", "k", "s", "binance", "X/USDT", "buy", "USDT", 40.0, None, True))
    cfg = TradingConfig(daily_max_cost=100)
    risk = RiskLimits(cfg, journal, exchanges={"binance": ExchangeConfig(daily_max_cost=90)})
    spy = _NoQueries(journal._db)
    journal._db = spy  # type: ignore[assignment]
    try:
        for i in range(3):
            assert check(risk) is None
            risk.reserve(f"o{i}", "binance", "USDT", 10.0)
            risk.settle(f"o{i}", 9.0, counts=True)
        assert check(risk, cost=23.0) is None  # 40 + 3 x 9 + 23 = 90
        assert check(risk, cost=24.0) == "over_exchange_daily_max_cost"
        assert spy.used == []
    finally:
        journal._db = spy.db


def test_check_works_with_the_connection_closed(journal: Journal) -> None:
    """With the journal's connection closed under it, every limit still answers (no query is made)."""
    risk = RiskLimits(TradingConfig(daily_max_cost=50), journal)
    journal._db.close()
    risk.reserve("a", "binance", "USDT", 40.0)
    assert check(risk, cost=10.0) is None
    assert check(risk, cost=10.01) == "over_daily_max_cost"
