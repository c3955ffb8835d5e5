"""bench/floor_venues.py, the multi-venue latency floor: its hand-written signed requests are accepted by
each venue's fake (which checks signatures as the venue does) and create the order asked for; and the
bench's histogram quantile reads Prometheus buckets as histogram_quantile does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bench.floor_venues import BUILDERS, VenueSpec
from bench.report import highest_bucket, quantile
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_exchange import FakeBinance, FakeVenue
from bridge.sim.fake_gate import FakeGate
from bridge.sim.fake_okx import FakeOkx

MARKETS = [("ABC", "USDT", 2.0)]


@pytest.fixture(params=sorted(BUILDERS))
async def venue(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, FakeVenue]]:
    fakes: dict[str, type[FakeVenue]] = {
        "binance": FakeBinance,
        "bybit": FakeBybit,
        "okx": FakeOkx,
        "gate": FakeGate,
    }
    name: str = request.param
    async with fakes[name](markets=MARKETS) as fake:  # type: ignore[call-arg]
        yield name, fake


def spec(name: str, fake: FakeVenue, *, secret: str | None = None) -> VenueSpec:
    return VenueSpec(name, fake.url, fake.api_key, secret or fake.secret, getattr(fake, "passphrase", None))


async def send(name: str, s: VenueSpec) -> tuple[int, str]:
    request = BUILDERS[name](s, "ABC", "20", "floor1", time.time_ns() // 1_000_000)
    async with (
        aiohttp.ClientSession() as http,
        http.post(request.url, headers=request.headers, data=request.body) as resp,
    ):
        return resp.status, await resp.text()


async def test_each_venues_floor_order_is_signed_as_the_venue_checks_and_fills(
    venue: tuple[str, FakeVenue],
) -> None:
    """A 20 USDT market buy of ABC/USDT, signed by the floor's own code, passes the fake's key,
    timestamp and signature checks and is created (the fake records it as executed)."""
    name, fake = venue
    status, body = await send(name, spec(name, fake))
    assert status in (200, 201), body
    assert len(fake.orders) == 1
    assert len(fake.executed) == 1, body


async def test_a_wrong_secret_is_refused_by_every_venue(venue: tuple[str, FakeVenue]) -> None:
    """The same request signed with another secret creates nothing: the fakes really check the floor's
    signature (so the test above cannot pass by accident)."""
    name, fake = venue
    _, body = await send(name, spec(name, fake, secret="not-the-secret"))
    assert fake.executed == [], body


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    """10 observations: 5 in (1 ms, 2 ms], 4 in (2, 5], 1 in (5, 10]: p50 is the 2 ms bound, p99
    falls 90 % into the last bucket; the highest bucket reached is 10 ms. None observed: NaN, 0."""
    counts = {0.001: 0.0, 0.002: 5.0, 0.005: 9.0, 0.01: 10.0, float("inf"): 10.0}
    assert quantile(counts, 0.5) == pytest.approx(0.002)
    assert quantile(counts, 0.99) == pytest.approx(0.0095)
    assert highest_bucket(counts) == 0.01
    empty = {0.001: 0.0, float("inf"): 0.0}
    assert quantile(empty, 0.5) != quantile(empty, 0.5)  # NaN
    assert highest_bucket(empty) == 0.0
