"""The one Prometheus registry bridge's counters live in, and `value()` to read one sample.

Each subpackage defines its own counters on it (`bridge.feed.metrics`, `bridge.trading.metrics`,
`bridge.ops.metrics`); the health endpoint serves the registry; tests read samples with `value()`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

REGISTRY = CollectorRegistry(auto_describe=True)


def value(name: str, **labels: str) -> float:
    """Current value of a sample (0.0 if never set): a convenience for tests and the health endpoint."""
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got
