"""Counters of the operator-facing services: alert deliveries by channel and outcome."""

from __future__ import annotations

from prometheus_client import Counter

from bridge.telemetry import REGISTRY

ALERTS = Counter(
    "bridge_alerts_total",
    "Alert deliveries by channel and outcome (sent; failed: one attempt; dropped: given up or queue full)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
