"""The trading side's counters: orders by outcome, duplicates dropped, strategy errors and stuck
handlers, order latency."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bridge.telemetry import REGISTRY

REFUSED = Counter(
    "bridge_announcements_refused_total",
    "Announcements refused before any strategy saw them, by reason",
    ["reason"],
    registry=REGISTRY,
)
DUPLICATES = Counter("bridge_announcements_duplicate_total", "Announcements seen before", registry=REGISTRY)
ORDERS = Counter(
    "bridge_orders_total",
    "Orders by exchange and outcome",
    ["exchange", "outcome", "dry_run"],
    registry=REGISTRY,
)
STRATEGY_ERRORS = Counter(
    "bridge_strategy_errors_total", "Exceptions raised by strategy code", ["strategy"], registry=REGISTRY
)
STRATEGY_DROPPED = Counter(
    "bridge_strategy_dropped_total",
    "Announcements a strategy never saw: its runner's queue was full (bridge.trading.dispatch.MAX_WAITING)",
    ["strategy"],
    registry=REGISTRY,
)
STRATEGY_DEADLINE_EXCEEDED = Counter(
    "bridge_strategy_deadline_exceeded_total",
    "Announcement handlers still running past trading.strategy_deadline (counted once each)",
    ["strategy"],
    registry=REGISTRY,
)
STRATEGY_STUCK = Gauge(
    "bridge_strategy_stuck_handlers",
    "Announcement handlers running past trading.strategy_deadline now",
    ["strategy"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "bridge_announcement_to_order_seconds",
    "Time from announcement receipt to order request",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
