"""Counters of the operator-facing services: alert deliveries by channel and outcome, Telegram commands."""

from __future__ import annotations

from prometheus_client import Counter

from bridge.telemetry import REGISTRY

ALERTS = Counter(
    "bridge_alerts_total",
    "Alert deliveries by channel and outcome (sent; failed: one attempt; dropped: given up or queue full)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
TELEGRAM_COMMANDS = Counter(
    "bridge_telegram_commands_total",
    "Telegram commands by outcome (ok, failed, stale: sent while not running; ignored; conflict: another"
    " poller holds the bot token)",
    ["outcome"],
    registry=REGISTRY,
)
