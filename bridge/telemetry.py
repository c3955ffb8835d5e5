"""Counters and histograms the daemon keeps (Prometheus client objects in bridge's own registry).

Exposed over HTTP by the health endpoint; tests read them with `REGISTRY.get_sample_value(...)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

FRAMES = Counter(
    "bridge_feed_frames_total", "Feed frames received, by message type", ["type"], registry=REGISTRY
)
BAD_FRAMES = Counter(
    "bridge_feed_bad_frames_total", "Malformed feed frames, by reason", ["reason"], registry=REGISTRY
)
UNKNOWN_TYPES = Counter(
    "bridge_feed_unknown_types_total", "Feed messages of unknown type", ["type"], registry=REGISTRY
)
ANNOUNCEMENTS = Counter(
    "bridge_announcements_total",
    "Announcements received, by publisher and listing type",
    ["publisher", "listing_type"],
    registry=REGISTRY,
)
DUPLICATES = Counter("bridge_announcements_duplicate_total", "Announcements seen before", registry=REGISTRY)
CONNECTS = Counter("bridge_feed_connects_total", "Feed connections established", registry=REGISTRY)
DISCONNECTS = Counter(
    "bridge_feed_disconnects_total",
    "Feed connections lost or refused, by cause",
    ["cause"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("bridge_feed_queue_depth", "Announcements waiting for the dispatcher", registry=REGISTRY)
ORDERS = Counter(
    "bridge_orders_total",
    "Orders by exchange and outcome",
    ["exchange", "outcome", "dry_run"],
    registry=REGISTRY,
)
STRATEGY_ERRORS = Counter(
    "bridge_strategy_errors_total", "Exceptions raised by strategy code", ["strategy"], registry=REGISTRY
)
LATENCY = Histogram(
    "bridge_announcement_to_order_seconds",
    "Time from announcement receipt to order request",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
EVENT_AGE = Histogram(
    "bridge_event_age_seconds",
    "Age of announcements at receipt (detection to receipt)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

ALERTS = Counter(
    "bridge_alerts_total",
    "Alert deliveries by channel and outcome (sent; failed: one attempt; dropped: given up or queue full)",
    ["channel", "outcome"],
    registry=REGISTRY,
)


def value(name: str, **labels: str) -> float:
    """Current value of a sample (0.0 if never set): a convenience for tests and the health endpoint."""
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


RECORDED = Counter("bridge_recorded_frames_total", "Feed frames written by the recorder", registry=REGISTRY)
