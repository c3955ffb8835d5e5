"""Several feed links at once, against two real local emulators: each link its own supervisor and
gate key; a key rejected on one link stops that link only (trading stays armed over the other); every
link dead for good ends the feed with the error to act on; links sharing a key connect paced apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge import config as config_mod
from bridge.errors import ConfigError, CredentialsRejected
from bridge.feed.codec import Announcement
from bridge.feed.links import FeedLinks
from bridge.feed.supervisor import KeyPacer
from bridge.sim.emulator import FeedEmulator
from bridge.trading.gate import LinkStatus, TradingGate
from tests.test_supervisor import GateWatch

KEY = "dsk_" + "c3" * 32
KR_KEY = "dsk_" + "d4" * 32
WAIT = 5.0  # safety bound only


@pytest.fixture
async def endpoints() -> AsyncIterator[tuple[FeedEmulator, FeedEmulator]]:
    async with (
        FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as main,
        FeedEmulator(api_keys={KR_KEY}, heartbeat_interval=1.0) as kr,
    ):
        yield main, kr


def links_config(main: FeedEmulator, kr: FeedEmulator, arm_when: str = "any") -> config_mod.FeedConfig:
    text = f"""
feed:
  api_key: {KEY}
  heartbeat_timeout: 5
  reconnect: {{min_delay: 0.01, max_delay: 0.05}}
  arm_when: {arm_when}
  links:
    - {{name: main, url: "{main.url}"}}
    - {{name: kr, url: "{kr.url}", api_key: {KR_KEY}}}
"""
    return config_mod.loads(text, source="links.yaml").feed


class Feed:
    def __init__(self, cfg: config_mod.FeedConfig) -> None:
        self.gate = TradingGate()
        self.gate.configure_links([link.name for link in cfg.links], cfg.arm_when)
        self.gate.resume("starting")
        self.watch = GateWatch(self.gate)
        self.queue: asyncio.Queue[Announcement] = asyncio.Queue()
        self.links = FeedLinks.build(cfg, lambda link: LinkStatus(self.gate, link), self.queue)
        self.task = asyncio.create_task(self.links.run())

    async def until(self, *, up: set[str]) -> None:
        await asyncio.wait_for(self.watch.until(lambda _: self.gate.covering_links == up), WAIT)

    async def stop(self) -> None:
        self.links.stop()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), WAIT)


async def test_both_links_deliver_and_each_link_has_its_own_gate_key(
    endpoints: tuple[FeedEmulator, FeedEmulator],
) -> None:
    main, kr = endpoints
    feed = Feed(links_config(main, kr))
    try:
        await feed.until(up={"main", "kr"})
        assert feed.gate.armed and feed.links.state == "connected"
        assert [s.link for s in feed.links.links] == ["main", "kr"]
        await main.announce(title="Binance Will List ABC", ticker="ABC")
        await kr.announce(title="Binance Will List ABC", ticker="ABC")
        first = await asyncio.wait_for(feed.queue.get(), WAIT)
        second = await asyncio.wait_for(feed.queue.get(), WAIT)
        assert first.key == second.key  # the same announcement: the dispatcher keeps the first
    finally:
        await feed.stop()


async def test_a_key_dead_on_one_link_stops_that_link_only(
    endpoints: tuple[FeedEmulator, FeedEmulator],
) -> None:
    """kr's key expires: kr stops for good (`key_expired:kr`, not reconnected), trading stays armed
    over main, which still delivers; then main's key expires too: the feed ends with exit 77's error."""
    main, kr = endpoints
    feed = Feed(links_config(main, kr))
    try:
        await feed.until(up={"main", "kr"})
        await kr.close_all(4001, "key_expired")
        await feed.until(up={"main"})
        assert "key_expired:kr" in feed.gate.reasons and feed.gate.armed
        assert not feed.task.done()
        await main.announce(title="Upbit Will List DEF", ticker="DEF", publisher="upbit")
        got = await asyncio.wait_for(feed.queue.get(), WAIT)
        assert got.tickers == ("DEF",)
        await main.close_all(4001, "key_expired")
        with pytest.raises(CredentialsRejected):
            await asyncio.wait_for(feed.task, WAIT)
        assert not feed.gate.armed
    finally:
        await feed.stop()
    assert kr.connections == 1  # never reconnected with the dead key


async def test_a_config_error_on_any_link_is_the_error_reported(
    endpoints: tuple[FeedEmulator, FeedEmulator],
) -> None:
    """main answers 401 (no valid key: fix the config, 78) and kr 403 (a new key, 77): with both
    dead, the config error is the one raised."""
    main, kr = endpoints
    main.reject_next(401)
    kr.reject_next(403)
    feed = Feed(links_config(main, kr))
    with pytest.raises(ConfigError):
        await asyncio.wait_for(feed.task, WAIT)
    assert {"key_rejected:kr", "disconnected:main"} <= feed.gate.reasons


async def test_links_sharing_a_key_connect_paced_apart() -> None:
    """Three connects of one key with a 5 s spacing: the second waits 5 s, the third 10 s; another
    key is not held up."""
    now = [100.0]
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    pacer = KeyPacer(clock=lambda: now[0], sleep=sleep)
    await pacer.turn(KEY, 5.0)
    await pacer.turn(KR_KEY, 5.0)
    await pacer.turn(KEY, 5.0)
    assert waits == [5.0]
    await pacer.turn(KEY, 5.0)
    assert waits == [5.0, 5.0]
    assert now[0] == 110.0
