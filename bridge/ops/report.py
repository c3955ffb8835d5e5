"""`bridge report [--since DATE]`: per strategy and venue, the orders, fills, fees and realised profit in
the journals, paper and live kept apart (each mode has its own journal file), read without disturbing a
daemon that writes them. A table for people, JSON for scripts.

Realised profit is what exits brought in against what the part they closed cost at entry: for a long,
exit proceeds - filled x entry average; for a short (an entry that sold), filled x entry average - what
buying back cost. Fees are what the venue reported on each order (ccxt's `fee`/`fees`), summed per
currency; paper fills carry none. Open positions count toward orders and fills but not toward realised.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bridge.errors import ConfigError
from bridge.ops.positions_report import existing_journal

# Sent orders: every state but a refusal before sending (rejected also reached the venue, but filled
# nothing and cost nothing; it is counted under `rejected`).
_SENT_STATES = ("placed", "paper", "expired", "unknown", "sending", "not_found")

_ORDERS_SQL = """
SELECT strategy, exchange, quote, side, state, filled, result_cost, raw, exit_of
FROM orders WHERE created_ns >= ?
"""
# One row per exit fill, with its entry's side and average price (see the module docstring).
_REALISED_SQL = """
SELECT e.strategy, e.exchange, e.quote,
       SUM(CASE WHEN e.side = 'sell' THEN -1 ELSE 1 END
           * (COALESCE(x.result_cost, x.filled * x.average, 0)
              - x.filled * COALESCE(e.average, e.result_cost / NULLIF(e.filled, 0), 0)))
FROM orders x JOIN orders e ON e.client_order_id = x.exit_of
WHERE x.updated_ns >= ? AND COALESCE(x.filled, 0) > 0 AND x.state IN ('placed', 'paper', 'expired')
GROUP BY e.strategy, e.exchange, e.quote
"""


@dataclass
class Line:
    """One mode, strategy, venue and quote currency."""

    mode: str  # "paper" or "live"
    strategy: str
    exchange: str
    quote: str
    orders: int = 0
    fills: int = 0
    rejected: int = 0
    bought: float = 0.0  # quote currency spent by buys that filled
    sold: float = 0.0  # quote currency brought in by sells that filled
    fees: dict[str, float] = field(default_factory=dict)  # currency -> amount
    realised: float = 0.0


def build(state_dir: Path, *, since_ns: int = 0) -> list[Line]:
    """The report's lines from both journals in `state_dir` (paper first), sorted by mode, strategy,
    exchange and quote; [] when neither exists (nothing is created)."""
    lines: list[Line] = []
    for mode, dry_run in (("paper", True), ("live", False)):
        with existing_journal(state_dir, dry_run=dry_run) as journal:
            if journal is not None:
                orders = journal.select(_ORDERS_SQL, (since_ns,))
                lines += _lines(mode, orders, journal.select(_REALISED_SQL, (since_ns,)))
    return sorted(lines, key=lambda line: (line.mode, line.strategy, line.exchange, line.quote))


def _lines(mode: str, orders: Sequence[sqlite3.Row], realised: Sequence[sqlite3.Row]) -> list[Line]:
    by_key: dict[tuple[str, str, str], Line] = {}

    def line(strategy: str, exchange: str, quote: str) -> Line:
        key = (strategy, exchange, quote)
        if key not in by_key:
            by_key[key] = Line(mode, strategy, exchange, quote)
        return by_key[key]

    for r in orders:
        entry = line(r["strategy"], r["exchange"], r["quote"])
        if r["state"] == "rejected":
            entry.rejected += 1
            continue
        if r["state"] not in _SENT_STATES:
            continue
        entry.orders += 1
        filled = r["filled"] or 0.0
        if filled > 0:
            entry.fills += 1
            value = r["result_cost"] or 0.0
            if r["side"] == "buy":
                entry.bought += value
            else:
                entry.sold += value
        for currency, amount in _fees(r["raw"]):
            entry.fees[currency] = entry.fees.get(currency, 0.0) + amount
    for strategy, exchange, quote, amount in realised:
        line(strategy, exchange, quote).realised += float(amount or 0.0)
    return list(by_key.values())


def _fees(raw: str | None) -> list[tuple[str, float]]:
    """(currency, amount) of each fee ccxt parsed into the order (`fees` list, else `fee`)."""
    if not raw:
        return []
    try:
        order = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(order, dict):
        return []
    fees = order.get("fees") or ([order["fee"]] if isinstance(order.get("fee"), dict) else [])
    found: list[tuple[str, float]] = []
    for fee in fees if isinstance(fees, list) else []:
        if not isinstance(fee, dict) or not isinstance(fee.get("currency"), str):
            continue
        try:
            amount = float(fee.get("cost") or 0.0)
        except (TypeError, ValueError):
            continue
        if amount:
            found.append((fee["currency"], amount))
    return found


def since_ns(text: str | None) -> int:
    """`--since` as nanoseconds since the epoch: an ISO date or date and time, read as UTC unless it
    names its offset; 0 for None. ConfigError (exit 78) for anything else."""
    if text is None:
        return 0
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since: {text!r} is not a date (write 2026-12-01 or 2026-12-01T08:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


def render_table(lines: Sequence[Line]) -> str:
    """One line per strategy, venue and quote under a header, then the realised total per mode and
    quote; "No orders." when there are none."""
    if not lines:
        return "No orders."
    header = (
        "MODE",
        "STRATEGY",
        "EXCHANGE",
        "QUOTE",
        "ORDERS",
        "FILLS",
        "REJECTED",
        "BOUGHT",
        "SOLD",
        "FEES",
        "REALISED",
    )
    rows = [header]
    for x in lines:
        fees = ", ".join(f"{_num(v)} {c}" for c, v in sorted(x.fees.items())) or "-"
        rows.append(
            (
                x.mode.upper(),
                x.strategy,
                x.exchange,
                x.quote,
                str(x.orders),
                str(x.fills),
                str(x.rejected),
                _num(x.bought),
                _num(x.sold),
                fees,
                _signed(x.realised),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    totals: dict[tuple[str, str], float] = {}
    for x in lines:
        totals[(x.mode, x.quote)] = totals.get((x.mode, x.quote), 0.0) + x.realised
    text.append("")
    text += [f"{mode.upper()} realised {quote}: {_signed(v)}" for (mode, quote), v in sorted(totals.items())]
    return "\n".join(text)


def to_json(lines: Sequence[Line]) -> str:
    return orjson.dumps([asdict(x) for x in lines], option=orjson.OPT_INDENT_2).decode()


def _num(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".") if value else "0"


def _signed(value: float) -> str:
    text = _num(round(value, 8))
    return text if text.startswith("-") or text == "0" else f"+{text}"
