"""The offline demo behind `bridge demo`: a local feed emulator and a local fake Binance, the real
daemon in paper mode with the bundled strategies, a short script of announcements, then a summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import structlog

from bridge import config as config_mod
from bridge.errors import BridgeError, ExitCode
from bridge.ops import logs

log = structlog.get_logger(__name__)

# The emulator's demo key: public, accepted only by the local emulator.
DEMO_API_KEY = "dsk_" + "0" * 64

DEMO_CONFIG = """
feed:
  url: {feed_url}
  api_key: {api_key}
  cex: [binance, upbit]
  heartbeat_timeout: 35
exchanges:
  binance:
    ccxt: {ccxt}
trading: {{dry_run: true, max_event_age: 10, max_order_cost: 100}}
state_dir: {state_dir}
strategies:
  - name: listing_buy
    module: {strategies}/listing_buy.py
    params: {{exchange: binance, quote: USDT, cost: 20, publishers: [upbit, binance],
              listing_types: [spot_listing]}}
  - name: log_only
    module: {strategies}/log_only.py
log: {{level: info, format: auto}}
"""

# The bundled example strategies, found next to the package (the demo runs from any directory).
STRATEGIES_DIR = Path(__file__).resolve().parents[2] / "strategies"

# Markets on the fake exchange: (base, quote, price).
DEMO_MARKETS = [
    ("ABC", "USDT", 1.25),
    ("DEF", "USDT", 0.042),
    ("GHI", "USDT", 17.5),
    ("BTC", "USDT", 64000.0),
]


def demo_script(now_us: int) -> list[dict[str, Any]]:
    """What the demo announces, each line showing one behaviour of the path."""

    def ann(kind: str, **fields: Any) -> dict[str, Any]:
        base = {"type": kind, "detectedTimestampUs": now_us, "dispatchTimestampUs": now_us + 1000}
        return {**base, **fields}

    return [
        # Upbit lists ABC on KRW: listing_buy buys ABC/USDT on Binance, where it already trades.
        ann(
            "announcement",
            title="[Upbit] ABC (ABC) KRW market listing",
            ticker="ABC",
            publisher="upbit",
            listingType="spot_listing",
        ),
        # Three tickers at once: two trade on Binance (bought concurrently), one does not (skipped).
        ann(
            "announcement",
            title="Binance Will List DEF, GHI and NOPE",
            ticker="DEF, GHI,NOPE",
            publisher="binance",
            listingType="spot_listing",
        ),
        # A test announcement is never traded.
        ann(
            "test_announcement",
            title="Test: Binance Will List BTC",
            ticker="BTC",
            publisher="binance",
            listingType="spot_listing",
        ),
        # The first announcement delivered again: recognised as a duplicate, no second order.
        ann(
            "announcement",
            title="[Upbit] ABC (ABC) KRW market listing",
            ticker="ABC",
            publisher="upbit",
            listingType="spot_listing",
        ),
        # Detected a minute ago: too old to trade (trading.max_event_age).
        {
            **ann(
                "announcement",
                title="Binance Will List BTC (old news)",
                ticker="BTC",
                publisher="binance",
                listingType="spot_listing",
            ),
            "detectedTimestampUs": now_us - 60_000_000,
        },
        # A delisting: not a listing type listing_buy acts on.
        ann(
            "announcement",
            title="Binance Will Delist GHI",
            ticker="GHI",
            publisher="binance",
            listingType="spot_delisting",
        ),
    ]


async def run_demo(*, stop_event: asyncio.Event, forever: bool = False, out: TextIO | None = None) -> int:
    from bridge.daemon import Daemon
    from bridge.sim.emulator import FeedEmulator
    from bridge.sim.fake_exchange import FakeBinance

    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as state_dir:
        async with (
            FakeBinance() as fake,
            FeedEmulator(api_keys={DEMO_API_KEY}, heartbeat_interval=5.0) as emu,
        ):
            for base, quote, price in DEMO_MARKETS:
                fake.add_market(base, quote, price=price)
            text = DEMO_CONFIG.format(
                feed_url=emu.url,
                api_key=DEMO_API_KEY,
                state_dir=state_dir,
                ccxt=json.dumps(fake.ccxt_config()),  # JSON is YAML
                strategies=STRATEGIES_DIR,
            )
            cfg = config_mod.loads(text, source="<demo>")
            daemon = Daemon(cfg)
            run = asyncio.create_task(daemon.run(), name="daemon")
            try:
                await _play(daemon, emu, run)
                logs.flush()  # the log lines so far first: the summary may go to the same stream
                _print_summary(Path(state_dir), out or sys.stdout)
                if forever:
                    log.info("demo.running", hint="Ctrl-C to stop", feed=emu.url)
                    await asyncio.wait(
                        {run, asyncio.create_task(stop_event.wait())}, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                daemon.request_stop()
                await run
    return int(ExitCode.OK)


async def _play(daemon: Any, emu: Any, run: asyncio.Task[None]) -> None:
    await asyncio.wait_for(emu.wait_connected(1), 30)
    await asyncio.wait_for(_until(lambda: daemon.gate.armed, run), 30)
    script = demo_script(time.time_ns() // 1000)
    for message in script:
        await emu.send(message)
    expected = sum(1 for m in script if m["type"] == "announcement")
    await asyncio.wait_for(
        _until(lambda: daemon.dispatcher.seen + daemon.dispatcher.duplicates >= expected, run), 30
    )
    for runner in daemon.runners:
        await asyncio.wait_for(runner.queue.join(), 30)
    if daemon.journal is not None:  # the summary reads it from another connection: pending rows first
        daemon.journal.flush()


async def _until(condition: Any, run: asyncio.Task[None]) -> None:
    """Wait for a condition on the running daemon; fail at once if the daemon stopped."""
    while not condition():
        if run.done():
            run.result()
            raise BridgeError("the daemon stopped before the demo finished")
        await asyncio.sleep(0.02)


def _print_summary(state_dir: Path, out: TextIO) -> None:
    from bridge.trading.journal import Journal

    journal = Journal.open(state_dir, dry_run=True)
    try:
        rows = journal.orders()
    finally:
        journal.close()
    print("\nPaper orders placed by the demo (nothing was sent to any exchange):", file=out)
    print(
        f"  {'strategy':<12} {'symbol':<10} {'side':<5} {'cost':>8} {'filled':>14} {'price':>10}  state",
        file=out,
    )
    for r in rows:
        i = r.intent
        filled = "-" if r.filled is None else f"{r.filled:.6f}"
        price = "-" if r.average is None else f"{r.average:g}"
        spent = r.result_cost if r.result_cost is not None else i.cost  # a capped buy is sized by amount
        cost = "-" if spent is None else f"{spent:.4g}"
        print(
            f"  {i.strategy:<12} {i.symbol:<10} {i.side:<5} {cost:>8} {filled:>14} {price:>10}  {r.state}",
            file=out,
        )
    print(f"  {len(rows)} orders. Skipped orders and their reasons are in the order table above.\n", file=out)
