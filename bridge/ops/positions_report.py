"""`bridge positions`: the journal's positions, read without disturbing a daemon that writes it (or
one that starts meanwhile), shown as a table for people or as JSON for scripts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import ConfigError
from bridge.trading.journal import Journal
from bridge.trading.model import Position

# Closed positions are history (the journal's orders); these still need or needed a human's eye.
LISTED_STATES = ("pending", "open", "abandoned")
NO_POSITIONS = "No open positions."


def journal_path(state_dir: Path, *, dry_run: bool) -> Path:
    """The journal a daemon with this config writes."""
    return Journal.path_in(state_dir, dry_run=dry_run)


def read_positions(state_dir: Path, *, dry_run: bool) -> list[Position]:
    """The positions in LISTED_STATES, oldest first; [] when the journal does not exist yet (nothing
    is created)."""
    with existing_journal(state_dir, dry_run=dry_run) as journal:
        return [] if journal is None else journal.positions(states=LISTED_STATES)


@contextlib.contextmanager
def existing_journal(state_dir: Path, *, dry_run: bool) -> Iterator[Journal | None]:
    """The journal a daemon with this config writes, opened as a reader whether or not a daemon holds
    it; None when it does not exist yet (nothing is created). Never as the writer: with no daemon
    running that would take the intent log's lock, and a daemon starting in that instant would find its
    state_dir in use and exit 78, which systemd does not restart."""
    path = journal_path(state_dir, dry_run=dry_run)
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a state_dir only the service's user may enter
        raise ConfigError(
            f"state_dir: cannot read {path}: {exc.strerror or exc} (run as the daemon's user or root)"
        ) from None
    if not exists:
        yield None
        return
    journal = Journal(path, read_only=True)
    try:
        yield journal
    finally:
        journal.close()


def render_table(positions: Sequence[Position], *, now_ns: int) -> str:
    """One line per position under a header; the exit plan, the widest column, goes last."""
    header = ("EXCHANGE", "SYMBOL", "STATE", "HELD", "ENTRY", "OPENED (UTC)", "EXIT PLAN")
    rows = [header, *(_row(p, now_ns) for p in positions)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]) for r in rows
    )


def to_json(positions: Sequence[Position], *, now_ns: int) -> str:
    """A JSON list: every field of each Position, plus `remaining`, `opened` (ISO 8601, UTC) and
    `age_s`."""
    return orjson.dumps([_as_dict(p, now_ns) for p in positions], option=orjson.OPT_INDENT_2).decode()


def _as_dict(p: Position, now_ns: int) -> dict[str, Any]:
    return {
        **dataclasses.asdict(p),
        "remaining": p.remaining,
        "opened": _utc(p.opened_ns).isoformat().replace("+00:00", "Z"),
        "age_s": round(max(now_ns - p.opened_ns, 0) / 1e9, 3),
    }


def _row(p: Position, now_ns: int) -> tuple[str, ...]:
    state = p.state if p.close_reason is None else f"{p.state} ({p.close_reason})"
    if p.state == "pending" and not p.filled:
        held = "fill pending"
    else:
        held = f"{_num(p.remaining)} of {_num(p.filled)}"
    entry = "?" if p.average is None else _num(p.average)
    age = _duration(max(now_ns - p.opened_ns, 0) / 1e9)
    opened = f"{_utc(p.opened_ns):%Y-%m-%d %H:%M} ({age} ago)"
    return (p.exchange, p.symbol, state, held, entry, opened, describe_plan(p, now_ns=now_ns))


def describe_plan(p: Position, *, now_ns: int) -> str:
    """The exit plan in words, with the position's progress on it, e.g. `tp +50% | sl -20% (resting stop
    bx1) | trail 10% (high 1.234) | time 1h (in 12m)`."""
    plan = p.plan
    parts: list[str] = []
    if plan.take_profit is not None:
        parts.append(f"tp +{_pct(plan.take_profit)}")
    elif plan.tiers:
        steps = [
            f"+{_pct(t.at)} sell {'all' if t.sell >= 1 else _pct(t.sell)}"
            + (" (done)" if i < p.tiers_done else "")
            for i, t in enumerate(plan.tiers)
        ]
        parts.append("tp " + ", ".join(steps))
    if plan.stop_loss is not None:
        stop = f"sl -{_pct(plan.stop_loss)}"
        if p.stop_client_order_id is not None:
            stop += f" (resting stop {p.stop_client_order_id})"
        elif plan.stop_on_exchange:
            stop += " (resting stop not placed yet)"
        parts.append(stop)
    if plan.trailing_stop is not None:
        trail = f"trail {_pct(plan.trailing_stop)}"
        if p.high_water is not None:
            trail += f" (high {_num(p.high_water)})"
        parts.append(trail)
    if plan.after is not None:
        left = (p.opened_ns - now_ns) / 1e9 + plan.after
        parts.append(f"time {_duration(plan.after)} ({'due' if left <= 0 else 'in ' + _duration(left)})")
    return " | ".join(parts) or "none"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def _num(x: float) -> str:
    return f"{x:.8g}"


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _duration(seconds: float) -> str:
    """At most two units, largest first: 42s, 12m 5s, 3h 12m, 2d 4h."""
    total = round(seconds)
    if total < 60:
        return f"{max(total, 0)}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        value, total = divmod(total, size)
        if value or parts:
            parts.append(f"{value}{unit}")
    shown = parts[:2]
    while len(shown) > 1 and shown[-1].startswith("0"):
        shown.pop()
    return " ".join(shown)
