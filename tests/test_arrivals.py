"""The dispatcher across feed links: the first arrival goes to the strategies and its copies are
dropped, whatever their dispatch timestamps; two coins announced in the same second both go; a title
update of an announcement already handed over is logged and not traded again; what a link that is
down brings is refused, and the copy from a link that is up still goes."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import structlog

from bridge import telemetry
from bridge.trading.arrivals import TITLE_UPDATE_WINDOW_S
from bridge.trading.dispatch import Dispatcher
from bridge.trading.journal import Journal
from bridge.trading.model import Announcement
from tests.factories import announcement
from tests.test_admission import Recorder


def rig(tmp_path: Path, down: set[str] | None = None) -> tuple[Dispatcher, Recorder, Journal]:
    journal = Journal.open(tmp_path, dry_run=True)
    rec = Recorder()
    d = Dispatcher(
        asyncio.Queue(),
        [rec],  # type: ignore[list-item]
        journal,
        link_ok=lambda link: link not in (down or set()),
    )
    return d, rec, journal


def via(a: Announcement, link: str, after_ms: float = 0.0, **changes: object) -> Announcement:
    return dataclasses.replace(
        a, link=link, received_mono_ns=a.received_mono_ns + int(after_ms * 1e6), **changes
    )


def test_the_first_arrival_wins_whatever_the_dispatch_stamps(tmp_path: Path) -> None:
    d, rec, journal = rig(tmp_path)
    try:
        a = announcement("ABC", title="Upbit lists ABC")
        lead = telemetry.value("bridge_feed_link_lead_seconds_count", link="kr") or 0
        later = via(a, "main", 3.0, dispatch_us=(a.dispatch_us or 0) + 2500)
        with structlog.testing.capture_logs() as logs:
            assert d.dispatch(via(a, "kr")) is True
            assert d.dispatch(later) is False
        assert [x.link for x in rec.got] == ["kr"]
        [dup] = [e for e in logs if e["event"] == "announcement.duplicate"]
        assert (dup["link"], dup["won_by"], dup["lag_ms"]) == ("main", "kr", 3.0)
        assert (telemetry.value("bridge_feed_link_lead_seconds_count", link="kr") or 0) == lead + 1
    finally:
        journal.close()


def test_two_coins_in_the_same_second_both_go(tmp_path: Path) -> None:
    d, rec, journal = rig(tmp_path)
    try:
        assert d.dispatch(via(announcement("ABC"), "main"))
        assert d.dispatch(via(announcement("DEF"), "kr", 0.5))
        assert [x.tickers for x in rec.got] == [("ABC",), ("DEF",)]
    finally:
        journal.close()


def test_a_title_update_is_logged_and_not_traded_again(tmp_path: Path) -> None:
    """Same publisher, listing type and tickers, another title, within the window: not handed over
    (on either link); past the window, or for another listing type, it is a new announcement."""
    d, rec, journal = rig(tmp_path)
    try:
        first = announcement("ABC", title="Upbit lists ABC")
        assert d.dispatch(via(first, "main"))
        update = announcement("ABC", title="Upbit lists ABC (KRW, BTC markets)")
        with structlog.testing.capture_logs() as logs:
            assert d.dispatch(via(update, "kr", 40.0)) is False
        [logged] = [e for e in logs if e["event"] == "announcement.title_updated"]
        assert logged["earlier_key"] == first.key and logged["action"] == "not traded again"
        other_type = announcement("ABC", title="Upbit ABC futures", listing_type="futures_listing")
        assert d.dispatch(via(other_type, "main"))
        much_later = announcement("ABC", title="Upbit lists ABC again")
        assert d.dispatch(via(much_later, "main", (TITLE_UPDATE_WINDOW_S + 1) * 1000))
        assert [x.title for x in rec.got] == [first.title, other_type.title, much_later.title]
    finally:
        journal.close()


def test_what_a_link_that_is_down_brings_is_refused_and_the_other_copy_goes(tmp_path: Path) -> None:
    d, rec, journal = rig(tmp_path, down={"kr"})
    try:
        a = announcement("GHI")
        with structlog.testing.capture_logs() as logs:
            assert d.dispatch(via(a, "kr")) is False
            assert d.dispatch(via(a, "main", 1.0)) is True
        assert [e["reason"] for e in logs if e["event"] == "announcement.refused"] == ["link_unhealthy"]
        assert [x.link for x in rec.got] == ["main"]
    finally:
        journal.close()
