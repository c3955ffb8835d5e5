"""The latency benchmark's stress run (bench/latency.py --stress; issue 15): announcements at the worst
moment. One daemon (`stress`) on two venues (a fake Binance with 3,000+ markets whose full market list
it reloads every 2 s, `markets_refresh: 2`, and a fake Bybit), a listing_buy on each, 50 open positions
with exits seeded in its journal (25 per venue: their prices are watched every second), logging at info
to a 4 KiB pipe this process reads at 1 KiB/s (a slow journald: the pipe is often full), /health and /metrics on.

Its floor (bench/floor_venues.py, the same two venues) gets the same announcements in turn, never at
the same time. At the end the daemon's own figures are read over HTTP: the event loop's worst lag
(/health loop_lag_max_s, the last minute; /metrics bridge_event_loop_lag_seconds over the whole run)
and its frame-to-request time (bridge_order_internal_seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from bench.procs import (
    Proc,
    SlowPipe,
    StrategySpec,
    daemon_config,
    exchange_entry,
    free_port,
    read_events,
    scrape,
    spawn_daemon,
    spawn_venue_floor,
)
from bench.report import Internal, Options, Series, Target, buckets, highest_bucket, metric_value, ms
from bench.scenarios import frame
from bench.venues import RATE_LIMIT_MS, timed_send_venues
from bridge.feed.codec import Announcement, decode
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_exchange import DEFAULT_MARKETS, FakeBinance, FakeVenue
from bridge.trading.journal import Journal
from bridge.trading.model import ExitPlan, OrderIntent

STRESS_KEY = "dsk_" + "d" * 64  # the stressed daemon
STRESS_FLOOR_KEY = "dsk_" + "e" * 64  # its floor
VENUES = ("binance", "bybit")
POSITIONS = 50  # open positions with exits, split over the two venues
MARKETS_REFRESH_S = 2.0  # the daemon's full market refresh on Binance (its default: 600 s)
PIPE = SlowPipe(chunk=512, delay_s=0.5, capacity=4096)  # 1 KiB/s through a 4 KiB pipe: often full
WARMUP = 5
LAG_TARGET_S = 0.005


@dataclass
class StressResult:
    daemon: dict[str, Series] = field(default_factory=dict)  # per venue, µs
    floor: dict[str, Series] = field(default_factory=dict)
    in_refresh: dict[str, Series] = field(default_factory=dict)  # the daemon's, announced in a refresh
    announcements: int = 0
    refreshes: int = 0  # full market refreshes (binance) that ran while the daemon was measured
    startup_s: float = 0.0
    loop_lag_max_s: float = float("nan")  # /health: the worst of the last minute
    lag_samples: int = 0  # /metrics: probe wake-ups while measuring
    lag_over_target: int = 0  # ... of which later than LAG_TARGET_S
    internal: Internal | None = None
    lag_worst_bucket_s: float = float("nan")  # /metrics: the highest lag bucket reached while measuring
    log_dropped: float = float("nan")  # bridge_log_dropped_total
    refreshed: int = 0  # the daemon's exchange.markets_refreshed lines (binance), whole run
    swap_ms_max: float = float("nan")  # the longest swap of refreshed markets into ccxt (on the loop)
    piped_kib: float = 0.0  # log output read from the slow pipe


def tickers(opts: Options) -> list[str]:
    return [f"S{i:04d}" for i in range(opts.stress + WARMUP)]


def position_markets() -> list[str]:
    return [f"X{i:03d}" for i in range(POSITIONS)]


def market_lists(opts: Options) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    """(Binance's, Bybit's): the run's tickers and each venue's position coins, Binance padded to
    `opts.stress_markets`."""
    coins = position_markets()
    half = POSITIONS // 2
    common = [*DEFAULT_MARKETS, *((t, "USDT", 1.0) for t in tickers(opts))]
    binance = common + [(c, "USDT", 1.0) for c in coins[:half]]
    binance += [(f"Q{i:04d}", "USDT", 1.0) for i in range(max(0, opts.stress_markets - len(binance)))]
    bybit = common + [(c, "USDT", 1.0) for c in coins[half:]]
    return binance, bybit


def seed_positions(state_dir: Path) -> None:
    """A journal with one announcement and POSITIONS open positions (filled buys of 20 USDT at 1.0 with
    a stop-loss, a take-profit and a trailing stop none of which the run's prices reach): the exits
    watch them all, as a daemon holding 50 positions does."""
    msg = decode(
        frame("SEED", "bench: positions bought earlier (SEED)"), max_bytes=1 << 20, received_ns=time.time_ns()
    )
    assert isinstance(msg, Announcement)
    plan = ExitPlan(take_profit=1.0, stop_loss=0.5, trailing_stop=0.5)
    journal = Journal.open(state_dir, dry_run=False)
    try:
        journal.record_announcement(msg)
        for i, coin in enumerate(position_markets()):
            venue = VENUES[0] if i < POSITIONS // 2 else VENUES[1]
            cid = f"seed{i:03d}"
            intent = OrderIntent(
                cid,
                msg.key,
                f"listing_buy_{venue}",
                venue,
                f"{coin}/USDT",
                "buy",
                "USDT",
                20.0,
                None,
                False,
                plan=plan,
            )
            if not journal.reserve(intent):
                raise RuntimeError(f"seeding {state_dir}: {cid} refused")
            journal.record_result(cid, "placed", order_id=str(9000 + i), filled=20.0, average=1.0, cost=20.0)
            journal.update_position(cid, state="open")
    finally:
        journal.close()
    journal = Journal.open(state_dir, dry_run=False)
    try:
        if len(journal.open_positions()) != POSITIONS:
            raise RuntimeError(f"seeding {state_dir}: {len(journal.open_positions())} open positions")
    finally:
        journal.close()


async def run(
    emu: FeedEmulator,
    opts: Options,
    work: Path,
    connected: Callable[[FeedEmulator, int, Proc], Awaitable[None]],
) -> StressResult:
    result = StressResult(announcements=opts.stress)
    binance_markets, bybit_markets = market_lists(opts)
    procs: list[Proc] = []
    async with FakeBinance(markets=binance_markets) as binance, FakeBybit(markets=bybit_markets) as bybit:
        fakes: dict[str, FakeVenue] = {"binance": binance, "bybit": bybit}
        try:
            state = work / "stress"
            seed_positions(state)
            health_port = free_port()
            config = daemon_config(
                emu=emu,
                feed_key=STRESS_KEY,
                state_dir=state,
                strategies=[
                    StrategySpec(f"listing_buy_{v}", "listing_buy.py", {"exchange": v, "cost": 20})
                    for v in VENUES
                ],
                ccxt_extra={},
                exchanges={
                    "binance": exchange_entry(
                        binance, {"rateLimit": RATE_LIMIT_MS["binance"]}, markets_refresh=MARKETS_REFRESH_S
                    ),
                    "bybit": exchange_entry(bybit, {"rateLimit": RATE_LIMIT_MS["bybit"]}),
                },
                health_port=health_port,
            )
            base = emu.connections
            daemon = await spawn_daemon("stress", config, work, slow_pipe=PIPE)
            procs.append(daemon)
            await connected(emu, base + 1, daemon)
            result.startup_s = time.perf_counter() - daemon.launched_at
            base = emu.connections + 1
            floor = await spawn_venue_floor("stress_floor", emu, STRESS_FLOOR_KEY, fakes, work)
            procs.append(floor)
            await connected(emu, base, floor)
            health = f"http://127.0.0.1:{health_port}"
            before, sent = await _announce(emu, fakes, opts, result, procs, health)
            await _read_daemon(health, result, before)
        finally:
            for proc in procs:
                await proc.stop()
    result.piped_kib = daemon.piped_bytes / 1024
    _read_log(daemon, result, sent)
    return result


def _read_log(daemon: Proc, result: StressResult, sent: list[tuple[float, dict[str, float | None]]]) -> None:
    """From the daemon's log: its full market refreshes (exchange.markets_refreshed: when each ended and
    how long it took, so when it ran; its swap into ccxt, the part on the loop), and which of the
    daemon's measured orders were announced while one ran (`sent`: wall time of the send, latencies)."""
    events, _ = read_events(daemon.log_path, 0)
    runs: list[tuple[float, float]] = []  # (began, ended), wall clock seconds
    swaps: list[float] = []
    for e in events:
        if e.get("event") != "exchange.markets_refreshed" or e.get("exchange") != "binance":
            continue
        ended = datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()
        runs.append((ended - float(e.get("elapsed_ms") or 0.0) / 1000, ended))
        swaps.append(float(e.get("swap_ms") or 0.0))
    result.refreshed = len(swaps)
    result.swap_ms_max = max(swaps, default=float("nan"))
    first, last = (sent[0][0], sent[-1][0]) if sent else (0.0, 0.0)
    result.refreshes = sum(1 for began, ended in runs if ended >= first and began <= last)
    for at, got in sent:
        if any(began <= at <= ended for began, ended in runs):
            for venue, latency in got.items():
                if latency is not None:
                    result.in_refresh[venue].values.append(latency)


async def _announce(
    emu: FeedEmulator,
    fakes: dict[str, FakeVenue],
    opts: Options,
    result: StressResult,
    procs: list[Proc],
    health: str,
) -> tuple[str, list[tuple[float, dict[str, float | None]]]]:
    """Send the announcements, spread over `opts.stress_seconds`. Returns the daemon's /metrics as they
    were when the measured ones began (start-up and warm-up are left out of its figures), and for each
    measured announcement to the daemon its send time (wall clock) and its orders' latencies."""
    result.daemon = {v: Series(v) for v in VENUES}
    result.floor = {v: Series(v) for v in VENUES}
    result.in_refresh = {v: Series(v) for v in VENUES}
    gap = opts.gap_ms * 3 / 1000
    rounds = tickers(opts)
    pace = opts.stress_seconds / len(rounds)  # announcements spread over the run: across many refreshes
    metrics_before = ""
    sent: list[tuple[float, dict[str, float | None]]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, ticker in enumerate(rounds):
        if i == WARMUP:
            metrics_before = await scrape(health + "/metrics")
        for key, series in ((STRESS_KEY, result.daemon), (STRESS_FLOOR_KEY, result.floor)):
            data = frame(ticker, f"Binance Will List Token {ticker} ({ticker})")
            at = time.time()
            got = await timed_send_venues(emu, fakes, key, data, ticker)
            if i >= WARMUP:
                if key == STRESS_KEY:
                    sent.append((at, got))
                for venue, latency in got.items():
                    if latency is None:
                        series[venue].missing += 1
                    else:
                        series[venue].values.append(latency)
            await asyncio.sleep(gap)  # the daemon and its floor never at once
        if i % 50 == 0:
            for proc in procs:
                proc.check_alive()
        await asyncio.sleep(max(0.0, t0 + (i + 1) * pace - loop.time()))  # the run's pacing
    return metrics_before, sent


async def _read_daemon(health: str, result: StressResult, before: str) -> None:
    """The daemon's loop lag and internal latency over HTTP: /health's worst lag of the last minute,
    and from /metrics what happened since the scrape `before` (the measured announcements)."""
    body = orjson.loads(await scrape(health + "/health"))
    text = await scrape(health + "/metrics")
    lag = body.get("loop_lag_max_s")
    result.loop_lag_max_s = float(lag) if isinstance(lag, int | float) else float("nan")
    lags = buckets(text, "bridge_event_loop_lag_seconds", before)
    result.lag_samples = int(lags.get(float("inf"), 0))
    result.lag_over_target = int(lags.get(float("inf"), 0) - lags.get(LAG_TARGET_S, 0))
    result.lag_worst_bucket_s = highest_bucket(lags)
    result.internal = Internal.from_metrics(text, before)
    result.log_dropped = metric_value(text, "bridge_log_dropped_total")


# ----- output -----------------------------------------------------------------------------------------


def render(r: StressResult, opts: Options) -> str:
    out = [
        "",
        f"stress: {opts.stress} announcements (+{WARMUP} warm-up), daemon on binance ({opts.stress_markets} markets,"
        f" full refresh every {MARKETS_REFRESH_S:g} s) + bybit, {POSITIONS} open positions with exits,"
        f" log at info to a {PIPE.capacity // 1024} KiB pipe read at {PIPE.chunk / PIPE.delay_s / 1024:g} KiB/s",
        f"  {'path':<34} {'p50':>10} {'p99':>10} {'max':>10} {'missing':>8}",
    ]
    for who, by_venue in (("daemon", r.daemon), ("floor", r.floor), ("daemon, in a refresh", r.in_refresh)):
        for venue, s in by_venue.items():
            label = f"{who}, {venue}" + (f" ({len(s.values)})" if who.endswith("refresh") else "")
            out.append(f"  {label:<34} {ms(s.p(50)):>10} {ms(s.p(99)):>10} {ms(s.max):>10} {s.missing:>8}")
    for v in VENUES:
        d, f = r.daemon[v], r.floor[v]
        out.append(
            f"  {v}: daemon / floor p50 {d.p(50) / f.p(50):.2f}x, p99 {d.p(99) / f.p(99):.2f}x;"
            f" max - floor max {(d.max - f.max) / 1000:+.3f} ms"
        )
    lag = r.loop_lag_max_s * 1000
    out.append(
        f"  full market refreshes while measuring: {r.refreshes} ('in a refresh': announced while one ran, from"
        f" the daemon's log); {r.refreshed} in all, longest swap into ccxt (on the loop) {r.swap_ms_max:g} ms"
    )
    out.append(
        f"  event loop worst lag (last minute, /health loop_lag_max_s): {lag:.1f} ms; while measuring"
        f" (/metrics): {r.lag_over_target} of {r.lag_samples} probe wake-ups later than {LAG_TARGET_S * 1000:g} ms,"
        f" worst in the bucket <= {r.lag_worst_bucket_s * 1000:g} ms"
    )
    if r.internal is not None:
        out.append(
            f"  internal (bridge_order_internal_seconds): p50 {r.internal.p50:.0f} us,"
            f" p99 {r.internal.p99:.0f} us ({r.internal.count} measured orders)"
        )
    out.append(
        f"  log: {r.piped_kib:.0f} KiB read from the slow pipe; lines dropped by the daemon's log writer:"
        f" {r.log_dropped:g}; startup {r.startup_s:.2f} s"
    )
    return "\n".join(out) + "\n"


def targets(r: StressResult) -> list[Target]:
    out: list[Target] = []
    for v in VENUES:
        d, f = r.daemon[v], r.floor[v]
        out.append(
            Target(
                f"stress {v}: daemon p99 / floor p99",
                f"{d.p(99) / f.p(99):.2f}x",
                "<= 2x",
                d.p(99) <= 2 * f.p(99),
            )
        )
        out.append(
            Target(
                f"stress {v}: daemon max - floor max",
                f"{(d.max - f.max) / 1000:+.3f} ms",
                "<= +5 ms",
                d.max <= f.max + 5000,
            )
        )
    lag_ms = r.loop_lag_max_s * 1000
    out.append(Target("stress: event loop worst lag (/health)", f"{lag_ms:.1f} ms", "<= 5 ms", lag_ms <= 5))
    if r.internal is not None:
        i = r.internal
        out.append(Target("stress: internal p50", f"{i.p50:.0f} us", "<= 150 us", i.p50 <= 150))
        out.append(Target("stress: internal p99", f"{i.p99:.0f} us", "<= 400 us", i.p99 <= 400))
    return out
