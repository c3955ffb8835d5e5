"""The feed's own counters: frames, bad frames, connections, queue depth, event age, recording.

Defined here (the feed owns them) on bridge's one registry; ops only serves them over HTTP. Labels whose
values the server chooses (message types, bad-frame reasons, publishers, listing types, close causes
such as `http_<status>`) are capped (bridge.telemetry.CappedLabels): past 50 values, `other`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bridge.telemetry import REGISTRY, CappedLabels

FRAMES = Counter(
    "bridge_feed_frames_total", "Feed frames received, by message type", ["type"], registry=REGISTRY
)
BAD_FRAMES = CappedLabels(
    Counter(
        "bridge_feed_bad_frames_total", "Malformed feed frames, by reason", ["reason"], registry=REGISTRY
    ),
    ("reason",),
)
UNKNOWN_TYPES = CappedLabels(
    Counter("bridge_feed_unknown_types_total", "Feed messages of unknown type", ["type"], registry=REGISTRY),
    ("type",),
)
ANNOUNCEMENTS = CappedLabels(
    Counter(
        "bridge_announcements_total",
        "Announcements received, by publisher and listing type",
        ["publisher", "listing_type"],
        registry=REGISTRY,
    ),
    ("publisher", "listing_type"),
)
CONNECTS = Counter("bridge_feed_connects_total", "Feed connections established", registry=REGISTRY)
DISCONNECTS = CappedLabels(
    Counter(
        "bridge_feed_disconnects_total",
        "Feed connections lost or refused, by cause",
        ["cause"],
        registry=REGISTRY,
    ),
    ("cause",),
)
# The heartbeat watchdog fired but a message was already readable (the event loop had stalled): the
# connection was kept and the message handled instead of ending the link as stale.
STALE_AVERTED = Counter(
    "bridge_feed_stale_averted_total",
    "Heartbeat watchdog expiries where a readable message proved the link alive (an event-loop stall)",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("bridge_feed_queue_depth", "Announcements waiting for the dispatcher", registry=REGISTRY)
ANNOUNCEMENTS_DROPPED = Counter(
    "bridge_feed_announcements_dropped_total",
    "Announcements dropped because the dispatcher's queue was full (bridge.feed.client.MAX_QUEUED)",
    registry=REGISTRY,
)
EVENT_AGE = Histogram(
    "bridge_event_age_seconds",
    "Age of announcements at receipt (detection to receipt)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
RECORDED = Counter("bridge_recorded_frames_total", "Feed frames written by the recorder", registry=REGISTRY)
# Per link (feed.links; the single link is "main"): up or not, reconnects, and how much earlier (+) or
# later (-) each link delivered an announcement another link also delivered.
LINK_UP = Gauge(
    "bridge_feed_link_up", "1 while the link is welcomed and live, else 0", ["link"], registry=REGISTRY
)
LINK_CONNECTS = Counter(
    "bridge_feed_link_connects_total", "Connections established, by link", ["link"], registry=REGISTRY
)
LINK_LEAD = Histogram(
    "bridge_feed_link_lead_seconds",
    "How much earlier (positive) or later (negative) this link delivered an announcement than the other",
    ["link"],
    buckets=(
        -1.0,
        -0.1,
        -0.05,
        -0.02,
        -0.01,
        -0.005,
        -0.002,
        -0.001,
        0.0,
        0.001,
        0.002,
        0.005,
        0.01,
        0.02,
        0.05,
        0.1,
        1.0,
    ),
    registry=REGISTRY,
)
