"""Two feed endpoints sharing one announcement source (wss://cryptolisting.ws and the Upbit-only
wss://kr.cryptolisting.ws), each its own emulator: delays, the publisher filter, own dispatch stamps,
independent faults and limits. Real aiohttp WebSocket clients, as in test_emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.sim.emulator import KeyGrant
from bridge.sim.feed_endpoints import EndpointSpec, SharedFeed
from tests.test_emulator import KEY, LIMITED_KEY, WAIT, handshake_status, next_json

KR_DELAY = 0.005
SPECS = {"main": EndpointSpec(), "kr": EndpointSpec(delay_s=KR_DELAY, publishers={"upbit"})}
GRANTS = {KEY: KeyGrant(), LIMITED_KEY: KeyGrant(exchanges=frozenset({"binance", "upbit"}))}
UPBIT: dict[str, Any] = {"publisher": "upbit", "title": "[Upbit] ABC KRW listing", "ticker": "ABC"}


@pytest.fixture
async def feed() -> AsyncIterator[SharedFeed]:
    async with SharedFeed(SPECS, api_keys=GRANTS, heartbeat_interval=None, ping_interval=None) as shared:
        yield shared


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def connect(
    session: aiohttp.ClientSession, feed: SharedFeed, name: str, key: str = KEY, **params: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, object]]:
    """A client on endpoint `name`, with its welcome read; returns once the endpoint counts it."""
    emu = feed.endpoints[name]
    before = emu.connections
    ws = await session.ws_connect(feed.url(name), headers={"X-API-Key": key}, params=params)
    welcome = await next_json(ws)
    await asyncio.wait_for(emu.wait_connected(before + 1), WAIT)
    return ws, welcome


async def test_endpoints_have_their_own_urls_and_the_kr_welcome_shows_upbit_only(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """Each endpoint listens on its own port; the kr endpoint cuts every key's allowedCex to upbit (a
    `cex` without upbit leaves nothing: the connection stays up, no announcement will ever come)."""
    assert feed.url("main") != feed.url("kr")
    main, main_welcome = await connect(session, feed, "main")
    kr, kr_welcome = await connect(session, feed, "kr")
    kr_none, none_welcome = await connect(session, feed, "kr", LIMITED_KEY, cex="binance")
    assert (main_welcome["allowedCex"], kr_welcome["allowedCex"], none_welcome["allowedCex"]) == (
        "*",
        "upbit",
        "",
    )
    for ws in (main, kr, kr_none):
        await ws.close()


async def test_one_announcement_reaches_both_endpoints_with_the_same_fields_kr_later(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """announce() sends the same message (same fields, same timestamps) to both endpoints and returns
    once both have written it; kr's copy goes out its delay after main's."""
    main, _ = await connect(session, feed, "main")
    kr, _ = await connect(session, feed, "kr")
    stamps = await feed.announce(detectedTimestampUs=1_700_000_000_000_000, **UPBIT)
    assert len(stamps["main"]) == len(stamps["kr"]) == 1
    assert stamps["kr"][0] - stamps["main"][0] >= KR_DELAY * 1e9 * 0.8  # timer slack only
    got_main, got_kr = await next_json(main), await next_json(kr)
    assert got_main == got_kr
    assert got_main["detectedTimestampUs"] == 1_700_000_000_000_000
    assert (got_main["type"], got_main["publisher"], got_main["ticker"]) == ("announcement", "upbit", "ABC")
    await main.close(), await kr.close()


async def test_delays_can_be_overridden_per_announcement(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """`delays` puts one endpoint ahead for one announcement: here main goes 10 ms after kr."""
    main, _ = await connect(session, feed, "main")
    kr, _ = await connect(session, feed, "kr")
    stamps = await feed.announce(delays={"kr": 0.0, "main": 0.01}, **UPBIT)
    assert stamps["main"][0] - stamps["kr"][0] >= 0.01 * 1e9 * 0.8
    stamps = await feed.announce(**UPBIT)  # the specs' delays again
    assert stamps["main"][0] < stamps["kr"][0]
    with pytest.raises(KeyError, match="nowhere"):
        await feed.announce(delays={"nowhere": 0.0}, **UPBIT)
    await main.close(), await kr.close()


async def test_equal_delays_send_in_the_order_the_endpoints_were_given(
    session: aiohttp.ClientSession,
) -> None:
    """With the same delay, the endpoint named first writes first, every time."""
    specs = {"a": EndpointSpec(delay_s=0.002), "b": EndpointSpec(delay_s=0.002)}
    async with SharedFeed(specs, api_keys=[KEY], heartbeat_interval=None, ping_interval=None) as feed:
        a, _ = await connect(session, feed, "a")
        b, _ = await connect(session, feed, "b")
        for _ in range(5):
            stamps = await feed.announce(**UPBIT)
            assert stamps["a"][0] <= stamps["b"][0]
        await a.close(), await b.close()


async def test_publisher_filter_skips_the_kr_endpoint_for_binance(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """A binance announcement is never sent to kr (its clients see the next upbit one first); the
    result shows kr with no write, and the delivery lists it as skipped."""
    main, _ = await connect(session, feed, "main")
    kr, _ = await connect(session, feed, "kr")
    delivery = feed.schedule(publisher="binance", title="Binance Will List DEF", ticker="DEF")
    assert delivery.skipped == {"kr"} and delivery.endpoints == ("main",)
    stamps = await delivery.wait()
    assert (len(stamps["main"]), stamps["kr"]) == (1, [])
    await feed.announce(**UPBIT)
    assert [(await next_json(main))["ticker"], (await next_json(main))["ticker"]] == ["DEF", "ABC"]
    assert (await next_json(kr))["ticker"] == "ABC"
    await main.close(), await kr.close()


async def test_each_endpoint_can_stamp_its_own_dispatch_time(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """dispatch_us="at_send": each endpoint stamps dispatchTimestampUs at its own write, as the real
    service does (kr's later by its delay); a mapping sets it per endpoint. Other fields stay shared."""
    main, _ = await connect(session, feed, "main")
    kr, _ = await connect(session, feed, "kr")
    delivery = feed.schedule(dispatch_us="at_send", **UPBIT)
    await delivery.wait()
    got_main, got_kr = await next_json(main), await next_json(kr)
    assert got_kr["dispatchTimestampUs"] - got_main["dispatchTimestampUs"] >= KR_DELAY * 1e6 * 0.8
    assert got_main["detectedTimestampUs"] == got_kr["detectedTimestampUs"]
    assert delivery.messages["kr"] == got_kr and delivery.messages["main"] == got_main
    await feed.announce(dispatch_us={"kr": 111}, detectedTimestampUs=100, dispatchTimestampUs=105, **UPBIT)
    assert (await next_json(main))["dispatchTimestampUs"] == 105
    assert (await next_json(kr))["dispatchTimestampUs"] == 111
    await main.close(), await kr.close()


async def test_hold_lets_a_test_order_the_endpoints_without_sleeping(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """hold(main) parks main's copies (in the order announced) while kr sends; release lets them go."""
    main, _ = await connect(session, feed, "main")
    kr, _ = await connect(session, feed, "kr")
    feed.hold("main")
    first = feed.schedule(delays={"kr": 0.0}, **UPBIT)
    second = feed.schedule(delays={"kr": 0.0}, **{**UPBIT, "ticker": "XYZ"})
    await first.sent("kr"), await second.sent("kr")
    assert [(await next_json(kr))["ticker"], (await next_json(kr))["ticker"]] == ["ABC", "XYZ"]
    assert feed.pending == 2 and feed.endpoints["main"].client_count == 1
    feed.release("main")
    await second.wait()
    assert [(await next_json(main))["ticker"], (await next_json(main))["ticker"]] == ["ABC", "XYZ"]
    assert feed.pending == 0
    await main.close(), await kr.close()


async def test_one_endpoint_is_fifo_even_when_a_later_announcement_has_a_shorter_delay(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """On one endpoint announcements go out in the order announced, as on one connection."""
    main, _ = await connect(session, feed, "main")
    slow = feed.schedule(delays={"main": 0.02}, **UPBIT)
    fast = feed.schedule(delays={"main": 0.0}, **{**UPBIT, "ticker": "XYZ"})
    slow_stamps, fast_stamps = await slow.sent("main"), await fast.sent("main")
    assert slow_stamps[0] <= fast_stamps[0]
    assert [(await next_json(main))["ticker"], (await next_json(main))["ticker"]] == ["ABC", "XYZ"]
    await main.close()


async def test_dropping_one_endpoints_clients_leaves_the_other_connected(
    feed: SharedFeed, session: aiohttp.ClientSession
) -> None:
    """Faults are per endpoint: drop_all on main cuts main's client only; kr's keeps receiving. A
    close_all on kr then closes kr's client with its code and reason."""
    main, _ = await connect(session, feed, "main")
    kr, _ = await connect(session, feed, "kr")
    await feed.endpoints["main"].drop_all()
    msg = await asyncio.wait_for(main.receive(), WAIT)
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert feed.endpoints["kr"].client_count == 1
    stamps = await feed.announce(**UPBIT)
    assert (len(stamps["main"]), len(stamps["kr"])) == (0, 1)
    assert (await next_json(kr))["ticker"] == "ABC"
    await feed.endpoints["kr"].close_all(1000, "key_expired")
    msg = await asyncio.wait_for(kr.receive(), WAIT)
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "key_expired")
    await feed.endpoints["kr"].wait_clients(0)


async def test_heartbeats_and_rejections_are_per_endpoint(session: aiohttp.ClientSession) -> None:
    """pause_heartbeats on kr stops kr's heartbeats only; reject_next on main refuses main's next
    upgrade only."""
    async with SharedFeed(SPECS, api_keys=[KEY], heartbeat_interval=0.01, ping_interval=None) as feed:
        feed.endpoints["kr"].pause_heartbeats()
        feed.endpoints["main"].reject_next(429, retry_after=5, error="per_ip_connection_limit_reached")
        headers = {"X-API-Key": KEY}
        assert await handshake_status(session, feed.url("main"), headers=headers) == 429
        assert await handshake_status(session, feed.url("kr"), headers=headers) == 101
        main, _ = await connect(session, feed, "main")
        kr, _ = await connect(session, feed, "kr")
        assert (await next_json(main))["type"] == "heartbeat"
        await feed.announce(**UPBIT)
        assert (await next_json(kr))["type"] == "announcement"  # no heartbeat came before it
        await main.close(), await kr.close()


async def test_the_reconnect_cooldown_counts_per_endpoint(session: aiohttp.ClientSession) -> None:
    """Limits count per endpoint: one key connects to main and kr back to back, but reconnecting to
    main at once is refused with connection_cooldown."""
    async with SharedFeed(SPECS, api_keys=[KEY], cooldown=30, ping_interval=None) as feed:
        headers = {"X-API-Key": KEY}
        assert await handshake_status(session, feed.url("main"), headers=headers) == 101
        assert await handshake_status(session, feed.url("kr"), headers=headers) == 101
        upgrade = {**headers, "Upgrade": "websocket", "Connection": "Upgrade"}
        async with session.get(feed.url("main"), headers=upgrade) as resp:
            assert resp.status == 429
            assert (await resp.json())["error"] == "connection_cooldown"


async def test_endpoints_can_have_their_own_keys(session: aiohttp.ClientSession) -> None:
    """An EndpointSpec's api_keys replace the shared ones for that endpoint."""
    specs = {"main": EndpointSpec(), "kr": EndpointSpec(publishers={"upbit"}, api_keys=[LIMITED_KEY])}
    async with SharedFeed(specs, api_keys=[KEY], ping_interval=None) as feed:
        assert await handshake_status(session, feed.url("kr"), headers={"X-API-Key": KEY}) == 403
        assert await handshake_status(session, feed.url("kr"), headers={"X-API-Key": LIMITED_KEY}) == 101
        assert await handshake_status(session, feed.url("main"), headers={"X-API-Key": KEY}) == 101


async def test_stop_cancels_what_is_still_held() -> None:
    """Leaving the feed with copies still held cancels their deliveries instead of leaving them hanging."""
    async with SharedFeed(SPECS, api_keys=[KEY], ping_interval=None) as feed:
        feed.hold("kr")
        delivery = feed.schedule(**UPBIT)
        assert await delivery.sent("main") == []  # no client: written to nobody
    with pytest.raises(asyncio.CancelledError):
        await delivery.sent("kr")


def test_raw_frames_decode_as_the_same_announcement() -> None:
    """The copies the endpoints send differ at most in dispatch time, so the codec gives them one key."""
    from bridge.feed.codec import Announcement, decode

    one = {"type": "announcement", **UPBIT, "detectedTimestampUs": 100, "dispatchTimestampUs": 105}
    other = {**one, "dispatchTimestampUs": 111}
    a, b = (decode(orjson.dumps(m), max_bytes=4096) for m in (one, other))
    assert isinstance(a, Announcement) and isinstance(b, Announcement)
    assert a.key == b.key
