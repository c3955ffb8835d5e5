"""The latency benchmark's two-link run (bench/latency.py): with one feed link delayed, the order latency
follows the faster link.

Two feed endpoints sharing one announcement source (bridge/sim/feed_endpoints.py), `slow` and `fast`,
both carrying every publisher; one of them writes each announcement `link_delay_ms` after the other.
Two daemons, both `python -m bridge run`, live, listing_buy, a seeded journal:

- `links`: `feed.links` to both endpoints (subscribed to upbit only), strategy `listing_buy_links`;
- `slow`: one link, the slow endpoint only (subscribed to binance only), strategy `listing_buy_slow`.

Three paths, interleaved announcement by announcement, each announcement to one daemon only (its
publisher picks the daemon), so the two never compete for the CPU:

- `links_fast`: an upbit announcement, `fast` undelayed, `slow` delayed: the fast link should win;
- `links_swapped`: an upbit announcement, the delay swapped to `fast`: the slow link should win;
- `slow_alone`: a binance announcement, `fast` undelayed, `slow` delayed. On `fast` it reaches only the
  bench's own reader (`Listener`), which stands for everyone on the fast endpoint: its write is the
  moment the announcement was out; the reference daemon gets it from `slow`, later.

Each is timed from the earliest endpoint write of the announcement (the smallest of the endpoints'
stamps) to the fake exchange's receipt of the order. Which link won each two-link announcement: the
journal's receipt stamp of its first arrival is earlier than the delayed endpoint's write, so it came
through the other link; and the daemon's own count, its /metrics `bridge_feed_link_lead_seconds` (the
duplicate's `announcement.duplicate` log event also names the winner, `won_by`, but the log's flood
guard keeps only 30 of them a minute).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Proc, StrategySpec, daemon_config, free_port, spawn_daemon
from bench.report import LINK_LABELS, LinksResult, Options, Report, Series
from bench.scenarios import ORDER_TIMEOUT_S, key_of
from bridge.sim.fake_exchange import FakeBinance
from bridge.sim.feed_endpoints import EndpointSpec, SharedFeed

LINKS_KEY = "dsk_" + "8" * 64  # the two-link daemon, on both endpoints
SLOW_KEY = "dsk_" + "9" * 64  # the reference daemon, on the slow endpoint only
LISTEN_KEY = "dsk_" + "a" * 64  # the bench's reader on the fast endpoint
TWO_LINKS, ALONE = "upbit", "binance"  # the publishers of each daemon's announcements
# Both daemons' request budget, 25x binance's (ccxt rateLimit 2 ms per cost unit: 475 units/s, 1500 at
# once). This part sends the two-link daemon an announcement every ~30 ms and the reference one every
# ~60 ms; each order costs 0.2 units and the account read after its fill 4: 70-140 units/s against the
# default budget's refill of 19. Once its first 60 units were spent, every two-link order would wait
# ~200 ms for budget, which listings minutes apart never do. The link is what is measured; the limiter
# still runs (and never makes an order wait here).
LINKS_CCXT = {"rateLimit": 2}
WARMUP = 5  # rounds not measured: first requests after start-up warm caches on both sides
STARTUP_TIMEOUT_S = 60.0
METRICS_TIMEOUT_S = 5.0  # for the last copies to be counted in the daemon's /metrics
LEAD = "bridge_feed_link_lead_seconds"
# path -> (publisher, the endpoint that is delayed, the link that should win)
PATHS = {
    "links_fast": (TWO_LINKS, "slow", "fast"),
    "links_swapped": (TWO_LINKS, "fast", "slow"),
    "slow_alone": (ALONE, "slow", None),
}
assert PATHS.keys() == LINK_LABELS.keys()


@dataclass
class Sent:
    """One measured two-link announcement: its key and each endpoint's write stamp (time.time_ns())."""

    path: str
    key: str
    stamps: dict[str, int]


def tickers(opts: Options) -> list[str]:
    """Every ticker the run announces, one per announcement (a listing is a symbol never traded before)."""
    if opts.links <= 0:
        return []
    return [f"K{i:04d}" for i in range((opts.links + WARMUP) * len(PATHS))]


async def run(
    fake: FakeBinance,
    opts: Options,
    work: Path,
    report: Report,
    procs: list[Proc],
    seed: Callable[[Path], None],
) -> None:
    """Start the endpoints and the two daemons, send, time, check the winners; stop the daemons (they
    run only for this part). `seed(state_dir)` gives a daemon a journal from an earlier run."""
    if opts.links <= 0:
        return
    delay_s = opts.link_delay_ms / 1000
    specs = {"slow": EndpointSpec(delay_s=delay_s), "fast": EndpointSpec()}
    keys = {LINKS_KEY, SLOW_KEY, LISTEN_KEY}
    mine: list[Proc] = []
    health = free_port()
    async with (
        SharedFeed(specs, api_keys=keys, heartbeat_interval=5.0) as feed,
        Listener(feed.url("fast"), ALONE),
    ):

        async def start(
            name: str, key: str, strategy: str, publisher: str, *, links: dict[str, str] | None = None
        ) -> Proc:
            seed(work / name)
            config = daemon_config(
                fake=fake,
                feed_key=key,
                state_dir=work / name,
                strategies=[StrategySpec(strategy, "listing_buy.py", {"cost": 20})],
                ccxt_extra=LINKS_CCXT,
                # both with /health (only the two-link daemon's /metrics is read), alike but for the feed
                health_port=health if links else free_port(),
                feed_url=None if links else feed.url("slow"),
                links=links,
                cex=(publisher,),
            )
            return await spawn_daemon(name, config, work)

        try:
            links = {name: feed.url(name) for name in specs}
            mine.append(await start("links", LINKS_KEY, "listing_buy_links", TWO_LINKS, links=links))
            mine.append(await start("slow", SLOW_KEY, "listing_buy_slow", ALONE))
            # fast: the two-link daemon and the listener; slow: both daemons
            await _connected(feed, {"fast": 2, "slow": 2}, mine)
            result, sent = await _measure(feed, fake, opts, delay_s, [*procs, *mine])
            result.metrics_ahead = await _lead_counts(f"http://127.0.0.1:{health}", result.announcements)
        finally:
            for proc in mine:
                await proc.stop()  # the journal's rows are all written once it has stopped
    _first_arrivals(work / "links" / "journal-live.sqlite", sent, result)
    report.links = result


async def _measure(
    feed: SharedFeed, fake: FakeBinance, opts: Options, delay_s: float, procs: list[Proc]
) -> tuple[LinksResult, list[Sent]]:
    result = LinksResult(latency={name: Series(name) for name in PATHS})
    sent: list[Sent] = []
    two_link_symbols: set[str] = set()
    orders_before = len(fake.orders)
    names = iter(tickers(opts))
    for i in range(opts.links + WARMUP):
        for path, (publisher, delayed, winner) in PATHS.items():
            ticker = next(names)
            before = len(fake.orders)
            delivery = feed.schedule(
                delays={name: delay_s if name == delayed else 0.0 for name in feed.specs},
                publisher=publisher,
                ticker=ticker,
                title=f"Bench Will List Token {ticker} ({ticker})",
            )
            stamps = await delivery.wait()
            if any(len(s) != 1 for s in stamps.values()):
                raise RuntimeError(f"{path}: expected one client per endpoint, reached {stamps}")
            first, last = min(s[0] for s in stamps.values()), max(s[0] for s in stamps.values())
            got = await _order(fake, before, ticker + "USDT")
            if winner is not None:
                result.announcements += 1
                two_link_symbols.add(ticker + "USDT")
            if i >= WARMUP:
                series = result.latency[path]
                if got is None:
                    series.missing += 1
                else:
                    series.values.append((got - first) / 1000)
                result.write_gap.values.append((last - first) / 1000)
                if winner is not None:
                    key = key_of(orjson.dumps(delivery.message))
                    sent.append(Sent(path, key, {name: s[0] for name, s in stamps.items()}))
            await asyncio.sleep(opts.gap_ms / 1000)  # every process idle again before the next one
        if i % 50 == 0:
            for proc in procs:
                proc.check_alive()
    mine = [o for o in fake.orders[orders_before:] if o.params.get("symbol") in two_link_symbols]
    cids = collections.Counter(o.params.get("newClientOrderId") for o in mine)
    result.orders, result.doubled = len(mine), sum(c - 1 for c in cids.values())
    return result, sent


async def _order(fake: FakeBinance, before: int, symbol: str) -> int | None:
    """The fake exchange's receipt stamp (time.time_ns()) of the order after the `before`-th, or None."""
    try:
        await asyncio.wait_for(fake.wait_for_orders(before + 1), ORDER_TIMEOUT_S)
    except TimeoutError:
        return None
    order = fake.orders[before]
    if order.params.get("symbol") != symbol:
        raise RuntimeError(f"an order for {order.params.get('symbol')}, expected {symbol}")
    return order.received_ns


def _first_arrivals(journal: Path, sent: list[Sent], result: LinksResult) -> None:
    """Which link brought each measured two-link announcement first, by causality: the journal's receipt
    stamp of its first arrival (`first_seen_ns`) before one endpoint had even written it means the other
    endpoint's copy was the one received. Received after both writes: undetermined."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(sent))
        query = f"SELECT key, first_seen_ns FROM announcements WHERE key IN ({marks})"
        seen = dict(db.execute(query, [s.key for s in sent]))
    finally:
        db.close()
    for s in sent:
        received = seen.get(s.key)
        if received is None:
            verdict = "not journaled"
        else:
            before = [name for name, stamp in s.stamps.items() if received < stamp]
            verdict = next(iter(s.stamps.keys() - set(before))) if len(before) == 1 else "undetermined"
        won = result.won_by.setdefault(s.path, {})
        won[verdict] = won.get(verdict, 0) + 1


async def _lead_counts(health: str, expected: int) -> dict[str, int]:
    """Per link, how many announcements the two-link daemon counted it ahead on, from its /metrics
    (`bridge_feed_link_lead_seconds`: each copy from a second link observes the winner's lead, positive,
    and the loser's lag, negative, so wins are the observations above the le="0.0" bucket). Waits until
    every announcement's second copy is counted, or METRICS_TIMEOUT_S."""
    deadline = time.monotonic() + METRICS_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(health + "/metrics") as resp:
                text = await resp.text()
            count: dict[str, float] = collections.defaultdict(float)
            at_or_below_zero: dict[str, float] = collections.defaultdict(float)
            for family in text_string_to_metric_families(text):
                if family.name != LEAD:
                    continue
                for sample in family.samples:
                    link = sample.labels.get("link", "")
                    if sample.name == LEAD + "_count":
                        count[link] = sample.value
                    elif sample.name == LEAD + "_bucket" and float(sample.labels["le"]) == 0.0:
                        at_or_below_zero[link] = sample.value
            ahead = {link: int(n - at_or_below_zero[link]) for link, n in count.items()}
            if sum(ahead.values()) >= expected or time.monotonic() > deadline:
                return ahead
            await asyncio.sleep(0.05)  # the daemon counts the last copies as they come


class Listener:
    """A WebSocket reader on one endpoint, subscribed to one publisher, that reads and drops every frame:
    the fast endpoint's client for the reference daemon's announcements, so the fast endpoint writes them
    too (the moment they were out) while only the slow endpoint's copy reaches that daemon."""

    def __init__(self, url: str, publisher: str) -> None:
        self._url = f"{url}/?cex={publisher}"
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._http = aiohttp.ClientSession()
        ws = await self._http.ws_connect(self._url, headers={"X-API-Key": LISTEN_KEY})
        self._task = asyncio.create_task(self._drain(ws))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for _ in ws:
                pass
        finally:
            await ws.close()


async def _connected(feed: SharedFeed, want: dict[str, int], procs: list[Proc]) -> None:
    """Wait until each endpoint has welcomed `want[name]` clients (a daemon's trading arms on a welcome)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while any(feed.endpoints[name].connections < n for name, n in want.items()):
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the two-link run's daemons did not connect within {STARTUP_TIMEOUT_S} s")
        await asyncio.sleep(0.05)  # polling child processes' start-up; the bench is not a unit test
