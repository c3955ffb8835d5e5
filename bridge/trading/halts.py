"""The one table of halt reasons: each reason's scope, whether it stops entries and exits, whether
/health answers 503 and whether it alerts. The gate, /health and the notifier read it; the README's
"Halt reasons" table is this table (a test compares the two).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

HaltReason = Literal[
    "starting",
    "disconnected",
    "feed_stale",
    "key_expired",
    "key_rejected",
    "credentials_rejected",
    "shutting_down",
    "journal_unwritable",
    "loss_limit",
    "journal_missing",
    "clock_offset",
    "venue_backoff",
    "venue_unavailable",
    "operator_halt",
    "ha_standby",
]

# "all": every venue; "venue": one exchange (the gate keys it "reason:venue"); "link": the feed, or
# with several links (`feed.links`) one of them ("feed_stale:kr"), which stops trading only when the
# links left do not satisfy `feed.arm_when` (any: every link is down; all: one is).
Scope = Literal["all", "venue", "link"]


@dataclass(frozen=True, slots=True)
class HaltRule:
    reason: str
    scope: Scope
    blocks_entries: bool
    blocks_exits: bool
    unhealthy: bool  # /health answers 503 while it is set
    alerts: bool  # `trading_halted` goes out when it is set
    meaning: str


HALT_RULES: tuple[HaltRule, ...] = (
    HaltRule(
        "starting", "all", True, True, True, False, "exchanges, markets and strategies are not ready yet"
    ),
    HaltRule(
        "disconnected",
        "link",
        True,
        False,
        True,
        False,
        "no live feed connection with a welcome (reconnecting)",
    ),
    HaltRule(
        "feed_stale",
        "link",
        True,
        False,
        True,
        False,
        "no server message within feed.heartbeat_timeout; the socket is being replaced",
    ),
    HaltRule(
        "key_expired",
        "link",
        True,
        False,
        True,
        True,
        "the feed closed the connection because its key expired, was revoked or invalidated: a new key is needed",
    ),
    HaltRule(
        "key_rejected",
        "link",
        True,
        False,
        True,
        True,
        "the feed refused the key at connect (HTTP 403: invalid, revoked or expired): a new key is needed",
    ),
    HaltRule(
        "credentials_rejected",
        "venue",
        True,
        True,
        True,
        True,
        "that exchange rejected its API key: nothing is sent to it until a new key is in place",
    ),
    HaltRule("shutting_down", "all", True, True, True, False, "the daemon is stopping"),
    HaltRule(
        "journal_unwritable",
        "all",
        True,
        True,
        True,
        True,
        "the journal cannot be written: nothing may be sent that it did not record",
    ),
    HaltRule(
        "loss_limit",
        "all",
        True,
        False,
        False,
        True,
        "the daily loss limit is reached: no new entries until the next UTC day",
    ),
    HaltRule(
        "journal_missing",
        "all",
        True,
        True,
        True,
        True,
        "the journal file or state_dir was deleted or replaced while running: restored from the open"
        " connection, trading stays halted until a restart",
    ),
    HaltRule(
        "clock_offset",
        "all",
        True,
        False,
        True,
        True,
        "this host's clock is off the venues' by more than trading.max_clock_offset: event ages and"
        " signed requests cannot be trusted",
    ),
    HaltRule(
        "venue_backoff",
        "venue",
        True,
        True,
        False,
        True,
        "that exchange said slow down (429/418, Retry-After or a ban): nothing is sent to it until then",
    ),
    HaltRule(
        "venue_unavailable",
        "venue",
        True,
        True,
        False,
        True,
        "that exchange could not be started at boot (down or unreachable): the daemon runs, the other"
        " venues trade, and it is retried with backoff; its open orders are looked up once it starts",
    ),
    HaltRule(
        "operator_halt",
        "all",
        True,
        False,
        False,
        True,
        "an operator halted new entries (/halt or `bridge halt`); exits go on; kept across restarts"
        " until /resume or `bridge resume operator_halt`",
    ),
    HaltRule(
        "ha_standby",
        "all",
        True,
        True,
        False,
        False,
        "a pair (ha:) and this host does not hold the leader lease, or cannot prove it still does:"
        " it follows everything and sends nothing (the `ha_role` alert says each change)",
    ),
)

RULES: Mapping[str, HaltRule] = {rule.reason: rule for rule in HALT_RULES}

# A reason missing from the table (a bug) is treated as the strictest one, never as harmless.
_UNKNOWN = HaltRule("unknown", "all", True, True, True, True, "not in the table")


def split_key(key: str) -> tuple[str, str | None]:
    """A gate key ("credentials_rejected:binance", or "key_expired") as (reason, venue or None)."""
    reason, sep, venue = key.partition(":")
    return reason, venue if sep else None


def halt_key(reason: str, venue: str | None) -> str:
    """The gate's key for `reason`, qualified by `venue` when it is scoped to one."""
    return reason if venue is None else f"{reason}:{venue}"


def rule_for(key: str) -> HaltRule:
    """The table row of a reason or gate key (strictest row for an unknown reason)."""
    return RULES.get(split_key(key)[0], _UNKNOWN)


def unhealthy(keys: Iterable[str]) -> bool:
    """Whether /health answers 503 while these reasons (gate keys) are set."""
    return any(rule_for(key).unhealthy for key in keys)


def markdown_table() -> str:
    """The table as the README shows it (`python -m bridge.trading.halts` prints it)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    lines = [
        "| reason | scope | blocks entries | blocks exits | /health 503 | alerts | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in HALT_RULES:
        flags = " | ".join(yes(f) for f in (r.blocks_entries, r.blocks_exits, r.unhealthy, r.alerts))
        lines.append(f"| `{r.reason}` | {r.scope} | {flags} | {r.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())  # a developer's helper: the README table, ready to paste
