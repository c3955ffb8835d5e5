"""Risk limits refuse (never clamp) orders that are too big, too late, over budget or not allowed."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.config import TradingConfig
from bridge.trading.journal import Journal
from bridge.trading.model import OrderIntent
from bridge.trading.risk import RiskLimits
from tests.factories import announcement


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
    """daily_max_cost includes what the journal already committed today in that quote currency."""
    risk = RiskLimits(TradingConfig(daily_max_cost=50), journal)
    journal.reserve(OrderIntent("x", "k", "s", "binance", "X/USDT", "buy", "USDT", 40.0, None, True))
    assert check(risk, cost=10.0) is None
    assert check(risk, cost=10.01) == "over_daily_max_cost"
    assert check(risk, cost=45.0, quote="KRW", symbol="ABC/KRW") is None


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
