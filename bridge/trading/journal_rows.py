"""The journal's rows: its SQL statements for intents and results, and how an intent, an announcement
and an order record map to and from SQLite rows (an intent's row is also its intent-log line)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from bridge.trading.model import Announcement, OrderIntent, OrderRecord
from bridge.trading.positions import plan_from_row, plan_json

UPDATE_RESULT = (
    "UPDATE orders SET state=?, updated_ns=?, order_id=?, filled=?, average=?, result_cost=?,"
    " error_code=?, error_message=?, raw=? WHERE client_order_id=?"
)
# An order's final "unresolved" state after its look-ups, written only while nobody has settled it: a
# fill that another look-up recorded meanwhile must never be overwritten.
SETTLE_UNRESOLVED = (
    "UPDATE orders SET state=?, updated_ns=?, error_message=? WHERE client_order_id=?"
    " AND state IN ('sending', 'unknown')"
)
# Announcements past journal.retention_days, oldest first, a batch at a time (index announcements_seen).
OLD_ANNOUNCEMENTS = "SELECT key FROM announcements WHERE first_seen_ns<? ORDER BY first_seen_ns LIMIT ?"
INSERT_INTENT = (
    "INSERT OR IGNORE INTO orders (client_order_id, announcement_key, strategy, exchange, symbol,"
    " side, quote, cost, amount, dry_run, state, created_ns, updated_ns,"
    " take_profit, stop_loss, exit_after, exit_of, limit_price, exit_plan, est_cost, lease_id)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,'sending',?,?,?,?,?,?,?,?,?,?)"
)


INTENT_ROW_LEN = INSERT_INTENT.count("?")  # the values of one intent row
# An intent-log line written by a bridge of schema version 1 (before limit_price): still replayed.
INTENT_ROW_LEN_V1 = 16


def intent_row(intent: OrderIntent, now: int, lease_id: int | None = None) -> tuple[Any, ...]:
    """The intent as its SQLite row; also, as a JSON array, its line in the intent log. `lease_id`: the
    pair's leader lease it was sent under (bridge.ops.ha), None for a single host."""
    plan = intent.plan
    return (
        intent.client_order_id,
        intent.announcement_key,
        intent.strategy,
        intent.exchange,
        intent.symbol,
        intent.side,
        intent.quote,
        intent.cost,
        intent.amount,
        int(intent.dry_run),
        now,
        now,
        None if plan is None else plan.take_profit,
        None if plan is None else plan.stop_loss,
        None if plan is None else plan.after,
        intent.exit_of,
        intent.limit_price,  # new values go last: an older bridge's intent-log lines are padded
        plan_json(plan),
        intent.est_cost,
        lease_id,
    )


def announcement_row(a: Announcement, seen_ns: int) -> tuple[Any, ...]:
    raw = orjson.dumps(a.raw).decode()
    return (a.key, seen_ns, a.publisher, a.listing_type, a.title, ",".join(a.tickers), a.detected_us, raw)


def record(r: sqlite3.Row) -> OrderRecord:
    intent = OrderIntent(
        client_order_id=r["client_order_id"],
        announcement_key=r["announcement_key"],
        strategy=r["strategy"],
        exchange=r["exchange"],
        symbol=r["symbol"],
        side=r["side"],
        quote=r["quote"],
        cost=r["cost"],
        amount=r["amount"],
        dry_run=bool(r["dry_run"]),
        plan=plan_from_row(r),
        exit_of=r["exit_of"],
        limit_price=r["limit_price"],
        est_cost=r["est_cost"],
    )
    return OrderRecord(
        intent=intent,
        state=r["state"],
        created_ns=r["created_ns"],
        order_id=r["order_id"],
        filled=r["filled"],
        average=r["average"],
        result_cost=r["result_cost"],
        error_code=r["error_code"],
        error_message=r["error_message"],
    )
