"""Announcement-to-order latency benchmark: one command, no network (127.0.0.1 only).

    .venv/bin/python bench/latency.py            # everything, about 6-7 minutes on a 2-core machine

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
reader fell behind, memory across repeated bursts. With `daemon_uvloop`, the daemon on uvloop side by
side (`--uvloop`). Then the multi-venue run (bench/venues.py, `--venues`: one announcement, an order on
each of four fake venues, daemon against floor per venue) and the stress run (bench/stress.py,
`--stress`: a full market refresh of 3,000 markets every 2 s, 50 open positions, two venues, the log to a
slowly read pipe; the daemon's loop lag and internal time from its /health and /metrics). With no part
named, all of them; one summary table of the targets at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, as a script

from bench import coldpath, links, scenarios, stress, venues
from bench.procs import Proc, StrategySpec, daemon_config, free_port, scrape, spawn_daemon, spawn_floor
from bench.report import (
    Internal,
    Options,
    Report,
    Target,
    labels,
    machine,
    normal_targets,
    render,
    render_targets,
)
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
UVLOOP_KEY = "dsk_" + "f" * 64
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


@dataclass
class Runs:
    """Everything one invocation measured: the normal run (Report), and the multi-venue and stress runs
    when asked for."""

    report: Report
    venues: venues.VenuesResult | None = None
    stress: stress.StressResult | None = None


async def run(opts: Options) -> Runs:
    began = time.perf_counter()
    runs = Runs(Report(machine(), markets=len(market_list(opts))))
    runs.report.coldpath = coldpath.render(coldpath.measure())  # alone on the machine, before the rest
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    keys = {FAST_KEY, DEFAULT_KEY, FLOOR_KEY, BURST_KEY, MARKET_KEY, COLD_KEY, FRESH_KEY, UVLOOP_KEY}
    keys |= {venues.VENUES_KEY, venues.VENUES_FLOOR_KEY, stress.STRESS_KEY, stress.STRESS_FLOOR_KEY}
    try:
        async with FeedEmulator(api_keys=keys, heartbeat_interval=5.0) as emu:
            # Each part starts its own processes and stops them before the next, so no part's idle
            # daemons (each refreshing prices every second) compete with another's for the CPU.
            if "normal" in opts.parts:
                await normal(emu, opts, work, runs.report)
            if "venues" in opts.parts:
                runs.venues = await venues.run(emu, opts, work, seed_journal, _connected)
            if "stress" in opts.parts:
                runs.stress = await stress.run(emu, opts, work, _connected)
    finally:
        if opts.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    runs.report.wall_s = time.perf_counter() - began
    return runs


async def normal(emu: FeedEmulator, opts: Options, work: Path, report: Report) -> None:
    """The normal run: the daemon, its variants and the floor, one announcement at a time; then the
    two-link run and the bursts."""
    async with FakeBinance(markets=market_list(opts)) as fake:
        listing_buy = StrategySpec("listing_buy", "listing_buy.py", {"cost": 20})

        def config(
            name: str,
            key: str,
            ccxt: dict[str, Any],
            strategies: list[StrategySpec],
            health_port: int | None = None,
            trading: dict[str, Any] | None = None,
            fresh: bool = False,
            runtime: dict[str, Any] | None = None,
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
                runtime=runtime,
            )

        procs: list[Proc] = []

        async def start(name: str, text: str) -> Proc:
            """Spawn a daemon and wait until it is armed (its feed welcomed)."""
            n = emu.connections + 1
            proc = await spawn_daemon(name, text, work)
            procs.append(proc)
            await _connected(emu, n, proc)
            return proc

        try:
            # Read the interpreter and ccxt's ~130 modules once, so startup is measured with a warm
            # file cache, as for a restarted service, and both daemons start on equal terms.
            warm = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import bridge.cli, bridge.daemon, ccxt.async_support, uvloop"
            )
            await warm.wait()
            # Startup is measured alone, so the other processes' start-up does not compete for CPU.
            # `daemon` (and `daemon_uvloop`) serve /metrics: their bridge_order_internal_seconds.
            metrics = {"daemon": free_port()}
            fast = await start("fast", config("fast", FAST_KEY, {}, [listing_buy], metrics["daemon"]))
            report.startup_s["daemon"] = time.perf_counter() - fast.launched_at
            if opts.uvloop:
                # The same daemon on uvloop (runtime.event_loop), side by side.
                metrics["daemon_uvloop"] = free_port()
                on_uvloop = config(
                    "uvloop",
                    UVLOOP_KEY,
                    {},
                    [listing_buy],
                    metrics["daemon_uvloop"],
                    runtime={"event_loop": "uvloop"},
                )
                uv = await start("uvloop", on_uvloop)
                report.startup_s["daemon_uvloop"] = time.perf_counter() - uv.launched_at
            default = await start(
                "ccxt_default", config("ccxt_default", DEFAULT_KEY, {"enableRateLimit": True}, [listing_buy])
            )
            report.startup_s["ccxt_default"] = time.perf_counter() - default.launched_at
            n = emu.connections + 1
            floor = await spawn_floor(emu, fake, FLOOR_KEY, work)
            procs.append(floor)
            await _connected(emu, n, floor)
            # The price cap's cost, side by side: the same daemon sending today's uncapped market
            # order, and one with no warm prices (each order fetches its symbol's book ticker).
            market_buy = StrategySpec("listing_buy", "listing_buy.py", {"cost": 20, "max_slippage": None})
            await start("market", config("market", MARKET_KEY, {}, [market_buy]))
            await start("cold", config("cold", COLD_KEY, {}, [listing_buy], trading={"price_refresh": 0}))
            # A first start: an empty journal, so each order is first looked up at the venue by its
            # client id. A max_event_age of an hour keeps every announcement of the run in the look-up
            # window (a real daemon pays it only for its first max_event_age seconds). The strategy
            # is listing_buy under another name: the same name would give its orders the client ids
            # of `daemon`'s orders for the same announcements, which the look-up then finds on the
            # (shared) fake exchange, so it would rightly send nothing.
            fresh_buy = StrategySpec("listing_buy_fresh", "listing_buy.py", {"cost": 20})
            fresh_config = config(
                "fresh",
                FRESH_KEY,
                FRESH_CCXT,
                [fresh_buy],
                trading={"max_event_age": FRESH_MAX_EVENT_AGE_S},
                fresh=True,
            )
            await start("fresh", fresh_config)
            burst_strategies = [
                listing_buy,
                StrategySpec("listing_buy_b", "listing_buy.py", {"cost": 10}),
                StrategySpec("log_only", "log_only.py"),
            ]
            health_port = free_port()
            burster = await start("burst", config("burst", BURST_KEY, {}, burst_strategies, health_port))
            health = f"http://127.0.0.1:{health_port}"

            by_name = {
                "daemon": FAST_KEY,
                "daemon_uvloop": UVLOOP_KEY,
                "daemon_fresh": FRESH_KEY,
                "daemon_market": MARKET_KEY,
                "daemon_cold": COLD_KEY,
                "floor": FLOOR_KEY,
                "ccxt_default": DEFAULT_KEY,
            }
            targets = {name: by_name[name] for name in labels(opts)}  # the table's order
            await scenarios.latency(emu, fake, opts, targets, report, procs)
            await scenarios.multi(emu, fake, opts, targets, report, procs)
            for name, port in metrics.items():
                report.internal[name] = Internal.from_metrics(
                    await scrape(f"http://127.0.0.1:{port}/metrics")
                )
            # Two feed links, one delayed: two more daemons, started for this part only.
            if opts.links:
                await links.run(fake, opts, work, report, procs, seed_journal)
            report.rss_before_bursts_kib = burster.memory_kib()[0]
            ticker_sets = scenarios.burst_ticker_sets(opts)
            for round_no in range(opts.bursts):
                sets = ticker_sets[round_no * opts.burst_size : (round_no + 1) * opts.burst_size]
                report.bursts.append(
                    await scenarios.burst(emu, fake, opts, burster, BURST_KEY, health, work, round_no, sets)
                )
        finally:
            for proc in procs:
                await proc.stop()


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
    runs = p.add_argument_group(
        "runs", "with none of --normal/--venues/--stress/--uvloop: all of them (the full run, ~7 min)"
    )
    runs.add_argument("--normal", action="store_true", help="the normal run (with two links and bursts)")
    runs.add_argument("--venues", action="store_true", help="the multi-venue run (bench/venues.py)")
    runs.add_argument("--stress", action="store_true", help="the stress run (bench/stress.py)")
    runs.add_argument(
        "--uvloop",
        action="store_true",
        help="the normal run with daemon_uvloop: the daemon on uvloop, side by side",
    )
    p.add_argument(
        "--venues-n", type=int, default=200, help="multi-venue run: announcements (default %(default)s)"
    )
    p.add_argument(
        "--stress-n", type=int, default=200, help="stress run: announcements (default %(default)s)"
    )
    p.add_argument(
        "--stress-markets",
        type=int,
        default=3000,
        help="stress run: markets on its fake Binance, refreshed every 2 s (default %(default)s)",
    )
    p.add_argument(
        "--stress-seconds",
        type=float,
        default=65.0,
        help="stress run: spread its announcements over this long (default %(default)s: over a minute, so"
        " /health's worst lag of the last minute covers only the measured part)",
    )
    a = p.parse_args()
    chosen = {name for name in ("normal", "venues", "stress") if getattr(a, name)}
    if a.uvloop:
        chosen.add("normal")
    everything = not chosen
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
        parts=frozenset({"normal", "venues", "stress"} if everything else chosen),
        uvloop=everything or a.uvloop,
        venues=a.venues_n,
        stress=a.stress_n,
        stress_markets=a.stress_markets,
        stress_seconds=a.stress_seconds,
    )
    logs.configure("warning", "json", stream=sys.stderr)
    print(output(asyncio.run(run(opts)), opts), end="")


def output(runs: Runs, opts: Options) -> str:
    """Every part's table, then one summary of the targets, then the wall time."""
    text, targets = "", list[Target]()
    if "normal" in opts.parts:
        text += render(runs.report, opts)
        targets += normal_targets(runs.report)
    else:
        text += f"machine: {runs.report.machine}\n{runs.report.coldpath}\n"
    if runs.venues is not None:
        text += venues.render(runs.venues, opts)
        targets += venues.targets(runs.venues)
    if runs.stress is not None:
        text += stress.render(runs.stress, opts)
        targets += stress.targets(runs.stress)
    text += render_targets(targets)
    return text + f"\nwall time {runs.report.wall_s:.1f} s\n"


if __name__ == "__main__":
    main()
