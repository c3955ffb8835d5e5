"""Announcement-to-order latency benchmark: one command, no network (127.0.0.1 only).

    .venv/bin/python bench/latency.py            # about a minute on a 2-core machine

Starts the feed emulator and a fake Binance (real ccxt code loads its markets and places orders on
it), then runs as separate processes: the real daemon (`bridge run`, live mode, listing_buy), the same
daemon configured with ccxt's own rate limiter (`enableRateLimit: true`, ccxt's default behaviour),
and the floor client (bench/floor.py: decode, sign, POST; no ccxt). Every announcement is sent to one
client at a time, the three interleaved, and timed from the emulator writing the frame to the fake
exchange receiving the order request (both time.time_ns() on this machine). Then bursts of
announcements (several tickers, several strategies) against a fourth daemon: every announcement
handled, nothing doubled, how far the reader fell behind, memory across repeated bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, as a script

from bench.procs import (
    REPO,
    Proc,
    StrategySpec,
    daemon_config,
    free_port,
    read_events,
    spawn_daemon,
    spawn_floor,
)
from bridge.feed.codec import Announcement, decode
from bridge.ops import logs
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import DEFAULT_MARKETS, FakeBinance

FAST_KEY = "dsk_" + "1" * 64
DEFAULT_KEY = "dsk_" + "2" * 64
FLOOR_KEY = "dsk_" + "3" * 64
BURST_KEY = "dsk_" + "4" * 64
MARKET_KEY = "dsk_" + "5" * 64
COLD_KEY = "dsk_" + "6" * 64
ORDER_TIMEOUT_S = 3.0  # per announcement; a miss is counted, never waited for longer
STARTUP_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 40.0
TOO_SLOW_BEHIND = 10  # the feed closes a reader more than this many messages behind (1008 too_slow)


# ----- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Series:
    name: str
    values: list[float] = field(default_factory=list)  # microseconds
    missing: int = 0

    def p(self, q: float) -> float:
        return percentile(self.values, q) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")


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


# ----- the run ---------------------------------------------------------------------------------------


@dataclass
class Options:
    n: int
    gap_ms: float
    multi: int
    bursts: int
    burst_size: int
    burst_tickers: int
    burst_seconds: float
    markets: int
    keep: bool = False


@dataclass
class BurstResult:
    sent: int
    send_s: float
    drain_s: float
    announcements_journaled: int
    outcomes: dict[str, int]
    handled_ok: bool
    orders: int
    duplicate_orders: int
    max_behind: int
    max_reader_lag_ms: float
    rss_kib: int
    peak_kib: int


@dataclass
class Report:
    machine: str
    startup_s: dict[str, float] = field(default_factory=dict)
    single: dict[str, Series] = field(default_factory=dict)
    multi_first: dict[str, Series] = field(default_factory=dict)
    multi_last: dict[str, Series] = field(default_factory=dict)
    bursts: list[BurstResult] = field(default_factory=list)
    rss_before_bursts_kib: int = 0
    wall_s: float = 0.0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=REPO
        ).stdout.strip()
    except OSError:
        commit = ""
    where = f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"
    return where + (f", bridge {commit}" if commit else "")


def market_list(opts: Options) -> list[tuple[str, str, float]]:
    markets = list(DEFAULT_MARKETS)
    markets += [(f"L{i:04d}", "USDT", 1.0) for i in range(opts.n + 10)]
    markets += [(f"M{i:03d}{s}", "USDT", 1.0) for i in range(opts.multi + 5) for s in "ABC"]
    markets += [(f"B{i:03d}", "USDT", 1.0) for i in range(300)]
    pad = max(0, opts.markets - len(markets))
    markets += [(f"P{i:04d}", "USDT", 1.0) for i in range(pad)]
    return markets


async def run(opts: Options) -> Report:
    began = time.perf_counter()
    report = Report(machine())
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    try:
        async with (
            FakeBinance(markets=market_list(opts)) as fake,
            FeedEmulator(
                api_keys={FAST_KEY, DEFAULT_KEY, FLOOR_KEY, BURST_KEY, MARKET_KEY, COLD_KEY},
                heartbeat_interval=5.0,
            ) as emu,
        ):
            listing_buy = StrategySpec("listing_buy", "listing_buy.py", {"cost": 20})

            def config(
                name: str,
                key: str,
                ccxt: dict[str, Any],
                strategies: list[StrategySpec],
                health_port: int | None = None,
                trading: dict[str, Any] | None = None,
            ) -> str:
                return daemon_config(
                    emu=emu,
                    fake=fake,
                    feed_key=key,
                    state_dir=work / name,
                    strategies=strategies,
                    ccxt_extra=ccxt,
                    health_port=health_port,
                    trading_extra=trading,
                )

            procs: list[Proc] = []
            try:
                # Read the interpreter and ccxt's ~130 modules once, so startup is measured with a warm
                # file cache, as for a restarted service, and both daemons start on equal terms.
                warm = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", "import bridge.cli, bridge.daemon, ccxt.async_support"
                )
                await warm.wait()
                # Startup is measured alone, so the other processes' start-up does not compete for CPU.
                fast = await spawn_daemon("fast", config("fast", FAST_KEY, {}, [listing_buy]), work)
                procs.append(fast)
                await _connected(emu, 1, fast)
                report.startup_s["daemon"] = time.perf_counter() - fast.launched_at
                default = await spawn_daemon(
                    "ccxt_default",
                    config("ccxt_default", DEFAULT_KEY, {"enableRateLimit": True}, [listing_buy]),
                    work,
                )
                procs.append(default)
                await _connected(emu, 2, default)
                report.startup_s["ccxt_default"] = time.perf_counter() - default.launched_at
                floor = await spawn_floor(emu, fake, FLOOR_KEY, work)
                procs.append(floor)
                await _connected(emu, 3, floor)
                # The price cap's cost, side by side: the same daemon sending today's uncapped market
                # order, and one with no warm prices (each order fetches its symbol's book ticker).
                market_buy = StrategySpec("listing_buy", "listing_buy.py", {"cost": 20, "max_slippage": None})
                market = await spawn_daemon("market", config("market", MARKET_KEY, {}, [market_buy]), work)
                procs.append(market)
                await _connected(emu, 4, market)
                cold = await spawn_daemon(
                    "cold", config("cold", COLD_KEY, {}, [listing_buy], trading={"price_refresh": 0}), work
                )
                procs.append(cold)
                await _connected(emu, 5, cold)
                burst_strategies = [
                    listing_buy,
                    StrategySpec("listing_buy_b", "listing_buy.py", {"cost": 10}),
                    StrategySpec("log_only", "log_only.py"),
                ]
                health_port = free_port()
                burster = await spawn_daemon(
                    "burst", config("burst", BURST_KEY, {}, burst_strategies, health_port), work
                )
                health = f"http://127.0.0.1:{health_port}"
                procs.append(burster)
                await _connected(emu, 6, burster)

                targets = {
                    "daemon": FAST_KEY,
                    "daemon_market": MARKET_KEY,
                    "daemon_cold": COLD_KEY,
                    "floor": FLOOR_KEY,
                    "ccxt_default": DEFAULT_KEY,
                }
                await _latency(emu, fake, opts, targets, report, procs)
                await _multi(emu, fake, opts, targets, report, procs)
                report.rss_before_bursts_kib = burster.memory_kib()[0]
                for round_no in range(opts.bursts):
                    report.bursts.append(await _burst(emu, fake, opts, burster, health, work, round_no))
            finally:
                for proc in procs:
                    await proc.stop()
    finally:
        if opts.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.wall_s = time.perf_counter() - began
    return report


async def _connected(emu: FeedEmulator, n: int, proc: Proc) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    wait = asyncio.create_task(emu.wait_connected(n))
    try:
        while not wait.done():
            proc.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not connect within {STARTUP_TIMEOUT_S} s")
            await asyncio.wait({wait}, timeout=0.05)
    finally:
        wait.cancel()


async def _latency(
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
            got = await timed_send(emu, fake, key, data, {ticker + "USDT"})
            if i >= warmup:
                series = report.single[name]
                if got is None:
                    series.missing += 1
                else:
                    series.values.append(got[0])
            await asyncio.sleep(gap)  # let every process go idle again: each announcement stands alone
        if i % 50 == 0:
            for proc in procs:
                proc.check_alive()


async def _multi(
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
            got = await timed_send(emu, fake, key, data, {t + "USDT" for t in tickers})
            if got is None:
                report.multi_first[name].missing += 1
                report.multi_last[name].missing += 1
            else:
                report.multi_first[name].values.append(got[0])
                report.multi_last[name].values.append(got[-1])
            await asyncio.sleep(gap * 3)
    for proc in procs:
        proc.check_alive()


async def _burst(
    emu: FeedEmulator, fake: FakeBinance, opts: Options, daemon: Proc, health: str, work: Path, round_no: int
) -> BurstResult:
    """`burst_size` announcements in `burst_seconds`, `burst_tickers` tickers each, to the burst daemon
    (two listing_buy instances and log_only). Waits until /health shows every strategy has handled
    every announcement with empty queues, then checks the journal and the fake exchange."""
    loop = asyncio.get_running_loop()
    _, offset = read_events(daemon.log_path, 0)
    orders_before = len(fake.orders)
    frames = []
    for i in range(opts.burst_size):
        tickers = [f"B{(i * opts.burst_tickers + j) % 300:03d}" for j in range(opts.burst_tickers)]
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
            sent = await emu.send_stamped(data, key=BURST_KEY)
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

    db = sqlite3.connect(f"file:{work / 'burst' / 'journal-live.sqlite'}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(keys))
        seen = dict(db.execute(f"SELECT key, first_seen_ns FROM announcements WHERE key IN ({marks})", keys))
    finally:
        db.close()
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


async def _handled(http: aiohttp.ClientSession, health: str) -> dict[str, tuple[int, int]]:
    """Per strategy: (announcements handled, still queued), from the daemon's /health."""
    async with http.get(health + "/health") as resp:
        body = await resp.json()
    return {name: (r["handled"], r["queued"]) for name, r in body["strategies"].items()}


# ----- output ----------------------------------------------------------------------------------------


def render(report: Report, opts: Options) -> str:
    out = io.StringIO()

    def w(line: str = "") -> None:
        out.write(line + "\n")

    def us(v: float) -> str:
        return f"{v / 1000:.3f} ms" if v == v else "-"

    w(f"machine: {report.machine}")
    w(
        f"announcements: {opts.n} single-ticker (+5 warm-up), {opts.multi} three-ticker, "
        f"gap {opts.gap_ms:g} ms; bursts: {opts.bursts} x {opts.burst_size} in {opts.burst_seconds:g} s, "
        f"{opts.burst_tickers} tickers each; {len(market_list(opts))} markets on the fake exchange"
    )
    w()
    w("announcement -> order request (emulator frame write to fake exchange receipt, wall clock)")
    w(f"  {'path':<34} {'p50':>10} {'p99':>10} {'max':>10} {'missing':>8}")
    labels = {
        "daemon": "daemon, capped, warm prices",
        "daemon_market": "daemon, uncapped market order",
        "daemon_cold": "daemon, capped, cold prices",
        "floor": "floor (decode + signed aiohttp POST)",
        "ccxt_default": "daemon, ccxt default rate limiter",
    }
    for name, label in labels.items():
        s = report.single[name]
        w(f"  {label:<34} {us(s.p(50)):>10} {us(s.p(99)):>10} {us(s.max):>10} {s.missing:>8}")
    d, f, c = (report.single[k] for k in ("daemon", "floor", "ccxt_default"))
    m, cold = report.single["daemon_market"], report.single["daemon_cold"]
    w(
        f"  daemon / floor: p50 {d.p(50) / f.p(50):.2f}x, p99 {d.p(99) / f.p(99):.2f}x;"
        f"  ccxt default / daemon: p50 {c.p(50) / d.p(50):.1f}x, p99 {c.p(99) / d.p(99):.1f}x"
    )
    w(
        f"  price cap: capped / market p50 {d.p(50) / m.p(50):.2f}x, p99 {d.p(99) / m.p(99):.2f}x;"
        f"  cold / warm p50 {cold.p(50) / d.p(50):.2f}x, p99 {cold.p(99) / d.p(99):.2f}x"
    )
    w()
    w("three tickers per announcement: first and last of the three orders")
    w(f"  {'path':<34} {'first p50':>10} {'last p50':>10} {'last p99':>10} {'missing':>8}")
    for name, label in labels.items():
        first, last = report.multi_first[name], report.multi_last[name]
        w(f"  {label:<34} {us(first.p(50)):>10} {us(last.p(50)):>10} {us(last.p(99)):>10} {last.missing:>8}")
    w()
    w("startup, launch to armed (feed welcomed, markets loaded)")
    for name, secs in report.startup_s.items():
        w(f"  {name:<34} {secs:.2f} s")
    w()
    w(
        f"bursts (daemon with listing_buy, listing_buy_b, log_only); RSS before: {report.rss_before_bursts_kib / 1024:.1f} MiB"
    )
    w(
        f"  {'#':>2} {'sent':>5} {'send s':>7} {'drain s':>7} {'journaled':>9} {'handled':>8} {'orders':>7}"
        f" {'doubled':>7} {'behind':>6} {'lag ms':>7} {'RSS MiB':>8} {'peak MiB':>8}"
    )
    for i, b in enumerate(report.bursts):
        w(
            f"  {i + 1:>2} {b.sent:>5} {b.send_s:>7.2f} {b.drain_s:>7.2f} {b.announcements_journaled:>9}"
            f" {'yes' if b.handled_ok else 'NO':>8} {b.orders:>7} {b.duplicate_orders:>7} {b.max_behind:>6}"
            f" {b.max_reader_lag_ms:>7.1f} {b.rss_kib / 1024:>8.1f} {b.peak_kib / 1024:>8.1f}"
        )
    for i, b in enumerate(report.bursts):
        w(f"  burst {i + 1} outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(b.outcomes.items())))
    w(
        f"  'behind': most frames written but not yet read by the feed reader (the feed drops a reader >{TOO_SLOW_BEHIND})"
    )
    w()
    w(f"wall time {report.wall_s:.1f} s")
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=500, help="single-ticker announcements (default %(default)s)")
    p.add_argument("--gap-ms", type=float, default=10.0, help="idle time between sends (default %(default)s)")
    p.add_argument("--multi", type=int, default=50, help="three-ticker announcements (default %(default)s)")
    p.add_argument("--bursts", type=int, default=3, help="repeated bursts (default %(default)s)")
    p.add_argument(
        "--burst-size", type=int, default=1000, help="announcements per burst (default %(default)s)"
    )
    p.add_argument("--burst-seconds", type=float, default=1.0, help="burst duration (default %(default)s)")
    p.add_argument("--burst-tickers", type=int, default=3, help="tickers per burst announcement")
    p.add_argument(
        "--markets", type=int, default=3000, help="markets on the fake exchange (default %(default)s)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (configs, daemon logs, journals)")
    a = p.parse_args()
    opts = Options(
        n=a.n,
        gap_ms=a.gap_ms,
        multi=a.multi,
        bursts=a.bursts,
        burst_size=a.burst_size,
        burst_tickers=a.burst_tickers,
        burst_seconds=a.burst_seconds,
        markets=a.markets,
        keep=a.keep,
    )
    logs.configure("warning", "json", stream=sys.stderr)
    report = asyncio.run(run(opts))
    print(render(report, opts), end="")


if __name__ == "__main__":
    main()
