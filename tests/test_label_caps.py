"""Label values chosen by servers are capped (bridge.telemetry.CappedLabels): past the cap, `other`, so a
feed or venue sending a new string each time cannot grow /metrics without bound."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from bridge import telemetry
from bridge.feed import metrics as feed_metrics
from bridge.sim.emulator import FeedEmulator
from bridge.telemetry import MAX_LABEL_VALUES, OTHER, CappedLabels
from tests.test_feed import config, emu, reading

__all__ = ["emu"]  # a fixture, used by name


def series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name
    }


def test_values_past_the_cap_count_as_other() -> None:
    """The first `limit` distinct values keep their own series (also when seen again after the cap);
    later ones all count in `other`; an uncapped label is left alone."""
    registry = CollectorRegistry()
    capped = CappedLabels(Counter("t", "t", ["kind", "link"], registry=registry), ("kind",), limit=3)
    for kind in ("a", "b", "c", "d", "e", "a"):
        capped.labels(kind, "main").inc()
    capped.labels(kind="f", link="kr").inc()
    assert series(registry, "t_total") == {
        (("kind", "a"), ("link", "main")): 2.0,
        (("kind", "b"), ("link", "main")): 1.0,
        (("kind", "c"), ("link", "main")): 1.0,
        (("kind", OTHER), ("link", "main")): 2.0,
        (("kind", OTHER), ("link", "kr")): 1.0,
    }


@pytest.mark.parametrize(
    ("metric", "capped"),
    [
        (feed_metrics.UNKNOWN_TYPES, ("type",)),
        (feed_metrics.BAD_FRAMES, ("reason",)),
        (feed_metrics.ANNOUNCEMENTS, ("publisher", "listing_type")),
        (feed_metrics.DISCONNECTS, ("cause",)),
    ],
)
def test_each_server_labelled_feed_metric_is_capped(
    metric: CappedLabels, capped: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown message types, bad-frame reasons, publishers and listing types, disconnect causes: past
    MAX_LABEL_VALUES distinct values (fresh for the test, restored after it), `other`."""
    monkeypatch.setattr(metric, "_seen", {i: set() for i in metric._seen})  # this test's own cap state
    names = metric._names
    assert set(capped) == set(names)  # every label of these comes from the server
    for n in range(MAX_LABEL_VALUES + 5):
        metric.labels(**dict.fromkeys(names, f"cap_test_{n}")).inc()
    name = metric.metric._name + "_total"
    assert telemetry.value(name, **dict.fromkeys(names, f"cap_test_{MAX_LABEL_VALUES - 1}")) == 1
    assert telemetry.value(name, **dict.fromkeys(names, f"cap_test_{MAX_LABEL_VALUES}")) == 0
    assert telemetry.value(name, **dict.fromkeys(names, OTHER)) >= 5


async def test_unknown_types_from_the_feed_are_capped(
    emu: FeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real reader: with a cap of 3, five new message types make three series and `other` 2."""
    monkeypatch.setattr(feed_metrics.UNKNOWN_TYPES, "_seen", {0: set()})
    monkeypatch.setattr(feed_metrics.UNKNOWN_TYPES, "_limit", 3)
    before = telemetry.value("bridge_feed_unknown_types_total", type=OTHER)
    async with reading(config(emu)) as live:
        await emu.wait_connected(1)
        for n in range(5):
            await emu.send({"type": f"capped_kind_{n}"})
        await emu.announce(ticker="OK")
        await live.next()  # every frame before it was handled
    assert [
        telemetry.value("bridge_feed_unknown_types_total", type=f"capped_kind_{n}") for n in range(5)
    ] == [
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert telemetry.value("bridge_feed_unknown_types_total", type=OTHER) - before == 2
