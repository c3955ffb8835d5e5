"""What the latency benchmark (bench/latency.py) sends and times, with the daemons already running:
single-ticker and three-ticker announcements, each to one target at a time, timed from the emulator's
frame write to the fake exchange's receipt of the order; and bursts against the burst daemon."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from pathlib import Path

import aiohttp
import orjson

from bench.procs import Proc, read_events
from bench.report import TOO_SLOW_BEHIND, BurstResult, Options, Report, Series
from bridge.feed.codec import Announcement, decode
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance

ORDER_TIMEOUT_S = 3.0  # per announcement; a miss is counted, never waited for longer
DRAIN_TIMEOUT_S = 40.0
JOURNAL_TIMEOUT_S = 2.0  # for the journal's last announcement rows after a burst has drained
LOOKUP = ("GET", "/api/v3/order")  # an order look-up at the fake exchange (by client order id)


# ----- announcements ---------------------------------------------------------------------------------


def frame(ticker: str, title: str, publisher: str = "binance") -> bytes:
    now_us = time.time_ns() // 1000
    return orjson.dumps(
        {
            "type": "announcement",
            "title": title,
            "ticker": ticker,
            "publisher": publisher,
            "listingType": "spot_listing",
            "detectedTimestampUs": now_us,
            "dispatchTimestampUs": now_us,
        }
    )


def key_of(data: bytes) -> str:
    msg = decode(data, max_bytes=1 << 20)
    assert isinstance(msg, Announcement)
    return msg.key


async def timed_send(
    emu: FeedEmulator, fake: FakeBinance, feed_key: str, data: bytes, symbols: set[str]
) -> list[float] | None:
    """Send `data` to the client with `feed_key`; latencies (µs) of its orders, sorted, or None if they
    did not all arrive in time."""
    before = len(fake.orders)
    stamps = await emu.send_stamped(data, key=feed_key)
    if len(stamps) != 1:
        raise RuntimeError(f"expected one client with key {feed_key[:8]}..., reached {len(stamps)}")
    try:
        await asyncio.wait_for(fake.wait_for_orders(before + len(symbols)), ORDER_TIMEOUT_S)
    except TimeoutError:
        return None
    got = fake.orders[before : before + len(symbols)]
    seen = {o.params.get("symbol") for o in got}
    if seen != symbols:
        raise RuntimeError(f"orders for {sorted(map(str, seen))}, expected {sorted(symbols)}")
    return sorted((o.received_ns - stamps[0]) / 1000 for o in got)


BURST_MARKETS_PER_ROUND = 300


def burst_markets(opts: Options) -> int:
    """How many markets (B000, B001, ...) the bursts' tickers are drawn from: 300 per burst round (each
    round its own, so a later round still has coins to buy: listing_buy buys a coin once), or with one
    ticker per announcement one per burst announcement (see burst_ticker_sets)."""
    if opts.burst_tickers > 1:
        return BURST_MARKETS_PER_ROUND * opts.bursts
    return max(BURST_MARKETS_PER_ROUND, opts.bursts * opts.burst_size)


def burst_ticker_sets(opts: Options) -> list[list[str]]:
    """The tickers of every burst announcement of the run, in order: `burst_tickers` each, spread over
    the round's markets, and no two announcements with the same set. The dispatcher takes the same
    tickers from the same publisher under another title for a title update of an announcement already
    traded (bridge/trading/arrivals.py), not handed to the strategies again; a burst of distinct
    announcements must not look like one."""
    k = opts.burst_tickers
    if k <= 1:
        return [[f"B{i:03d}"] for i in range(opts.bursts * opts.burst_size)]
    n = BURST_MARKETS_PER_ROUND
    sets: list[list[str]] = []
    for round_no in range(opts.bursts):
        used: set[tuple[int, ...]] = set()
        g = 0
        for _ in range(opts.burst_size):
            while True:
                if g > 4 * n * n:
                    raise ValueError(f"cannot give {opts.burst_size} announcements distinct tickers")
                # consecutive markets at first, then every second one, every third... once they wrap
                base, step = (g * k) % n, 1 + (g * k) // n
                picked = tuple(sorted({(base + j * step) % n for j in range(k)}))
                g += 1
                if len(picked) == k and picked not in used:
                    break
            used.add(picked)
            sets.append([f"B{round_no * n + i:03d}" for i in picked])
    return sets


# ----- the scenarios --------------------------------------------------------------------------------


async def latency(
    emu: FeedEmulator,
    fake: FakeBinance,
    opts: Options,
    targets: dict[str, str],
    report: Report,
    procs: list[Proc],
) -> None:
    """One ticker per announcement, each announcement to each target in turn, spaced by gap_ms."""
    report.single = {name: Series(name) for name in targets}
    gap = opts.gap_ms / 1000
    warmup = 5  # not measured: first requests after start-up warm caches on both sides
    for i in range(opts.n + warmup):
        ticker = f"L{i:04d}"
        for name, key in targets.items():
            data = frame(ticker, f"Binance Will List Token {ticker} ({ticker})")
            seen = len(fake.requests)
            got = await timed_send(emu, fake, key, data, {ticker + "USDT"})
            if i >= warmup:
                count_lookups(fake, name, seen, got, report)
                series = report.single[name]
                if got is None:
                    series.missing += 1
                else:
                    series.values.append(got[0])
            await asyncio.sleep(gap)  # let every process go idle again: each announcement stands alone
        if i % 50 == 0:
            for proc in procs:
                proc.check_alive()


def count_lookups(fake: FakeBinance, name: str, seen: int, got: list[float] | None, report: Report) -> None:
    """For daemon_fresh: count the order look-ups among the requests since the `seen`-th, and its orders
    (they arrive after their look-ups), to show that every measured order paid one."""
    if name == "daemon_fresh" and got is not None:
        report.fresh_lookups += fake.requests[seen:].count(LOOKUP)
        report.fresh_orders += len(got)


async def multi(
    emu: FeedEmulator,
    fake: FakeBinance,
    opts: Options,
    targets: dict[str, str],
    report: Report,
    procs: list[Proc],
) -> None:
    """Three tickers per announcement: first and last order of each, to show they go out together."""
    report.multi_first = {name: Series(name) for name in targets}
    report.multi_last = {name: Series(name) for name in targets}
    gap = opts.gap_ms / 1000
    for i in range(opts.multi):
        tickers = [f"M{i:03d}{s}" for s in "ABC"]
        for name, key in targets.items():
            data = frame(",".join(tickers), f"Binance Will List {', '.join(tickers)} (batch {i})")
            seen = len(fake.requests)
            got = await timed_send(emu, fake, key, data, {t + "USDT" for t in tickers})
            count_lookups(fake, name, seen, got, report)
            if got is None:
                report.multi_first[name].missing += 1
                report.multi_last[name].missing += 1
            else:
                report.multi_first[name].values.append(got[0])
                report.multi_last[name].values.append(got[-1])
            await asyncio.sleep(gap * 3)
    for proc in procs:
        proc.check_alive()


async def burst(
    emu: FeedEmulator,
    fake: FakeBinance,
    opts: Options,
    daemon: Proc,
    feed_key: str,
    health: str,
    work: Path,
    round_no: int,
    ticker_sets: list[list[str]],
) -> BurstResult:
    """`burst_size` announcements in `burst_seconds`, the tickers of each from `ticker_sets`, to the
    burst daemon (two listing_buy instances and log_only). Waits until /health shows every strategy has
    handled every announcement with empty queues, then checks the journal and the fake exchange."""
    loop = asyncio.get_running_loop()
    _, offset = read_events(daemon.log_path, 0)
    orders_before = len(fake.orders)
    frames = []
    for i, tickers in enumerate(ticker_sets):
        frames.append(frame(",".join(tickers), f"Burst {round_no} #{i}: {', '.join(tickers)}"))
    keys = [key_of(f) for f in frames]
    async with aiohttp.ClientSession() as http:
        before = await _handled(http, health)
        stamps: list[int] = []
        t0 = loop.time()
        for i, data in enumerate(frames):
            delay = t0 + i * opts.burst_seconds / opts.burst_size - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the burst's own pacing
            sent = await emu.send_stamped(data, key=feed_key)
            if len(sent) != 1:
                raise RuntimeError("the burst daemon is not connected")
            stamps.append(sent[0])
        send_s = loop.time() - t0
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            handled = await _handled(http, health)
            done = all(handled[name][0] - before[name][0] >= len(frames) for name in handled) and not any(
                queued for _, queued in handled.values()
            )
            if done or time.monotonic() > deadline:
                break
            daemon.check_alive()
            await asyncio.sleep(0.02)  # polling the daemon's /health; the bench is not a unit test
        drain_s = loop.time() - t0

    outcomes: collections.Counter[str] = collections.Counter()
    events, _ = read_events(daemon.log_path, offset)
    for e in events:
        event = e.get("event")
        if event in ("order.placed", "order.skipped", "order.rejected") and e.get("strategy") != "log_only":
            reason = e.get("reason")
            outcomes[f"{str(event).split('.')[1]}{':' + reason if reason else ''}"] += 1
        elif event in ("strategy.failed", "order.unknown", "order.unresolved"):
            outcomes[str(event)] += 1

    # The journal writes its announcement rows in batches (~50 ms after the intent); when every
    # announcement was handled at once (all skipped), the last batch may not be written yet.
    journal_deadline = time.monotonic() + JOURNAL_TIMEOUT_S
    while True:
        seen = _journaled(work / "burst" / "journal-live.sqlite", keys)
        if len(seen) == len(keys) or time.monotonic() > journal_deadline:
            break
        await asyncio.sleep(0.05)  # the daemon's batched SQLite writes
    behind, lag = 0, 0.0
    for k, key in enumerate(keys):
        received = seen.get(key)
        if received is None:
            continue
        lag = max(lag, (received - stamps[k]) / 1e6)
        # frames written after this one but before the reader got to it
        later = sum(1 for s in stamps[k + 1 : k + 1 + 4 * TOO_SLOW_BEHIND] if s <= received)
        behind = max(behind, later)
    cids = collections.Counter(o.params.get("newClientOrderId") for o in fake.orders[orders_before:])
    rss, peak = daemon.memory_kib()
    return BurstResult(
        sent=len(frames),
        send_s=send_s,
        drain_s=drain_s,
        announcements_journaled=len(seen),
        outcomes=dict(outcomes),
        handled_ok=done and len(seen) == len(frames),
        orders=sum(cids.values()),
        duplicate_orders=sum(c - 1 for c in cids.values()),
        max_behind=behind,
        max_reader_lag_ms=lag,
        rss_kib=rss,
        peak_kib=peak,
    )


def _journaled(path: Path, keys: list[str]) -> dict[str, int]:
    """The journal's receipt stamp (first_seen_ns) of each of `keys` it holds."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(keys))
        return dict(db.execute(f"SELECT key, first_seen_ns FROM announcements WHERE key IN ({marks})", keys))
    finally:
        db.close()


async def _handled(http: aiohttp.ClientSession, health: str) -> dict[str, tuple[int, int]]:
    """Per strategy: (announcements handled, still queued), from the daemon's /health."""
    async with http.get(health + "/health") as resp:
        body = await resp.json()
    return {name: (r["handled"], r["queued"]) for name, r in body["strategies"].items()}
