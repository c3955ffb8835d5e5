"""Positions as the journal keeps them: an entry with an exit plan (its `orders` row: a buy, or on a
perpetual a sell that opened a short), the exit orders that sold from it or bought it back (rows whose
`exit_of` is the entry), and its exit progress (its `positions` row).

What a position holds is never stored twice: `sold` is the sum of what its exit orders filled, so a fill
learned late (a lookup, a resting stop that triggered) counts the moment its order row says so.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from bridge.trading.model import ExitPlan, Position, PositionState, TakeProfitTier

# Entry states whose fill is not known yet: the exit waits until a lookup tells it.
PENDING_ENTRY_STATES = ("sending", "unknown", "not_found")
# What a position sold: the fills of its exit orders, in any state that may carry one.
POSITIONS_SQL = """
SELECT e.*, p.state AS p_state, p.high_water, p.tiers_done, p.tier_hold, p.failures, p.stop_cid, p.close_reason,
  (SELECT COALESCE(SUM(x.filled), 0) FROM orders x
     WHERE x.exit_of = e.client_order_id AND x.state IN ('placed', 'paper', 'expired', 'rejected')) AS sold,
  (SELECT COUNT(*) FROM orders x WHERE x.exit_of = e.client_order_id) AS attempts
FROM orders e LEFT JOIN positions p ON p.entry_cid = e.client_order_id
WHERE e.exit_of IS NULL
  AND (e.exit_plan IS NOT NULL OR e.take_profit IS NOT NULL OR e.stop_loss IS NOT NULL
       OR e.exit_after IS NOT NULL)
  AND e.state NOT IN ('rejected', 'expired')
"""


def plan_json(plan: ExitPlan | None) -> str | None:
    """The exit plan as its journal column (None: no plan)."""
    if plan is None:
        return None
    return orjson.dumps(
        {
            "take_profit": plan.take_profit,
            "stop_loss": plan.stop_loss,
            "after": plan.after,
            "trailing_stop": plan.trailing_stop,
            "tiers": [[t.at, t.sell] for t in plan.tiers],
            "stop_on_exchange": plan.stop_on_exchange,
            "exit_slippage": plan.exit_slippage,
        }
    ).decode()


def plan_from_row(row: sqlite3.Row) -> ExitPlan | None:
    """The exit plan of an order row: its JSON column, or the three columns rows before v4 used."""
    text = row["exit_plan"]
    if text:
        data: dict[str, Any] = orjson.loads(text)
        plan = ExitPlan(
            take_profit=data.get("take_profit"),
            stop_loss=data.get("stop_loss"),
            after=data.get("after"),
            trailing_stop=data.get("trailing_stop"),
            tiers=tuple(TakeProfitTier(float(at), float(sell)) for at, sell in data.get("tiers") or ()),
            stop_on_exchange=bool(data.get("stop_on_exchange")),
            exit_slippage=float(data.get("exit_slippage") or 0.05),
        )
    else:
        plan = ExitPlan(row["take_profit"], row["stop_loss"], row["exit_after"])
    return plan if plan.active else None


def position_from_row(r: sqlite3.Row) -> Position | None:
    """The position a POSITIONS_SQL row describes; None if the entry bought nothing (no position)."""
    plan = plan_from_row(r)
    if plan is None:
        return None
    filled = float(r["filled"] or 0.0)
    state: PositionState
    if r["p_state"] in ("closed", "abandoned"):
        state = r["p_state"]
    elif r["state"] in PENDING_ENTRY_STATES or (r["state"] in ("placed", "paper") and r["filled"] is None):
        state = "pending"
    elif filled > 0:
        state = "open"
    else:
        return None  # a placed entry that filled nothing
    average = r["average"] or (r["result_cost"] / filled if r["result_cost"] and filled else None)
    return Position(
        client_order_id=r["client_order_id"],
        strategy=r["strategy"],
        exchange=r["exchange"],
        symbol=r["symbol"],
        filled=filled,
        average=average,
        opened_ns=r["created_ns"],
        plan=plan,
        quote=r["quote"],
        state=state,
        sold=float(r["sold"] or 0.0),
        high_water=r["high_water"],
        tiers_done=int(r["tiers_done"] or 0),
        tier_hold=r["tier_hold"],
        attempts=int(r["attempts"] or 0),
        failures=int(r["failures"] or 0),
        stop_client_order_id=r["stop_cid"],
        close_reason=r["close_reason"],
        entry_cost=r["result_cost"] or r["est_cost"] or r["cost"],
        side="sell" if r["side"] == "sell" else "buy",
    )


# The columns of `positions` a caller may set through Journal.update_position.
POSITION_FIELDS = frozenset(
    {"state", "high_water", "tiers_done", "tier_hold", "failures", "stop_cid", "close_reason"}
)


# Realised profit (negative: loss) per quote currency of exit fills since a time: what each exit got,
# less what its amount cost at the entry's average price; for a short (a sell entry, exits buying back)
# the other way round: what the entry got for the amount, less what buying it back cost.
REALISED_SQL = """
SELECT e.quote, SUM((CASE WHEN e.side = 'sell' THEN -1 ELSE 1 END)
                    * (COALESCE(x.result_cost, x.filled * x.average, 0)
                       - x.filled * COALESCE(e.average, e.result_cost / NULLIF(e.filled, 0), 0)))
FROM orders x JOIN orders e ON e.client_order_id = x.exit_of
WHERE x.updated_ns >= ? AND COALESCE(x.filled, 0) > 0 AND x.state IN ('placed', 'paper', 'expired')
GROUP BY e.quote
"""
