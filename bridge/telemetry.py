"""The one Prometheus registry bridge's counters live in, `value()` to read one sample, the daemon's own
latency from frame received to order request written, and a cap on label values sent by servers.

Each subpackage defines its own counters on it (`bridge.feed.metrics`, `bridge.trading.metrics`,
`bridge.ops.metrics`); the health endpoint serves the registry; tests read samples with `value()`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Label values a server chooses (message types, close reasons, publishers...) past this many distinct
# values per metric are counted as OTHER: a feed or venue sending a new string every time must not grow
# the registry (and every /metrics scrape) without bound.
MAX_LABEL_VALUES = 50
OTHER = "other"

# The daemon's own share of an order's latency: from the feed frame's receipt (perf_counter_ns, taken by
# the feed reader) to the order request handed to the HTTP client. Fine buckets: 50 us .. 5 ms.
ORDER_INTERNAL = Histogram(
    "bridge_order_internal_seconds",
    "The daemon's own time from feed frame received to order request written (excludes the network)",
    buckets=(
        0.00005,
        0.0001,
        0.00015,
        0.0002,
        0.0003,
        0.0004,
        0.0005,
        0.00075,
        0.001,
        0.0015,
        0.002,
        0.003,
        0.005,
        0.01,
        0.025,
        0.1,
        1.0,
    ),
    registry=REGISTRY,
)


def value(name: str, **labels: str) -> float:
    """Current value of a sample (0.0 if never set): a convenience for tests and the health endpoint."""
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


def observe_order_written(received_mono_ns: int, *, now_ns: int | None = None) -> None:
    """An order request is about to be written: observe its time since the frame that caused it was
    received (`received_mono_ns`, time.perf_counter_ns(); 0: not caused by a frame, nothing observed)."""
    if received_mono_ns > 0:
        now = time.perf_counter_ns() if now_ns is None else now_ns
        ORDER_INTERNAL.observe(max(now - received_mono_ns, 0) / 1e9)


class CappedLabels:
    """A labelled metric whose label values come (in part) from servers: `labels()` as on the metric,
    but past `limit` distinct values of a capped label the value is OTHER. Values seen before the cap
    was reached keep their own series."""

    def __init__(self, metric: Any, capped: tuple[str, ...], *, limit: int = MAX_LABEL_VALUES) -> None:
        self.metric = metric
        self._names: tuple[str, ...] = tuple(metric._labelnames)  # prometheus_client keeps them here
        self._capped = {self._names.index(name) for name in capped}
        self._limit = limit
        self._seen: dict[int, set[str]] = {i: set() for i in self._capped}

    def labels(self, *values: str, **named: str) -> Any:
        """The child series for these label values (positional or by name), capped values as OTHER."""
        given = list(values) if values else [named[name] for name in self._names]
        for i in self._capped:
            seen, text = self._seen[i], str(given[i])
            if text not in seen:
                if len(seen) >= self._limit:
                    given[i] = OTHER
                    continue
                seen.add(text)
        return self.metric.labels(*given)
