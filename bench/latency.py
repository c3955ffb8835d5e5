"""Announcement-to-order latency benchmark: one command, no network (127.0.0.1 only).

    .venv/bin/python bench/latency.py            # about 4 minutes on a 2-core machine

Starts the feed emulator and a fake Binance (real ccxt code loads its markets and places orders on
it), then runs as separate processes: the real daemon (`bridge run`, live mode, listing_buy), variants
of it (a fresh, empty journal, so each order is first looked up at the venue; an uncapped market
order; no warm prices; ccxt's own rate limiter, `enableRateLimit: true`, ccxt's default behaviour),
and the floor client (bench/floor.py: decode, sign, POST; no ccxt). Every announcement is sent to one
client at a time, all interleaved, and timed from the emulator writing the frame to the fake exchange
receiving the order request (both time.time_ns() on this machine). Then a two-link run
(bench/links.py): a daemon on two feed links, one of them delayed 5 ms, against a daemon on the slow
link alone, timed from the earliest endpoint write. Then bursts of announcements (several tickers,
several strategies) against another daemon: every announcement handled, nothing doubled, how far the
reader fell behind, memory across repeated bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, as a script

from bench import links, scenarios
from bench.procs import Proc, StrategySpec, daemon_config, free_port, spawn_daemon, spawn_floor
from bench.report import LABELS, Options, Report, machine, render
from bench.scenarios import frame
from bridge.feed.codec import Announcement, decode
from bridge.ops import logs
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import DEFAULT_MARKETS, FakeBinance
from bridge.trading.journal import Journal

FAST_KEY = "dsk_" + "1" * 64
DEFAULT_KEY = "dsk_" + "2" * 64
FLOOR_KEY = "dsk_" + "3" * 64
BURST_KEY = "dsk_" + "4" * 64
MARKET_KEY = "dsk_" + "5" * 64
COLD_KEY = "dsk_" + "6" * 64
FRESH_KEY = "dsk_" + "7" * 64
# daemon_fresh's trading.max_event_age: its empty journal's look-up window (max_event_age seconds from
# start) then spans the whole run, so every measured order pays the look-up
FRESH_MAX_EVENT_AGE_S = 3600.0
# ... and its request budget 5x binance's (ccxt rateLimit 10 ms per cost unit instead of 50: 100 units/s,
# 300 at once). Held open for the whole run, the window sees an announcement every ~0.3 s, each order
# costing 5 units (order 0.2, look-up 0.8, the balance refresh after the fill 4), about the default
# budget's refill (19 units/s): later orders would wait for the budget, which a real first start, whose
# 10 s window opens with a full bucket (60 units), never does. The look-up's latency is what is measured.
FRESH_CCXT = {"rateLimit": 10}
STARTUP_TIMEOUT_S = 60.0


# ----- journals --------------------------------------------------------------------------------------


def seed_journal(state_dir: Path) -> None:
    """Give a daemon's live journal one announcement row before its first start, as any earlier run
    leaves it. A live journal that starts empty makes the orders of the first max_event_age seconds
    look themselves up at the venue before they are sent (bridge/trading/fresh_start.py): only the
    daemon_fresh target is meant to pay that."""
    msg = decode(
        frame("SEED", "bench: an announcement from an earlier run (SEED)"),
        max_bytes=1 << 20,
        received_ns=time.time_ns(),
    )
    assert isinstance(msg, Announcement)
    journal = Journal.open(state_dir, dry_run=False)
    try:
        journal.record_announcement(msg)
    finally:
        journal.close()  # flushes the row and releases the state_dir for the daemon
    journal = Journal.open(state_dir, dry_run=False)
    try:
        if journal.started_empty:
            raise RuntimeError(f"seeding the journal in {state_dir} left it empty")
    finally:
        journal.close()


# ----- the run ---------------------------------------------------------------------------------------


def market_list(opts: Options) -> list[tuple[str, str, float]]:
    markets = list(DEFAULT_MARKETS)
    markets += [(f"L{i:04d}", "USDT", 1.0) for i in range(opts.n + 10)]
    markets += [(f"M{i:03d}{s}", "USDT", 1.0) for i in range(opts.multi + 5) for s in "ABC"]
    markets += [(f"B{i:03d}", "USDT", 1.0) for i in range(scenarios.burst_markets(opts))]
    markets += [(ticker, "USDT", 1.0) for ticker in links.tickers(opts)]
    pad = max(0, opts.markets - len(markets))
    markets += [(f"P{i:04d}", "USDT", 1.0) for i in range(pad)]
    return markets


async def run(opts: Options) -> Report:
    began = time.perf_counter()
    report = Report(machine(), markets=len(market_list(opts)))
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    try:
        async with (
            FakeBinance(markets=market_list(opts)) as fake,
            FeedEmulator(
                api_keys={FAST_KEY, DEFAULT_KEY, FLOOR_KEY, BURST_KEY, MARKET_KEY, COLD_KEY, FRESH_KEY},
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
                fresh: bool = False,
            ) -> str:
                """`fresh`: the daemon starts with an empty journal (a first start); every other one
                finds a journal from an earlier run, as a restarted service does."""
                if not fresh:
                    seed_journal(work / name)
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
                # A first start: an empty journal, so each order is first looked up at the venue by its
                # client id. A max_event_age of an hour keeps every announcement of the run in the look-up
                # window (a real daemon pays it only for its first max_event_age seconds). The strategy
                # is listing_buy under another name: the same name would give its orders the client ids
                # of `daemon`'s orders for the same announcements, which the look-up then finds on the
                # (shared) fake exchange, so it would rightly send nothing.
                fresh_buy = StrategySpec("listing_buy_fresh", "listing_buy.py", {"cost": 20})
                fresh = await spawn_daemon(
                    "fresh",
                    config(
                        "fresh",
                        FRESH_KEY,
                        FRESH_CCXT,
                        [fresh_buy],
                        trading={"max_event_age": FRESH_MAX_EVENT_AGE_S},
                        fresh=True,
                    ),
                    work,
                )
                procs.append(fresh)
                await _connected(emu, 6, fresh)
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
                await _connected(emu, 7, burster)

                keys = {
                    "daemon": FAST_KEY,
                    "daemon_fresh": FRESH_KEY,
                    "daemon_market": MARKET_KEY,
                    "daemon_cold": COLD_KEY,
                    "floor": FLOOR_KEY,
                    "ccxt_default": DEFAULT_KEY,
                }
                targets = {name: keys[name] for name in LABELS}  # the table's order
                await scenarios.latency(emu, fake, opts, targets, report, procs)
                await scenarios.multi(emu, fake, opts, targets, report, procs)
                # Two feed links, one delayed: two more daemons, started for this part only.
                await links.run(fake, opts, work, report, procs, seed_journal)
                report.rss_before_bursts_kib = burster.memory_kib()[0]
                ticker_sets = scenarios.burst_ticker_sets(opts)
                for round_no in range(opts.bursts):
                    sets = ticker_sets[round_no * opts.burst_size : (round_no + 1) * opts.burst_size]
                    report.bursts.append(
                        await scenarios.burst(
                            emu, fake, opts, burster, BURST_KEY, health, work, round_no, sets
                        )
                    )
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
    p.add_argument(
        "--links",
        type=int,
        default=200,
        help="two-link run: announcements per path (default %(default)s; 0: none)",
    )
    p.add_argument(
        "--link-delay-ms",
        type=float,
        default=5.0,
        help="two-link run: the slow link's delay (default %(default)s)",
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
        links=a.links,
        link_delay_ms=a.link_delay_ms,
    )
    logs.configure("warning", "json", stream=sys.stderr)
    report = asyncio.run(run(opts))
    print(render(report, opts), end="")


if __name__ == "__main__":
    main()
