"""Soak: the real daemon (`python -m bridge run`, live mode against the local fake Binance, the Binance
fast path) fed one new listing announcement a second by the feed emulator, with heartbeats and pings,
for a bounded time. Prints the daemon's RSS every 30 s and its growth at the end (target: flat, +-5 %),
with the loop's worst lag and the orders placed, read from its own /metrics.

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --minutes 3

Each announcement names a new ticker (a market of the fake), which listing_buy buys (a capped limit IOC)
and sells again 5 s later (exit_after), so positions open and close all along, as they would in a day
of listings, and the journal, exits and price cache all do their work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, as a script

from bench.procs import Proc, StrategySpec, daemon_config, free_port, spawn_daemon
from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import DEFAULT_MARKETS, FakeBinance

FEED_KEY = "dsk_" + "8" * 64
SAMPLE_EVERY_S = 30.0
WARMUP_S = 30.0  # growth is measured from the first sample: imports, caches and first orders done
POOL = 2000  # distinct tickers; a longer soak announces them again (skipped: bought within a day)
STARTUP_TIMEOUT_S = 60.0
INTERNAL, LAG = "bridge_order_internal_seconds", "bridge_event_loop_lag_seconds"
HISTOGRAMS = (INTERNAL, LAG)  # read bucket by bucket from /metrics


async def scrape(session: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The daemon's /metrics samples without labels (and `_count`/`_sum`), by name."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
        elif line.startswith("bridge_orders_total{") and 'outcome="placed"' in line:
            out["placed"] = out.get("placed", 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith(HISTOGRAMS) and '_bucket{le="' in line:
            name, le = line.split("_bucket{", 1)[0], line.split('"')[1]
            out[f"{name}:le:{le}"] = float(line.rsplit(" ", 1)[1])
    return out


def quantile_bound(metrics: dict[str, float], name: str, q: float) -> str:
    """The bucket bound the q-quantile of histogram `name` lies under ("<= 400 us"): bucket resolution,
    not an interpolation, over the whole run so far."""
    count = metrics.get(f"{name}_count", 0.0)
    if not count:
        return "-"
    for key, cumulative in metrics.items():  # scraped in bucket order
        if key.startswith(f"{name}:le:") and cumulative >= q * count:
            le = key.rsplit(":", 1)[1]
            return "> max" if le == "+Inf" else f"<= {float(le) * 1e6:.0f} us"
    return "-"


async def wait_connected(emu: FeedEmulator, proc: Proc) -> None:
    wait = asyncio.create_task(emu.wait_connected(1))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while not wait.done():
            proc.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not connect within {STARTUP_TIMEOUT_S} s")
            await asyncio.wait({wait}, timeout=0.1)
    finally:
        wait.cancel()


class Announcer:
    """One new listing a second until stopped; `sent` counts them."""

    def __init__(self, emu: FeedEmulator) -> None:
        self.emu = emu
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            ticker = f"S{self.sent % POOL:04d}"
            await self.emu.announce(ticker=ticker, title=f"Upbit will list {ticker} (soak {self.sent})")
            self.sent += 1
            next_at += 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))


def row(elapsed_s: float, rss_kib: int, sent: int, metrics: dict[str, float]) -> str:
    lag = metrics.get("bridge_event_loop_lag_max_seconds", float("nan")) * 1000
    placed = int(metrics.get("placed", 0))
    return (
        f"{elapsed_s:7.0f} s  rss {rss_kib / 1024:7.1f} MiB  announced {sent:5d}  orders placed {placed:5d}"
        f"  loop lag: worst (last min) {lag:6.1f} ms, p99 {quantile_bound(metrics, LAG, 0.99)}"
        f"  internal: p50 {quantile_bound(metrics, INTERNAL, 0.5)}, p99 {quantile_bound(metrics, INTERNAL, 0.99)}"
    )


async def soak(minutes: float, *, keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    markets = list(DEFAULT_MARKETS) + [(f"S{i:04d}", "USDT", 1.0) for i in range(POOL)]
    port = free_port()
    strategy = StrategySpec("listing_buy", "listing_buy.py", {"cost": 20, "exit_after": 5})
    try:
        async with (
            FakeBinance(markets=markets) as fake,
            FeedEmulator(api_keys={FEED_KEY}, heartbeat_interval=5.0) as emu,
            aiohttp.ClientSession() as session,
        ):
            text = daemon_config(
                emu=emu,
                fake=fake,
                feed_key=FEED_KEY,
                state_dir=work / "state",
                strategies=[strategy],
                ccxt_extra={},
                health_port=port,
            )
            proc = await spawn_daemon("soak", text, work)
            try:
                await wait_connected(emu, proc)
                started = time.monotonic()
                print(f"soak: {minutes:g} min, one announcement a second, daemon pid {proc.pid}", flush=True)
                print(row(0, proc.memory_kib()[0], 0, await scrape(session, port)), flush=True)
                stop = asyncio.Event()
                announcer = Announcer(emu)
                sender = asyncio.create_task(announcer.run(stop))
                samples: list[int] = []
                end = started + minutes * 60
                while (now := time.monotonic()) < end:
                    await asyncio.sleep(min(SAMPLE_EVERY_S, end - now))
                    proc.check_alive()
                    rss = proc.memory_kib()[0]
                    samples.append(rss)
                    metrics = await scrape(session, port)
                    print(row(time.monotonic() - started, rss, announcer.sent, metrics), flush=True)
                stop.set()
                await sender
                sent = announcer.sent
                final = await scrape(session, port)
                rss_final, peak = proc.memory_kib()
            finally:
                code = await proc.stop()
            first = samples[0] if samples else rss_final
            growth = (rss_final - first) / first * 100
            print(
                f"announced {sent}, placed {int(final.get('placed', 0))}; RSS {first / 1024:.1f} MiB at"
                f" {WARMUP_S:.0f} s -> {rss_final / 1024:.1f} MiB at the end (peak {peak / 1024:.1f} MiB):"
                f" growth {growth:+.1f} % (target +-5 %); daemon exit code {code}"
            )
            return 0 if abs(growth) <= 5 else 1
    finally:
        if keep:
            print(f"kept: {work} (the daemon's log is soak.log)")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to soak (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (config, journal, daemon log)")
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be in (0, 1440]")
    sys.exit(asyncio.run(soak(args.minutes, keep=args.keep)))


if __name__ == "__main__":
    main()
